"""The finished reproduction runs, for the benchmarks that read them instead of retraining (``selection``,
``batch_statistics``, ``per_class``): each row of ``docs/results/reproduction.csv`` with its run folder, and the
weights it reports (``retrain/model.pt``, the validation-selected epoch) in a fresh network."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from nni_zodarts.data import DataError, load_medmnist
from nni_zodarts.files import read_json
from nni_zodarts.retrain import build_model

from .reproduce import ROOT, job_of, run_folder


def finished_runs(runs: Path, csv: Path, seeds: list[int] | None = None):
    """``(row, run folder)`` for every row of ``csv`` (of ``seeds``, default all) whose run folder (with its
    retraining) is under ``runs``; the rows without one (run on another machine) are counted on stderr, so a partial
    table does not pass for whole."""
    rows = [row for row in pd.read_csv(csv, keep_default_na=False, dtype={'budget': str}).itertuples()
            if seeds is None or row.seed in seeds]
    found = [(row, run_folder(runs, row.dataset, job_of(row), row.seed)) for row in rows]
    found = [(row, folder) for row, folder in found if (folder / 'retrain').exists()]
    if len(found) < len(rows):
        print(f'{len(rows) - len(found)} of the {len(rows)} rows of {csv.name} have no run folder under {runs} '
              'and are left out', file=sys.stderr)
    yield from found


def reported_models(runs: Path, csv: Path, data_root: Path | None, seeds: list[int] | None = None):
    """``(row, run folder, network with the reported weights, data set)`` for every finished run with a ``model.pt``;
    each data set is loaded once (BreastMNIST from the embedded copy, the others from ``data_root``)."""
    data = {}
    for row, folder in finished_runs(runs, csv, seeds):
        if not (folder / 'retrain' / 'model.pt').exists():
            continue
        if row.dataset not in data:
            try:
                data[row.dataset] = load_medmnist(row.dataset, data_root if row.dataset != 'breastmnist' else None)
            except DataError as err:
                raise SystemExit(f'{err}') from None
        d, config = data[row.dataset], read_json(folder / 'search' / 'search_config.json')
        model = build_model(read_json(folder / 'search' / 'architecture.json'), config['space'],
                            {**config.get('space_kwargs', {}), 'in_channels': d.n_channels, 'num_classes': d.n_classes})
        model.load_state_dict(torch.load(folder / 'retrain' / 'model.pt', map_location='cpu', weights_only=True))
        yield row, folder, model, d


def parse_arguments(doc: str, data_root: bool = True) -> argparse.Namespace:
    """The command line these benchmarks share: where the runs and the CSV are (and the MedMNIST files), which seeds."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if data_root:
        parser.add_argument('--data-root', type=Path, default=None, help='folder with <flag>.npz (Breast is embedded)')
    parser.add_argument('--runs', type=Path, default=ROOT / 'runs' / 'reproduce')
    parser.add_argument('--results', type=Path, default=ROOT / 'docs' / 'results' / 'reproduction.csv')
    parser.add_argument('--seeds', type=int, nargs='+', default=None, help='only these seeds (default: all)')
    return parser.parse_args()
