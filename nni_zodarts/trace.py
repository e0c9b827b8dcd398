"""One forward pass of a supernet with every candidate running: each module's inputs and FLOPs, for the costs
that depend on shapes (``flops``, ``latency``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['SupernetTrace', 'trace_supernet', 'count_flops', 'resized_inputs']


@dataclass
class SupernetTrace:
    names: dict[nn.Module, str]          # each module's name (the root's class name, then its path)
    inputs: dict[nn.Module, tuple]       # the arguments of its first call (modules that ran)
    flops: dict[nn.Module, int]          # FLOPs of all its calls, children included

    def own_flops(self, module: nn.Module) -> int:
        """What ``module`` computes itself, its children's FLOPs taken out."""
        return self.flops.get(module, 0) - sum(self.flops.get(child, 0) for child in module.children())


def count_flops(module: nn.Module, *args) -> int:
    """``torch.utils.flop_counter.FlopCounterMode``'s total for one call (works on the meta device)."""
    with FlopCounterMode(display=False) as counter:
        module(*args)
    return counter.get_total_flops()


@torch.no_grad()
def trace_supernet(supernet: nn.Module, alphas: Sequence[torch.Tensor], input_shape: Sequence[int]) -> SupernetTrace:
    """Run ``supernet`` in eval mode on one zero input of ``input_shape`` (no batch dimension) with every alpha
    at 0, so that every candidate runs (uniform under sparsemax and softmax alike); alphas and modes are restored."""
    saved = [a.detach().clone() for a in alphas]
    modes = {m: m.training for m in supernet.modules()}
    inputs: dict[nn.Module, tuple] = {}

    def remember(module, args):
        inputs.setdefault(module, tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args))

    handles = [m.register_forward_pre_hook(remember) for m in supernet.modules()]
    device = next((p.device for p in supernet.parameters()), torch.device('cpu'))
    try:
        for a in alphas:
            a.zero_()
        supernet.eval()
        with FlopCounterMode(display=False) as counter:
            supernet(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
        for a, s in zip(alphas, saved):
            a.copy_(s)
        for m, training in modes.items():
            m.training = training
    root = type(supernet).__name__                       # FlopCounterMode's names (torch's ModuleTracker)
    names = {m: f'{root}.{name}' if name else root for name, m in supernet.named_modules()}
    counts = counter.get_flop_counts()
    return SupernetTrace(names, inputs, {m: sum(counts.get(name, {}).values()) for m, name in names.items()})


def resized_inputs(layer: nn.Module, args: tuple, device: str | torch.device) -> tuple:
    """Zero inputs shaped like ``args`` (a mixed operation's supernet inputs, at its widest) with the feature
    dimensions ``layer`` (one sample of it) reads."""
    shapes = [list(a.shape) if isinstance(a, torch.Tensor) else None for a in args]
    if isinstance(layer, nn.modules.conv._ConvNd):
        shapes[0][1] = layer.in_channels
    elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
        shapes[0][1] = layer.num_features
    elif isinstance(layer, nn.Linear):
        shapes[0][-1] = layer.in_features
    elif isinstance(layer, nn.LayerNorm):
        shapes[0][len(shapes[0]) - len(layer.normalized_shape):] = layer.normalized_shape
    elif isinstance(layer, nn.MultiheadAttention):
        for k, dim in enumerate((layer.embed_dim, layer.kdim, layer.vdim)[:len(shapes)]):
            shapes[k][-1] = dim
    elif hasattr(layer, 'embed_dim') and shapes and shapes[0]:       # e.g. NNI AutoFormer's token / position adds
        shapes[0][-1] = layer.embed_dim
    return tuple(torch.zeros(s, device=device, dtype=a.dtype) if s is not None else a for s, a in zip(shapes, args))
