"""Building blocks shared by the NAS-Bench-201-style spaces (spec §2): cell operations, cell, reduction, head.

A layer whose sizes are ``nni.choice`` values is NNI's ``Mutable*`` layer (DARTS mixes it by weight
slicing, ``space.freeze`` builds the plain layer); otherwise it is the plain ``torch.nn`` layer.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import nni
import torch
import torch.nn.functional as F
from torch import nn
from nni.mutable import Mutable
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableBatchNorm2d, MutableConv2d, MutableLinear, ParametrizedModule
from nni.nas.oneshot.pytorch.supermodule.operation import MixedOperation

EDGES = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]      # (to, from), NAS-Bench-201 order (spec §2)


def _cells(arch: dict) -> dict[str, dict[tuple[int, int], str]]:
    """``{prefix: {(to, from): op}}`` for every complete six-edge cell (``{prefix}_e{to}{from}`` labels) in ``arch``."""
    cells: dict = {}
    for label, value in arch.items():
        prefix, _, edge = label.rpartition('_e')
        if prefix and len(edge) == 2 and edge.isdigit():
            cells.setdefault(prefix, {})[(int(edge[0]), int(edge[1]))] = value
    return {prefix: edges for prefix, edges in cells.items() if set(edges) == set(EDGES)}


def _reached(edges: dict[tuple[int, int], str]) -> set[int]:
    """Nodes a path of non-``none`` edges reaches from the input node 0."""
    reached = {0}
    for i, j in EDGES:                                   # EDGES lists every node's inputs before the node's outputs
        if j in reached and edges[i, j] != 'none':
            reached.add(i)
    return reached


def dead_cells(arch: dict) -> list[str]:
    """Cell prefixes (e.g. ``s1``) in ``arch`` whose output node no path of non-``none`` edges reaches from the
    input. Such a cell outputs zeros, so the network predicts one constant: the authors' ``checkNone`` rejects
    these architectures and samples again (spec §8)."""
    return [prefix for prefix, edges in _cells(arch).items() if 3 not in _reached(edges)]


def prune_dead_edges(arch: dict) -> dict:
    """``arch`` with every edge that lies on no input-to-output path of non-``none`` edges set to ``none``: the
    authors' ``checkNone`` simplification (spec §8). Such an edge reads a node that is always zero (ReLU-Conv-BN
    of a constant is zero) or feeds a node the output never reads, so the network computes the same function
    with fewer parameters; a dead cell becomes all ``none``."""
    arch = dict(arch)
    for prefix, edges in _cells(arch).items():
        forward = _reached(edges)
        backward = {3}
        for i, j in reversed(EDGES):                     # every node's outputs before the node's inputs
            if i in backward and edges[i, j] != 'none':
                backward.add(j)
        arch.update({f'{prefix}_e{i}{j}': 'none' for (i, j), op in edges.items()
                     if op != 'none' and not (j in forward and i in backward)})
    return arch


def most_probable_alive(arch: dict, probs: dict[str, dict]) -> dict:
    """``arch`` with every dead cell mended the most probable way: of the cell's ``none`` edges, the set whose
    switch to their most probable other operation makes the output reachable at the least loss of probability
    (``probs``: ``{label: {value: p}}``, as ``export_probs``). The argmax form of the authors' checkNone."""
    arch = dict(arch)
    for prefix in dead_cells(arch):
        nones = [lab for lab in (f'{prefix}_e{i}{j}' for i, j in EDGES) if arch.get(lab) == 'none']
        other = {lab: max((v for v in probs[lab] if v != 'none'), key=probs[lab].get) for lab in nones}
        cost = {lab: math.log(max(probs[lab]['none'], 1e-12) / max(probs[lab][other[lab]], 1e-12)) for lab in nones}
        switches = (s for r in range(1, len(nones) + 1) for s in itertools.combinations(nones, r))
        alive = (s for s in switches if prefix not in dead_cells({**arch, **{lab: other[lab] for lab in s}}))
        arch.update({lab: other[lab] for lab in min(alive, key=lambda s: sum(cost[lab] for lab in s))})
    return arch


def _mutable(*args) -> bool:
    return any(isinstance(a, Mutable) for a in args)


def conv2d(c_in, c_out, kernel_size, stride=1, padding=0, bias=True) -> nn.Module:
    layer = MutableConv2d if _mutable(c_in, c_out, kernel_size, padding) else nn.Conv2d
    return layer(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=bias)


def batchnorm2d(channels, affine=True, track_running_stats=True) -> nn.Module:
    layer = MutableBatchNorm2d if _mutable(channels) else nn.BatchNorm2d
    return layer(channels, affine=affine, track_running_stats=track_running_stats)


def linear(c_in, c_out) -> nn.Module:
    return (MutableLinear if _mutable(c_in, c_out) else nn.Linear)(c_in, c_out)


class Zero(nn.Module):
    """The ``none`` operation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv(k, 'same' padding, bias) -> BN(affine=False): a cell convolution (spec §2)."""

    def __init__(self, channels, kernel_size, track_running_stats: bool = False):
        super().__init__(nn.ReLU(), conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=True),
                         batchnorm2d(channels, affine=False, track_running_stats=track_running_stats))


class AvgPool3x3(nn.Module):
    """``AvgPool2d(3, 1, 1, count_include_pad=False)`` as a depthwise box filter over the count of valid
    pixels: the same numbers, several times faster on CPU, where ``avg_pool2d`` costs as much as a 7x7 conv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():                 # the plain op exports; the data-dependent kernel does not
            return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        channels, (h, w) = x.size(1), x.shape[-2:]
        box = x.new_ones(channels, 1, 3, 3)
        count = F.conv2d(x.new_ones(1, 1, h, w), box[:1], padding=1)
        return F.conv2d(x, box, padding=1, groups=channels) / count


def avg_pool_3x3() -> nn.Module:
    return AvgPool3x3()


OpFactory = Callable[[object, str, bool], nn.Module]   # (channels, edge label, track_running_stats) -> module

NB201_OPS: dict[str, OpFactory] = {
    'none': lambda c, label, track: Zero(),
    'skip_connect': lambda c, label, track: nn.Identity(),
    'nor_conv_1x1': lambda c, label, track: ReLUConvBN(c, 1, track),
    'nor_conv_3x3': lambda c, label, track: ReLUConvBN(c, 3, track),
    'avg_pool_3x3': lambda c, label, track: avg_pool_3x3(),
}


def kernel_variable_conv(channels, label: str, track: bool, kernel_sizes=(7, 5, 3), mode: str = 'shared') -> nn.Module:
    """ZO-DARTS++'s kernel-variable conv. ``'shared'``: one 7x7 weight whose centre crops are the 5x5 and 3x3
    kernels, mixed before one BN; ``'branches'`` (the paper's): a ReLU-Conv-BN branch per kernel size, mixed after
    their BNs (:class:`KernelBranches`). Either freezes to one ReLU-Conv(k)-BN."""
    kernel = nni.choice(f'{label}_k', list(kernel_sizes))
    if mode == 'branches':
        return KernelBranches(channels=channels, kernel_size=kernel, track_running_stats=track)
    return ReLUConvBN(channels, kernel, track)


class KernelBranch(nn.Module):
    """ReLU-Conv(``kernel_size``)-BN: what a kernel-variable conv of ``kernel_mode='branches'`` freezes to."""

    def __init__(self, channels: int, kernel_size: int, track_running_stats: bool = False):
        super().__init__()
        self.branch = ReLUConvBN(channels, kernel_size, track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x)


class KernelBranches(ParametrizedModule, KernelBranch, wraps=KernelBranch):
    """:class:`KernelBranch` with ``kernel_size`` a choice: in a one-shot supernet :class:`MixedKernelBranches` holds
    one branch per size (the paper's separate 7x7/5x5/3x3 convolutions, each with its BN)."""


class MixedKernelBranches(MixedOperation, KernelBranch):
    """:class:`KernelBranches` in a one-shot supernet: ``sum_k p_k branch_k(x)`` over the sizes the strategy's
    policy passes (one size: that branch alone). Installed by :meth:`CellNetworkSpace.extra_oneshot_hooks`."""
    bound_type = KernelBranches
    argument_list = ['kernel_size']

    def super_init_argument(self, name, value_choice):
        return max(value_choice.grid())

    def __post_init__(self) -> None:
        channels, track = self.init_arguments['channels'], self.init_arguments['track_running_stats']
        del self.branch
        self.branches = nn.ModuleDict({str(k): ReLUConvBN(channels, k, track)
                                       for k in self.mutable_arguments['kernel_size'].grid()})

    def forward_with_args(self, kernel_size, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(kernel_size, dict):
            return self.branches[str(kernel_size)](x)
        out = 0
        for k, weight in kernel_size.items():
            out = out + weight * self.branches[str(k)](x)
        return out

    def freeze_weight(self, kernel_size, **kwargs) -> dict:
        return {f'branch.{name}': t for name, t in self.branches[str(kernel_size)].state_dict().items()}


SIZE_VARIABLE_OPS: dict[str, OpFactory] = {
    'none': NB201_OPS['none'],
    'skip_connect': NB201_OPS['skip_connect'],
    'nor_conv_1x1': NB201_OPS['nor_conv_1x1'],
    'kernel_variable_conv': kernel_variable_conv,
    'avg_pool_3x3': NB201_OPS['avg_pool_3x3'],
}


class Cell(nn.Module):
    """NAS-Bench-201 cell: 4 nodes, ``node_i = sum_{j<i} op_{i<-j}(node_j)``; edge ``i<-j`` is labelled
    ``{prefix}_e{i}{j}``, so cells built with one prefix share their choices."""

    def __init__(self, channels, prefix: str, ops: dict[str, OpFactory], track_running_stats: bool = False):
        super().__init__()
        self.edges = nn.ModuleDict({
            f'{i}{j}': LayerChoice({name: make(channels, f'{prefix}_e{i}{j}', track_running_stats)
                                    for name, make in ops.items()}, label=f'{prefix}_e{i}{j}')
            for i, j in EDGES
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for i in range(1, 4):
            nodes.append(sum(self.edges[f'{i}{j}'](nodes[j]) for j in range(i)))
        return nodes[3]


class ResNetReduction(nn.Module):
    """Fixed stride-2 residual block between stages (spec §2): ReLU-Conv3x3(s2)-BN -> ReLU-Conv3x3-BN,
    shortcut AvgPool2x2 -> Conv1x1."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv_a = nn.Sequential(nn.ReLU(), conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), batchnorm2d(c_out))
        self.conv_b = nn.Sequential(nn.ReLU(), conv2d(c_out, c_out, 3, padding=1, bias=False), batchnorm2d(c_out))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class Head(nn.Module):
    """BN -> ReLU -> global average pool -> Linear. ``view`` rather than ``flatten`` (nni_notes §2.5)."""

    def __init__(self, channels, num_classes: int):
        super().__init__()
        self.bn = batchnorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(x)))
        return self.classifier(x.view(x.size(0), -1))


def stem(in_channels: int, channels) -> nn.Module:
    return nn.Sequential(conv2d(in_channels, channels, 3, padding=1, bias=False), batchnorm2d(channels))


class CellNetworkSpace(ModelSpace):
    """The NAS-Bench-201 skeleton (spec §2): stem, three stages of cells with a residual reduction between
    them, head. Subclasses fill ``self.stem``, ``self.stages`` (3 modules), ``self.reductions`` (2), ``self.head``.

    It offers the two architecture hooks ``ZODartsPP`` calls on a space that has them (the authors' checkNone):
    ``mend_architecture`` (the argmax with every dead cell made live) and ``canonical_architecture`` (the network
    an architecture stands for, dead edges pruned; ``None`` if a cell is dead).
    """

    @classmethod
    def extra_oneshot_hooks(cls, strategy) -> list:
        """NNI's one-shot strategies mix :class:`KernelBranches` with :class:`MixedKernelBranches`."""
        return [MixedKernelBranches.mutate]

    @staticmethod
    def mend_architecture(arch: dict, probs: dict[str, dict]) -> dict:
        return prune_dead_edges(most_probable_alive(arch, probs))

    @staticmethod
    def canonical_architecture(arch: dict) -> dict | None:
        return None if dead_cells(arch) else prune_dead_edges(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.reductions):
                x = self.reductions[i](x)
        return self.head(x)

    def _build_skeleton(self, in_channels: int, num_classes: int, widths: list) -> None:
        self.stem = stem(in_channels, widths[0])
        self.reductions = nn.ModuleList([ResNetReduction(a, b) for a, b in zip(widths, widths[1:])])
        self.head = Head(widths[-1], num_classes)
