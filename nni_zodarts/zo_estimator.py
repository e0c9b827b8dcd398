"""Zeroth-order estimates of the architecture gradient (ZO-DARTS+ Eqs. 2-5, spec §5). Pure torch.

With ``F(alpha) = L_val(w*(alpha), alpha)``, directions ``u_k`` uniform on the unit sphere and step ``mu``:

* direct   (Eq. 4):  g = 1/q sum_k [F(alpha + mu u_k) - F(alpha)] / mu * u_k     (weights shared, forwards only)
* implicit (Eq. 5):  g = 1/q sum_k [<grad_alpha L, u_k> + <(W'_k - W) / mu, grad_W L>] * u_k

where ``W'_k`` are weights trained on the same batches as ``W`` from ``alpha + mu u_k``, so that
``(W'_k - W) / mu`` is a finite-difference Jacobian-vector product ``d w*/d alpha . u_k``. There is no factor
``d``: ``E[g] = grad F / d``, and Adam's normalisation absorbs the scale (spec §5).
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ['unit_directions', 'along', 'direct_estimate', 'implicit_slopes']


def unit_directions(num: int, dim: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = 'cpu') -> torch.Tensor:
    """``[num, dim]`` Gaussian directions normalised to the unit sphere."""
    g = torch.randn(num, dim, generator=generator, dtype=dtype)
    return (g / g.norm(dim=1, keepdim=True)).to(device)


def along(slopes: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``1/q sum_k slope_k u_k``: the estimate from one slope per direction (``[q]``, ``[q, d]``)."""
    return (slopes[:, None] * directions).mean(0)


def direct_estimate(f0: torch.Tensor, f_perturbed: torch.Tensor, directions: torch.Tensor, mu: float) -> torch.Tensor:
    """Two-point estimate from ``F(alpha)`` (scalar) and ``F(alpha + mu u_k)`` (``[q]``) along ``directions`` ``[q, d]``."""
    return along((f_perturbed - f0) / mu, directions)


def implicit_slopes(grad_alpha: torch.Tensor, grad_w: Sequence[torch.Tensor], weights: Sequence[torch.Tensor],
                    perturbed_weights: Sequence[Sequence[torch.Tensor]], directions: torch.Tensor,
                    mu: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5's two terms per direction (``[q]`` each): ``<grad_alpha L, u_k>`` and ``<(W'_k - W) / mu, grad_W L>``,
    from one backward of ``L_val`` (``grad_alpha`` ``[d]``, ``grad_w``; ``None`` = unused) and ``q`` weight sets."""
    implicit = [sum(((wp - w) * g).sum() for wp, w, g in zip(w_prime, weights, grad_w) if g is not None) / mu
                for w_prime in perturbed_weights]
    return directions @ grad_alpha, torch.stack([torch.as_tensor(t, dtype=grad_alpha.dtype) for t in implicit])
