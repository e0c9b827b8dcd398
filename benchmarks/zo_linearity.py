"""Is Eq. 5's finite difference ``(W' - W) / mu`` in its linear range? The first ZO window of a real search
(alpha at its 1e-3 initialisation, so ``||alpha||`` and the paper's ``mu = 0.005 ||alpha||`` are at their smallest),
repeated with larger ``mu``; everything else (seed, data, ``u``) is the same, so ``W`` is the same in every run.

    python -m benchmarks.zo_linearity --dataset breastmnist --mu 0.005 0.05 0.5
    python -m benchmarks.zo_linearity --lr 0.001 --interval 1 --mu 0.0005 0.005 0.05    # one small step

Prints and appends to ``docs/results/zo_linearity.csv``: ``mu`` (absolute), the two terms of Eq. 5 and
``max |W' - W|``. In the linear range ``max |W' - W|`` grows in proportion to ``mu`` and the implicit term stays put.
"""
from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path

import pandas as pd
import torch

from nni_zodarts.data import PAPER_SEARCH_BATCH
from nni_zodarts.search import search

RESULTS = Path(__file__).resolve().parents[1] / 'docs' / 'results'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dataset', default='breastmnist')
    parser.add_argument('--data-root', default=None)
    parser.add_argument('--mu', type=float, nargs='+', default=[0.005, 0.05, 0.5], help='relative to ||alpha||')
    parser.add_argument('--seeds', type=int, nargs='+', default=[1])
    parser.add_argument('--lr', type=float, default=0.1, help="the weights' learning rate (the paper's: 0.1)")
    parser.add_argument('--interval', type=int, default=10, help="weight steps in the window, T (the paper's: 10)")
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--results', type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch, rows = PAPER_SEARCH_BATCH.get(args.dataset, 64), []
    for seed in args.seeds:
        for mu in args.mu:
            with tempfile.TemporaryDirectory() as out:     # one window: T weight steps, then the architecture step
                search(out, dataset=args.dataset, data_root=args.data_root, epochs=1, max_samples=args.interval * batch,
                       learning_rate=args.lr, seed=seed, quiet=True, mu=mu, arc_update_interval=args.interval,
                       size_search_start_epoch=0)
                first = pd.read_csv(Path(out) / 'search_history.csv').iloc[0]
            rows.append({'dataset': args.dataset, 'seed': seed, 'lr': args.lr, 'interval': args.interval,
                         'mu_relative': mu, 'mu': first.zo_mu,
                         'first_order_term': first.zo_first_order, 'implicit_term': first.zo_implicit,
                         'max_weight_gap': first.zo_weight_gap, 'threads': torch.get_num_threads(),
                         'date': datetime.date.today().isoformat()})
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    csv = args.results / 'zo_linearity.csv'
    pd.DataFrame(rows).to_csv(csv, mode='a', header=not csv.exists(), index=False)


if __name__ == '__main__':
    main()
