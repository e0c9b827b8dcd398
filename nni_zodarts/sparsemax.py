"""Sparsemax with temperature (ZO-DARTS+ Eq. 6 and 9) and its annealing schedule.

``sparsemax(z) = argmin_{p in simplex} ||p - z||^2`` has the closed form
``p_i = max(z_i - t(z), 0)`` (Martins & Astudillo, 2016), so unlike softmax it reaches exact zeros.
ZO-DARTS+ applies it to ``alpha / tau`` with ``tau = tau0 * a ** floor(epoch / m)``.
"""
from __future__ import annotations

import math
import weakref

import torch
from torch import nn

__all__ = ['sparsemax', 'TemperedSparsemax', 'TemperedSoftmax', 'temperature_at']


class _Sparsemax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, dim: int) -> torch.Tensor:
        z_sorted, _ = torch.sort(z, dim=dim, descending=True)
        k = torch.arange(1, z.size(dim) + 1, device=z.device, dtype=z.dtype)
        view = [1] * z.dim()
        view[dim] = -1
        k = k.view(view)
        cumsum = z_sorted.cumsum(dim) - 1
        support = (k * z_sorted > cumsum).to(z.dtype)          # the sorted prefix that stays positive
        k_z = support.sum(dim=dim, keepdim=True)
        threshold = cumsum.gather(dim, k_z.long() - 1) / k_z
        p = torch.clamp(z - threshold, min=0)
        ctx.save_for_backward(p)
        ctx.dim = dim
        return p

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Jacobian diag(s) - s s^T / |S| with s the support indicator: project grad onto the support, centred.
        (p,) = ctx.saved_tensors
        dim = ctx.dim
        support = (p > 0).to(grad.dtype)
        centred = grad - (grad * support).sum(dim, keepdim=True) / support.sum(dim, keepdim=True)
        return centred * support, None


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean projection of ``z`` onto the probability simplex along ``dim``."""
    return _Sparsemax.apply(z, dim % z.dim())


def temperature_at(epoch: int, initial: float = 1.5, decay: float = 0.75, interval: int = 5) -> float:
    """ZO-DARTS+ Eq. 9 / spec §4: ``tau = tau0 * a ** floor(epoch / m)``."""
    return initial * decay ** math.floor(epoch / interval)


class TemperedSparsemax(nn.Module):
    """``sparsemax(alpha / tau)`` along the last axis; ``tau`` is set by the Lightning module each epoch.

    One instance is shared by every super-module of a supernet, so one assignment anneals them all.
    """

    def __init__(self, tau: float = 1.0):
        super().__init__()
        self.tau = tau
        self._memo: dict[int, tuple] = {}

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        """Every mixed layer of a label asks for its probabilities in every forward pass; while ``alpha`` needs no
        gradient (the weight steps), they are computed once per value of ``alpha`` and ``tau``."""
        if alpha.requires_grad and torch.is_grad_enabled():
            return self.normalize(alpha)
        ref, version, tau, out = self._memo.get(id(alpha), (None, None, None, None))
        if ref is None or ref() is not alpha or version != alpha._version or tau != self.tau:
            if len(self._memo) > 4096:                   # forget alphas that no longer exist
                self._memo = {k: v for k, v in self._memo.items() if v[0]() is not None}
            out = self.normalize(alpha)
            self._memo[id(alpha)] = (weakref.ref(alpha), alpha._version, self.tau, out)
        return out

    def normalize(self, alpha: torch.Tensor) -> torch.Tensor:
        return sparsemax(alpha / self.tau, dim=-1)

    def __getstate__(self):
        return {**self.__dict__, '_memo': {}}            # a cache of weak references: never pickled

    def extra_repr(self) -> str:
        return f'tau={self.tau:.4g}'


class TemperedSoftmax(TemperedSparsemax):
    """``softmax(alpha / tau)``: the ablation of ZO-DARTS (no exact zeros, so nothing is skipped)."""

    def normalize(self, alpha: torch.Tensor) -> torch.Tensor:
        return torch.softmax(alpha / self.tau, dim=-1)
