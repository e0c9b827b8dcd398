"""Reproduce the papers' MedMNIST tables (spec §6, §9, §11): ZO-DARTS++ unconstrained and at the "small" and
"medium" budgets, NNI DARTS on the same space, and ResNet-18 (28) with the same retraining recipe; and, beyond the
papers, ``random``: an architecture drawn uniformly from the size-variable space (the random-search baseline), and
``random-small``: drawn the same way until it lies in the "small" window (the baseline at ZO-DARTS++'s small size).

    python -m benchmarks.reproduce --dataset breastmnist --seeds 1 2 3
    python -m benchmarks.reproduce --dataset retinamnist --data-root ../shared/data/medmnist --seeds 1 2 3
    python -m benchmarks.reproduce --dataset pneumoniamnist --data-root ../shared/data/medmnist --seeds 1 2 3
    python -m benchmarks.reproduce --report            # RESULTS tables and params-vs-accuracy plots

Every run goes through the ``nni-zodarts`` CLI in its own process, under ``--runs/<dataset>/<method>/seed<S>``,
and is resumed from its checkpoints when started again; a finished run appends one row to
``docs/results/reproduction.csv`` and is skipped from then on. Budget windows are the paper's (spec §6 table);
for data sets it does not list they are derived as the paper does: 300 architectures sampled from each of the
unconstrained runs' final probabilities, small = [0, P20], medium = [P40, P60]. A budgeted search whose
unconstrained run (same seed and settings) has passed the size phase's start continues from that run's state there:
the budget acts only from then on, so the epochs before it would be the same computation.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'docs' / 'results'
COLUMNS = ['dataset', 'method', 'budget', 'seed', 'test_acc', 'test_auc', 'test_acc_max', 'params', 'search_seconds',
           'retrain_seconds', 'retrain_epochs', 'device', 'date']
JOBS = ['zodartspp', 'darts', 'resnet18', 'zodartspp-small', 'random-small', 'zodartspp-medium', 'random',
        'zodartspp_k1', 'zodartspp_branches']
# The paper's relaxations as switches (unconstrained searches): W' for the last step of each window only, and the
# paper's separate 7x7/5x5/3x3 branches with their own BNs.
SWITCHES = {'zodartspp_k1': ['--perturbed-steps', '1'], 'zodartspp_branches': ['--kernel-mode', 'branches']}
PAPER_BUDGETS = {   # spec §6: (lower, upper) parameters of "small" (size 1) and "medium" (size 2)
    'breastmnist': {'small': (0, 221_695), 'medium': (341_768, 506_492)},
    'pneumoniamnist': {'small': (0, 331_864), 'medium': (424_434, 617_720)},
    'organamnist': {'small': (0, 335_579), 'medium': (411_723, 607_345)},
}
# The windows derived for docs/results/reproduction.csv's budgeted rows of the data sets the paper does not list (see
# ``budget_window``): a runs folder without the unconstrained runs to derive them from uses these.
DERIVED_BUDGETS = {'retinamnist': {'small': (0, 198_808), 'medium': (331_794, 440_331)}}
# Spec §11: the best ACC any method reaches in the papers' tables, and MedMNIST v2's ResNet-18 (28) for Retina.
PAPER_BEST = {'breastmnist': 0.885, 'pneumoniamnist': 0.946, 'retinamnist': 0.524}
TARGET_SOURCE = {'retinamnist': "MedMNIST v2's ResNet-18 (28)"}
REPRODUCTION_RUNS = (('breastmnist', 'retinamnist', 'pneumoniamnist'), (1, 2, 3),    # data sets x seeds x jobs
                     [job for job in JOBS if job != 'random-small' and job not in SWITCHES])
RETRAIN_EPOCHS = {'pneumoniamnist': 100}     # the CPU protocol's 100; the papers' 300 elsewhere


def run_folder(runs: Path, dataset: str, job: str, seed: int) -> Path:
    """Where one job's run lives (``job``: a method, or ``method-budget``)."""
    return runs / dataset / job / f'seed{seed}'


SWITCH_NAMES = {'zodartspp_k1': "zodartspp, W' last step", 'zodartspp_branches': 'zodartspp, kernel branches'}


def variant_name(method: str, budget: str) -> str:
    """How the report names a method at a budget, e.g. ``zodartspp (small)``."""
    return SWITCH_NAMES.get(method, method) + (f' ({budget})' if budget else '')


def job_of(row) -> str:
    """The job a CSV row records: its method, or ``method-budget`` (the inverse of ``run_job``'s split)."""
    return row.method + (f'-{row.budget}' if row.budget else '')


def run_job(job: str, seed: int, args) -> dict:
    """Search (unless ResNet-18 or random) and retrain one job, resuming what a previous invocation left."""
    method, _, budget = job.partition('-')
    out = run_folder(args.runs, args.dataset, job, seed)
    common = ['--dataset', args.dataset, '--seed', str(seed), '--preset', args.preset, '--quiet', '--accelerator',
              args.accelerator, *(['--data-root', str(args.data_root)] if args.data_root else []),
              *(['--max-samples', str(args.max_samples)] if args.max_samples else [])]
    searched = out / 'search' / 'architecture.json'
    # float32 adds no flag, so the commands (job.json) of runs started before --precision existed still resume
    precision = ['--precision', args.precision] if args.precision != '32' else []
    retrain_only = ['retrain', '--arch', str(searched), '--output', str(out / 'retrain'), '--epochs',
                    str(args.retrain_epochs), *common, *precision]
    if method in ('resnet18', 'random'):         # no search: a fixed network, or one drawn from the space
        searched.parent.mkdir(parents=True, exist_ok=True)
        window = budget_window(budget, seed, args) if budget else None       # random-small: zodartspp-small's window
        space, arch = (('resnet18', {}) if method == 'resnet18' else
                       ('size_variable', random_architecture(seed, window, args.dataset)))
        searched.write_text(json.dumps(arch))
        config = {'dataset': args.dataset, 'space': space, **({'param_budget': window} if window else {})}
        (out / 'search' / 'search_config.json').write_text(json.dumps(config))
        command, resume = retrain_only, (out / 'retrain').exists()
    else:
        command = ['run', '--output', str(out), '--retrain-epochs', str(args.retrain_epochs),
                   '--method', 'zodartspp' if method in SWITCHES else method, *SWITCHES.get(method, []), *common, *precision]
        if args.search_epochs:
            command += ['--epochs', str(args.search_epochs)]
        if budget:
            lower, upper = budget_window(budget, seed, args)
            command += ['--param-budget', f'{lower}:{upper}']
            if not out.exists():
                share_search_prefix(out, command, run_folder(args.runs, args.dataset, method, seed))
        resume = out.exists()
    _same_settings(out, command)
    if command[0] == 'run' and searched.exists():            # the search is done: retrain (or resume retraining)
        command, resume = retrain_only, (out / 'retrain').exists()
    command += ['--resume'] if resume else []
    print(f'[{datetime.datetime.now():%H:%M:%S}] {args.dataset} {job} seed {seed}: nni-zodarts {" ".join(command)}', flush=True)
    env = {**os.environ, 'OMP_NUM_THREADS': str(torch.get_num_threads())}      # the run uses the threads recorded
    done = subprocess.run([sys.executable, '-m', 'nni_zodarts.cli', *command], cwd=ROOT, env=env)
    if done.returncode:
        raise SystemExit(f'{args.dataset} {job} seed {seed} failed (exit {done.returncode}); rerun to resume it')
    metrics = json.loads((out / 'retrain' / 'retrain_metrics.json').read_text())
    record_architecture(searched, args.results / 'architectures' / args.dataset / f'{job}-seed{seed}.json')
    search_config = json.loads((out / 'search' / 'search_config.json').read_text())
    return {'dataset': args.dataset, 'method': method, 'budget': budget, 'seed': seed,
            'test_acc': metrics['test_acc'], 'test_auc': metrics['test_auc'],
            'test_acc_max': metrics['test_acc_max_over_epochs'], 'params': metrics['params'],
            'search_seconds': search_config.get('search_seconds') or 0.0, 'retrain_seconds': metrics['seconds'],
            'retrain_epochs': metrics['epochs'], 'device': device_label(metrics),
            'date': datetime.date.today().isoformat()}


def share_search_prefix(out: Path, command: list[str], unconstrained: Path) -> None:
    """Start a budgeted search where the unconstrained search of the same seed was at the end of its last epoch
    before the size phase (``size_phase_start.ckpt``): the budget acts only from there on (spec §6), so those epochs
    are the same computation, done once (tests/test_reproduce.py checks the result equals a search from scratch).
    Only when the unconstrained run's command (``job.json``) is this one without the budget. Its history rows come
    along, so ``search_seconds`` still counts the whole search."""
    from nni_zodarts.checkpointing import LATEST, SIZE_PHASE

    snapshot, job = unconstrained / 'search' / 'checkpoints' / SIZE_PHASE, unconstrained / 'job.json'
    at = command.index('--param-budget')
    free = [str(unconstrained) if arg == str(out) else arg for arg in command[:at] + command[at + 2:]]
    if not snapshot.exists() or not job.exists() or json.loads(job.read_text()) != free:
        return
    state = torch.load(snapshot, map_location='cpu', weights_only=False)
    # ModelCheckpoint's state names the other run's files: this run's starts afresh
    state['callbacks'] = {k: v for k, v in state['callbacks'].items() if not k.startswith('ModelCheckpoint')}
    (out / 'search' / 'checkpoints').mkdir(parents=True)
    for name in ('search_history.csv', 'alpha_history.csv'):
        history = pd.read_csv(unconstrained / 'search' / name)
        history[history['epoch'] <= state['epoch']].to_csv(out / 'search' / name, index=False)
    # the checkpoint last: killed before it, the run starts from scratch (and drops these rows as it goes)
    torch.save(state, out / 'search' / 'checkpoints' / LATEST)
    print(f'{out}: the search starts from {snapshot} (epochs 0-{state["epoch"]}, before the budget acts)', flush=True)


def device_label(metrics: dict) -> str:
    """The CSV's device column: device, threads per run and, when not float32, the retraining precision."""
    precision = metrics.get('precision', '32')
    return f'{metrics["device"]} x{torch.get_num_threads()}' + ('' if precision == '32' else f' {precision}')


def record_architecture(source: Path, target: Path) -> None:
    """Keep the retrained architecture (dead edges pruned, as retraining builds it) beside the results, so that
    every row's network can be rebuilt and its parameters counted without the run folders."""
    from search_spaces import prune_dead_edges

    arch = json.loads(source.read_text())
    if arch:                                                  # ResNet-18's is {}
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(prune_dead_edges(arch), indent=1) + '\n')


def random_architecture(seed: int, window: tuple[int, int] | None = None, dataset: str = 'breastmnist') -> dict:
    """The random-search baseline: every label of the size-variable space drawn uniformly, with ``seed``, drawn
    again while a cell is dead, dead edges pruned. With ``window`` (lower, upper), also drawn again until the
    network retraining builds from it for ``dataset`` (its channels and classes) has lower <= parameters <= upper."""
    from medmnist import INFO

    from nni_zodarts.retrain import build_model
    from nni_zodarts.search import sample_architecture
    from search_spaces import create_space

    labels = create_space('size_variable').simplify()
    uniform = {label: dict.fromkeys(choice.values, 1.0) for label, choice in labels.items()}
    shape = {'in_channels': INFO[dataset]['n_channels'], 'num_classes': len(INFO[dataset]['label'])}

    def fits(arch: dict) -> bool:
        with torch.device('meta'):                       # only the shapes: no weights to initialise
            params = sum(p.numel() for p in build_model(arch, 'size_variable', shape).parameters())
        return window[0] <= params <= window[1]

    return sample_architecture(uniform, torch.Generator().manual_seed(seed), accept=fits if window else None)


def _same_settings(out: Path, command: list[str]) -> None:
    """Resume only a run made with the same command (``job.json``), never a quick check at full scale. The run
    folder may have moved since (its old path in the command is read as ``out``)."""
    job = out / 'job.json'
    if job.exists():
        made = json.loads(job.read_text())
        output = Path(made[made.index('--output') + 1])              # the run folder (or its retrain/) then
        before = str(output.parent if output.name == 'retrain' else output)
        if [arg.replace(before, str(out)) for arg in made] != command:
            raise SystemExit(f'{out} holds a run made with other settings (see {job}): move it away or pass other '
                             '--runs')
    out.mkdir(parents=True, exist_ok=True)
    job.write_text(json.dumps(command))


def budget_window(budget: str, seed: int, args) -> tuple[int, int]:
    """The paper's window; else the one derived from this runs folder's unconstrained runs (kept in its
    ``budgets.json``); else, with none of those runs here, the one the CSV's rows used (``DERIVED_BUDGETS``)."""
    if args.dataset in PAPER_BUDGETS:
        return PAPER_BUDGETS[args.dataset][budget]
    path = args.runs / args.dataset / 'budgets.json'
    if not path.exists():
        unconstrained = [run_folder(args.runs, args.dataset, 'zodartspp', s) / 'search' / 'probabilities.json'
                         for s in args.seeds]
        recorded = args.dataset in DERIVED_BUDGETS and not any(p.exists() for p in unconstrained)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(DERIVED_BUDGETS[args.dataset] if recorded else derive_budgets(args)))
    return tuple(json.loads(path.read_text())[budget])


def derive_budgets(args, samples_per_run: int = 300) -> dict[str, tuple[int, int]]:
    """Spec §6: percentiles of architectures sampled from the unconstrained runs' final probabilities."""
    from nni_zodarts import ZODartsPP
    from nni_zodarts.search import sample_architecture
    from search_spaces import create_space

    runs = [run_folder(args.runs, args.dataset, 'zodartspp', s) / 'search' / 'probabilities.json' for s in args.seeds]
    runs = [path for path in runs if path.exists()]
    if len(runs) < len(args.seeds):
        raise SystemExit(f'the {args.dataset} budgets come from the unconstrained runs: finish those first '
                         f'({len(runs)} of {len(args.seeds)} done)')
    config = json.loads((runs[0].parent / 'search_config.json').read_text())
    strategy = ZODartsPP()
    strategy.mutate_model(create_space(config['space'], **config['space_kwargs']))
    counts = []
    for i, path in enumerate(runs):
        probs = {label: dict(map(tuple, pairs)) for label, pairs in json.loads(path.read_text()).items()}
        generator = torch.Generator().manual_seed(i)
        counts += [strategy.polynomial.count(sample_architecture(probs, generator)) for _ in range(samples_per_run)]
    q = torch.tensor(counts, dtype=torch.float64).quantile(torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64)).tolist()
    return {'small': (0, round(q[0])), 'medium': (round(q[1]), round(q[2]))}


def done_rows(csv: Path) -> set[tuple]:
    if not csv.exists():
        return set()
    frame = pd.read_csv(csv, keep_default_na=False, dtype={'budget': str})
    return {(r.dataset, r.method, r.budget, int(r.seed), int(r.retrain_epochs)) for r in frame.itertuples()}


def report(csv: Path) -> None:
    """Mean ± std per data set and method (markdown, for docs/RESULTS.md), the targets, and a
    params-vs-accuracy plot per data set (every seed, and each method's mean ± std)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    frame = pd.read_csv(csv, keep_default_na=False, dtype={'budget': str})
    frame['variant'] = [variant_name(m, b) for m, b in zip(frame.method, frame.budget)]
    table = summarise(frame)
    print('| data set | method | retrain epochs | seeds | test ACC (val-selected) | test AUC | ACC max over epochs '
          '| params | search s | retrain s | target ACC |\n|---|---|---|---|---|---|---|---|---|---|---|')
    for (dataset, epochs, variant), r in table.iterrows():
        spread = f' ± {r.acc_std:.3f}' if r.seeds > 1 else ''          # one seed has no spread
        print(f'| {dataset} | {variant} | {epochs} | {r.seeds:.0f} | {r.test_acc:.3f}{spread} '
              f'| {r.test_auc:.3f} | {r.acc_max:.3f} | {r.params:,.0f} | {r.search_s:.0f} | {r.retrain_s:.0f} '
              f'| {PAPER_BEST.get(dataset, float("nan")):.3f} |')
    print()
    for line in target_lines(table):
        print(line)
    print(f'\nStill to run: {missing_runs(frame) or "nothing"}.')
    for dataset, rows in frame.groupby('dataset'):
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for i, (variant, group) in enumerate(rows.groupby('variant')):
            color = f'C{i}'
            ax.scatter(group.params, group.test_acc, color=color, alpha=0.35, s=14)
            ax.errorbar(group.params.mean(), group.test_acc.mean(), xerr=group.params.std() if len(group) > 1 else 0,
                        yerr=group.test_acc.std() if len(group) > 1 else 0, fmt='o', color=color, capsize=3,
                        label=f'{variant} (n={len(group)})')
        if dataset in PAPER_BEST:
            ax.axhline(PAPER_BEST[dataset], ls='--', c='grey', lw=1, label='best in the papers')
        ax.set(xscale='log', xlabel='parameters', ylabel='test ACC (val-selected)', title=dataset)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(csv.parent.parent / f'reproduction_{dataset}.png', dpi=120)     # docs/ for docs/results
        plt.close(fig)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean (and ACC std) over seeds, indexed by ``(dataset, retrain_epochs, variant)``, the variants in ``JOBS``'
    order (``random (small)`` beside ``zodartspp (small)``)."""
    table = frame.groupby(['dataset', 'retrain_epochs', 'variant']).agg(
        seeds=('seed', 'count'), test_acc=('test_acc', 'mean'), acc_std=('test_acc', 'std'),
        test_auc=('test_auc', 'mean'), acc_max=('test_acc_max', 'mean'), params=('params', 'mean'),
        search_s=('search_seconds', 'mean'), retrain_s=('retrain_seconds', 'mean')).fillna({'acc_std': 0.0})
    rank = {variant_name(*job.partition('-')[::2]): i for i, job in enumerate(JOBS)}
    return table.sort_index(key=lambda level: level.map(lambda v: rank.get(v, len(rank))) if level.name == 'variant'
                            else level)


def _seeds(n: float) -> str:
    return f'{n:.0f} seed' + ('s' if n != 1 else '')


def _verdict(verdict: str, seeds: float) -> str:
    """The targets are about 3-seed means: with fewer seeds a verdict is provisional."""
    return verdict if seeds >= 3 else f'{verdict} so far (the target is a 3-seed mean)'


def target_lines(table: pd.DataFrame) -> list[str]:
    """The reproduction's targets, from the mean rows: ZO-DARTS++ >= the papers' best ACC; a budget with >= 35% fewer
    parameters than unconstrained loses <= 1 point of ACC; and ZO-DARTS++ at a budget against random draws inside
    the same window."""
    lines = []
    for (dataset, epochs), rows in table.groupby(level=[0, 1]):
        rows = rows.droplevel([0, 1])
        if 'zodartspp' not in rows.index:
            continue
        free = rows.loc['zodartspp']
        if dataset in PAPER_BEST:
            gap = 100 * (free.test_acc - PAPER_BEST[dataset])
            source = TARGET_SOURCE.get(dataset, "the papers' best")
            lines.append(f'- {dataset} ({epochs} retraining epochs, {_seeds(free.seeds)}): ZO-DARTS++ '
                         f'{free.test_acc:.3f} vs {source} '
                         f'{PAPER_BEST[dataset]:.3f}: {gap:+.1f} points, '
                         + _verdict('met' if gap >= 0 else 'missed', free.seeds))
        for budget in ('small', 'medium'):
            if f'zodartspp ({budget})' in rows.index:
                r = rows.loc[f'zodartspp ({budget})']
                fewer, delta = 1 - r.params / free.params, 100 * (r.test_acc - free.test_acc)
                size = f'{100 * fewer:.0f}% fewer' if fewer >= 0 else f'{-100 * fewer:.0f}% more'
                verdict = ('not >= 35% smaller' if fewer < 0.35 else 'met' if round(delta, 6) >= -1 else 'missed')
                lines.append(f'- {dataset} {budget} ({_seeds(r.seeds)}): {size} parameters than unconstrained, '
                             f'{delta:+.1f} points of ACC: ' + _verdict(verdict, min(r.seeds, free.seeds)))
                if f'random ({budget})' in rows.index:
                    drawn = rows.loc[f'random ({budget})']
                    lines.append(f'- {dataset} {budget}: ZO-DARTS++ {r.test_acc:.3f} ± {r.acc_std:.3f} at '
                                 f'{r.params:,.0f} parameters, random draws in the window {drawn.test_acc:.3f} ± '
                                 f'{drawn.acc_std:.3f} at {drawn.params:,.0f} ({_seeds(drawn.seeds)}): '
                                 f'{100 * (r.test_acc - drawn.test_acc):+.1f} points')
        for switch in SWITCH_NAMES.values():
            if switch in rows.index:
                r = rows.loc[switch]
                lines.append(f'- {dataset} {switch}: {r.test_acc:.3f} ± {r.acc_std:.3f} at {r.params:,.0f} parameters '
                             f'({_seeds(r.seeds)}); the paper\'s setting {free.test_acc:.3f} ± {free.acc_std:.3f} at '
                             f'{free.params:,.0f} ({_seeds(free.seeds)}): {100 * (r.test_acc - free.test_acc):+.1f} points')
    return lines


def missing_runs(frame: pd.DataFrame) -> str:
    """The reproduction's runs (``REPRODUCTION_RUNS``) without a row in ``frame``, e.g. ``retinamnist darts seeds
    2, 3``."""
    done = {(r.dataset, job_of(r), int(r.seed)) for r in frame.itertuples()}
    datasets, seeds, jobs = REPRODUCTION_RUNS
    missing = []
    for dataset in datasets:
        for job in jobs:
            left = [str(s) for s in seeds if (dataset, job, s) not in done]
            if left:
                missing.append(f'{dataset} {job} seed{"s" if len(left) > 1 else ""} {", ".join(left)}')
    return '; '.join(missing)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dataset', default='breastmnist')
    parser.add_argument('--data-root', type=Path, default=None, help='folder with <flag>.npz (Breast is embedded)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3])
    parser.add_argument('--jobs', nargs='+', default=JOBS, choices=JOBS)
    parser.add_argument('--retrain-epochs', type=int, default=None,
                        help=' '.join(f'{d}: {n},' for d, n in RETRAIN_EPOCHS.items()) + " else the papers' 300")
    parser.add_argument('--search-epochs', type=int, default=None, help="default: the paper's 40")
    parser.add_argument('--accelerator', default='auto')
    parser.add_argument('--precision', default='32', choices=['32', 'bf16-mixed'], help='retraining precision')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads per run (default: all cores); two harnesses with --threads 1 share 2 cores')
    parser.add_argument('--preset', default='paper', choices=['paper', 'demo'], help='demo: quick checks only')
    parser.add_argument('--max-samples', type=int, default=None, help='cap the train and val splits (quick checks only)')
    parser.add_argument('--runs', type=Path, default=ROOT / 'runs' / 'reproduce')
    parser.add_argument('--results', type=Path, default=RESULTS)
    parser.add_argument('--report', action='store_true', help='only print the tables and draw the plots')
    args = parser.parse_args(argv)
    if args.retrain_epochs is None:
        args.retrain_epochs = RETRAIN_EPOCHS.get(args.dataset, 300)
    args.runs, args.results = args.runs.resolve(), args.results.resolve()
    args.data_root = args.data_root.resolve() if args.data_root else None
    quick = args.preset != 'paper' or args.max_samples or args.search_epochs
    if quick and args.results == RESULTS and not args.report:
        parser.error('--preset demo, --max-samples and --search-epochs are for quick checks: pass --results elsewhere')
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    csv = args.results / 'reproduction.csv'
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report:
        return report(csv)
    for job in args.jobs:                       # job-major: the unconstrained seeds come before the budgets need them
        for seed in args.seeds:
            method, _, budget = job.partition('-')
            if (args.dataset, method, budget, seed, args.retrain_epochs) in done_rows(csv):
                continue
            row = run_job(job, seed, args)
            args.results.mkdir(parents=True, exist_ok=True)
            pd.DataFrame([row], columns=COLUMNS).to_csv(csv, mode='a', header=not csv.exists(), index=False)


if __name__ == '__main__':
    main()
