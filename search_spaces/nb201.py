"""The ZO-DARTS+ space (spec §2): NAS-Bench-201's five operations, one cell shared by all nine cells."""
from __future__ import annotations

from torch import nn

from .ops import NB201_OPS, Cell, CellNetworkSpace

__all__ = ['NB201Space']


class NB201Space(CellNetworkSpace):
    """NAS-Bench-201 skeleton (C=16, ``cells_per_stage`` cells per stage); edge ``i<-j`` of every cell is
    ``cell_e{i}{j}`` in ``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, channels: int = 16, cells_per_stage: int = 3,
                 track_running_stats: bool = False):
        super().__init__()
        widths = [channels * 2 ** s for s in range(3)]
        self._build_skeleton(in_channels, num_classes, widths)
        self.stages = nn.ModuleList([
            nn.Sequential(*[Cell(w, 'cell', NB201_OPS, track_running_stats) for _ in range(cells_per_stage)])
            for w in widths
        ])
