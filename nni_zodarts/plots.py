"""Search plots from the CSV histories: probability evolution per label, and E[params] / accuracy per epoch."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from .files import read_json

__all__ = ['plot_search', 'plot_pareto']


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _group(label: str) -> str:
    """``s0_e21_k`` -> ``s0``; labels without a stage prefix share one figure."""
    match = re.match(r'(s\d+)_', label)
    return match.group(1) if match else 'choices'


def plot_probabilities(alpha: pd.DataFrame, directory: Path) -> list[Path]:
    """One figure per stage: a panel per label, a line per choice, probability against epoch. Few ticks and fixed
    margins (no ``tight_layout``): tick layout was most of the plotting time, seconds per search."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    paths = []
    for group, frame in alpha.groupby(alpha['label'].map(_group)):
        labels = sorted(frame['label'].unique())
        cols = min(4, len(labels))
        rows = math.ceil(len(labels) / cols)
        width, height = 3.6 * cols, 2.6 * rows
        fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False, sharex=True, sharey=True)
        for ax, label in zip(axes.flat, labels):
            for choice, series in frame[frame['label'] == label].groupby('choice', sort=False):
                ax.plot(series['epoch'], series['probability'], label=str(choice))
            ax.set_title(label, fontsize=9)
            ax.legend(fontsize=6, loc='best')
        first = axes.flat[0]
        first.set_ylim(-0.02, 1.02)
        first.set_yticks([0, 0.5, 1])
        first.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        for ax in list(axes.flat)[len(labels):]:
            ax.axis('off')
        fig.supxlabel('epoch')
        fig.supylabel("probability (tempered sparsemax)", x=0.2 / width)
        fig.subplots_adjust(left=0.85 / width, right=1 - 0.15 / width, bottom=0.6 / height, top=1 - 0.35 / height,
                            wspace=0.15, hspace=0.45)        # margins in inches, whatever the grid
        paths.append(directory / f'probabilities_{group}.png')
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def plot_curves(history: pd.DataFrame, path: Path) -> Path:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(history['epoch'], history['expected_params'] / 1e3, marker='o')
    left.set_xlabel('epoch')
    left.set_ylabel('expected parameters (k)')
    for column, name in [('train_acc', 'train (weight half)'), ('val_acc', 'validation (architecture half)')]:
        if column in history:
            right.plot(history['epoch'], history[column], marker='o', label=name)
    right.set_xlabel('epoch')
    right.set_ylabel('supernet accuracy')
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_search(output: str | Path) -> list[Path]:
    """Write ``output/plots/*.png`` from ``search_history.csv`` and ``alpha_history.csv``."""
    output = Path(output)
    directory = output / 'plots'
    directory.mkdir(parents=True, exist_ok=True)
    paths = plot_probabilities(pd.read_csv(output / 'alpha_history.csv'), directory)
    paths.append(plot_curves(pd.read_csv(output / 'search_history.csv'), directory / 'search_curves.png'))
    return paths


def _retrained_acc(output: str) -> float | None:
    """Test ACC of a derived architecture retrained into ``output/retrain`` or ``output`` itself, if it was."""
    for path in (Path(output) / 'retrain' / 'retrain_metrics.json', Path(output) / 'retrain_metrics.json'):
        if path.exists():
            return float(read_json(path)['test_acc'])
    return None


def plot_pareto(derived: pd.DataFrame, path: Path) -> Path:
    """Accuracy against each cost of the architectures derived from one search: the supernet's validation accuracy,
    and the retrained test accuracy where an architecture was retrained (into its folder's ``retrain/``)."""
    plt = _pyplot()
    costs = [(c, name, scale) for c, name, scale in [('params', 'parameters (k)', 1e3), ('flops', 'MFLOPs', 1e6),
                                                      ('latency_ms', 'predicted latency (ms)', 1.0)]
             if c in derived and derived[c].notna().any()]
    retrained = derived['output'].map(_retrained_acc)
    fig, axes = plt.subplots(1, len(costs), figsize=(4.2 * len(costs), 3.4), squeeze=False)
    for ax, (column, name, scale) in zip(axes.flat, costs):
        frame = derived.assign(x=derived[column] / scale, retrained=retrained).sort_values('x')
        ax.plot(frame['x'], frame['supernet_val_acc'], marker='o', label='supernet, validation')
        done = frame[frame['retrained'].notna()]
        if len(done):
            ax.plot(done['x'], done['retrained'], marker='s', linestyle='--', label='retrained, test')
        ax.set_xlabel(name)
        ax.set_ylabel('accuracy')
        ax.legend(fontsize=8)
    fig.suptitle('architectures derived from one search')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
