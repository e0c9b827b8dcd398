"""Search speed, side by side in one invocation: the same space, data, batch size and machine for every method.

    python -m benchmarks.search_speed --dataset breastmnist --space size_variable --epochs 10
    python -m benchmarks.search_speed --space nni_darts --methods darts zodartspp zodartspp_direct --epochs 4

``--space nni_darts`` is NNI's own DARTS cell space (``nni.nas.hub.pytorch.DARTS``, CIFAR stem: grey images are
repeated to 3 channels, and its 10-way head is trained on the data set's labels).

Methods: ``supernet`` (weights only, alpha fixed and uniform: the lower bound), NNI ``darts`` (first order),
NNI ``gumbel_darts``, ``zodartspp`` (implicit, the paper's estimator: ``W'`` for the whole window),
``zodartspp_direct``, ``zodartspp_softmax``, ``zodartspp_k1`` (``perturbed_steps=1``, ZODartsPP's default) and
``zodartspp_branches`` (the paper's separate kernel branches, ``size_variable`` only). Each runs in its own process
(so peak RSS is its own) with the same thread count.
Rows are appended to ``docs/results/performance.csv``; details (per-epoch seconds, before/after the size phase,
exported architecture) to ``docs/results/performance_<run_id>.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import sys
from pathlib import Path

from benchmarks.harness import ROOT, in_subprocess, timed_search

RESULTS = ROOT / 'docs' / 'results'
COLUMNS = ['run_id', 'date', 'device', 'dataset', 'space', 'method', 'epochs', 'search_seconds', 'epoch_seconds',
           'peak_mem_mb', 'val_acc']
METHODS = ['supernet', 'darts', 'gumbel_darts', 'zodartspp', 'zodartspp_direct', 'zodartspp_softmax', 'zodartspp_k1',
           'zodartspp_branches']
SPACE_KWARGS = {'zodartspp_branches': {'kernel_mode': 'branches'}}   # size_variable only


def make_strategy(method: str, args):
    from nni.nas.oneshot.pytorch.strategy import DARTS, GumbelDARTS   # not nni.nas.strategy: its lazy import can fail

    from nni_zodarts import ZODartsPP
    schedule = dict(size_search_start_epoch=args.size_start, temperature_interval=args.temperature_interval,
                    arc_update_interval=args.arc_update_interval)
    paper = dict(schedule, perturbed_steps=None)                          # W' for all T steps of a window
    return {
        'supernet': lambda: DARTS(warmup_epochs=args.epochs + 1, gradient_clip_val=5.0),   # alpha never moves
        'darts': lambda: DARTS(gradient_clip_val=5.0),
        'gumbel_darts': lambda: GumbelDARTS(gradient_clip_val=5.0),
        'zodartspp': lambda: ZODartsPP(**paper),
        'zodartspp_direct': lambda: ZODartsPP(zo_mode='direct', **schedule),
        'zodartspp_softmax': lambda: ZODartsPP(normalization='softmax', **paper),
        'zodartspp_k1': lambda: ZODartsPP(perturbed_steps=1, **schedule),           # W' for the last step of a window
        'zodartspp_branches': lambda: ZODartsPP(**paper),                           # the paper's kernel branches
    }[method]()


def worker(args) -> dict:
    """One method's search; prints its measurements as JSON."""
    import pytorch_lightning as pl
    import torch

    from nni_zodarts.data import PAPER_SEARCH_BATCH, load_medmnist, make_loader
    from nni_zodarts.search import evaluate
    from search_spaces import create_space, prune_dead_edges

    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, verbose=False)
    data = load_medmnist(args.dataset, args.data_root)
    batch = args.batch_size or PAPER_SEARCH_BATCH[args.dataset]
    if args.space == 'nni_darts':
        from nni.nas.hub.pytorch import DARTS
        data = _as_rgb_with_ten_classes(data)
        make_space = lambda: DARTS(width=tuple(args.hub_width), num_cells=tuple(args.hub_cells), dataset='cifar')
    else:
        make_space = lambda: create_space(args.space, in_channels=data.n_channels, num_classes=data.n_classes,
                                          **SPACE_KWARGS.get(args.worker, {}))
    strategy = make_strategy(args.worker, args)
    arch, seconds, _, (ax, ay) = timed_search(make_space(), strategy, data, batch, args.seed,
                                              max_samples=args.max_samples, max_epochs=args.epochs,
                                              schedule_epochs=args.schedule_epochs or args.epochs,
                                              accelerator=args.accelerator)
    _, val_acc = evaluate(strategy.oneshot_module, make_loader(ax, ay, 256, train=False))
    frozen = make_space().freeze(prune_dead_edges(arch))
    params = sum(p.numel() for p in frozen.parameters())
    start = args.size_start if args.space == 'size_variable' else 0
    mean = lambda xs: sum(xs) / len(xs) if xs else float('nan')
    return {'method': args.worker, 'search_seconds': sum(seconds), 'epoch_seconds': mean(seconds),
            'epoch_seconds_before_size_phase': mean(seconds[:start]), 'epoch_seconds_after_size_phase': mean(seconds[start:]),
            'per_epoch_seconds': seconds, 'peak_mem_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            'val_acc': val_acc, 'params': params, 'architecture': arch, 'batch_size': batch,
            'device': 'cuda' if torch.cuda.is_available() and args.accelerator != 'cpu' else f'cpu x{args.threads}'}


def _as_rgb_with_ten_classes(data):
    """``data`` for a CIFAR-shaped space: 3-channel images, labels unchanged, 10 output classes."""
    import dataclasses
    splits = {name: (images.expand(-1, 3, -1, -1), labels) for name, (images, labels) in data.splits.items()}
    return dataclasses.replace(data, splits=splits, n_channels=3, n_classes=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dataset', default='breastmnist')
    parser.add_argument('--data-root', default=None)
    parser.add_argument('--space', default='size_variable', choices=['size_variable', 'nb201', 'nni_darts'])
    parser.add_argument('--hub-width', type=int, nargs='+', default=[8, 16], help='nni_darts: width choices')
    parser.add_argument('--hub-cells', type=int, nargs='+', default=[3, 6], help='nni_darts: cell-count choices')
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--schedule-epochs', type=int, default=None,
                        help='cosine LR length (default: --epochs; the paper: 50 with a 40-epoch read-out)')
    parser.add_argument('--size-start', type=int, default=None, help='size phase start (default: epochs // 2)')
    parser.add_argument('--temperature-interval', type=int, default=None, help='default: max(1, epochs // 10)')
    parser.add_argument('--arc-update-interval', type=int, default=10)
    parser.add_argument('--batch-size', type=int, default=None, help="default: the paper's per-data-set size")
    parser.add_argument('--max-samples', type=int, default=None)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--accelerator', default='cpu')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--methods', nargs='+', default=METHODS, choices=METHODS)
    parser.add_argument('--results', type=Path, default=RESULTS, help='where performance.csv goes')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size_start = args.epochs // 2 if args.size_start is None else args.size_start
    args.temperature_interval = args.temperature_interval or max(1, args.epochs // 10)
    if args.worker:
        print('RESULT ' + json.dumps(worker(args)))
        return

    run_id = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    date = datetime.date.today().isoformat()
    rows, details = [], []
    for method in args.methods:
        result = in_subprocess('benchmarks.search_speed', [*_without_methods(sys.argv[1:]), '--worker', method], method)
        if result is None:
            continue
        details.append(result)
        rows.append({'run_id': run_id, 'date': date, 'device': result['device'], 'dataset': args.dataset,
                     'space': args.space, 'method': method, 'epochs': args.epochs,
                     **{k: round(result[k], 4) for k in ('search_seconds', 'epoch_seconds', 'peak_mem_mb', 'val_acc')}})
        print(f"{method:18s} {result['search_seconds']:8.1f} s  {result['epoch_seconds']:6.2f} s/epoch  "
              f"before/after size phase {result['epoch_seconds_before_size_phase']:.2f}/"
              f"{result['epoch_seconds_after_size_phase']:.2f}  {result['peak_mem_mb']:.0f} MB  "
              f"val acc {result['val_acc']:.3f}  {result['params']:,} params", flush=True)
        _append(args, run_id, rows[-1:], details)   # row by row: a long run that stops keeps what it measured
    print(f"appended {len(rows)} rows to {args.results / 'performance.csv'}")


def _append(args, run_id: str, rows: list[dict], details: list[dict]) -> None:
    import pandas as pd
    args.results.mkdir(parents=True, exist_ok=True)
    csv = args.results / 'performance.csv'
    pd.DataFrame(rows, columns=COLUMNS).to_csv(csv, mode='a', header=not csv.exists(), index=False)
    meta = {'run_id': run_id, 'date': datetime.date.today().isoformat(), 'command': 'python -m benchmarks.search_speed ' + ' '.join(sys.argv[1:]),
            'machine': f'{platform.processor() or platform.machine()}, {args.threads} threads',
            'python': platform.python_version(), 'settings': {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != 'worker'},
            'results': details}
    (args.results / f'performance_{run_id}.json').write_text(json.dumps(meta, indent=2, default=str))


def _without_methods(argv: list[str]) -> list[str]:
    out, skipping = [], False
    for token in argv:
        skipping = token == '--methods' or (skipping and not token.startswith('--'))
        if not skipping:
            out.append(token)
    return out


if __name__ == '__main__':
    main()
