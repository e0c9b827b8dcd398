"""The ZO-DARTS++ size-variable space (spec §2-§3): operations, kernel size, depth and, optionally, width."""
from __future__ import annotations

from typing import Sequence

import nni
from torch import nn
from nni.nas.nn.pytorch import Repeat

from .ops import SIZE_VARIABLE_OPS, Cell, CellNetworkSpace

__all__ = ['SizeVariableSpace']


class SizeVariableSpace(CellNetworkSpace):
    """NAS-Bench-201 skeleton (C=16, three stages at C, 2C, 4C) with one choice set per stage.

    Per stage ``s`` and edge ``i<-j``: ``s{s}_e{i}{j}`` picks one of ``none, skip_connect, nor_conv_1x1,
    kernel_variable_conv, avg_pool_3x3``; ``s{s}_e{i}{j}_k`` picks the kernel-variable conv's size in
    ``kernel_sizes``; ``s{s}_depth`` keeps 1..``max_cells`` cells (``Repeat``); with ``width_multipliers``,
    ``s{s}_width`` scales the stage's channels (off by default, as in the paper). ``kernel_mode='shared'``: the
    kernel sizes are centre crops of one 7x7 weight before one BN; ``'branches'``: the paper's separate convolutions,
    each with its BN, mixed after (see ``ops.kernel_variable_conv``).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, channels: int = 16, max_cells: int = 3,
                 kernel_sizes: Sequence[int] = (7, 5, 3), width_multipliers: Sequence[float] | None = None,
                 track_running_stats: bool = False, kernel_mode: str = 'shared'):
        super().__init__()
        if kernel_mode not in ('shared', 'branches'):
            raise ValueError(f"kernel_mode must be 'shared' or 'branches', got {kernel_mode!r}")
        widths = [channels * 2 ** s for s in range(3)]
        if width_multipliers:
            widths = [nni.choice(f's{s}_width', sorted({max(1, round(w * m)) for m in width_multipliers}))
                      for s, w in enumerate(widths)]
        ops = dict(SIZE_VARIABLE_OPS)
        ops['kernel_variable_conv'] = lambda c, label, track: SIZE_VARIABLE_OPS['kernel_variable_conv'](
            c, label, track, kernel_sizes, kernel_mode)
        self._build_skeleton(in_channels, num_classes, widths)
        self.stages = nn.ModuleList([
            Repeat(lambda _, s=s, w=w: Cell(w, f's{s}', ops, track_running_stats),
                   nni.choice(f's{s}_depth', list(range(1, max_cells + 1))))
            for s, w in enumerate(widths)
        ])
