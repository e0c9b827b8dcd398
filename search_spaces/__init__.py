"""NNI model spaces for ZO-DARTS++: ``size_variable`` (ZO-DARTS++) and ``nb201`` (ZO-DARTS+); ``resnet18`` is the
fixed baseline of the papers' tables."""
from __future__ import annotations

from .nb201 import NB201Space
from .ops import dead_cells, most_probable_alive, prune_dead_edges
from .resnet import ResNet18Space
from .size_variable import SizeVariableSpace

SPACES = {'size_variable': SizeVariableSpace, 'nb201': NB201Space, 'resnet18': ResNet18Space}

__all__ = ['SPACES', 'create_space', 'dead_cells', 'most_probable_alive', 'prune_dead_edges', 'NB201Space',
           'ResNet18Space', 'SizeVariableSpace']


def create_space(name: str, **kwargs):
    """Build a registered space by name, e.g. ``create_space('size_variable', in_channels=1, num_classes=2)``."""
    if name not in SPACES:
        raise ValueError(f'unknown space {name!r}: choose one of {", ".join(SPACES)}')
    return SPACES[name](**kwargs)
