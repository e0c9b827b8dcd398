"""How a ZO-DARTS++ search epoch scales: with the data set (BreastMNIST 624 -> OrganAMNIST 41,052 search images,
the paper's batch sizes) and with the space (cells per stage, kernel sizes of the kernel-variable convolution,
the NB201 cell space).

    python -m benchmarks.scaling --data-root ../shared/data/medmnist

Each configuration runs ``--steps`` steps of the size-variable phase (everything searched at once, the costlier
half of a search) in one process; the per-step time of the last full ``arc_update_interval`` window times the
steps of an epoch is the epoch estimate. Rows go to ``docs/results/scaling.csv``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from benchmarks.harness import ROOT, in_subprocess, timed_search
DATASETS = ['breastmnist', 'retinamnist', 'pneumoniamnist', 'organamnist']
SPACES = {   # name: (space, space keyword arguments)
    'size_variable': ('size_variable', {}),
    '1 cell/stage': ('size_variable', {'max_cells': 1}),
    '2 cells/stage': ('size_variable', {'max_cells': 2}),
    'kernels 3': ('size_variable', {'kernel_sizes': (3,)}),
    'kernels 5,3': ('size_variable', {'kernel_sizes': (5, 3)}),
    'nb201': ('nb201', {}),
}


def worker(dataset: str, space_name: str, args) -> dict:
    import pytorch_lightning as pl
    import torch

    from nni_zodarts import ZODartsPP
    from nni_zodarts.data import PAPER_SEARCH_BATCH, load_medmnist
    from search_spaces import create_space

    torch.set_num_threads(args.threads)
    pl.seed_everything(0, verbose=False)
    data = load_medmnist(dataset, args.data_root if dataset != 'breastmnist' else None)
    batch = PAPER_SEARCH_BATCH.get(dataset, 64)
    space, kwargs = SPACES[space_name]
    strategy = ZODartsPP(size_search_start_epoch=0, arc_update_interval=args.window)
    model_space = create_space(space, in_channels=data.n_channels, num_classes=data.n_classes, **kwargs)
    _, seconds, (wx, wy), (ax, ay) = timed_search(model_space, strategy, data, batch, 0, per='batch', schedule_epochs=50,
                                                  max_epochs=1, limit_train_batches=args.steps,
                                                  accelerator=args.accelerator, workdir='/tmp/nni-zodarts-scaling')
    window = seconds[-args.window:]
    steps = -(-len(wy) // batch)
    return {'dataset': dataset, 'space': space_name, 'search_images': len(wy) + len(ay), 'batch_size': batch,
            'steps_per_epoch': steps, 'step_seconds': sum(window) / len(window),
            'epoch_seconds': steps * sum(window) / len(window), 'alpha_size': sum(
                a.numel() for a in strategy.oneshot_module.arch_parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default=None, help='folder with the MedMNIST .npz files (Breast is embedded)')
    parser.add_argument('--datasets', nargs='+', default=DATASETS)
    parser.add_argument('--spaces', nargs='+', default=list(SPACES), choices=list(SPACES))
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--window', type=int, default=10, help='arc_update_interval; the last window is timed')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--accelerator', default='cpu', help='cpu | gpu | auto')
    parser.add_argument('--results', type=Path, default=ROOT / 'docs' / 'results')
    parser.add_argument('--worker', nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps % args.window or args.steps < 2 * args.window:
        parser.error('--steps must be a multiple of --window, at least two windows (the last one is timed)')
    if args.worker:
        print('RESULT ' + json.dumps(worker(*args.worker, args)))
        return

    import pandas as pd
    # Data sets on the full space, then the space variants on BreastMNIST.
    configs = [(d, 'size_variable') for d in args.datasets] + [('breastmnist', s) for s in args.spaces if s != 'size_variable']
    args.results.mkdir(parents=True, exist_ok=True)
    csv = args.results / 'scaling.csv'
    for dataset, space in configs:
        result = in_subprocess('benchmarks.scaling', [*sys.argv[1:], '--worker', dataset, space], f'{dataset} {space}')
        if result is None:
            continue
        row = {'date': datetime.date.today().isoformat(), 'device': f'{args.accelerator} x{args.threads}', **result}
        print(f"{dataset:15s} {space:14s} {row['search_images']:6d} images  batch {row['batch_size']:3d}  "
              f"{row['step_seconds']:.3f} s/step  {row['epoch_seconds']:8.1f} s/epoch", flush=True)
        pd.DataFrame([row]).to_csv(csv, mode='a', header=not csv.exists(), index=False)


if __name__ == '__main__':
    main()
