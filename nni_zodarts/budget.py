"""Budgets: the windows a search is held to, their hinge penalty (spec §6) and what happens outside one.

A budget is ``None``, an upper bound or a ``(lower, upper)`` window on a cost (parameters, FLOPs or latency, see
``cost_model``); each active one adds ``(budget_weight / tau) R`` to the validation objective, ``R`` in the
budget's own unit, and the export is the most probable architecture inside every window.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .cost_model import CostPolynomial, most_probable_within

__all__ = ['Budget', 'budget_name', 'hinge_penalty', 'parse_budget', 'select_architecture', 'warn_outside', 'COSTS']

# name -> (unit the hinge counts it in, what one unit is called, an example bound for error messages)
COSTS = {'params': (1e6, 'parameters', '300000'), 'flops': (1e8, 'FLOPs', '20000000'),
         'latency': (1.0, 'ms', '2.5')}


@dataclass(frozen=True)
class Budget:
    """A window ``lower <= cost <= upper`` on one cost, its hinge counted in ``unit``."""
    cost: str
    lower: float
    upper: float
    unit: float


def budget_name(cost: str) -> str:
    """The argument that sets ``cost``'s budget: ``param_budget``, ``flops_budget``, ``latency_budget``."""
    return 'param_budget' if cost == 'params' else f'{cost}_budget'


def parse_budget(budget: int | float | Sequence[float] | None, cost: str = 'params') -> tuple[float, float] | None:
    """``None`` | upper bound | ``(lower, upper)`` -> ``(lower, upper)``; raises ``ValueError`` on nonsense."""
    if budget is None:
        return None
    name, example = budget_name(cost), COSTS[cost][2]
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        lower, upper = 0.0, float(budget)
    elif isinstance(budget, Sequence) and not isinstance(budget, str) and len(budget) == 2:
        lower, upper = (float(v) for v in budget)
    else:
        raise ValueError(f'{name} must be None, an upper bound or a (lower, upper) pair, got {budget!r}')
    if not upper > 0 or not lower >= 0:
        raise ValueError(f'{name} must be positive, got {budget!r}: give {COSTS[cost][1]} such as {example}')
    if lower > upper:
        raise ValueError(f'{name} lower bound {lower:g} is above its upper bound {upper:g}: swap them')
    return lower, upper


def hinge_penalty(expected: torch.Tensor, lower: float, upper: float, unit: float = 1e6) -> torch.Tensor:
    """Spec §6: ``R = (relu(P - U) + relu(L - P)) / unit``, parameters counted in millions by default."""
    return (torch.relu(expected - upper) + torch.relu(lower - expected)) / unit


def warn_outside(budgets: Sequence[Budget], costs: Sequence[float]) -> None:
    windows = ', '.join(f'{b.lower:g} <= {b.cost} <= {b.upper:g}' for b in budgets)
    found = ', '.join(f'{c:g} {COSTS[b.cost][1]}' for b, c in zip(budgets, costs))
    warnings.warn(f'No architecture found with {windows}; exporting the closest ({found}). Widen the budget or '
                  'search longer.', RuntimeWarning)


def select_architecture(space: nn.Module, arch: dict[str, Any], probs: Mapping[str, torch.Tensor],
                        costs: Mapping[str, CostPolynomial], budgets: Sequence[Budget]) -> dict[str, Any]:
    """``arch`` (the argmax) if it is inside every budget, else the most probable architecture inside all of them
    (spec §6), ranked by ``probs`` and costed as the network the space's ``canonical_architecture`` hook says it
    stands for (where the space has one); the closest, with a warning, where none fits."""
    budgets = [b for b in budgets if b.cost in costs]
    constraints = [(costs[b.cost], b.lower, b.upper) for b in budgets]
    if all(c.exact and lower <= c.count(arch) <= upper for c, lower, upper in constraints):
        return arch
    arch, values, inside = most_probable_within(constraints, probs, arch, generator=torch.Generator().manual_seed(0),
                                                simplify=getattr(space, 'canonical_architecture', None))
    if not inside:
        warn_outside(budgets, values)
    return arch
