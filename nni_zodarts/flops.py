"""FLOPs as ``torch.utils.flop_counter.FlopCounterMode`` counts them for one input, structurally (``cost_model``)."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn
from nni.nas.oneshot.pytorch.supermodule.operation import MixedOperation

from .cost_model import frozen_model, operation_layer
from .trace import SupernetTrace, count_flops, resized_inputs

__all__ = ['FlopsCost', 'frozen_flops_counter']


class FlopsCost:
    """FLOPs of one input (batch 1): a plain module's own from the supernet trace, a mixed operation's sample by
    running the plain layer on the meta device at its input shape."""
    integral = True

    def __init__(self, trace: SupernetTrace):
        self.trace = trace
        self._counted: dict[tuple, int] = {}            # many operations share a layer and an input shape

    def own(self, module: nn.Module) -> int:
        return self.trace.own_flops(module)

    def whole(self, module: nn.Module) -> None:
        return None

    def operation(self, module: MixedOperation, arguments: dict) -> int:
        args = self.trace.inputs.get(module)
        if args is None:                                 # never ran
            return 0
        key = (module.bound_type, repr(sorted({**module.init_arguments, **arguments}.items())),
               tuple(tuple(a.shape) if isinstance(a, torch.Tensor) else repr(a) for a in args))
        if key not in self._counted:
            with torch.device('meta'):
                layer = operation_layer(module, arguments).eval()
                try:
                    self._counted[key] = count_flops(layer, *resized_inputs(layer, args, 'meta'))
                except RuntimeError:       # an operation whose inputs we cannot shape; ``check`` will tell
                    self._counted[key] = 0
        return self._counted[key]


def frozen_flops_counter(space: nn.Module, input_shape: Sequence[int],
                         freeze: Callable[[Mapping[str, object]], nn.Module] | None = None
                         ) -> Callable[[Mapping[str, object]], int]:
    """``arch -> FlopCounterMode total of space.freeze(arch)`` on one input of ``input_shape`` (the truth);
    ``freeze``: a meta-device :func:`frozen_model` of ``space`` to share."""
    builders = [freeze or frozen_model(space), frozen_model(space, device=None)]   # meta, or CPU where meta cannot run

    @torch.no_grad()
    def count(arch: Mapping[str, object]) -> int:
        while True:
            model = builders[0](arch).eval()
            device = next((p.device for p in model.parameters()), torch.device('cpu'))
            try:
                return count_flops(model, torch.zeros((1, *input_shape), device=device))
            except (RuntimeError, NotImplementedError):   # e.g. a CPU tensor made in forward (NNI's AutoFormer)
                if device.type != 'meta' or len(builders) == 1:
                    raise
                builders.pop(0)

    return count
