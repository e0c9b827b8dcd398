"""Is Eq. 5's finite difference ``(W' - W) / mu`` in its linear range? One ZO window of a real search, repeated
with several ``mu``; everything else (seed, data, ``u``, the starting state) is the same, so ``W`` is the same in
every run. By default the window is the search's first (alpha at its 1e-3 initialisation, so ``||alpha||`` and
the paper's ``mu = 0.005 ||alpha||`` are at their smallest, weights untrained); ``--start-from`` takes a trained
state instead: a copy of a paper-schedule search folder (``nni-zodarts search --preset paper``) resumed for one
window of its next epoch.

    python -m benchmarks.zo_linearity --dataset breastmnist --mu 0.005 0.05 0.5
    python -m benchmarks.zo_linearity --lr 0.001 --interval 1 --mu 0.0005 0.005 0.05    # one small step
    python -m benchmarks.zo_linearity --perturbed-steps 1 --mu 0.005 0.05 0.5     # W' trained for the last step only
    python -m benchmarks.zo_linearity --dataset retinamnist --data-root DIR --seeds 1 --start-from RUN/search

Prints and appends to ``docs/results/zo_linearity.csv``: the epoch, ``mu`` (absolute), the two terms of Eq. 5 and
``max |W' - W|``. In the linear range ``max |W' - W|`` grows in proportion to ``mu`` and the implicit term stays put.
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from nni_zodarts.commands import PRESETS
from nni_zodarts.data import PAPER_SEARCH_BATCH
from nni_zodarts.search import SearchSettings, search

RESULTS = Path(__file__).resolve().parents[1] / 'docs' / 'results'
PAPER = PRESETS['paper']['search']                                     # the schedule a --start-from search ran


def one_window(args, seed: int, mu: float, out: Path) -> pd.Series:
    """The ``search_history.csv`` row of an epoch that holds exactly one ZO window."""
    zo = dict(mu=mu, arc_update_interval=args.interval, perturbed_steps=args.perturbed_steps)
    settings = SearchSettings(dataset=args.dataset, data_root=args.data_root, seed=seed,
                              max_samples=args.interval * PAPER_SEARCH_BATCH.get(args.dataset, 64))
    if args.start_from:
        shutil.copytree(args.start_from, out, ignore=shutil.ignore_patterns('logs', 'nni', 'plots'))
        done = len(pd.read_csv(out / 'search_history.csv'))
        schedule = {k: PAPER[k] for k in ('size_search_start_epoch', 'temperature_interval')}
        settings = replace(settings, epochs=done + 1, schedule_epochs=PAPER['schedule_epochs'],
                           strategy={**zo, **schedule})
        search(out, settings, quiet=True, resume=True)
    else:
        settings = replace(settings, epochs=1, learning_rate=args.lr, strategy={**zo, 'size_search_start_epoch': 0})
        search(out, settings, quiet=True)
    return pd.read_csv(out / 'search_history.csv').iloc[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dataset', default='breastmnist')
    parser.add_argument('--data-root', default=None)
    parser.add_argument('--mu', type=float, nargs='+', default=[0.005, 0.05, 0.5], help='relative to ||alpha||')
    parser.add_argument('--seeds', type=int, nargs='+', default=[1])
    parser.add_argument('--lr', type=float, default=0.1, help="the weights' learning rate (the paper's: 0.1)")
    parser.add_argument('--interval', type=int, default=10, help="weight steps in the window, T (the paper's: 10)")
    parser.add_argument('--perturbed-steps', type=int, default=None,
                        help="weight steps W' takes, the window's last k (default: all T)")
    parser.add_argument('--start-from', type=Path, default=None,
                        help='a paper-schedule search folder with checkpoints/latest.ckpt (its --seed and data set)')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--results', type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.start_from and not (args.start_from / 'checkpoints' / 'latest.ckpt').exists():
        parser.error(f'{args.start_from} holds no checkpoints/latest.ckpt: pass a search output folder')
    rows = []
    for seed in args.seeds:
        for mu in args.mu:
            with tempfile.TemporaryDirectory() as tmp:
                last = one_window(args, seed, mu, Path(tmp) / 'search')
            rows.append({'dataset': args.dataset, 'seed': seed, 'epoch': int(last.epoch),
                         'lr': float(last.lr) if args.start_from else args.lr, 'interval': args.interval,
                         'perturbed_steps': args.perturbed_steps or args.interval,
                         'mu_relative': mu, 'mu': last.zo_mu, 'first_order_term': last.zo_first_order,
                         'implicit_term': last.zo_implicit, 'max_weight_gap': last.zo_weight_gap,
                         'threads': torch.get_num_threads(), 'date': datetime.date.today().isoformat()})
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    csv = args.results / 'zo_linearity.csv'
    frame = pd.DataFrame(rows)
    if csv.exists():
        old = pd.read_csv(csv)
        if 'epoch' not in old:
            old.insert(2, 'epoch', 0)               # rows written before the column: all first windows
        if 'perturbed_steps' not in old:
            old.insert(old.columns.get_loc('interval') + 1, 'perturbed_steps', old.interval)   # W' trained all T
        frame = pd.concat([old, frame])
    frame.to_csv(csv, index=False)


if __name__ == '__main__':
    main()
