"""Structural cost of every architecture of a supernet: parameters, FLOPs or latency, as one polynomial.

NNI's ``NumParamsProfiler`` never finishes on a ``Repeat`` of ``LayerChoice`` cells (nni_notes §5.5, bug C)
and its penalty path has no gradient (bug A), so a cost is built structurally, once, from the mutated
supernet as a polynomial in choice indicators::

    cost(arch) = sum_t c_t * prod_{(label, i) in t} 1[arch[label] = i]

A mixed layer multiplies each candidate's polynomial by its indicator, a mixed ``Repeat`` adds block j to
every depth >= j (the depth may be an expression of several labels), a cell adds, for op ``k`` of node
``i``, operation ``o`` on input ``j`` times ``1[input_ik = j] 1[op_ik = o]``, a mixed operation (kernel size,
width) enumerates its options and costs each plain layer, and any other module adds its own cost. What a
module costs is a :class:`UnitCost` (parameters here; FLOPs in ``unit_costs``, latency in ``latency``).
Labels are independent under the relaxation, so the expectation is the same sum with indicators replaced by
probabilities (exact, and differentiable), and for a one-hot architecture it is the cost of ``space.freeze(arch)``.
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Callable, Mapping, Protocol, Sequence

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

__all__ = ['UnitCost', 'ParamCost', 'CostPolynomial', 'ParamPolynomial', 'frozen_model', 'frozen_counter',
           'most_probable_within', 'operation_layer']

Term = frozenset  # of (label, choice index) pairs


class UnitCost(Protocol):
    """What one module costs. ``whole`` (optional) costs a module with no choice inside as one unit; otherwise
    ``own`` costs what a plain module does itself (its children are costed apart)."""
    integral: bool

    def own(self, module: nn.Module) -> float: ...

    def operation(self, module: MixedOperation, arguments: dict) -> float: ...

    def whole(self, module: nn.Module) -> float | None: ...


def operation_layer(module: MixedOperation, arguments: dict) -> nn.Module:
    """The plain layer a mixed operation is for one sample of its arguments (``MixedOperation.freeze`` fails on
    bias-free convolutions in NNI 3.0)."""
    return module.bound_type(**{**module.init_arguments, **arguments})


class ParamCost:
    """Parameter count."""
    integral = True

    def own(self, module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters(recurse=False))

    def operation(self, module: MixedOperation, arguments: dict) -> int:
        with torch.device('meta'):                       # only the shapes count
            return sum(p.numel() for p in operation_layer(module, arguments).parameters())

    def whole(self, module: nn.Module) -> None:
        return None


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


def _has_choice(module: nn.Module) -> bool:
    return any(isinstance(m, BaseSuperNetModule) for m in module.modules())


def _module_polynomial(module: nn.Module, labels: Mapping[str, Categorical], cost: UnitCost) -> dict:
    out: dict = defaultdict(int)
    if isinstance(module, DifferentiableMixedLayer):
        for index, name in enumerate(module.names):
            _add(out, _times(_module_polynomial(module[name], labels, cost), (module.label, index)))
        return out
    if isinstance(module, DifferentiableMixedRepeat):
        blocks = [_module_polynomial(block, labels, cost) for block in module.blocks]
        for sample, factors in _assignments(module.depth_choice.simplify()):
            for block in blocks[:module.depth_choice.freeze(sample)]:
                _add(out, _times_all(block, factors))
        return out
    if isinstance(module, SparseMixedCell):
        for name, child in module.named_children():
            if name not in ('ops', '_arch_alpha'):
                _add(out, _module_polynomial(child, labels, cost))
        for i, ops in enumerate(module.ops, start=module.num_predecessors):
            edges = {(j, o): _module_polynomial(ops[j][name], labels, cost)
                     for j in range(i) for o, name in enumerate(module.op_names)}
            for input_label, op_label in module._slots(i):
                for (j, o), poly in edges.items():
                    _add(out, _times_all(poly, [(input_label, labels[input_label].values.index(j)), (op_label, o)]))
        return out
    if isinstance(module, MixedOperation):
        for sample, factors in _assignments(module.simplify()):
            arguments = {k: v.freeze(sample) for k, v in module.mutable_arguments.items()}
            out[frozenset(factors)] += cost.operation(module, arguments)
        return out
    if isinstance(module, DifferentiableMixedInput):
        return out                                       # chooses among inputs; computes nothing
    if isinstance(module, BaseSuperNetModule):
        raise NotImplementedError(f'{type(module).__name__} is not supported by the structural cost model')
    whole = None if _has_choice(module) else cost.whole(module)
    if whole is not None:
        out[frozenset()] += whole
        return out
    out[frozenset()] += cost.own(module)
    for child in module.children():
        _add(out, _module_polynomial(child, labels, cost))
    return out


def frozen_model(space: nn.Module, device: str | torch.device | None = 'meta') -> Callable[[Mapping[str, object]], nn.Module]:
    """``arch -> space.freeze(arch)`` as a user calls it: on a fresh copy of the space built once from its own
    arguments (a mutated supernet cannot always freeze itself), on ``device`` (``'meta'``: shapes only) where the
    space's constructor allows it, else on the CPU. Meta models are kept per architecture: NNI builds every
    candidate of a space to freeze one (seconds for NASNet), and the cost checks freeze the same ones."""
    args, kwargs = getattr(space, 'trace_args', None), getattr(space, 'trace_kwargs', None)
    fresh = None
    built: dict[str, nn.Module] = {}

    def on_device_if_possible(build):
        if device is None:
            return build()
        try:
            with torch.device(device):
                return build()
        except (RuntimeError, NotImplementedError):     # e.g. ``.item()`` in __init__ (NNI's AutoFormer)
            return build()

    def freeze(arch: Mapping[str, object]) -> nn.Module:
        nonlocal fresh
        key = repr(sorted(arch.items()))
        if key in built:
            return built[key]
        if fresh is None:
            fresh = space if args is None or kwargs is None else on_device_if_possible(lambda: type(space)(*args, **kwargs))
        model = on_device_if_possible(lambda: fresh.freeze(dict(arch)))
        if next((p.is_meta for p in model.parameters()), False):
            built[key] = model
        return model

    return freeze


def frozen_counter(space: nn.Module, freeze: Callable[[Mapping[str, object]], nn.Module] | None = None
                   ) -> Callable[[Mapping[str, object]], int]:
    """``arch -> sum(p.numel())`` of ``space.freeze(arch)`` (``freeze``: a :func:`frozen_model` of ``space``)."""
    freeze = freeze or frozen_model(space)
    return lambda arch: sum(p.numel() for p in freeze(arch).parameters())


class CostPolynomial:
    """A cost of every architecture of a supernet; see the module docstring.

    ``exact`` says whether the polynomial gives what ``space.freeze`` builds (checked, and where NNI's supernet
    differs in a known way fitted, by :meth:`check`); where it does not, a budget is held at export by the
    frozen model's cost (``frozen_count``) while the penalty uses the supernet's.
    """

    exact: bool = True
    frozen_count: Callable[[Mapping[str, object]], float] | None = None

    def __init__(self, supernet: nn.Module, labels: Mapping[str, Categorical], cost: UnitCost):
        self._mutables = dict(labels)
        self.integral = cost.integral
        self._loose_cells = {m.label: m for m in supernet.modules()
                             if isinstance(m, SparseMixedCell) and m.merge_op == 'loose_end'}
        self._set_terms({term: coef for term, coef in _module_polynomial(supernet, labels, cost).items() if coef})

    def _set_terms(self, poly: dict) -> None:
        self._poly = poly
        self.labels = sorted({lab for term in poly for lab, _ in term})
        self.choices = {lab: list(self._mutables[lab].values) for lab in self.labels}
        self._listed = {lab for lab in self.labels if isinstance(self._mutables[lab], CategoricalMultiple)}   # cell inputs
        self._space = _Labels([self])
        offsets, offset = {}, 0
        for lab in self.labels:
            offsets[lab] = offset
            offset += len(self.choices[lab])
        one = self._one = offset                         # index of a constant 1 appended to the probabilities
        width = max((len(t) for t in poly), default=0) or 1
        rows = [sorted(offsets[lab] + i for lab, i in term) + [one] * (width - len(term)) for term in poly]
        self._index = torch.tensor(rows, dtype=torch.long).view(len(rows), width)
        self._coef = torch.tensor([float(c) for c in poly.values()], dtype=torch.float64)

    def add(self, other: 'CostPolynomial', scale: float = 1.0, shift: float = 0.0) -> None:
        """Every architecture's cost becomes ``cost + scale * other's + shift`` (``other``: the same space's)."""
        poly = defaultdict(int, self._poly)
        _add(poly, other._poly, scale)
        poly[frozenset()] += shift
        self._set_terms({term: coef for term, coef in poly.items() if coef})

    def check(self, count: Callable[[Mapping[str, object]], float], size_labels: Sequence[str] = (),
              num: int = 4, seed: int = 0, max_table: int = 64) -> float:
        """Hold the polynomial against ``count`` (the truth, e.g. :func:`frozen_counter`) on ``num`` random
        architectures. NNI's supernets are not always the frozen networks: a stage adapts shapes for its depth
        choice, and a cell with loose ends outputs every node. So where they differ, the difference is fitted per
        combination of ``size_labels`` as ``b + sum_c a_c used_c`` (``used_c``: the nodes read in loose-end cell
        ``c``, from frozen counts) and kept if it then agrees on every random architecture; otherwise ``exact``
        is False and ``count`` becomes :meth:`true_count`. Returns the largest relative gap left."""
        rng = np.random.RandomState(seed)          # labels sorted: every cost of a space checks the same networks
        archs = [{lab: self._mutables[lab].random(random_state=rng) for lab in sorted(self._mutables)}
                 for _ in range(num)]
        truth = [count(a) for a in archs]
        if self._agrees(archs, truth):
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
            if self._agrees(archs, truth):
                return 0.0
            self._set_terms(original)
        self.exact, self.frozen_count = False, count
        return max(abs(self.count(a) - t) / max(t, 1) for a, t in zip(archs, truth))

    def _agrees(self, archs, truth) -> bool:
        return all(abs(self.count(a) - t) <= 1e-9 * max(abs(t), 1) for a, t in zip(archs, truth))

    def true_count(self, arch: Mapping[str, object]) -> float:
        """``space.freeze(arch)``'s cost: the polynomial's where it is ``exact``."""
        return self.count(arch) if self.exact else self.frozen_count(arch)

    def _flat(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``[..., n_choices + 1]``: the label distributions side by side, then a 1."""
        parts = [torch.as_tensor(probs[lab], dtype=torch.float64) for lab in self.labels]
        ref = parts[0] if parts else torch.ones(1, dtype=torch.float64)
        return torch.cat(parts + [torch.ones_like(ref[..., :1])], dim=-1)

    def expectation(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """E[cost] under independent per-label distributions (tensors, any leading batch shape)."""
        flat = self._flat(probs)
        index = self._index.to(flat.device)
        return (flat[..., index].prod(-1) * self._coef.to(flat.device)).sum(-1)

    def _indices(self, arch: Mapping[str, object]) -> torch.Tensor:
        return self._space.indices(arch)

    def _counts(self, indices: torch.Tensor) -> torch.Tensor:
        """Costs of architectures given as a ``[N, n_labels]`` matrix of choice indices."""
        return self._space.costs(self, indices)

    def count(self, arch: Mapping[str, object]) -> float:
        """Cost of one architecture ``{label: value}`` (NNI's dict format); an int for counts."""
        value = float(self._counts(self._indices(arch)[None])[0])
        return int(round(value)) if self.integral else value

    def smallest(self) -> float:
        """A lower bound of the costs in the space: its fixed part plus every negative coefficient."""
        fixed = self._index.eq(self._one).all(-1)
        value = float(self._coef[fixed].sum() + self._coef[~fixed].clamp(max=0).sum())
        return int(round(value)) if self.integral else value

    def most_probable_within(self, probs, lower: float, upper: float, start, **kwargs) -> tuple[dict, float, bool]:
        """:func:`most_probable_within` for this cost alone: ``(arch, cost, inside)``."""
        arch, costs, inside = most_probable_within([(self, lower, upper)], probs, start, **kwargs)
        return arch, costs[0], inside


class ParamPolynomial(CostPolynomial):
    """Parameter count of every architecture of a supernet (spec §6)."""

    def __init__(self, supernet: nn.Module, labels: Mapping[str, Categorical]):
        super().__init__(supernet, labels, ParamCost())


class _Labels:
    """The labels of several cost polynomials, indexed together: architectures as rows of choice indices."""

    def __init__(self, polys: Sequence[CostPolynomial]):
        self.choices = {lab: p.choices[lab] for p in polys for lab in p.labels}
        self.labels = sorted(self.choices)
        self.listed = set().union(*(p._listed for p in polys))

    def value(self, label: str, value):
        """A one-element list (a cell input, ``n_chosen=1``) stands for its element."""
        if label in self.listed and isinstance(value, (list, tuple)) and len(value) == 1:
            return value[0]
        return value

    def indices(self, arch: Mapping[str, object]) -> torch.Tensor:
        try:
            return torch.tensor([self.choices[lab].index(self.value(lab, arch[lab])) for lab in self.labels],
                                dtype=torch.long)
        except (KeyError, ValueError) as err:
            raise ValueError(f'architecture does not fit the space: {err}') from None

    def arch(self, indices: torch.Tensor, start: Mapping[str, object]) -> dict:
        values = {lab: self.choices[lab][int(i)] for lab, i in zip(self.labels, indices)}
        return {**start, **{lab: [v] if lab in self.listed else v for lab, v in values.items()}}

    def costs(self, poly: CostPolynomial, indices: torch.Tensor) -> torch.Tensor:
        onehot = {lab: F.one_hot(indices[:, j], len(self.choices[lab])).double()
                  for j, lab in enumerate(self.labels) if lab in poly.choices}
        return poly.expectation(onehot) if poly.labels else poly.expectation({}).expand(len(indices))


Constraint = tuple[CostPolynomial, float, float]     # (cost, lower, upper)


def most_probable_within(constraints: Sequence[Constraint], probs: Mapping[str, torch.Tensor],
                         start: Mapping[str, object], *, num_samples: int = 4096,
                         generator: torch.Generator | None = None,
                         simplify: Callable[[dict], dict | None] | None = None,
                         max_checks: int = 16) -> tuple[dict, list[float], bool]:
    """The most probable architecture with ``lower <= cost <= upper`` for every ``(cost, lower, upper)``.

    Candidates: ``start`` (the argmax), a greedy repair of it (the cheapest single changes, in log-probability
    per unit of the summed relative distance to the windows) and ``num_samples`` draws from the distributions
    mixed 1:1 with uniform. ``simplify`` maps a candidate to the network it stands for (costed and returned; the
    candidate's own probability ranks it), or to ``None`` if it is unusable. Returns ``(arch, costs, inside)``;
    with nothing inside, the closest candidate; an unusable candidate only when every one is (then ``start``).
    Where a polynomial is not ``exact``, up to ``max_checks`` of the best-ranked candidates are costed by its
    ``frozen_count`` and the first inside every window wins.
    """
    space = _Labels([c for c, _, _ in constraints])
    logp = [torch.log(torch.as_tensor(probs[lab], dtype=torch.float64).clamp_min(1e-12)) for lab in space.labels]

    def costs(indices: torch.Tensor) -> torch.Tensor:                   # [N, n_constraints]
        return torch.stack([space.costs(c, indices) for c, _, _ in constraints], -1)

    def distance(values: torch.Tensor) -> torch.Tensor:                 # summed, relative to each upper bound
        out = torch.zeros(values.shape[:-1], dtype=torch.float64)
        for k, (_, lower, upper) in enumerate(constraints):
            out = out + torch.clamp(torch.maximum(lower - values[..., k], values[..., k] - upper), min=0) / max(upper, 1e-12)
        return out

    def log_prob(indices: torch.Tensor) -> torch.Tensor:
        return sum(lp[indices[:, j]] for j, lp in enumerate(logp))

    first = space.indices(start)[None]
    draws = [torch.multinomial(0.5 * lp.exp() + 0.5 / len(lp), num_samples, replacement=True, generator=generator)
             for lp in logp]
    repaired = _greedy_repair(first, logp, lambda ix: distance(costs(ix)), space)
    candidates = torch.cat([first, repaired, torch.stack(draws, 1)])
    archs = [space.arch(c, start) for c in candidates]
    usable = torch.ones(len(archs), dtype=torch.bool)
    if simplify is not None:
        archs = [simplify(a) for a in archs]
        usable = torch.tensor([a is not None for a in archs])
        archs = [a if a is not None else start for a in archs]
    values = costs(torch.stack([space.indices(a) for a in archs]))
    gap = distance(values)
    score = log_prob(candidates) - gap * 1e12                            # inside the windows first, then most probable
    score[~usable] = -math.inf

    def rounded(row) -> list[float]:
        return [int(round(float(v))) if c.integral else float(v) for v, (c, _, _) in zip(row, constraints)]

    if all(c.exact for c, _, _ in constraints):
        best = int(torch.argmax(score))                                  # all -inf: the first, ``start``
        return archs[best], rounded(values[best]), bool(gap[best] == 0)
    # A supernet's cost is not its frozen model's: try the best candidates by their frozen costs.
    tried: dict[str, tuple[int, list[float]]] = {}
    for index in torch.argsort(score, descending=True).tolist():
        key = repr(sorted(archs[index].items()))
        if key not in tried and (usable[index] or not tried):
            truth = [c.true_count(archs[index]) for c, _, _ in constraints]
            tried[key] = (index, truth)
            if float(distance(torch.tensor([truth], dtype=torch.float64))[0]) == 0:
                return archs[index], truth, True
            if len(tried) == max_checks:
                break
    index, truth = min(tried.values(), key=lambda t: float(distance(torch.tensor([t[1]], dtype=torch.float64))[0]))
    return archs[index], truth, False


def _greedy_repair(arch: torch.Tensor, logp: list, distance, space: _Labels) -> torch.Tensor:
    while float(gap := distance(arch)[0]) > 0:
        moves = [(j, i) for j, lab in enumerate(space.labels) for i in range(len(space.choices[lab]))]
        trials = arch.repeat(len(moves), 1)
        for row, (j, i) in enumerate(moves):
            trials[row, j] = i
        gain = gap - distance(trials)
        cost = torch.tensor([float(logp[j][arch[0, j]] - logp[j][i]) for j, i in moves], dtype=torch.float64)
        if float(gain.max()) <= 0:
            break
        rate = torch.where(gain > 0, cost / gain.clamp_min(1e-12), torch.full_like(cost, float('inf')))
        arch = trials[int(torch.argmin(rate))][None]
    return arch
