"""FLOPs and latency budgets on BreastMNIST's size-variable space, side by side in one invocation.

    python -m benchmarks.hardware_budgets --dataset breastmnist --preset demo --threads 2
    python -m benchmarks.hardware_budgets --report

Runs (each resumed from ``--runs`` when there): ZODartsPP without a binding budget (``unconstrained``: a latency
window no architecture reaches, so that its units are measured); with a FLOPs budget and with a latency budget,
each half of the unconstrained export's; the same two budgets ``derived`` from the unconstrained search without
training; NNI's ``DARTS`` (first order) on the same space and data. NNI's ``ExpectationProfilerPenalty`` needs
NNI's ``FlopsProfiler`` on the space, which is tried first (with a time limit) and whose outcome is printed; where it
cannot be built, and anyway in NNI 3.0, where the penalty has no gradient, DARTS runs without it and its export is
measured against the budgets. Every architecture is
retrained with the preset's recipe. Rows go to ``docs/results/hardware_budgets.csv``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd

from benchmarks.harness import ROOT

CSV = ROOT / 'docs' / 'results' / 'hardware_budgets.csv'
COLUMNS = ['date', 'device', 'dataset', 'preset', 'seed', 'variant', 'flops_budget', 'latency_budget_ms', 'params',
           'flops', 'latency_ms_predicted', 'latency_ms_measured', 'test_acc', 'search_seconds', 'retrain_seconds']
PROFILER = '''
import torch, nni.nas.strategy
from nni.nas.profiler.pytorch.flops import FlopsProfiler
from search_spaces import SizeVariableSpace
FlopsProfiler(SizeVariableSpace(in_channels=1, num_classes=2), torch.randn(1, 1, 28, 28))
'''


def cli(*argv: str, threads: int) -> None:
    print('$ nni-zodarts', ' '.join(argv), flush=True)
    subprocess.run([sys.executable, '-m', 'nni_zodarts.cli', *argv], check=True, cwd=ROOT,
                   env={**os.environ, 'OMP_NUM_THREADS': str(threads)})


def nni_profiler(seconds: int) -> str:
    """Whether NNI's ``FlopsProfiler`` can be built on the space: ``'works'``, or why not."""
    try:
        subprocess.run([sys.executable, '-c', PROFILER], cwd=ROOT, timeout=seconds, capture_output=True, check=True,
                       text=True)
        return 'works'
    except subprocess.TimeoutExpired:
        return f'unfinished after {seconds} s'
    except subprocess.CalledProcessError as err:
        return 'fails: ' + err.stderr.strip().splitlines()[-1]


def measured(arch_dir: Path, table: Path) -> dict:
    """Params, FLOPs, predicted latency (from ``table``) and measured latency of the architecture in ``arch_dir``."""
    import torch

    from nni_zodarts import ZODartsPP
    from nni_zodarts.latency import measured_latency
    from search_spaces import create_space

    config = json.loads((arch_dir / 'search_config.json').read_text())
    arch = json.loads((arch_dir / 'architecture.json').read_text())
    shape = (config['space_kwargs']['in_channels'], config['image_size'], config['image_size'])
    strategy = ZODartsPP(input_shape=shape, latency_table=str(table), size_search_start_epoch=0)
    strategy.mutate_model(create_space(config['space'], **config['space_kwargs']))
    costs = strategy.costs_of(arch)
    model = create_space(config['space'], **config['space_kwargs']).freeze(arch)
    with torch.no_grad():
        latency = measured_latency(model, shape)
    return {'params': costs['params'], 'flops': costs['flops'], 'latency_ms_predicted': costs['latency'],
            'latency_ms_measured': latency, 'search_seconds': config.get('search_seconds')}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dataset', default='breastmnist')
    parser.add_argument('--data-root', default=None)
    parser.add_argument('--preset', default='demo', choices=['demo', 'paper'])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--runs', type=Path, default=ROOT / 'runs' / 'hardware_budgets')
    parser.add_argument('--profiler-seconds', type=int, default=300)
    parser.add_argument('--report', action='store_true', help='print the table of docs/results/hardware_budgets.csv')
    args = parser.parse_args(argv)
    if args.report:
        return report()
    import torch
    torch.set_num_threads(args.threads)
    runs = args.runs / f'{args.dataset}_{args.preset}_seed{args.seed}'
    common = ['--dataset', args.dataset, '--preset', args.preset, '--seed', str(args.seed), '--quiet',
              *(['--data-root', args.data_root] if args.data_root else [])]

    def run(name: str, *extra: str) -> Path:
        out = runs / name
        if not (out / 'retrain' / 'retrain_metrics.json').exists():
            resume = ['--resume'] if out.exists() else []
            cli('run', '--output', str(out), *common, *extra, *resume, threads=args.threads)
        return out

    free = run('unconstrained', '--latency-budget', '1000000')
    table = free / 'search' / 'latency_table.json'
    base = measured(free / 'search', table)
    flops_budget, latency_budget = base['flops'] / 2, base['latency_ms_predicted'] / 2
    rows = {'unconstrained': (free, None, None),
            'flops budget': (run('flops', '--flops-budget', f'{flops_budget:.0f}'), flops_budget, None),
            'latency budget': (run('latency', '--latency-budget', f'{latency_budget:.4f}', '--latency-table', str(table)),
                               None, latency_budget)}
    for name, flag, value, key in (('derived_flops', '--flops-budget', f'{flops_budget:.0f}', 'flops'),
                                   ('derived_latency', '--latency-budget', f'{latency_budget:.4f}', 'latency')):
        out = runs / name
        if not (out / 'architecture.json').exists():
            cli('derive', '--search', str(free / 'search'), flag, value, '--output', str(out), '--overwrite',
                *(['--data-root', args.data_root] if args.data_root else []), threads=args.threads)
        if not (out / 'retrain' / 'retrain_metrics.json').exists():
            cli('retrain', '--arch', str(out / 'architecture.json'), '--output', str(out / 'retrain'),
                *[a for a in common if a != '--resume'], *(['--resume'] if (out / 'retrain').exists() else []),
                threads=args.threads)
        rows[f'{key} budget, derived'] = (out, flops_budget if key == 'flops' else None,
                                          latency_budget if key == 'latency' else None)
    profiler = nni_profiler(args.profiler_seconds)
    print(f"NNI's FlopsProfiler on the space: {profiler}", flush=True)
    darts = run('nni_darts', '--method', 'darts')
    rows['NNI DARTS' + (' (no penalty: NNI cannot profile the space)' if profiler != 'works' else '')] = (
        darts, flops_budget, latency_budget)

    device = f'{platform.processor() or platform.machine()} x{args.threads}'
    frame = pd.read_csv(CSV) if CSV.exists() else pd.DataFrame(columns=COLUMNS)
    new = []
    for variant, (out, fb, lb) in rows.items():
        arch_dir = out / 'search' if (out / 'search').exists() else out
        metrics = json.loads(((out / 'retrain') / 'retrain_metrics.json').read_text())
        new.append({'date': datetime.date.today().isoformat(), 'device': device, 'dataset': args.dataset,
                    'preset': args.preset, 'seed': args.seed, 'variant': variant, 'flops_budget': fb,
                    'latency_budget_ms': lb, **measured(arch_dir, table), 'test_acc': metrics['test_acc'],
                    'retrain_seconds': metrics['seconds']})
    keep = frame[~((frame['dataset'] == args.dataset) & (frame['preset'] == args.preset) & (frame['seed'] == args.seed))]
    pd.concat([keep, pd.DataFrame(new)], ignore_index=True)[COLUMNS].to_csv(CSV, index=False)
    report()


def report() -> None:
    frame = pd.read_csv(CSV)
    print('| variant | FLOPs budget (M) | FLOPs (M) | latency budget (ms) | latency predicted / measured (ms) '
          '| params | test ACC | search s |\n|---|---|---|---|---|---|---|---|')
    for r in frame.itertuples():
        fb = '' if pd.isna(r.flops_budget) else f'{r.flops_budget / 1e6:.1f}'
        lb = '' if pd.isna(r.latency_budget_ms) else f'{r.latency_budget_ms:.2f}'
        search = '' if pd.isna(r.search_seconds) else f'{r.search_seconds:.0f}'
        print(f'| {r.variant} | {fb} | {r.flops / 1e6:.1f} | {lb} | {r.latency_ms_predicted:.2f} / '
              f'{r.latency_ms_measured:.2f} | {r.params:,} | {r.test_acc:.3f} | {search} |')


if __name__ == '__main__':
    main()
