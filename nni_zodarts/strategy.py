"""``ZODartsPP``: the ZO-DARTS++ one-shot strategy for NNI, a subclass of ``nni.nas.strategy.DARTS``."""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from nni.mutable import Categorical, CategoricalMultiple
import nni.nas.strategy  # noqa: F401  (first: NNI 3.0's circular import would leave its own strategies as stubs)
from nni.nas.oneshot.pytorch.strategy import DARTS, no_default_hook
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedRepeat
from nni.nas.oneshot.pytorch.supermodule.operation import NATIVE_MIXED_OPERATIONS, MixedOperation

from .budget import ParamPolynomial, frozen_counter, parse_budget
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
    param_budget
        ``None`` (unconstrained), an upper bound, or a ``(lower, upper)`` window of parameters.
    budget_weight
        The hinge weight is ``budget_weight / tau`` (spec §6: 15).
    budget_unit
        The hinge counts parameters in this unit (spec §6: millions).
    zo_mode
        ``'implicit'``: the paper's estimator with a perturbed weight trajectory (Eq. 5);
        ``'direct'``: two-point ZO on the validation objective with shared weights (forward passes only).
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
        _check(budget_unit > 0, f'budget_unit must be > 0, got {budget_unit}')
        _check(zo_mode in ('implicit', 'direct'), f"zo_mode must be 'implicit' or 'direct', got {zo_mode!r}")
        _check(normalization in ('sparsemax', 'softmax'),
               f"normalization must be 'sparsemax' or 'softmax', got {normalization!r}")
        _check(kwargs.get('penalty') is None, 'ZODartsPP does not take penalty= (it has no gradient in NNI 3.0, '
                                               'bug A); use param_budget= instead')
        super().__init__(arc_learning_rate=arc_learning_rate, gradient_clip_val=gradient_clip_val, **kwargs)
        self.config = ZOConfig(mu, num_directions, arc_update_interval, initial_temperature, temperature_decay,
                               temperature_interval, size_search_start_epoch, parse_budget(param_budget),
                               budget_weight, budget_unit, zo_mode)
        normalizer = TemperedSparsemax if normalization == 'sparsemax' else TemperedSoftmax
        self.normalizer = normalizer(initial_temperature)       # one instance, shared by every super-module
        self.polynomial: ParamPolynomial | None = None
        self.size_labels: set[str] = set()

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
        try:
            self.polynomial = ParamPolynomial(model, labels)
        except NotImplementedError as err:
            _check(self.config.param_budget is None, f'param_budget cannot be used with this space: {err}')
            warnings.warn(f'expected parameter count unavailable: {err}', RuntimeWarning)
        else:
            gap = self.polynomial.check(frozen_counter(model), sorted(self.size_labels))
            if gap > 0 and self.config.param_budget is not None:
                warnings.warn(f'this supernet differs from the frozen models of its space (its parameter count is up to '
                              f'{gap:.0%} off space.freeze\'s): the budget penalty uses the supernet\'s count, the export '
                              'is held to param_budget by space.freeze\'s', RuntimeWarning)
        if self.polynomial is not None and self.polynomial.exact and self.config.param_budget is not None:
            smallest = self.polynomial.smallest()
            _check(self.config.param_budget[1] >= smallest,
                   f'param_budget {self.config.param_budget[1]:,.0f} is below the smallest architecture of this space '
                   f'({smallest:,} parameters): raise it')
        return model

    def configure_oneshot_module(self, training_module) -> ZODartsPPModule:
        return ZODartsPPModule(
            training_module, alphas=self._arch_parameters, size_labels=self.size_labels, normalizer=self.normalizer,
            polynomial=self.polynomial, config=self.config, arc_learning_rate=self.arc_learning_rate,
            gradient_clip_val=self.gradient_clip_val, log_prob_every_n_step=self.log_prob_every_n_step,
            warmup_epochs=self.warmup_epochs)

    # --------------------------------------------------------------------------------------------- results
    def expected_params(self) -> float:
        """Expected parameter count of the current architecture distribution."""
        return float(self.oneshot_module.expected_params())

    def export_probs(self) -> dict[str, dict[Any, float]]:
        """``{label: {value: probability}}`` under the current temperature."""
        return self.oneshot_module.export_probs()


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
