"""The ZO-DARTS++ architecture step on one object, as DARTS's ``Architect``: the perturbed weights and the estimate.

``'implicit'`` (Eq. 5, spec §5): a window opens with ``W'_k = W`` (a parameter dict run through
``torch.func.functional_call``, with a clone of the weight optimizer's state) and ``alpha + mu u_k``; each weight
step then trains ``W'_k`` on the same batch; the window closes with one backward of the validation objective at
``(W, alpha)``, whose ``grad_alpha`` and ``grad_W`` meet ``(W'_k - W) / mu`` in ``zo_estimator``.
``'direct'`` (Eq. 4): two forward passes of the validation objective, at ``alpha`` and ``alpha + mu u_k``.

The maths is all here; the Lightning module decides when (every T steps), averages over DDP ranks (``average``),
checks finiteness, applies Adam and logs.
"""
from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .zo_estimator import along, direct_estimate, implicit_slopes

__all__ = ['ZOArchitect', 'Window']

Batch = tuple
Objective = Callable[[Batch, dict], torch.Tensor]             # (batch, {label: alpha}) -> CE + budget hinges
Loss = Callable[[Batch, dict], torch.Tensor]                  # (batch, {parameter name: tensor}) -> CE


@dataclass
class _PerturbedCopy:
    weights: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    alphas: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer


@dataclass
class Window:
    """An open ``'implicit'`` window: the labels it perturbs, its directions and step, and the copies ``W'_k``."""
    labels: list[str]
    directions: torch.Tensor
    mu: float
    copies: list[_PerturbedCopy]


def clone_optimizer(optimizer: torch.optim.Optimizer, originals: dict[str, nn.Parameter],
                    clones: dict[str, torch.Tensor]) -> torch.optim.Optimizer:
    """The same optimizer (class, groups, hyper-parameters, momentum/Adam state) over ``clones``."""
    by_id = {id(p): clones[name] for name, p in originals.items()}
    groups = [{**{k: v for k, v in g.items() if k != 'params'}, 'params': [by_id[id(p)] for p in g['params']]}
              for g in optimizer.param_groups]
    copy = type(optimizer)(groups)
    copy.load_state_dict(deepcopy(optimizer.state_dict()))      # load_state_dict alone would share the buffers
    return copy


class ZOArchitect:
    """``model``'s weights ``weights`` (by name) and alphas (``alpha_names``: label -> name in the model)."""

    def __init__(self, model: nn.Module, weights: dict[str, nn.Parameter], alpha_names: dict[str, str],
                 loss: Loss, objective: Objective, gradient_clip_val: float | None = None,
                 average: Callable[[list], None] = lambda tensors: None):
        self.model, self.weights, self.alpha_names = model, weights, alpha_names
        self.loss, self.objective, self.clip, self.average = loss, objective, gradient_clip_val, average
        self.window: Window | None = None

    def open_window(self, alphas: dict[str, torch.Tensor], directions: torch.Tensor, mu: float,
                    optimizer: torch.optim.Optimizer) -> None:
        """``W'_k = W`` with ``alpha + mu u_k`` (``alphas``: label -> current alpha) and the optimizer's state."""
        copies = []
        for step in self._steps(alphas, mu * directions):
            clones = {n: p.detach().clone().requires_grad_(p.requires_grad) for n, p in self.weights.items()}
            buffers = {n: b.clone() for n, b in self.model.named_buffers()}
            copies.append(_PerturbedCopy(clones, buffers, {self.alpha_names[lab]: a for lab, a in step.items()},
                                         clone_optimizer(optimizer, self.weights, clones)))
        self.window = Window(list(alphas), directions, mu, copies)

    def close_window(self) -> None:
        """Drop the window and its copies (e.g. at the end of an epoch, whose partial window is skipped)."""
        self.window = None

    def perturbed_step(self, batch: Batch) -> None:
        """Train every ``W'_k`` of the open window on ``batch`` as the weight step trained ``W`` (gradients
        averaged, clipped); nothing while no window is open."""
        for copy in self.window.copies if self.window else []:
            with torch.enable_grad():
                loss = self.loss(batch, {**copy.weights, **copy.buffers, **copy.alphas})
            trainable = [t for t in copy.weights.values() if t.requires_grad]
            for t, g in zip(trainable, torch.autograd.grad(loss, trainable, allow_unused=True)):
                t.grad = g
            self.average([t.grad for t in trainable if t.grad is not None])
            if self.clip:
                nn.utils.clip_grad_norm_(trainable, self.clip)
            copy.optimizer.step()

    def implicit(self, val_batch: Batch,
                 alphas: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Eq. 5 at the close of the window (``alphas``: its labels' current alphas): ``(estimate, objective,
        diagnostics)``; the window is closed."""
        window, self.window = self.window, None
        copies, directions, mu = window.copies, window.directions, window.mu
        weights = {n: w for n, w in self.weights.items() if w.requires_grad}        # frozen weights never move
        at = {lab: a.detach().requires_grad_() for lab, a in alphas.items()}
        with torch.enable_grad():
            loss = self.objective(val_batch, at)
        grads = torch.autograd.grad(loss, list(at.values()) + list(weights.values()), allow_unused=True)
        grad_alpha = torch.cat([torch.zeros_like(a) if g is None else g for a, g in zip(at.values(), grads)])
        with torch.no_grad():
            perturbed = [[c.weights[n] for n in weights] for c in copies]
            first, implicit = implicit_slopes(grad_alpha, grads[len(at):], list(weights.values()), perturbed,
                                              directions, mu)
            gap = max((float((wp - w).abs().max()) for ws in perturbed for wp, w in zip(ws, weights.values())),
                      default=0.0)
        # The sizes of Eq. 5's two terms and how far W' moved from W (max |W' - W|).
        return along(first + implicit, directions), loss.detach(), {
            'zo_first_order': float(first.abs().mean()), 'zo_implicit': float(implicit.abs().mean()), 'zo_weight_gap': gap}

    @torch.no_grad()
    def direct(self, val_batch: Batch, alphas: dict[str, torch.Tensor], directions: torch.Tensor,
               mu: float) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Eq. 4 with the weights shared: ``(estimate, objective, {})``."""
        loss = self.objective(val_batch, {})
        perturbed = torch.stack([self.objective(val_batch, step) for step in self._steps(alphas, mu * directions)])
        return direct_estimate(loss, perturbed, directions, mu), loss, {}

    @staticmethod
    def _steps(alphas: dict[str, torch.Tensor], steps: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """``alpha + step`` for each row of ``steps`` (the labels' alphas side by side), by label."""
        sizes = [a.numel() for a in alphas.values()]
        return [{lab: a.detach() + d for (lab, a), d in zip(alphas.items(), torch.split(step, sizes))} for step in steps]
