"""NNI's differentiable super-modules, changed in one way: candidates whose weight is exactly 0 do not run.

Sparsemax (spec §3) gives exact zeros, and its Jacobian is zero outside the support, so skipping those
candidates changes neither the output nor any gradient; it is where sparsemax pays off in speed. One difference
from running them: a skipped candidate's weights get no gradient at all, so SGD leaves them alone (no weight decay,
no momentum) until they re-enter the support, where the authors' dense supernet decays them with a zero gradient.
With a single candidate left at weight 1 the op runs as the plain candidate (the Jacobian is zero there too).
Each class is a drop-in subclass, installed by :meth:`ZODartsPP.default_mutation_hooks`.
"""
from __future__ import annotations

from typing import Any

import torch
from nni.mutable import Categorical
from nni.nas.oneshot.pytorch.supermodule._expression_utils import traverse_all_options, weighted_sum
from nni.nas.oneshot.pytorch.supermodule.differentiable import (
    DifferentiableMixedInput, DifferentiableMixedLayer, DifferentiableMixedRepeat, MixedOpDifferentiablePolicy,
)

__all__ = ['SparseMixedLayer', 'SparseMixedInput', 'SparseMixedRepeat', 'SparseMixedOpPolicy', 'nonzero_options', 'mix']


def nonzero_options(options: list[tuple[Any, torch.Tensor]]) -> list[tuple[Any, torch.Tensor]]:
    """Keep the ``(option, weight)`` pairs whose weight is not exactly zero (one device sync for all)."""
    if not options:
        return options
    keep = (torch.stack([w for _, w in options]) != 0).tolist()
    return [ow for ow, k in zip(options, keep) if k]


def mix(items: list, weights: list[torch.Tensor]):
    """``sum_i w_i * item_i``; tensors take a direct path, anything else NNI's ``weighted_sum``."""
    if not all(isinstance(item, torch.Tensor) for item in items):
        return weighted_sum(items, weights)
    out = items[0] * weights[0]
    for item, w in zip(items[1:], weights[1:]):
        out = out + item * w
    return out


class SparseMixedLayer(DifferentiableMixedLayer):
    """:class:`~nni.nas.nn.pytorch.LayerChoice` as ``sum_i p_i op_i(x)`` over the candidates with ``p_i != 0``."""

    def forward(self, *args, **kwargs):
        weights = self._softmax(self._arch_alpha)
        alive = nonzero_options(list(zip(self.names, weights)))
        return mix([self[name](*args, **kwargs) for name, _ in alive], [w for _, w in alive])


class SparseMixedInput(DifferentiableMixedInput):
    """:class:`~nni.nas.nn.pytorch.InputChoice` as a weighted sum over the inputs with non-zero weight."""

    def forward(self, inputs):
        weights = self._softmax(self._arch_alpha)
        alive = nonzero_options(list(zip(inputs, weights)))
        return mix([x for x, _ in alive], [w for _, w in alive])


class SparseMixedRepeat(DifferentiableMixedRepeat):
    """:class:`~nni.nas.nn.pytorch.Repeat`: blocks beyond the deepest depth with non-zero weight are not run."""

    def forward(self, x):
        weights = {label: self._softmax(alpha) for label, alpha in self._arch_alpha.items()}
        depth_weights = dict(nonzero_options(traverse_all_options(self.depth_choice, weights=weights)))
        outputs, output_weights = [], []
        for depth, block in enumerate(self.blocks, start=1):
            if depth > max(depth_weights):
                break
            x = block(x)
            if depth in depth_weights:
                outputs.append(x)
                output_weights.append(depth_weights[depth])
        return mix(outputs, output_weights)


class SparseMixedOpPolicy(MixedOpDifferentiablePolicy):
    """Mixed-operation arguments (kernel size, width) as a distribution over the options with non-zero weight.

    A plain :class:`~nni.mutable.Categorical` argument takes a fast path around NNI's option traversal.
    """

    def forward_argument(self, operation, name: str) -> Any:
        if name not in operation.mutable_arguments:
            return operation.init_arguments[name]
        expr = operation.mutable_arguments[name]
        if isinstance(expr, Categorical):
            options = list(zip(expr.values, operation._softmax(operation._arch_alpha[expr.label])))
        else:
            weights = {label: operation._softmax(alpha) for label, alpha in operation._arch_alpha.items()}
            options = traverse_all_options(expr, weights=weights)
        alive = nonzero_options(options)
        if len(alive) == 1:
            return alive[0][0]
        return dict(alive)
