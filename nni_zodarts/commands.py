"""The ``search``, ``retrain`` and ``run`` commands of ``nni-zodarts`` (their parser, presets and runner): a thin
layer over ``search.search`` and ``retrain.retrain``, shared by :mod:`nni_zodarts.cli` and :mod:`nni_zodarts.trial`."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import UsageError

# Spec §4-§9 (paper) and a scaled-down schedule that finishes in minutes on 2 CPU cores (demo).
PRESETS = {
    'demo': {'search': dict(epochs=8, size_search_start_epoch=4, temperature_interval=1, arc_update_interval=5),
             'retrain': dict(epochs=15, warmup_epochs=2)},
    'paper': {'search': dict(epochs=40, schedule_epochs=50, size_search_start_epoch=20, temperature_interval=5,
                             arc_update_interval=10, perturbed_steps=10),       # W' for the whole window
              'retrain': dict(epochs=300, warmup_epochs=10)},
}


ZO_SCHEDULE = ('size_search_start_epoch', 'temperature_interval', 'arc_update_interval',
               'perturbed_steps')                                                   # ZODartsPP's, not DARTS's


class Parser(argparse.ArgumentParser):
    def error(self, message):                    # one line, exit 2
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


SUFFIXES = {'k': 1e3, 'K': 1e3, 'M': 1e6, 'G': 1e9}


def _number(text: str, suffixes: bool) -> float:
    if suffixes and text[-1:] in SUFFIXES:
        return float(text[:-1]) * SUFFIXES[text[-1]]
    return float(text)


def _window(unit: str, suffixes: bool = True):
    """``N`` (upper bound) or ``L:U`` (window) in ``unit``; with ``suffixes``, numbers may end in k, M or G."""
    def parse(text: str):
        try:
            parts = [_number(p, suffixes) for p in text.split(':')]
        except ValueError:
            example = ' (e.g. 300k or 20M)' if suffixes else ''
            raise argparse.ArgumentTypeError(f'expected N or L:U {unit}{example}, got {text!r}') from None
        if len(parts) not in (1, 2) or any(p <= 0 for p in parts[-1:]) or any(p < 0 for p in parts):
            raise argparse.ArgumentTypeError(f'budget must be N > 0 or 0 <= L <= U, got {text!r}')
        if len(parts) == 2 and parts[0] > parts[1]:
            raise argparse.ArgumentTypeError(f'budget lower bound is above its upper bound in {text!r}: swap them')
        return parts[0] if len(parts) == 1 else tuple(parts)
    return parse


budget = _window('parameters')
flops_budget = _window('FLOPs')
latency_budget = _window('milliseconds', suffixes=False)


def add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--param-budget', type=budget, default=None, help='N or L:U parameters (k/M suffixes: 300k)')
    p.add_argument('--flops-budget', type=flops_budget, default=None,
                   help='N or L:U FLOPs of one image, as torch\'s FlopCounterMode counts them (M/G suffixes: 20M)')
    p.add_argument('--latency-budget', type=latency_budget, default=None,
                   help='MS or L:U predicted milliseconds of one image on this machine (measured per unit at the start)')


def positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f'must be > 0, got {text}')
        return value
    return parse


def _per_preset(stage: str, key: str) -> str:
    return ', '.join(f'{name} {PRESETS[name][stage][key]}' for name in sorted(PRESETS))


SEARCH_EPOCHS_HELP = (
    f'search epochs (default: from --preset: {_per_preset("search", "epochs")}). They stretch the preset\'s '
    'schedule: the size phase starts at the same fraction of them (half-way, rounded, at the latest in the last '
    'epoch); the weights\' cosine learning-rate schedule spans N epochs (paper: max(N, 50), so the rate never rises '
    'again); the temperature keeps the preset\'s interval of epochs between decays (set it with '
    '--temperature-interval)')
RETRAIN_EPOCHS_HELP = f'retraining epochs (default: from --preset: {_per_preset("retrain", "epochs")})'


def _common(p: argparse.ArgumentParser, epochs_help: str) -> None:
    p.add_argument('--dataset', default=None, help='MedMNIST flag, e.g. breastmnist, pneumoniamnist (default: breastmnist)')
    p.add_argument('--data-root', default=None, help='folder holding <flag>.npz (default: the embedded BreastMNIST)')
    p.add_argument('--download', action='store_true', help='fetch a missing <flag>.npz into --data-root (network)')
    p.add_argument('--image-size', type=int, default=None, choices=[28, 64, 128, 224], help='MedMNIST size (28)')
    p.add_argument('--preset', choices=sorted(PRESETS), default='demo',
                   help="schedule: demo (minutes) or paper (the paper's schedule and ZO window)")
    p.add_argument('--epochs', type=positive(int), default=None, metavar='N', help=epochs_help)
    p.add_argument('--batch-size', type=positive(int), default=None, help="default: the paper's per-data-set size")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--max-samples', type=positive(int), default=None, help='cap the train and val splits (quick runs)')
    p.add_argument('--accelerator', choices=['auto', 'cpu', 'gpu'], default='auto')
    p.add_argument('--quiet', action='store_true', help='no progress bar or logs')
    p.add_argument('--overwrite', action='store_true', help='replace results already in --output')
    p.add_argument('--resume', action='store_true', help='continue from the checkpoint in --output')


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--method', choices=['zodartspp', 'darts'], default='zodartspp',
                   help="darts: NNI's first-order DARTS on the same space and data (for the papers' DARTS-V2)")
    p.add_argument('--space', choices=['size_variable', 'nb201'], default='size_variable')
    p.add_argument('--width-search', action='store_true', help='also search per-stage width (x0.5/0.75/1)')
    add_budget_args(p)
    p.add_argument('--latency-table', type=Path, default=None,
                   help='latency_table.json of an earlier search of the same space and data (skips measuring)')
    p.add_argument('--derive', choices=['argmax', 'sample'], default='argmax')
    p.add_argument('--zo-mode', choices=['implicit', 'direct'], default=None, help='ZO estimator (implicit)')
    p.add_argument('--normalization', choices=['sparsemax', 'softmax'], default=None, help='(sparsemax)')
    p.add_argument('--mu', type=float, default=None, help='ZO step, relative to ||alpha|| of the perturbed tables (0.005)')
    p.add_argument('--perturbed-steps', type=positive(int), default=None, metavar='K',
                   help="W' trains for the last K weight steps of each ZO window (default: 1; --preset paper: all 10, "
                        "the paper's)")
    p.add_argument('--kernel-mode', choices=['shared', 'branches'], default='shared',
                   help="size_variable's kernel sizes: one shared 7x7 weight, or the paper's separate branches")
    p.add_argument('--temperature-interval', type=positive(int), default=None, metavar='N',
                   help='epochs between two temperature decays, tau = 1.5 * 0.75 ** floor(epoch / N) '
                        f'(default: from --preset: {_per_preset("search", "temperature_interval")}; --epochs keeps it)')
    p.add_argument('--devices', type=positive(int), default=1,
                   help='search on N processes/GPUs with DDP (--batch-size is per process)')


def _precision(p: argparse.ArgumentParser) -> None:
    p.add_argument('--precision', choices=['32', 'bf16-mixed'], default='32',
                   help='retraining precision: bf16-mixed is faster on CPUs with AVX512-BF16 or AMX and on GPUs (32)')


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog='nni-zodarts', description='ZO-DARTS++ neural architecture search on MedMNIST (NNI plugin)')
    sub = parser.add_subparsers(dest='command', required=True, parser_class=Parser)
    sub.add_parser('trial', help='one search (+ retrain) as an nnictl trial, parameters from NNI', add_help=False)
    sub.add_parser('report', help='collect an nnictl experiment into a table and a Pareto plot', add_help=False)
    s = sub.add_parser('search', help='search an architecture')
    _common(s, SEARCH_EPOCHS_HELP)
    _search_args(s)
    s.add_argument('--output', required=True, type=Path)
    r = sub.add_parser('retrain', help='train an exported architecture from scratch')
    _common(r, RETRAIN_EPOCHS_HELP)
    r.add_argument('--arch', required=True, type=Path, help='architecture.json from `search`')
    r.add_argument('--onnx', action='store_true', help='also export model.onnx')
    r.add_argument('--train-on', choices=['train', 'train+val'], default='train',
                   help='train+val: the papers\' final training on both splits, keeping the last epoch (train)')
    _precision(r)
    r.add_argument('--output', required=True, type=Path)
    d = sub.add_parser('derive', help='the most probable architecture of a finished search inside new budgets')
    d.add_argument('--search', required=True, type=Path, help='--output folder of a finished `nni-zodarts search`')
    add_budget_args(d)
    d.add_argument('--data-root', default=None, help='where the search\'s data set is (for the supernet accuracy)')
    d.add_argument('--overwrite', action='store_true', help='replace results already in --output')
    d.add_argument('--output', required=True, type=Path)
    u = sub.add_parser('run', help='search, then retrain, then print the result (default: demo on BreastMNIST)')
    _common(u, SEARCH_EPOCHS_HELP)
    _search_args(u)
    u.add_argument('--onnx', action='store_true')
    _precision(u)
    u.add_argument('--retrain-epochs', type=positive(int), default=None, help='retraining epochs (default: from --preset)')
    u.add_argument('--output', type=Path, default=Path('runs/demo'))
    return parser


def _search_kwargs(args) -> dict:
    preset = dict(PRESETS[args.preset]['search'])
    if args.epochs:                  # the size phase starts at the preset's fraction of the search; LR never rises
        start = round(args.epochs * preset['size_search_start_epoch'] / preset['epochs'])
        preset.update(epochs=args.epochs, size_search_start_epoch=min(start, args.epochs - 1))
        if 'schedule_epochs' in preset:
            preset['schedule_epochs'] = max(preset['schedule_epochs'], args.epochs)
    given = {k: v for k, v in dict(param_budget=args.param_budget, flops_budget=args.flops_budget,
                                   latency_budget=args.latency_budget,
                                   latency_table=str(args.latency_table) if args.latency_table else None,
                                   zo_mode=args.zo_mode, perturbed_steps=args.perturbed_steps,
                                   normalization=args.normalization, mu=args.mu,
                                   temperature_interval=args.temperature_interval).items() if v is not None}
    zo = {**{k: preset.pop(k) for k in ZO_SCHEDULE if k in preset}, **given}   # flags over the preset; unset: defaults
    if args.method == 'darts':
        if given:
            flag = '--' + next(iter(given)).replace('_', '-')
            raise UsageError(f'{flag} needs --method zodartspp (NNI\'s DARTS has no such setting)')
        zo = {}
    return dict(dataset=args.dataset or 'breastmnist', data_root=args.data_root, download=args.download,
                image_size=args.image_size or 28,
                space=args.space, width_search=args.width_search, batch_size=args.batch_size, seed=args.seed,
                max_samples=args.max_samples, accelerator=args.accelerator, devices=args.devices, derive=args.derive,
                method=args.method, kernel_mode=args.kernel_mode, **preset, strategy=zo)


def _search(output, args, on_epoch=None):
    from .search import SearchSettings, search
    return search(output, SearchSettings(**_search_kwargs(args)), quiet=args.quiet, overwrite=args.overwrite,
                  resume=args.resume, on_epoch=on_epoch)


def _retrain_kwargs(args) -> dict:
    preset = dict(PRESETS[args.preset]['retrain'])
    epochs = args.epochs if args.command == 'retrain' else getattr(args, 'retrain_epochs', None)
    if epochs:
        preset['epochs'] = epochs
    return dict(dataset=args.dataset, data_root=args.data_root, download=args.download, image_size=args.image_size,
                seed=args.seed,
                batch_size=args.batch_size if args.command == 'retrain' else None, max_samples=args.max_samples,
                accelerator=args.accelerator, onnx=args.onnx, quiet=args.quiet, overwrite=args.overwrite,
                resume=args.resume, precision=args.precision, train_on=getattr(args, 'train_on', 'train'), **preset)


def _quiet(everything: bool) -> None:
    """The CLI prints its own progress and summary: NNI's log lines only on errors, Lightning's from warnings on
    (its hardware lines and tips are info), both only on errors with ``--quiet``."""
    logging.getLogger('nni').setLevel(logging.ERROR)
    for name in ('pytorch_lightning', 'lightning', 'lightning.pytorch', 'lightning_fabric'):
        logging.getLogger(name).setLevel(logging.ERROR if everything else logging.WARNING)


def run_command(args, on_epoch=None) -> int:
    from .nni_workarounds import quiet_nni
    with quiet_nni():
        return _run_command(args, on_epoch)


def _run_command(args, on_epoch=None) -> int:
    """Run a parsed ``search``/``retrain``/``run``. In an nnictl trial (``on_epoch`` reports each search epoch),
    ``run`` retrains only when asked and reports its final result to NNI.

    Bad input (:class:`~nni_zodarts.errors.UsageError` and the data, output and architecture errors) is one line on
    stderr and exit code 2; a non-finite loss is one line and exit code 3; SIGTERM is one line and exit code 143
    (Lightning stops training as a ``SystemExit`` without a code, which would exit 0); any other exception is a bug
    and keeps its traceback, as every one does with ``NNI_ZODARTS_DEBUG=1``."""
    trial = on_epoch is not None
    _quiet(getattr(args, 'quiet', False))
    from pytorch_lightning.utilities.exceptions import SIGTERMException
    from .data import DataError
    from .files import OutputError
    from .retrain import ArchitectureError, retrain
    try:
        if args.command == 'derive':
            from .derive import derive
            result = derive(args.search, args.output, param_budget=args.param_budget, flops_budget=args.flops_budget,
                            latency_budget=args.latency_budget, data_root=args.data_root, overwrite=args.overwrite)
            acc = result['supernet_val_acc']
            print(f'architecture: {args.output / "architecture.json"} ({describe_costs(result)}'
                  + (f', supernet validation ACC {acc:.3f})' if acc is not None else ')')
                  + f'; Pareto plot: {args.search / "pareto.png"}')
        elif args.command == 'search':
            result = _search(args.output, args)
            if result is None:                              # a helper process of a multi-process search
                return 0
            print(f'architecture: {args.output / "architecture.json"} ({describe_costs(result)})')
        elif args.command == 'retrain':
            metrics = retrain(args.arch, args.output, **_retrain_kwargs(args))
            print(_table([('test ACC', f'{metrics["test_acc"]:.4f}'), ('test AUC', f'{metrics["test_auc"]:.4f}'),
                          ('parameters', f'{metrics["params"]:,}')]))
        else:
            found = _search(args.output / 'search', args, on_epoch)
            if found is None:
                return 0
            final = {'default': found['val_acc'], 'params': found['params'], 'search_seconds': found['search_seconds'],
                     **{k: found[k] for k in ('flops', 'latency_ms', 'measured_latency_ms') if found.get(k) is not None}}
            if not (trial and not args.retrain_epochs):
                metrics = retrain(args.output / 'search' / 'architecture.json', args.output / 'retrain',
                                  **_retrain_kwargs(args))
                final.update(default=metrics['best_val_acc'], test_acc=metrics['test_acc'], test_auc=metrics['test_auc'],
                             retrain_seconds=metrics['seconds'])
                print(_table([('dataset', found['dataset']), ('parameters', f'{metrics["params"]:,}'),
                              ('search seconds', f'{found["search_seconds"]:.0f}'),
                              ('retrain seconds', f'{metrics["seconds"]:.0f}'),
                              ('test ACC (val-selected)', f'{metrics["test_acc"]:.4f}'),
                              ('test AUC (val-selected)', f'{metrics["test_auc"]:.4f}'),
                              ('test ACC, max over epochs', f'{metrics["test_acc_max_over_epochs"]:.4f}'),
                              ('results', str(args.output))]))
            if trial:
                import nni
                nni.report_final_result(final)
    except (UsageError, DataError, OutputError, ArchitectureError) as err:
        return _fail(args, err, 2)
    except FloatingPointError as err:                       # the last good checkpoint stays in --output
        return _fail(args, err, 3, f'{err}; the last good checkpoint is in {args.output} (--resume continues from it)')
    except SIGTERMException as err:
        return _fail(args, err, 143, f'stopped by SIGTERM; the last good checkpoint is in {args.output} '
                                     '(--resume continues from it)')
    return 0


def describe_costs(result: dict) -> str:
    """``'96,909 parameters, 21.3 MFLOPs, 2.41 ms predicted (2.20 measured)'`` from a search or derive summary."""
    parts = [f'{result["params"]:,} parameters']
    if result.get('flops') is not None:
        parts.append(f'{result["flops"] / 1e6:.1f} MFLOPs')
    if result.get('latency_ms') is not None:
        measured = result.get('measured_latency_ms')
        parts.append(f'{result["latency_ms"]:.2f} ms predicted' + (f' ({measured:.2f} measured)' if measured else ''))
    return ', '.join(parts)


def _fail(args, err: Exception, code: int, message: str | None = None) -> int:
    """``err`` as one line on stderr and exit code ``code``; its traceback with ``NNI_ZODARTS_DEBUG=1``."""
    if os.environ.get('NNI_ZODARTS_DEBUG'):
        raise err
    print(f'nni-zodarts {args.command}: error: {message or err}', file=sys.stderr)
    return code


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return '\n'.join(f'{k:<{width}}  {v}' for k, v in rows)
