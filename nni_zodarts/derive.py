"""``nni-zodarts derive``: new budgets from a finished search, without training.

The search's final probabilities (``probabilities.json``) and its space give the most probable architecture inside
the new windows (:meth:`ZODartsPP.derive`); the search's supernet weights (its last checkpoint) give that
architecture's validation accuracy in the supernet. Each derived architecture is written like a search's
(``architecture.json`` + ``search_config.json``, so ``nni-zodarts retrain --arch`` takes it) and appended to the
search's ``derived.csv``, from which ``pareto.png`` is redrawn (retrained test accuracy where it exists).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from nni.mutable import CategoricalMultiple

from .budget import parse_budget
from .errors import UsageError
from .files import prepare_output, read_json, write_csv, write_json

__all__ = ['derive', 'DERIVE_RESULTS']

DERIVE_RESULTS = ['architecture.json', 'search_config.json']


def _load_probabilities(search_dir: Path) -> tuple[dict, dict[str, dict[Any, float]]]:
    for name in ('search_config.json', 'probabilities.json'):
        if not (search_dir / name).exists():
            raise UsageError(f'{search_dir} has no {name}: give the --output folder of a finished `nni-zodarts search`')
    config = read_json(search_dir / 'search_config.json')
    if config.get('method', 'zodartspp') != 'zodartspp':
        raise UsageError(f'{search_dir} is a {config["method"]} search: derive needs a ZO-DARTS++ search')
    probs = {label: {_hashable(c): float(p) for c, p in pairs}
             for label, pairs in read_json(search_dir / 'probabilities.json').items()}
    return config, probs


def _hashable(choice):
    return tuple(choice) if isinstance(choice, list) else choice


def derive(search_dir: str | Path, output: str | Path, *, param_budget=None, flops_budget=None, latency_budget=None,
           data_root: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Derive one architecture for new budgets from the search in ``search_dir`` into ``output``; returns its
    summary (``params``, ``flops``, ``latency_ms``, ``supernet_val_acc``, ...)."""
    from search_spaces import create_space, prune_dead_edges

    from .errors import as_usage_error
    from .strategy import ZODartsPP

    search_dir, output = Path(search_dir), Path(output)
    if all(b is None for b in (param_budget, flops_budget, latency_budget)):
        raise UsageError('give at least one of --param-budget, --flops-budget, --latency-budget')
    config, probs = _load_probabilities(search_dir)
    table = search_dir / 'latency_table.json'
    input_shape = config.get('input_shape') or [config['space_kwargs']['in_channels'], config['image_size'], config['image_size']]
    with as_usage_error():
        strategy = ZODartsPP(input_shape=tuple(input_shape), size_search_start_epoch=0,
                             latency_table=str(table) if table.exists() else None,
                             latency_budget=latency_budget if not table.exists() else None)
        supernet = strategy.mutate_model(create_space(config['space'], **config['space_kwargs']))
        arch = prune_dead_edges(strategy.derive(param_budget, flops_budget, latency_budget, probs=probs))
    output = prepare_output(output, DERIVE_RESULTS, overwrite=overwrite)
    costs = strategy.costs_of(arch)
    summary = {**config, 'derived_from': str(search_dir.resolve()), 'params': costs['params'],
               'flops': costs.get('flops'), 'latency_ms': costs.get('latency'),
               'param_budget': parse_budget(param_budget), 'flops_budget': parse_budget(flops_budget, 'flops'),
               'latency_budget': parse_budget(latency_budget, 'latency'),
               'supernet_val_acc': supernet_accuracy(search_dir, config, supernet, strategy, arch, data_root)}
    for stale in ('expected_params', 'val_acc', 'search_seconds', 'measured_latency_ms'):
        summary.pop(stale, None)
    write_json(output / 'architecture.json', arch)
    write_json(output / 'search_config.json', summary)
    record(search_dir, output, summary)
    return {**summary, 'architecture': arch}


@torch.no_grad()
def supernet_accuracy(search_dir: Path, config: dict, supernet, strategy, arch: dict, data_root: str | None) -> float | None:
    """Accuracy of ``arch`` inside the searched supernet (its last checkpoint's weights, alphas one-hot) on the
    search's architecture half; ``None`` without a checkpoint."""
    from .checkpointing import LATEST
    from .data import load_medmnist, make_loader, search_split
    from .search import evaluate
    from .strategy import HOLD_LOGIT

    checkpoint = search_dir / 'checkpoints' / LATEST
    if not checkpoint.exists():
        return None
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)['state_dict']
    prefix = 'training_module._model.'
    supernet.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    labels = supernet.simplify()
    for label, alpha in strategy._arch_parameters.items():
        value = arch[label][0] if isinstance(labels[label], CategoricalMultiple) else arch[label]
        alpha.zero_()[labels[label].values.index(value)] = HOLD_LOGIT      # one-hot: only ``arch`` runs
    data = load_medmnist(config['dataset'], data_root, config['image_size'])
    _, (ax, ay) = search_split(data, config['seed'], config.get('max_samples'))
    return evaluate(_OnCpu(supernet), make_loader(ax, ay, 256, train=False))[1]


class _OnCpu(torch.nn.Module):
    """A model as :func:`~nni_zodarts.search.evaluate` takes it (with a ``device``)."""
    device = torch.device('cpu')

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def record(search_dir: Path, output: Path, summary: dict) -> None:
    """Append to ``search_dir/derived.csv`` (one row per output folder, the latest kept) and redraw the plot."""
    from .plots import plot_pareto

    path = search_dir / 'derived.csv'
    row = {'output': str(output.resolve()), **{k: summary.get(k) for k in (
        'param_budget', 'flops_budget', 'latency_budget', 'params', 'flops', 'latency_ms', 'supernet_val_acc')}}
    row.update({k: None if v is None else ':'.join(f'{x:g}' for x in v) for k, v in row.items() if k.endswith('budget')})
    frame = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=list(row))
    frame = pd.concat([frame[frame['output'] != row['output']], pd.DataFrame([row])], ignore_index=True)
    write_csv(path, frame)
    plot_pareto(frame, search_dir / 'pareto.png')
