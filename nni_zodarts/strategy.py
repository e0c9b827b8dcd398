"""``ZODartsPP``: the ZO-DARTS++ one-shot strategy for NNI, a subclass of ``nni.nas.strategy.DARTS``."""
from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any, Sequence

import torch
from nni.mutable import Categorical, CategoricalMultiple
import nni.nas.strategy  # noqa: F401  (first: NNI 3.0's circular import would leave its own strategies as stubs)
from nni.nas.oneshot.pytorch.strategy import DARTS, no_default_hook
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedRepeat
from nni.nas.oneshot.pytorch.supermodule.operation import NATIVE_MIXED_OPERATIONS, MixedOperation

from .budget import COSTS, Budget, budget_name, parse_budget, select_architecture
from .cost_model import CostPolynomial, ParamPolynomial, frozen_counter, frozen_model
from .flops import FlopsCost, frozen_flops_counter
from .latency import LatencyTable, latency_polynomial, space_key
from .trace import trace_supernet
from .module import ZOConfig, ZODartsPPModule
from .sparsemax import TemperedSoftmax, TemperedSparsemax
from .supermodules import SparseMixedCell, SparseMixedInput, SparseMixedLayer, SparseMixedOpPolicy, SparseMixedRepeat

__all__ = ['ZODartsPP']

HOLD_LOGIT = 1e3   # alpha of a held size choice: one-hot on its largest value under sparsemax and softmax alike


class ZODartsPP(DARTS):
    """ZO-DARTS++ (Xie et al., arXiv:2503.06092): zeroth-order DARTS with tempered sparsemax and a size budget.

    Drop it into ``NasExperiment(space, evaluator, ZODartsPP(...))``. Defaults are the paper's (spec §4-§7).

    Parameters
    ----------
    mu
        Finite-difference step relative to ``||alpha||`` of the searched tables (``mu = 0.005 ||alpha||``).
    num_directions
        Random unit directions per architecture step (q; the paper uses 1).
    arc_learning_rate
        Adam learning rate of alpha (``betas=(0.5, 0.999)``, ``weight_decay=1e-3``).
    arc_update_interval
        T: one architecture step every T weight steps.
    initial_temperature, temperature_decay, temperature_interval
        ``tau = tau0 * a ** floor(epoch / m)``.
    size_search_start_epoch
        Until this epoch, size choices (kernel size, width, ``Repeat`` depth) are held at their largest value
        and only operations (``LayerChoice``/``InputChoice``) are searched; then all are, and the budget is on.
    param_budget, flops_budget, latency_budget
        Each ``None`` (unconstrained), an upper bound, or a ``(lower, upper)`` window: of parameters, of FLOPs of
        one input (as ``torch.utils.flop_counter.FlopCounterMode`` counts them), of predicted milliseconds of one
        call (batch 1). Any combination; the export is the most probable architecture inside all of them.
    budget_weight
        Each hinge's weight is ``budget_weight / tau`` (spec §6: 15).
    budget_unit, flops_unit, latency_unit
        The hinges count parameters, FLOPs and milliseconds in these units (spec §6: parameters in millions).
    input_shape
        One input's shape without the batch dimension, e.g. ``(3, 32, 32)``: with it, E[FLOPs] is reported
        (:meth:`expected`, logged as ``expected_flops``). A FLOPs or latency budget without it takes the shape of
        the evaluator's first training batch.
    latency_table
        A ``latency_table.json`` measured earlier on this space (:attr:`latency_table` after a search, saved by
        the pipeline beside its results); without it the units are measured at the start on ``latency_device``.
    zo_mode
        ``'implicit'``: the paper's estimator with a perturbed weight trajectory (Eq. 5);
        ``'direct'``: two-point ZO on the validation objective with shared weights (forward passes only).
    perturbed_steps
        ``'implicit'`` only: ``W'`` trains beside ``W`` for the last ``k`` weight steps of each window of ``T``
        (``None``: all ``T``, the paper's, as ``nni-zodarts --preset paper`` runs it). The default, 1, halves the
        estimator's cost, keeps the retrained accuracy and makes ``(W' - W) / mu`` a derivative in the first
        windows (docs/RESULTS.md).
    mu_reference
        The norm ``mu`` is relative to: ``'searched'`` (every table perturbed) or ``'operations'`` (the operation
        tables only, the authors' code).
    normalization
        ``'sparsemax'`` or ``'softmax'`` (ablation), both of ``alpha / tau``.
    **kwargs
        Passed to :class:`nni.nas.strategy.DARTS` (``gradient_clip_val``, ``warmup_epochs``, ...).
    """

    def __init__(self, *, mu: float = 0.005, num_directions: int = 1, arc_learning_rate: float = 1.5e-2,
                 arc_update_interval: int = 10, initial_temperature: float = 1.5, temperature_decay: float = 0.75,
                 temperature_interval: int = 5, size_search_start_epoch: int = 20,
                 param_budget: int | float | Sequence[float] | None = None, budget_weight: float = 15.0,
                 budget_unit: float = 1e6, zo_mode: str = 'implicit', normalization: str = 'sparsemax',
                 flops_budget: int | float | Sequence[float] | None = None,
                 latency_budget: float | Sequence[float] | None = None, flops_unit: float = COSTS['flops'][0],
                 latency_unit: float = COSTS['latency'][0], input_shape: Sequence[int] | None = None,
                 latency_table: str | None = None, latency_device: str = 'cpu',
                 perturbed_steps: int | None = 1, mu_reference: str = 'searched',
                 gradient_clip_val: float | None = 5.0, **kwargs: Any):
        _check(mu > 0, f'mu must be > 0 (a step relative to ||alpha||, e.g. 0.005), got {mu}')
        _check(isinstance(num_directions, int) and num_directions >= 1, f'num_directions must be an int >= 1, got {num_directions}')
        _check(arc_learning_rate > 0, f'arc_learning_rate must be > 0, got {arc_learning_rate}')
        _check(isinstance(arc_update_interval, int) and arc_update_interval >= 1,
               f'arc_update_interval must be an int >= 1, got {arc_update_interval}')
        _check(initial_temperature > 0, f'initial_temperature must be > 0, got {initial_temperature}')
        _check(0 < temperature_decay <= 1, f'temperature_decay must be in (0, 1], got {temperature_decay}')
        _check(isinstance(temperature_interval, int) and temperature_interval >= 1,
               f'temperature_interval must be an int >= 1, got {temperature_interval}')
        _check(isinstance(size_search_start_epoch, int) and size_search_start_epoch >= 0,
               f'size_search_start_epoch must be an int >= 0, got {size_search_start_epoch}')
        _check(budget_weight >= 0, f'budget_weight must be >= 0, got {budget_weight}')
        _check(budget_unit > 0 and flops_unit > 0 and latency_unit > 0,
               f'budget units must be > 0, got {budget_unit}, {flops_unit}, {latency_unit}')
        _check(input_shape is None or (len(input_shape) >= 1 and all(isinstance(d, int) and d > 0 for d in input_shape)),
               f'input_shape must be one input\'s shape without the batch dimension, e.g. (3, 32, 32), got {input_shape!r}')
        _check(zo_mode in ('implicit', 'direct'), f"zo_mode must be 'implicit' or 'direct', got {zo_mode!r}")
        _check(perturbed_steps is None or (isinstance(perturbed_steps, int) and 1 <= perturbed_steps <= arc_update_interval),
               f'perturbed_steps must be an int from 1 to arc_update_interval ({arc_update_interval}), got {perturbed_steps!r}')
        _check(mu_reference in ('searched', 'operations'),
               f"mu_reference must be 'searched' or 'operations', got {mu_reference!r}")
        _check(normalization in ('sparsemax', 'softmax'),
               f"normalization must be 'sparsemax' or 'softmax', got {normalization!r}")
        _check(kwargs.get('penalty') is None, 'ZODartsPP does not take penalty= (it has no gradient in NNI 3.0, '
                                               'bug A); use param_budget= instead')
        super().__init__(arc_learning_rate=arc_learning_rate, gradient_clip_val=gradient_clip_val, **kwargs)
        self.config = ZOConfig(mu, num_directions, arc_update_interval, initial_temperature, temperature_decay,
                               temperature_interval, size_search_start_epoch, parse_budget(param_budget),
                               budget_weight, budget_unit, zo_mode, parse_budget(flops_budget, 'flops'),
                               parse_budget(latency_budget, 'latency'), flops_unit, latency_unit, perturbed_steps,
                               mu_reference)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.latency_table: LatencyTable | None = LatencyTable.load(latency_table) if latency_table else None
        self.latency_device = latency_device
        normalizer = TemperedSparsemax if normalization == 'sparsemax' else TemperedSoftmax
        self.normalizer = normalizer(initial_temperature)       # one instance, shared by every super-module
        self.costs: dict[str, CostPolynomial] = {}       # 'params', 'flops', 'latency'
        self.size_labels: set[str] = set()
        self._model = None

    @property
    def polynomial(self) -> ParamPolynomial | None:
        """The parameter count's polynomial (``costs['params']``)."""
        return self.costs.get('params')

    # ------------------------------------------------------------------------------------------ NNI hooks
    def configure_softmax(self) -> TemperedSparsemax:
        return self.normalizer

    def default_mutation_hooks(self):
        return [SparseMixedLayer.mutate, SparseMixedInput.mutate, SparseMixedCell.mutate,
                SparseMixedRepeat.mutate, *[op.mutate for op in NATIVE_MIXED_OPERATIONS], no_default_hook]

    def run_hook(self, hook, name, module, memo):
        if not memo.get('_validated'):
            memo.update(self._arch_parameters)
            memo['_validated'] = True
        return hook(module, name, memo, {'mixed_op_sampling': SparseMixedOpPolicy, 'softmax': self.normalizer})

    def mutate_model(self, model):
        labels = model.simplify()
        for label, mutable in labels.items():
            _check(isinstance(mutable, (Categorical, CategoricalMultiple)),
                   f'ZODartsPP cannot search {label!r} ({type(mutable).__name__}): only categorical choices are '
                   'differentiable; fix it or use a multi-trial strategy for this space')
        model = super().mutate_model(model)
        if not self._arch_parameters:
            raise ValueError('the model space has no choices to search: add a LayerChoice, nni.choice or Repeat')
        held = {id(p) for p in model.parameters()}
        lost = [label for label, alpha in self._arch_parameters.items() if id(alpha) not in held]
        _check(not lost, f'ZODartsPP cannot search {", ".join(lost)}: no differentiable super-module of NNI takes '
                         f'{"this choice" if len(lost) == 1 else "these choices"} (e.g. a constraint or a choice used only '
                         'in Python code); make it fixed or express it as LayerChoice, InputChoice, nni.choice or Repeat')
        self.size_labels = _size_labels(model, labels)
        if self.config.size_search_start_epoch > 0:
            for label in self.size_labels:                # spec §1: largest kernel / width / depth until the phase
                values = labels[label].values
                alpha = self._arch_parameters[label]
                with torch.no_grad():
                    alpha.zero_()[max(range(len(values)), key=values.__getitem__)] = HOLD_LOGIT
        self._model = model
        self._frozen = frozen_model(model)               # meta models, shared by the parameter and FLOPs checks
        with torch.random.fork_rng(devices=[]):    # frozen models built to check the costs draw no search randomness
            self.costs = {}
            try:
                self.costs['params'] = ParamPolynomial(model, labels)
            except NotImplementedError as err:
                _check(not self.config.budgets(), f'budgets cannot be used with this space: {err}')
                warnings.warn(f'expected parameter count unavailable: {err}', RuntimeWarning)
            else:
                self._check_cost('params', frozen_counter(model, self._frozen))
            if self.input_shape is not None:
                self._shape_costs(self.input_shape)
        return model

    def mutate_evaluator(self, evaluator):
        hardware = self.config.flops_budget is not None or self.config.latency_budget is not None
        if self._model is not None and 'flops' not in self.costs and hardware:
            shape = _first_input_shape(evaluator)
            _check(shape is not None, 'flops_budget and latency_budget need the input shape: give '
                                      'ZODartsPP(input_shape=(C, H, W))')
            with torch.random.fork_rng(devices=[]):
                self._shape_costs(shape)
        return super().mutate_evaluator(evaluator)

    def _shape_costs(self, input_shape) -> None:
        """FLOPs (always) and latency (with a latency budget or table) at ``input_shape``, from one traced pass."""
        self.input_shape = tuple(input_shape)
        model, labels = self._model, self._model.simplify()
        measure_latency = self.config.latency_budget is not None or self.latency_table is not None
        if measure_latency:
            model.to(self.latency_table.device if self.latency_table else self.latency_device)
        try:
            trace = trace_supernet(model, list(self._arch_parameters.values()), self.input_shape)
            self.costs['flops'] = CostPolynomial(model, labels, FlopsCost(trace))
        except (NotImplementedError, RuntimeError) as err:
            _check(self.config.flops_budget is None and self.config.latency_budget is None,
                   f'flops_budget and latency_budget cannot be used with this space: {err}')
            warnings.warn(f'expected FLOPs unavailable: {err}', RuntimeWarning)
            return
        self._check_cost('flops', frozen_flops_counter(model, self.input_shape, self._frozen))
        if measure_latency:
            key = space_key(labels, self.input_shape)
            table = self.latency_table or LatencyTable(key, self.latency_device)
            _check(table.space == key, 'latency_table was measured on another space or input shape: drop it to '
                                       'measure this one')
            freeze = frozen_model(model, device=None)
            self.costs['latency'] = latency_polynomial(model, labels, trace, table,
                                                       lambda arch: freeze(arch).to(table.device), self.input_shape)
            self.latency_table = table

    def _check_cost(self, cost: str, truth) -> None:
        """Hold ``costs[cost]`` against the frozen models' ``truth`` and a budget against the space's smallest."""
        gap = self.costs[cost].check(truth, sorted(self.size_labels))
        budget = next((b for b in self.config.budgets() if b.cost == cost), None)
        if gap > 0 and budget is not None:
            warnings.warn(f'this supernet differs from the frozen models of its space (its {COSTS[cost][1]} are up to '
                          f'{gap:.0%} off space.freeze\'s): the budget penalty uses the supernet\'s count, the export '
                          f'is held to {budget_name(cost)} by space.freeze\'s', RuntimeWarning)
        if budget is not None:
            self._refuse_below_smallest(budget)

    def _refuse_below_smallest(self, budget: Budget) -> None:
        """A window no architecture of the space reaches is a user error (where the polynomial is exact)."""
        poly = self.costs[budget.cost]
        if poly.exact:
            smallest = poly.smallest()
            number = (lambda v: f'{v:,.0f}') if poly.integral else (lambda v: f'{v:.3g}')
            _check(budget.upper >= smallest, f'{budget_name(budget.cost)} {number(budget.upper)} is below the smallest '
                   f'architecture of this space ({number(smallest)} {COSTS[budget.cost][1]}): raise it')

    def configure_oneshot_module(self, training_module) -> ZODartsPPModule:
        return ZODartsPPModule(
            training_module, alphas=self._arch_parameters, size_labels=self.size_labels, normalizer=self.normalizer,
            costs=self.costs, config=self.config, arc_learning_rate=self.arc_learning_rate,
            gradient_clip_val=self.gradient_clip_val, log_prob_every_n_step=self.log_prob_every_n_step,
            warmup_epochs=self.warmup_epochs)

    # --------------------------------------------------------------------------------------------- results
    def expected(self, cost: str = 'params') -> float:
        """E[cost] of the current architecture distribution: ``'params'``, ``'flops'`` or ``'latency'`` (ms)."""
        return float(self.oneshot_module.expected(cost))

    def expected_params(self) -> float:
        """Expected parameter count of the current architecture distribution."""
        return self.expected('params')

    def export_probs(self) -> dict[str, dict[Any, float]]:
        """``{label: {value: probability}}`` under the current temperature."""
        return self.oneshot_module.export_probs()

    def costs_of(self, arch: dict[str, Any]) -> dict[str, float]:
        """``{cost: value}`` of ``space.freeze(arch)`` for every cost this space has (latency: predicted ms)."""
        return {cost: poly.true_count(arch) for cost, poly in self.costs.items()}

    def derive(self, param_budget=None, flops_budget=None, latency_budget=None,
               probs: dict[str, dict[Any, float]] | None = None) -> dict[str, Any]:
        """The most probable architecture inside new windows (each as for the constructor), from the search's
        probabilities (or ``probs``, as :meth:`export_probs` gives them): no training, a second or so.

        Call it after a search, or after :meth:`mutate_model` on the space with ``probs`` (``nni-zodarts derive``)."""
        _check(self._model is not None, 'derive needs the searched space: run the search, or call mutate_model first')
        windows = {'params': parse_budget(param_budget), 'flops': parse_budget(flops_budget, 'flops'),
                   'latency': parse_budget(latency_budget, 'latency')}
        for cost, window in windows.items():
            _check(window is None or cost in self.costs, f'this search has no {COSTS[cost][1]} model: '
                   + ('give latency_table= (or latency_budget=) to ZODartsPP' if cost == 'latency' else 'give input_shape='))
        budgets = replace(self.config, param_budget=windows['params'], flops_budget=windows['flops'],
                          latency_budget=windows['latency']).budgets()
        for budget in budgets:
            self._refuse_below_smallest(budget)
        probs = probs if probs is not None else self.export_probs()
        labels = self._model.simplify()
        tensors = {lab: torch.tensor([float(probs[lab][v]) for v in m.values], dtype=torch.float64)
                   for lab, m in labels.items()}
        argmax = {lab: m.values[int(tensors[lab].argmax())] for lab, m in labels.items()}
        argmax = {lab: [v] if isinstance(labels[lab], CategoricalMultiple) else v for lab, v in argmax.items()}
        mend = getattr(self._model, 'mend_architecture', None)
        if mend is not None:
            argmax = mend(argmax, probs)
        return select_architecture(self._model, argmax, tensors, self.costs, budgets)


def _first_input_shape(evaluator) -> tuple[int, ...] | None:
    """One input's shape (no batch dimension) from the evaluator's first training batch, if it has a loader."""
    loader = getattr(evaluator, 'train_dataloaders', None)
    if loader is None:
        return None
    try:
        with torch.random.fork_rng(devices=[]):          # a shuffled loader must not move the search's random stream
            batch = next(iter(loader))
    except (TypeError, StopIteration):
        return None
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    return tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else None


def _size_labels(supernet, labels) -> set[str]:
    """Labels that size an operation (kernel size, width, ``Repeat`` depth) and choose no operation."""
    size, ops = set(), set()
    for module in supernet.modules():
        if isinstance(module, (SparseMixedLayer, SparseMixedInput)):
            ops.add(module.label)
        elif isinstance(module, SparseMixedCell):
            ops.update(module._arch_alpha.keys())
        elif isinstance(module, (DifferentiableMixedRepeat, MixedOperation)):
            size.update(module._arch_alpha.keys())
    return {lab for lab in size - ops if _orderable(labels[lab].values)}


def _orderable(values) -> bool:
    try:
        max(values)
        return True
    except TypeError:
        return False


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
