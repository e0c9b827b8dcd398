"""Tiny NNI model spaces that are not in the package, for tests."""
import nni
import torch
from torch import nn
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableBatchNorm2d, MutableConv2d, MutableLinear, Repeat


class Counting(nn.Module):
    """A candidate that counts how often it runs."""

    def __init__(self, channels):
        super().__init__()
        self.conv = MutableConv2d(channels, channels, 3, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


class Block(nn.Module):
    def __init__(self, width, label):
        super().__init__()
        self.op = LayerChoice({'conv': nn.Sequential(nn.ReLU(), MutableConv2d(width, width, nni.choice(f'{label}_k', [3, 1]),
                                                                              padding=nni.choice(f'{label}_k', [3, 1]) // 2)),
                               'skip': nn.Identity(), 'counted': Counting(width)}, label=label)

    def forward(self, x):
        return self.op(x)


class TinySpace(ModelSpace):
    """Width, kernel size, an operation choice and a depth: every kind of mutable ZODartsPP supports."""

    def __init__(self, in_channels=1, num_classes=2, batch_norm=True):
        super().__init__()
        width = nni.choice('width', [4, 8])
        self.stem = nn.Sequential(MutableConv2d(in_channels, width, 3, padding=1),
                                  MutableBatchNorm2d(width) if batch_norm else nn.Identity())
        self.body = Repeat(lambda i: Block(width, 'op'), nni.choice('depth', [1, 2, 3]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = MutableLinear(width, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.body(self.stem(x))))
        return self.fc(x.view(x.size(0), -1))


class InputSpace(ModelSpace):
    """Two branches and an InputChoice between them, plus a kernel size: a space with an InputChoice."""

    def __init__(self):
        super().__init__()
        from nni.nas.nn.pytorch import InputChoice
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = MutableConv2d(1, 4, nni.choice('k', [5, 3]), padding=nni.choice('k', [5, 3]) // 2)
        self.pick = InputChoice(2, 1, label='branch')
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.pick([self.a(x), self.b(x)]).mean((2, 3))
        return self.fc(x)


class FixedSpace(ModelSpace):
    """No choices at all."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 2)

    def forward(self, x):
        return self.fc(x.view(x.size(0), -1))


class CellSpace(ModelSpace):
    """NNI's own ``Cell`` (two nodes, one op each, two predecessors) with a width: 2 x 3 x 2 x 3 x 3 = 108
    architectures, few enough to enumerate."""

    def __init__(self, merge_op='all'):
        super().__init__()
        from nni.nas.nn.pytorch import Cell
        width = nni.choice('width', [2, 4])
        self.stem = MutableConv2d(1, width, 3, padding=1)
        ops = {'conv': lambda node, op, inp: MutableConv2d(width, width, 3, padding=1),
               'wide': lambda node, op, inp: nn.Sequential(MutableConv2d(width, width, 1), MutableBatchNorm2d(width)),
               'skip': lambda node, op, inp: nn.Identity()}
        self.cell = Cell(ops, num_nodes=2, num_ops_per_node=1, num_predecessors=2, merge_op=merge_op, label='cell')
        self.fc = MutableLinear(width * 2, 2)

    def forward(self, x):
        x = self.stem(x)
        x = self.cell([x, x]).mean((2, 3))
        return self.fc(x)


class ShapeShiftingSpace(ModelSpace):
    """A space whose frozen models are not its supernet: choosing ``op`` 1 (no weights) widens a layer after it,
    which only the frozen model sees (its ``freeze`` builds the space again under the architecture, as NNI's
    NDS spaces do). Frozen: ``op`` 0 has 20 + 30 + 10 = 60 parameters, ``op`` 1 has 0 + 30 + 60 = 90."""

    def __init__(self):
        super().__init__()
        from nni.nas.space import current_model
        arch = current_model()
        wide = isinstance(arch, dict) and arch.get('op') == 1
        self.op = LayerChoice([nn.Linear(4, 4), nn.Identity()], label='op')
        self.head = nn.Linear(4, 6)
        self.extra = nn.Linear(4, 12 if wide else 2)

    def freeze(self, sample):
        from nni.nas.space import model_context
        with model_context(sample):
            return ShapeShiftingSpace()

    def forward(self, x):
        x = self.op(x)
        return self.head(x) + self.extra(x).sum(1, keepdim=True)
