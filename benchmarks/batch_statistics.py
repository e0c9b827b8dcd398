"""Test ACC of the reported weights with BatchNorm's running statistics (ours) and with each test batch's own
statistics, as the authors' retrained networks evaluate (spec §9 and §14 item 10: BN without running statistics,
test batches of the retraining batch size).

    python -m benchmarks.batch_statistics --data-root ../shared/data/medmnist      # after benchmarks.reproduce

For every finished reproduction run it loads ``retrain/model.pt`` (the validation-selected weights) and tests them
both ways; nothing is retrained. With running statistics it must give the CSV's ``test_acc`` again.
"""
from __future__ import annotations

import copy

import pandas as pd
from torch import nn

from nni_zodarts.data import PAPER_RETRAIN_BATCH, make_loader
from nni_zodarts.retrain import evaluate

from .finished import parse_arguments, reported_models


def accuracy(model: nn.Module, images, labels, task: str, batch_size: int, batch_statistics: bool) -> float:
    """Test ACC in batches of ``batch_size``, BN normalising with running or with each batch's statistics. The
    model is left as it was (a copy runs with batch statistics, whose forward passes move the running ones)."""
    model = copy.deepcopy(model).eval() if batch_statistics else model.eval()
    if batch_statistics:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()
    return evaluate(model, make_loader(images, labels, batch_size, train=False), task)[0]


def main() -> None:
    args = parse_arguments(__doc__)
    rows = []
    for r, folder, model, d in reported_models(args.runs, args.results, args.data_root, args.seeds):
        batch = PAPER_RETRAIN_BATCH[r.dataset]
        test = (*d.splits['test'], d.task)
        rows.append({'dataset': r.dataset, 'job': folder.parent.name, 'seed': r.seed, 'batch': batch,
                     'csv': r.test_acc, 'running': accuracy(model, *test, 512, False),
                     'test batch': accuracy(model, *test, batch, True)})
    if not rows:
        raise SystemExit(f'no finished run with a model.pt under {args.runs}: run benchmarks.reproduce first')
    frame = pd.DataFrame(rows)
    mismatched = frame[(frame.running - frame.csv).abs() > 1e-9]
    table = frame.groupby(['dataset', 'job']).agg(seeds=('seed', 'count'), batch=('batch', 'first'),
                                                   running=('running', 'mean'), batch_stats=('test batch', 'mean'))
    print('| data set | job | seeds | test batch | test ACC, running statistics (the table) '
          '| test ACC, test-batch statistics | difference (points) |\n|---|---|---|---|---|---|---|')
    for (dataset, job), t in table.iterrows():
        print(f'| {dataset} | {job} | {t.seeds:.0f} | {t.batch:.0f} | {t.running:.3f} | {t.batch_stats:.3f} '
              f'| {100 * (t.batch_stats - t.running):+.1f} |')
    change = 100 * (frame['test batch'] - frame.running)
    print(f'\nRuns: {len(frame)}; per run the test-batch statistics change test ACC by {change.mean():+.1f} points on '
          f'average ({change.min():+.1f} to {change.max():+.1f}); running statistics reproduce the CSV in '
          f'{len(frame) - len(mismatched)} of {len(frame)} runs.')


if __name__ == '__main__':
    main()
