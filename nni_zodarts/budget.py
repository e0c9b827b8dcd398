"""Expected parameter count of a supernet, the budget hinge (spec §6) and budget-feasible export.

NNI's ``NumParamsProfiler`` never finishes on a ``Repeat`` of ``LayerChoice`` cells (nni_notes §5.5, bug C)
and its penalty path has no gradient (bug A), so the count is built structurally, once, from the mutated
supernet as a polynomial in choice indicators::

    params(arch) = sum_t c_t * prod_{(label, i) in t} 1[arch[label] = i]

A mixed layer multiplies each candidate's polynomial by its indicator, a mixed ``Repeat`` adds block j to
every depth >= j, a mixed operation (kernel size, width) enumerates its options and builds each plain layer,
and any other module adds its own parameters. Labels are independent under the relaxation, so the
expectation is the same sum with indicators replaced by probabilities (exact, and differentiable), and for a
one-hot architecture it is the parameter count of ``space.freeze(arch)``.
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections import defaultdict
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from nni.mutable import Categorical
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.differentiable import (
    DifferentiableMixedInput, DifferentiableMixedLayer, DifferentiableMixedRepeat,
)
from nni.nas.oneshot.pytorch.supermodule.operation import MixedOperation

__all__ = ['ParamPolynomial', 'hinge_penalty', 'parse_budget']

Term = frozenset  # of (label, choice index) pairs


def _times(poly: dict, factor: tuple[str, int]) -> dict:
    """Multiply by one indicator; a term asking for two different choices of one label is impossible."""
    label, index = factor
    out: dict = defaultdict(int)
    for term, coef in poly.items():
        if any(lab == label and idx != index for lab, idx in term):
            continue
        out[term | {factor}] += coef
    return out


def _add(into: dict, poly: dict) -> None:
    for term, coef in poly.items():
        into[term] += coef


def _module_polynomial(module: nn.Module, labels: Mapping[str, Categorical]) -> dict:
    out: dict = defaultdict(int)
    if isinstance(module, DifferentiableMixedLayer):
        for index, name in enumerate(module.names):
            _add(out, _times(_module_polynomial(module[name], labels), (module.label, index)))
        return out
    if isinstance(module, DifferentiableMixedRepeat):
        (label,) = module.depth_choice.simplify()       # a depth that is an expression of several labels is not supported
        if not isinstance(module.depth_choice, Categorical):
            raise NotImplementedError(f'Repeat depth must be a plain nni.choice, got {module.depth_choice!r}')
        blocks = [_module_polynomial(block, labels) for block in module.blocks]
        for index, depth in enumerate(module.depth_choice.values):
            for block in blocks[:depth]:
                _add(out, _times(block, (label, index)))
        return out
    if isinstance(module, MixedOperation):
        own = sorted(module.simplify())
        for indices in itertools.product(*(range(len(labels[lab].values)) for lab in own)):
            sample = {lab: labels[lab].values[i] for lab, i in zip(own, indices)}
            # Build the plain layer rather than MixedOperation.freeze, which fails on bias-free convs (NNI 3.0).
            arguments = {**module.init_arguments, **{k: v.freeze(sample) for k, v in module.mutable_arguments.items()}}
            count = sum(p.numel() for p in module.bound_type(**arguments).parameters())
            out[frozenset(zip(own, indices))] += count
        return out
    if isinstance(module, DifferentiableMixedInput):
        return out                                       # chooses among inputs; holds no weights
    if isinstance(module, BaseSuperNetModule):
        raise NotImplementedError(f'{type(module).__name__} is not supported by the structural parameter count')
    out[frozenset()] += sum(p.numel() for p in module.parameters(recurse=False))
    for child in module.children():
        _add(out, _module_polynomial(child, labels))
    return out


class ParamPolynomial:
    """Parameter count of every architecture of a supernet; see the module docstring."""

    def __init__(self, supernet: nn.Module, labels: Mapping[str, Categorical]):
        poly = {term: coef for term, coef in _module_polynomial(supernet, labels).items() if coef}
        self.labels = sorted({lab for term in poly for lab, _ in term})
        self.choices = {lab: list(labels[lab].values) for lab in self.labels}
        offsets, offset = {}, 0
        for lab in self.labels:
            offsets[lab] = offset
            offset += len(self.choices[lab])
        one = self._one = offset                         # index of a constant 1 appended to the probabilities
        width = max((len(t) for t in poly), default=0) or 1
        rows = [sorted(offsets[lab] + i for lab, i in term) + [one] * (width - len(term)) for term in poly]
        self._index = torch.tensor(rows, dtype=torch.long).view(len(rows), width)
        self._coef = torch.tensor(list(poly.values()), dtype=torch.float64)

    def _flat(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``[..., n_choices + 1]``: the label distributions side by side, then a 1."""
        parts = [torch.as_tensor(probs[lab], dtype=torch.float64) for lab in self.labels]
        ref = parts[0] if parts else torch.ones(1, dtype=torch.float64)
        return torch.cat(parts + [torch.ones_like(ref[..., :1])], dim=-1)

    def expectation(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """E[params] under independent per-label distributions (tensors, any leading batch shape)."""
        flat = self._flat(probs)
        index = self._index.to(flat.device)
        return (flat[..., index].prod(-1) * self._coef.to(flat.device)).sum(-1)

    def _indices(self, arch: Mapping[str, object]) -> torch.Tensor:
        try:
            return torch.tensor([self.choices[lab].index(arch[lab]) for lab in self.labels])
        except (KeyError, ValueError) as err:
            raise ValueError(f'architecture does not fit the space: {err}') from None

    def _counts(self, indices: torch.Tensor) -> torch.Tensor:
        """Parameter counts of architectures given as a ``[N, n_labels]`` matrix of choice indices."""
        onehot = {lab: F.one_hot(indices[:, j], len(self.choices[lab])).double() for j, lab in enumerate(self.labels)}
        return self.expectation(onehot)

    def count(self, arch: Mapping[str, object]) -> int:
        """Exact parameter count of one architecture ``{label: value}`` (NNI's dict format)."""
        return int(round(float(self._counts(self._indices(arch)[None])[0])))

    def smallest(self) -> int:
        """A lower bound of the parameter counts in the space: its fixed part (every coefficient is >= 0)."""
        return int(self._coef[self._index.eq(self._one).all(-1)].sum())

    def most_probable_within(self, probs: Mapping[str, torch.Tensor], lower: float, upper: float,
                             start: Mapping[str, object], *, num_samples: int = 4096,
                             generator: torch.Generator | None = None,
                             simplify: Callable[[dict], dict | None] | None = None) -> tuple[dict, int, bool]:
        """The most probable architecture with ``lower <= params <= upper``.

        Candidates: ``start`` (the argmax), a greedy repair of it (the cheapest single changes, in
        log-probability per parameter, towards the window) and ``num_samples`` draws from the distributions
        mixed 1:1 with uniform. ``simplify`` maps a candidate to the network it stands for (counted and
        returned; the candidate's own probability ranks it), or to ``None`` if it is unusable. Returns
        ``(arch, params, inside)``; with nothing inside, the closest candidate; an unusable candidate only
        when every one is (then ``start``).
        """
        logp = [torch.log(torch.as_tensor(probs[lab], dtype=torch.float64).clamp_min(1e-12)) for lab in self.labels]

        def distance(counts: torch.Tensor) -> torch.Tensor:
            return torch.clamp(torch.maximum(lower - counts, counts - upper), min=0)

        def log_prob(indices: torch.Tensor) -> torch.Tensor:
            return sum(lp[indices[:, j]] for j, lp in enumerate(logp))

        first = self._indices(start)[None]
        draws = [torch.multinomial(0.5 * lp.exp() + 0.5 / len(lp), num_samples, replacement=True, generator=generator)
                 for lp in logp]
        candidates = torch.cat([first, self._greedy_repair(first, logp, distance), torch.stack(draws, 1)])
        archs = [self._arch(c, start) for c in candidates]
        usable = torch.ones(len(archs), dtype=torch.bool)
        if simplify is not None:
            archs = [simplify(a) for a in archs]
            usable = torch.tensor([a is not None for a in archs])
            archs = [a if a is not None else start for a in archs]
        counts = self._counts(torch.stack([self._indices(a) for a in archs]))
        gap = distance(counts)
        score = log_prob(candidates) - gap * 1e12                     # inside the window first, then most probable
        score[~usable] = -math.inf
        best = int(torch.argmax(score))                              # all -inf: the first, ``start``
        return archs[best], int(round(float(counts[best]))), bool(gap[best] == 0)

    def _arch(self, indices: torch.Tensor, start: Mapping[str, object]) -> dict:
        return {**start, **{lab: self.choices[lab][int(i)] for lab, i in zip(self.labels, indices)}}

    def _greedy_repair(self, arch: torch.Tensor, logp: list, distance) -> torch.Tensor:
        while float(gap := distance(self._counts(arch))[0]) > 0:
            moves = [(j, i) for j, lab in enumerate(self.labels) for i in range(len(self.choices[lab]))]
            trials = arch.repeat(len(moves), 1)
            for row, (j, i) in enumerate(moves):
                trials[row, j] = i
            gain = gap - distance(self._counts(trials))
            cost = torch.tensor([float(logp[j][arch[0, j]] - logp[j][i]) for j, i in moves], dtype=torch.float64)
            if float(gain.max()) <= 0:
                break
            rate = torch.where(gain > 0, cost / gain.clamp_min(1e-9), torch.full_like(cost, float('inf')))
            arch = trials[int(torch.argmin(rate))][None]
        return arch


def parse_budget(param_budget: int | float | Sequence[float] | None) -> tuple[float, float] | None:
    """``None`` | upper bound | ``(lower, upper)`` -> ``(lower, upper)``; raises ``ValueError`` on nonsense."""
    if param_budget is None:
        return None
    if isinstance(param_budget, (int, float)) and not isinstance(param_budget, bool):
        lower, upper = 0.0, float(param_budget)
    elif isinstance(param_budget, Sequence) and len(param_budget) == 2:
        lower, upper = (float(v) for v in param_budget)
    else:
        raise ValueError(f'param_budget must be None, an upper bound or a (lower, upper) pair, got {param_budget!r}')
    if upper <= 0 or lower < 0:
        raise ValueError(f'param_budget must be positive, got {param_budget!r}: give a parameter count such as 300000')
    if lower > upper:
        raise ValueError(f'param_budget lower bound {lower:g} is above its upper bound {upper:g}: swap them')
    return lower, upper


def hinge_penalty(expected: torch.Tensor, lower: float, upper: float, unit: float = 1e6) -> torch.Tensor:
    """Spec §6: ``R = (relu(P - U) + relu(L - P)) / unit``, parameters counted in millions by default."""
    return (torch.relu(expected - upper) + torch.relu(lower - expected)) / unit


def warn_outside(params: int, lower: float, upper: float) -> None:
    warnings.warn(f'No architecture found with {lower:g} <= params <= {upper:g}; exporting the closest '
                  f'({params} parameters). Widen param_budget or search longer.', RuntimeWarning)
