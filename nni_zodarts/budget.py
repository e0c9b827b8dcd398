"""Expected parameter count of a supernet, the budget hinge (spec §6) and budget-feasible export.

NNI's ``NumParamsProfiler`` never finishes on a ``Repeat`` of ``LayerChoice`` cells (nni_notes §5.5, bug C)
and its penalty path has no gradient (bug A), so the count is built structurally, once, from the mutated
supernet as a polynomial in choice indicators::

    params(arch) = sum_t c_t * prod_{(label, i) in t} 1[arch[label] = i]

A mixed layer multiplies each candidate's polynomial by its indicator, a mixed ``Repeat`` adds block j to
every depth >= j (the depth may be an expression of several labels), a cell adds, for op ``k`` of node
``i``, operation ``o`` on input ``j`` times ``1[input_ik = j] 1[op_ik = o]``, a mixed operation (kernel size,
width) enumerates its options and builds each plain layer, and any other module adds its own parameters. Labels are independent under the relaxation, so the
expectation is the same sum with indicators replaced by probabilities (exact, and differentiable), and for a
one-hot architecture it is the parameter count of ``space.freeze(arch)``.
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections import defaultdict
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from nni.mutable import Categorical, CategoricalMultiple
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.differentiable import (
    DifferentiableMixedInput, DifferentiableMixedLayer, DifferentiableMixedRepeat,
)
from nni.nas.oneshot.pytorch.supermodule.operation import MixedOperation

from .supermodules import SparseMixedCell

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


def _add(into: dict, poly: dict, scale: int = 1) -> None:
    for term, coef in poly.items():
        into[term] += scale * coef


def _times_all(poly: dict, factors) -> dict:
    for factor in factors:
        poly = _times(poly, factor)
    return poly


def _assignments(mutables: Mapping[str, Categorical]):
    """Every ``({label: value}, [(label, index), ...])`` over the labels of ``mutables``, in a fixed order."""
    own = sorted(mutables)
    for indices in itertools.product(*(range(len(mutables[lab].values)) for lab in own)):
        yield {lab: mutables[lab].values[i] for lab, i in zip(own, indices)}, list(zip(own, indices))


def _used_nodes(cell: SparseMixedCell, labels: Mapping[str, Categorical]) -> dict:
    """How many of ``cell``'s nodes an op reads: ``sum_n 1 - prod_(slots s after n) (1 - 1[input_s = n])``. A
    ``loose_end`` cell outputs the other nodes, so the frozen network's widths after it depend on this count."""
    out: dict = defaultdict(int)
    for node in cell.nodes:
        unused: dict = defaultdict(int, {frozenset(): 1})
        for later in range(node + 1, cell.nodes.stop):
            for input_label, _ in cell._slots(later):
                _add(unused, _times(unused, (input_label, labels[input_label].values.index(node))), -1)
        out[frozenset()] += 1
        _add(out, unused, -1)
    return out


def _module_polynomial(module: nn.Module, labels: Mapping[str, Categorical]) -> dict:
    out: dict = defaultdict(int)
    if isinstance(module, DifferentiableMixedLayer):
        for index, name in enumerate(module.names):
            _add(out, _times(_module_polynomial(module[name], labels), (module.label, index)))
        return out
    if isinstance(module, DifferentiableMixedRepeat):
        blocks = [_module_polynomial(block, labels) for block in module.blocks]
        for sample, factors in _assignments(module.depth_choice.simplify()):
            for block in blocks[:module.depth_choice.freeze(sample)]:
                _add(out, _times_all(block, factors))
        return out
    if isinstance(module, SparseMixedCell):
        for name, child in module.named_children():
            if name not in ('ops', '_arch_alpha'):
                _add(out, _module_polynomial(child, labels))
        for i, ops in enumerate(module.ops, start=module.num_predecessors):
            edges = {(j, o): _module_polynomial(ops[j][name], labels) for j in range(i) for o, name in enumerate(module.op_names)}
            for input_label, op_label in module._slots(i):
                for (j, o), poly in edges.items():
                    _add(out, _times_all(poly, [(input_label, labels[input_label].values.index(j)), (op_label, o)]))
        return out
    if isinstance(module, MixedOperation):
        for sample, factors in _assignments(module.simplify()):
            # Build the plain layer rather than MixedOperation.freeze, which fails on bias-free convs (NNI 3.0).
            arguments = {**module.init_arguments, **{k: v.freeze(sample) for k, v in module.mutable_arguments.items()}}
            with torch.device('meta'):                   # only the shapes count
                out[frozenset(factors)] += sum(p.numel() for p in module.bound_type(**arguments).parameters())
        return out
    if isinstance(module, DifferentiableMixedInput):
        return out                                       # chooses among inputs; holds no weights
    if isinstance(module, BaseSuperNetModule):
        raise NotImplementedError(f'{type(module).__name__} is not supported by the structural parameter count')
    out[frozenset()] += sum(p.numel() for p in module.parameters(recurse=False))
    for child in module.children():
        _add(out, _module_polynomial(child, labels))
    return out


def frozen_counter(space: nn.Module) -> Callable[[Mapping[str, object]], int]:
    """``arch -> sum(p.numel())`` of ``space.freeze(arch)`` as a user calls it: on a fresh copy of the space built
    once from its own arguments (a mutated supernet cannot always freeze itself), on the meta device (shapes only)
    where the space's constructor allows it."""
    args, kwargs = getattr(space, 'trace_args', None), getattr(space, 'trace_kwargs', None)
    fresh = None

    def on_meta_if_possible(build):
        try:
            with torch.device('meta'):
                return build()
        except (RuntimeError, NotImplementedError):     # e.g. ``.item()`` in __init__ (NNI's AutoFormer)
            return build()

    def count(arch: Mapping[str, object]) -> int:
        nonlocal fresh
        if fresh is None:
            fresh = space if args is None or kwargs is None else on_meta_if_possible(lambda: type(space)(*args, **kwargs))
        model = on_meta_if_possible(lambda: fresh.freeze(dict(arch)))
        return sum(p.numel() for p in model.parameters())

    return count


class ParamPolynomial:
    """Parameter count of every architecture of a supernet; see the module docstring.

    ``exact`` says whether the polynomial counts what ``space.freeze`` builds (checked, and where NNI's supernet
    differs in a known way fitted, by :meth:`check`); where it does not, the budget is held at export by
    ``space.freeze``'s count (``frozen_count``) while the penalty uses the supernet's.
    """

    exact: bool = True
    frozen_count: Callable[[Mapping[str, object]], int] | None = None

    def __init__(self, supernet: nn.Module, labels: Mapping[str, Categorical]):
        self._mutables = dict(labels)
        self._loose_cells = {m.label: m for m in supernet.modules()
                             if isinstance(m, SparseMixedCell) and m.merge_op == 'loose_end'}
        self._set_terms({term: coef for term, coef in _module_polynomial(supernet, labels).items() if coef})

    def _set_terms(self, poly: dict) -> None:
        self._poly = poly
        self.labels = sorted({lab for term in poly for lab, _ in term})
        self.choices = {lab: list(self._mutables[lab].values) for lab in self.labels}
        self._listed = {lab for lab in self.labels if isinstance(self._mutables[lab], CategoricalMultiple)}   # cell inputs
        offsets, offset = {}, 0
        for lab in self.labels:
            offsets[lab] = offset
            offset += len(self.choices[lab])
        one = self._one = offset                         # index of a constant 1 appended to the probabilities
        width = max((len(t) for t in poly), default=0) or 1
        rows = [sorted(offsets[lab] + i for lab, i in term) + [one] * (width - len(term)) for term in poly]
        self._index = torch.tensor(rows, dtype=torch.long).view(len(rows), width)
        self._coef = torch.tensor(list(poly.values()), dtype=torch.float64)

    def check(self, count: Callable[[Mapping[str, object]], int], size_labels: Sequence[str] = (),
              num: int = 4, seed: int = 0, max_table: int = 64) -> float:
        """Hold the polynomial against ``count`` (the truth, e.g. :func:`frozen_counter`) on ``num`` random
        architectures. NNI's supernets are not always the frozen networks: a stage adapts shapes for its depth
        choice, and a cell with loose ends outputs every node. So where they differ, the difference is fitted per
        combination of ``size_labels`` as ``b + sum_c a_c used_c`` (``used_c``: the nodes read in loose-end cell
        ``c``, from frozen counts) and kept if it then agrees on every random architecture; otherwise ``exact``
        is False and ``count`` becomes :meth:`true_count`. Returns the largest relative gap left."""
        rng = np.random.RandomState(seed)
        archs = [{lab: m.random(random_state=rng) for lab, m in self._mutables.items()} for _ in range(num)]
        truth = [count(a) for a in archs]
        if all(self.count(a) == t for a, t in zip(archs, truth)):
            return 0.0
        table = {lab: self._mutables[lab] for lab in sorted(size_labels)}
        if (table or self._loose_cells) and math.prod(len(m.values) for m in table.values()) <= max_table:
            original, corrected = self._poly, defaultdict(int, self._poly)
            used = {label: _used_nodes(cell, self._mutables) for label, cell in self._loose_cells.items()}
            none_read = {lab: [0] for cell in self._loose_cells.values() for i in cell.nodes for lab, _ in cell._slots(i)}
            for sample, factors in _assignments(table):
                base = {**archs[0], **sample, **none_read}
                offset = count(base) - self.count(base)
                corrected[frozenset(factors)] += offset
                for label, cell in self._loose_cells.items():                   # one node read: its slope
                    arch = {**base, cell._slots(cell.nodes[-1])[0][0]: [cell.nodes[0]]}
                    slope = count(arch) - self.count(arch) - offset
                    _add(corrected, _times_all(used[label], factors), slope)
            self._set_terms({term: coef for term, coef in corrected.items() if coef})
            if all(self.count(a) == t for a, t in zip(archs, truth)):
                return 0.0
            self._set_terms(original)
        self.exact, self.frozen_count = False, count
        return max(abs(self.count(a) - t) / max(t, 1) for a, t in zip(archs, truth))

    def true_count(self, arch: Mapping[str, object]) -> int:
        """``space.freeze(arch)``'s parameter count: the polynomial's where it is ``exact``."""
        return self.count(arch) if self.exact else self.frozen_count(arch)

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
            return torch.tensor([self.choices[lab].index(self._value(lab, arch[lab])) for lab in self.labels])
        except (KeyError, ValueError) as err:
            raise ValueError(f'architecture does not fit the space: {err}') from None

    def _value(self, label: str, value):
        """A one-element list (a cell input, ``n_chosen=1``) stands for its element."""
        if label in self._listed and isinstance(value, (list, tuple)) and len(value) == 1:
            return value[0]
        return value

    def _counts(self, indices: torch.Tensor) -> torch.Tensor:
        """Parameter counts of architectures given as a ``[N, n_labels]`` matrix of choice indices."""
        onehot = {lab: F.one_hot(indices[:, j], len(self.choices[lab])).double() for j, lab in enumerate(self.labels)}
        return self.expectation(onehot)

    def count(self, arch: Mapping[str, object]) -> int:
        """Exact parameter count of one architecture ``{label: value}`` (NNI's dict format)."""
        return int(round(float(self._counts(self._indices(arch)[None])[0])))

    def smallest(self) -> int:
        """A lower bound of the parameter counts in the space: its fixed part plus every negative coefficient."""
        fixed = self._index.eq(self._one).all(-1)
        return int(self._coef[fixed].sum() + self._coef[~fixed].clamp(max=0).sum())

    def most_probable_within(self, probs: Mapping[str, torch.Tensor], lower: float, upper: float,
                             start: Mapping[str, object], *, num_samples: int = 4096,
                             generator: torch.Generator | None = None,
                             simplify: Callable[[dict], dict | None] | None = None,
                             max_checks: int = 16) -> tuple[dict, int, bool]:
        """The most probable architecture with ``lower <= params <= upper``.

        Candidates: ``start`` (the argmax), a greedy repair of it (the cheapest single changes, in
        log-probability per parameter, towards the window) and ``num_samples`` draws from the distributions
        mixed 1:1 with uniform. ``simplify`` maps a candidate to the network it stands for (counted and
        returned; the candidate's own probability ranks it), or to ``None`` if it is unusable. Returns
        ``(arch, params, inside)``; with nothing inside, the closest candidate; an unusable candidate only
        when every one is (then ``start``). Where the polynomial is not ``exact``, up to ``max_checks`` of the
        best-ranked candidates are counted by ``frozen_count`` and the first inside the window wins.
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
        if self.exact:
            best = int(torch.argmax(score))                          # all -inf: the first, ``start``
            return archs[best], int(round(float(counts[best]))), bool(gap[best] == 0)
        # The supernet's count is not the frozen model's: try the best candidates by their frozen count.
        tried: dict[str, tuple[int, float]] = {}
        for index in torch.argsort(score, descending=True).tolist():
            key = repr(sorted(archs[index].items()))
            if key not in tried and (usable[index] or not tried):
                params = self.frozen_count(archs[index])
                tried[key] = (index, params)
                if lower <= params <= upper:
                    return archs[index], params, True
                if len(tried) == max_checks:
                    break
        index, params = min(tried.values(), key=lambda t: float(distance(torch.tensor(float(t[1])))))
        return archs[index], params, False

    def _arch(self, indices: torch.Tensor, start: Mapping[str, object]) -> dict:
        values = {lab: self.choices[lab][int(i)] for lab, i in zip(self.labels, indices)}
        return {**start, **{lab: [v] if lab in self._listed else v for lab, v in values.items()}}

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
