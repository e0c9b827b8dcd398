"""NNI's differentiable super-modules, changed in one way: candidates whose weight is exactly 0 do not run.

Sparsemax (spec §3) gives exact zeros, and its Jacobian is zero outside the support, so skipping those
candidates changes neither the output nor any gradient; it is where sparsemax pays off in speed. One difference
from running them: a skipped candidate's weights get no gradient at all, so SGD leaves them alone (no weight decay,
no momentum) until they re-enter the support, where the authors' dense supernet decays them with a zero gradient.
With a single candidate left at weight 1 the op runs as the plain candidate (the Jacobian is zero there too).
Each class is a drop-in subclass, installed by :meth:`ZODartsPP.default_mutation_hooks`.

One more: :class:`SparseMixedCell` relaxes NNI's ``Cell`` over the cell's own labels (``{cell}/op_{i}_{k}`` and
``{cell}/input_{i}_{k}``, the labels ``space.freeze`` takes) where NNI's ``DifferentiableMixedCell`` keeps private
per-edge alphas that no label of the space names; so a cell is searched, annealed, costed and exported like any
other choice.
"""
from __future__ import annotations

from typing import Any

import torch
from nni.mutable import Categorical, CategoricalMultiple
from nni.nas.nn.pytorch.cell import preprocess_cell_inputs
from nni.nas.oneshot.pytorch.supermodule._expression_utils import traverse_all_options, weighted_sum
from nni.nas.oneshot.pytorch.supermodule.differentiable import (
    DifferentiableMixedInput, DifferentiableMixedLayer, DifferentiableMixedRepeat, MixedOpDifferentiablePolicy,
)
from nni.nas.oneshot.pytorch.supermodule.sampling import PathSamplingCell
from torch import nn

__all__ = ['SparseMixedLayer', 'SparseMixedInput', 'SparseMixedRepeat', 'SparseMixedOpPolicy', 'SparseMixedCell',
           'nonzero_options', 'mix']


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


class SparseMixedCell(PathSamplingCell):
    """:class:`~nni.nas.nn.pytorch.Cell` relaxed over its own labels: op ``k`` of node ``i`` reads input ``j`` with
    probability ``q_ik(j)`` and is operation ``o`` with probability ``p_ik(o)``, so node ``i`` is
    ``sum_{j,o} (sum_k q_ik(j) p_ik(o)) op_ijo(x_j)``, every pair of non-zero weight run once. Like NNI's
    differentiable cell, it outputs every node (``loose_end`` cells as ``all``; ``space.freeze`` builds the real one).
    """

    def __init__(self, op_factory, num_nodes, num_ops_per_node, num_predecessors, preprocessor, postprocessor,
                 concat_dim, memo, mutate_kwargs, label):
        super().__init__(op_factory, num_nodes, num_ops_per_node, num_predecessors, preprocessor, postprocessor,
                         concat_dim, memo, mutate_kwargs, label)
        self._softmax = mutate_kwargs.get('softmax', nn.Softmax(-1))
        self._arch_alpha = nn.ParameterDict({label: memo[label] for i in self.nodes
                                             for pair in self._slots(i) for label in pair})

    merge_op: str = 'all'       # the frozen cell's: 'loose_end' outputs only the nodes no op reads

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if 'softmax' in mutate_kwargs:                   # differentiable strategies only
            cell = super().mutate(module, name, memo, mutate_kwargs)
            if cell is not None:
                cell.merge_op = module.merge_op
            return cell

    def arch_parameters(self):
        return list(self._arch_alpha.values())

    @property
    def nodes(self) -> range:
        """The indices of the cell's computed nodes (after its ``num_predecessors`` inputs)."""
        return range(self.num_predecessors, self.num_predecessors + self.num_nodes)

    def _slots(self, i: int) -> list[tuple[str, str]]:
        return [(f'{self.label}/input_{i}_{k}', f'{self.label}/op_{i}_{k}') for k in range(self.num_ops_per_node)]

    def resample(self, memo):
        return {}

    def export(self, memo):
        """Argmax of each label: ``op`` an operation name, ``input`` a one-element list (``n_chosen=1``)."""
        out, specs = {}, self.simplify()
        for label, alpha in self._arch_alpha.items():
            if label not in memo:
                value = specs[label].values[int(torch.argmax(alpha))]
                out[label] = [value] if isinstance(specs[label], CategoricalMultiple) else value
        return out

    def export_probs(self, memo):
        specs = self.simplify()
        return {label: dict(zip(specs[label].values, self._softmax(alpha).detach().cpu().tolist()))
                for label, alpha in self._arch_alpha.items() if label not in memo}

    def forward(self, *inputs):
        processed = preprocess_cell_inputs(self.num_predecessors, *inputs)
        states = self.preprocessor(processed)
        for i, ops in enumerate(self.ops, start=self.num_predecessors):
            pair = 0
            for input_label, op_label in self._slots(i):
                pair = pair + self._softmax(self._arch_alpha[input_label])[:, None] * self._softmax(self._arch_alpha[op_label])
            terms = [(ops[j][name], states[j], pair[j, o]) for j in range(i) for o, name in enumerate(self.op_names)]
            alive = nonzero_options([((op, x), w) for op, x, w in terms])
            states.append(mix([op(x) for (op, x), _ in alive], [w for _, w in alive]))
        return self.postprocessor(torch.cat(states[self.num_predecessors:], self.concat_dim), processed)
