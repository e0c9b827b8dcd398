"""How much an honest test accuracy depends on the epoch it is read at (docs/RESULTS.md, "Reproduction").

    python -m benchmarks.selection                   # after benchmarks.reproduce; reads runs/reproduce

Reads the per-epoch metrics (``retrain/retrain_history.csv``) of every finished reproduction run and prints, per
data set and job, the mean test ACC at the epoch each rule picks: the table's (highest validation ACC, ties to the
lower validation loss), the lowest validation loss, the last epoch; and, for scale, the mean over all epochs and
the papers' maximum over epochs. Nothing is retrained: this measures the selection noise of the fixed protocol, it
does not offer another protocol.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from nni_zodarts.training import selection_score

from .finished import finished_runs, parse_arguments

RULES = {
    'val ACC (the table)': lambda h: h.test_acc[selection_score(h.val_acc, h.val_loss).idxmax()],
    'lowest val loss': lambda h: h.test_acc[h.val_loss.idxmin()],
    'last epoch': lambda h: h.test_acc.iloc[-1],
    'mean of all epochs': lambda h: h.test_acc.mean(),
    'max (papers)': lambda h: h.test_acc.max(),
}


def read_runs(runs: Path, csv: Path, seeds: list[int] | None = None) -> pd.DataFrame:
    """One row per finished run (of ``seeds``, default all): its test ACC under every rule."""
    rows = []
    for r, folder in finished_runs(runs, csv, seeds):
        history = folder / 'retrain' / 'retrain_history.csv'
        if not history.exists():
            continue
        h = pd.read_csv(history).drop_duplicates('epoch', keep='last').reset_index(drop=True)
        if len(h) != r.retrain_epochs:          # a row from another retraining length than these runs' histories
            continue
        rows.append({'dataset': r.dataset, 'job': folder.parent.name, 'seed': r.seed, 'epochs': r.retrain_epochs,
                     **{name: rule(h) for name, rule in RULES.items()}})
    return pd.DataFrame(rows)


def main() -> None:
    args = parse_arguments(__doc__, data_root=False)
    frame = read_runs(args.runs, args.results, args.seeds)
    if frame.empty:
        raise SystemExit(f'no finished run with a retrain_history.csv under {args.runs}: run benchmarks.reproduce first')
    table = frame.groupby(['dataset', 'job']).agg(seeds=('seed', 'count'), **{n: (n, 'mean') for n in RULES})
    print('| data set | job | seeds | ' + ' | '.join(RULES) + ' |\n|' + '---|' * (len(RULES) + 3))
    for (dataset, job), r in table.iterrows():
        print(f'| {dataset} | {job} | {r.seeds:.0f} | ' + ' | '.join(f'{r[n]:.3f}' for n in RULES) + ' |')
    spread = frame[list(RULES)[:3]].max(axis=1) - frame[list(RULES)[:3]].min(axis=1)
    print(f'\nRuns: {len(frame)}; the three honest rules differ per run by {100 * spread.mean():.1f} points on average, '
          f'at most {100 * spread.max():.1f}.')


if __name__ == '__main__':
    main()
