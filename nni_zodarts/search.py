"""One ZO-DARTS++ search on MedMNIST through ``NasExperiment``, with its history, plots and architecture files."""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd
import pytorch_lightning as pl
import torch

from .data import PAPER_SEARCH_BATCH, DataError, load_medmnist, make_loader, search_split
from .nni_workarounds import quiet_nni
from .files import prepare_output, read_json, write_csv, write_json
from .checkpointing import (LATEST, MovedFolderResume, RNGStateCheckpoint, SizePhaseSnapshot, latest_checkpoint,
                            without_nan_fill)
from .distributed import ZODartsDDP, launched_rank
from .errors import UsageError, as_usage_error
from .strategy import ZODartsPP

__all__ = ['search', 'SearchSettings', 'SearchRecorder', 'sample_architecture', 'SEARCH_RESULTS']

# The last architecture step's values, per epoch in search_history.csv (the zo_* ones in ZO-DARTS++'s implicit mode).
ZO_METRICS = ('arch_loss', 'zo_mu', 'zo_first_order', 'zo_implicit', 'zo_weight_gap')

SEARCH_RESULTS = ['architecture.json', 'search_history.csv', 'checkpoints', 'latency_table.json']


class SearchRecorder(pl.Callback):
    """Per epoch: a ``search_history.csv`` row (losses, accuracies, temperature, E[params], seconds) and the
    probabilities in ``alpha_history.csv``; both rewritten atomically, so they survive a kill."""

    def __init__(self, output: Path, val_loader, resume: bool = False, on_row: Callable[[dict], None] | None = None):
        self.output, self.val_loader, self.on_row = output, val_loader, on_row
        self.rows: list[dict] = []
        self.alpha_rows: list[dict] = []
        if resume and (output / 'search_history.csv').exists():
            self.rows = pd.read_csv(output / 'search_history.csv').to_dict('records')
            self.alpha_rows = pd.read_csv(output / 'alpha_history.csv').to_dict('records')

    def on_train_epoch_start(self, trainer, pl_module):
        epoch = trainer.current_epoch                          # after a resume, forget epochs that will be redone
        self.rows = [r for r in self.rows if r['epoch'] < epoch]
        self.alpha_rows = [r for r in self.alpha_rows if r['epoch'] < epoch]
        self._sums: dict[str, list[float]] = {}
        self._lr = trainer.optimizers[0].param_groups[0]['lr']         # this epoch's (the scheduler steps at its end)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for key in ('train_loss', 'train_acc'):
            if key in trainer.callback_metrics:
                self._sums.setdefault(key, []).append(float(trainer.callback_metrics[key]))

    def on_train_epoch_end(self, trainer, pl_module):
        seconds = time.perf_counter() - self._start
        if not trainer.is_global_zero:        # several processes: they hold the same alpha and weights; one records
            return
        val_loss, val_acc = evaluate(pl_module, self.val_loader)
        metrics = trainer.callback_metrics
        row = {'epoch': trainer.current_epoch,
               **{k: sum(v) / len(v) for k, v in self._sums.items()},
               **{k: float(metrics[k]) if k in metrics else float('nan') for k in ZO_METRICS},
               'val_loss': val_loss, 'val_acc': val_acc, 'temperature': getattr(pl_module, 'temperature', float('nan')),
               'expected_params': float('nan'),                  # NNI's DARTS has no cost model
               **(pl_module.expected_costs() if hasattr(pl_module, 'expected_costs') else {}),
               'lr': self._lr, 'seconds': seconds,
               **({'alpha_rank_spread': pl_module.alpha_rank_spread} if trainer.world_size > 1 else {}),
               'search_seconds': seconds + (self.rows[-1]['search_seconds'] if self.rows else 0.0)}
        self.rows.append(row)
        for label, dist in pl_module.export_probs().items():
            self.alpha_rows += [{'epoch': row['epoch'], 'label': label, 'choice': choice, 'probability': p}
                                for choice, p in dist.items()]
        pl_module.log_dict({'val_acc': val_acc, 'val_loss': val_loss}, rank_zero_only=True)
        write_csv(self.output / 'search_history.csv', pd.DataFrame(self.rows))
        write_csv(self.output / 'alpha_history.csv', pd.DataFrame(self.alpha_rows))
        if self.on_row is not None:
            self.on_row(row)


@torch.no_grad()
def evaluate(pl_module, loader) -> tuple[float, float]:
    """Supernet loss and accuracy on ``loader`` in eval mode."""
    was_training = pl_module.training
    pl_module.eval()
    loss = correct = count = 0.0
    for x, y in loader:
        x, y = x.to(pl_module.device), y.to(pl_module.device)
        logits = pl_module(x)
        loss += float(torch.nn.functional.cross_entropy(logits, y, reduction='sum'))
        correct += float((logits.argmax(-1) == y).sum())
        count += len(y)
    pl_module.train(was_training)
    return loss / count, correct / count


def sample_architecture(probs: dict[str, dict[Any, float]], generator: torch.Generator, tries: int = 1000,
                        accept: Callable[[dict], bool] | None = None) -> dict[str, Any]:
    """One architecture drawn label by label from the final probabilities, drawn again while a cell's output is
    unreachable, with its dead edges pruned (the authors' derivation and checkNone rule, spec §8); with
    ``accept`` (e.g. inside a parameter budget), also drawn again while ``accept(arch)`` is false."""
    from search_spaces import dead_cells, prune_dead_edges

    alive = 0
    for _ in range(tries):
        arch = {}
        for label, dist in probs.items():
            values, weights = list(dist), torch.tensor([max(float(w), 0.0) for w in dist.values()])
            arch[label] = values[int(torch.multinomial(weights / weights.sum(), 1, generator=generator))]
        if not dead_cells(arch):
            alive += 1
            arch = prune_dead_edges(arch)
            if accept is None or accept(arch):
                return arch
    if alive:
        raise ValueError(f'none of {tries} sampled architectures is accepted (e.g. fits the parameter budget)')
    raise ValueError(f'{tries} sampled architectures all have a cell whose every path is `none`')


def resolve_device(accelerator: str) -> str | None:
    """Where to keep the data tensors: on the GPU when training there."""
    if accelerator in ('gpu', 'cuda') or (accelerator == 'auto' and torch.cuda.is_available()):
        return 'cuda'
    return None


@dataclass
class SearchSettings:
    """What one search runs: data, space, schedule, machine and method. ``strategy`` holds the
    :class:`ZODartsPP` keyword arguments (``method='darts'``: NNI's first-order ``DARTS``'s, the papers' baseline)."""
    dataset: str = 'breastmnist'
    data_root: str | None = None
    download: bool = False
    image_size: int = 28
    space: str = 'size_variable'
    width_search: bool = False
    kernel_mode: str = 'shared'              # size_variable's kernel sizes: 'shared' 7x7 weight or 'branches'
    epochs: int = 10
    schedule_epochs: int | None = None       # the weights' cosine schedule (default: epochs)
    batch_size: int | None = None            # per process (default: the paper's per data set, divided by devices)
    learning_rate: float = 0.1               # the weights' (spec §7: SGD 0.1, cosine)
    seed: int = 0
    max_samples: int | None = None
    accelerator: str = 'auto'
    devices: int = 1
    derive: str = 'argmax'                   # or 'sample' (from the final probabilities)
    method: str = 'zodartspp'
    strategy: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.epochs <= 0:
            raise UsageError(f'epochs must be > 0, got {self.epochs}')
        if self.devices < 1:
            raise UsageError(f'devices must be >= 1, got {self.devices}')
        if self.learning_rate <= 0:
            raise UsageError(f'the weight learning rate must be > 0, got {self.learning_rate}')
        if self.devices > 1 and self.method != 'zodartspp':
            raise UsageError("devices > 1 needs method zodartspp (NNI's DARTS module does not average across ranks)")
        if self.kernel_mode != 'shared' and self.space != 'size_variable':
            raise UsageError(f'kernel_mode {self.kernel_mode!r} needs the size_variable space')
        if self.derive not in ('argmax', 'sample'):
            raise UsageError(f"derive must be 'argmax' or 'sample', got {self.derive!r}")


@quiet_nni()
def search(output: str | Path, settings: SearchSettings, *, quiet: bool = False, overwrite: bool = False,
           resume: bool = False, on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any] | None:
    """Run one search and write ``architecture.json``, ``search_config.json``, the histories, plots,
    checkpoints and logs into ``output``; ``on_epoch`` receives every ``search_history.csv`` row as it is written.
    Returns a summary.

    ``settings.devices > 1`` runs one search on that many processes (GPUs, or CPU processes with gloo) through
    :class:`~nni_zodarts.ZODartsDDP`, each on its shard of every batch (``batch_size`` is per process); Lightning
    re-runs the calling script for the other processes, which write no results (only their own NNI log folder
    under ``output/nni``) and get ``None``. One multi-process search per Python process (Lightning keeps the
    process group). The default batch size is the paper's divided by ``devices``, so the global batch stays."""
    from nni.nas.evaluator.pytorch import Lightning, Trainer
    from nni.nas.experiment import NasExperiment
    from search_spaces import create_space, most_probable_alive, prune_dead_edges

    from .nni_workarounds import check_filelock
    from .plots import plot_search
    from .training import SearchModule, progress_callbacks

    settings.check()
    st = settings
    method, devices = st.method, st.devices
    strategy = _strategy(method, dict(st.strategy))          # validates its arguments before anything is written
    check_filelock()
    data = load_medmnist(st.dataset, st.data_root, st.image_size, download=st.download)
    if method == 'zodartspp':                                # E[FLOPs] (and latency) of one image, every epoch
        strategy.input_shape = (data.n_channels, st.image_size, st.image_size)
    first = launched_rank() == 0
    output = prepare_output(output, SEARCH_RESULTS, overwrite=overwrite, resume=resume) if first else Path(output)
    if data.task == 'multi-label, binary-class':
        raise DataError(f'{st.dataset} is multi-label, which nni-zodarts does not search yet: '
                        'pick a single-label data set')
    pl.seed_everything(st.seed, workers=True, verbose=False)
    batch_size = st.batch_size or max(1, PAPER_SEARCH_BATCH.get(st.dataset, 64) // devices)
    device = resolve_device(st.accelerator) if devices == 1 else None    # several GPUs: Lightning moves each batch
    (wx, wy), (ax, ay) = search_split(data, st.seed, st.max_samples)
    space_kwargs = {'in_channels': data.n_channels, 'num_classes': data.n_classes}
    if st.width_search:
        space_kwargs['width_multipliers'] = (0.5, 0.75, 1.0)
    if st.kernel_mode != 'shared':
        space_kwargs['kernel_mode'] = st.kernel_mode
    model_space = create_space(st.space, **space_kwargs)

    recorder = SearchRecorder(output, make_loader(ax, ay, 256, train=False, device=device), resume=resume,
                              on_row=on_epoch)
    checkpoints = latest_checkpoint(output / 'checkpoints')
    loggers = [pl.loggers.CSVLogger(output / 'logs', name='search'),
               pl.loggers.TensorBoardLogger(output / 'logs', name='tensorboard')]
    trainer = Trainer(max_epochs=st.epochs, accelerator=st.accelerator, devices=devices, logger=loggers,
                      strategy=ZODartsDDP() if devices > 1 else 'auto',
                      callbacks=[*progress_callbacks(quiet), recorder, RNGStateCheckpoint(), MovedFolderResume(), checkpoints,
                                 SizePhaseSnapshot(output / 'checkpoints')],
                      enable_progress_bar=not quiet, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, deterministic=True, log_every_n_steps=1)
    without_nan_fill()
    last = output / 'checkpoints' / LATEST
    module = SearchModule(data.n_classes, st.learning_rate, schedule_epochs=st.schedule_epochs or st.epochs)
    evaluator = Lightning(module, trainer,
                          train_dataloaders=make_loader(wx, wy, batch_size, train=True, device=device),
                          val_dataloaders=make_loader(ax, ay, batch_size, train=True, device=device),
                          fit_kwargs={'ckpt_path': str(last)} if resume and last.exists() else {})
    experiment = NasExperiment(model_space, evaluator, strategy)
    experiment.config.experiment_working_directory = str(output / 'nni')
    experiment.run()
    arch = experiment.export_top_models(formatter='dict')[0]
    experiment.stop()
    if not trainer.is_global_zero:
        return None
    probs = strategy.oneshot_module.export_probs()
    budgets = strategy.config.budgets() if method == 'zodartspp' else []
    if st.derive == 'sample':
        costs = strategy.costs if method == 'zodartspp' else {}
        budgets = [b for b in budgets if b.cost in costs]
        inside = (lambda a: all(b.lower <= costs[b.cost].true_count(a) <= b.upper for b in budgets)) if budgets else None
        try:
            arch = sample_architecture(probs, torch.Generator().manual_seed(st.seed), accept=inside)
        except ValueError as err:
            if inside is None:                # else keep the export: the most probable architecture inside the budget
                raise UsageError(f"derive='sample': {err}") from err
            warnings.warn(f"derive='sample': {err}; exporting the most probable one inside the budget", RuntimeWarning)
    else:
        arch = prune_dead_edges(most_probable_alive(arch, probs))    # ZODartsPP's export already is; NNI's DARTS not

    model = create_space(st.space, **space_kwargs).freeze(arch)
    params = sum(p.numel() for p in model.parameters())
    history = recorder.rows
    expected = history[-1]['expected_params'] if history else float('nan')
    hardware = export_costs(strategy, arch, model) if method == 'zodartspp' else {}
    if method == 'zodartspp' and strategy.latency_table is not None:
        strategy.latency_table.save(output / 'latency_table.json')
    summary = {
        'dataset': st.dataset, 'space': st.space, 'space_kwargs': space_kwargs, 'image_size': st.image_size,
        'seed': st.seed, 'epochs': st.epochs, 'batch_size': batch_size, 'learning_rate': st.learning_rate, 'devices': devices,
        'global_batch_size': batch_size * devices,
        'derive': st.derive, 'params': params,
        'expected_params': None if math.isnan(expected) else expected,       # NaN (NNI's DARTS) is not JSON
        'method': method, 'param_budget': strategy.config.param_budget if method == 'zodartspp' else None,
        **hardware,
        'search_seconds': history[-1]['search_seconds'] if history else None,
        'val_acc': history[-1]['val_acc'] if history else None,
        'strategy': vars(strategy.config) if method == 'zodartspp' else dict(st.strategy),
    }
    write_json(output / 'architecture.json', arch)
    write_json(output / 'probabilities.json',            # [[choice, p], ...]: keeps the choices' types
               {label: list(map(list, dist.items())) for label, dist in probs.items()})
    write_json(output / 'search_config.json', summary)
    plot_search(output)
    return {**summary, 'architecture': arch}


def export_costs(strategy: ZODartsPP, arch: dict, model: torch.nn.Module) -> dict[str, Any]:
    """The sidecar's hardware costs of an exported ``arch`` (``model``: its frozen network): FLOPs, the predicted
    latency and the frozen model's measured one, the FLOPs and latency budgets and the input shape."""
    from .latency import measured_latency

    costs = strategy.costs_of(arch)
    out: dict[str, Any] = {'flops': costs.get('flops'), 'input_shape': list(strategy.input_shape or []) or None,
                           'flops_budget': strategy.config.flops_budget, 'latency_budget': strategy.config.latency_budget}
    if 'latency' in costs:
        table = strategy.latency_table
        out.update(latency_ms=costs['latency'], latency_device=table.device, measured_latency_ms=measured_latency(
            model, strategy.input_shape, table.batch_size, table.device))
    return out


class _CheckedZODartsPP(ZODartsPP):
    """``ZODartsPP`` whose ``ValueError`` about its arguments is a :class:`UsageError`: raised by its constructor, or by
    ``mutate_model``, where it checks them against the space (e.g. a budget below the space's smallest model)."""

    def __init__(self, **kwargs: Any):
        with as_usage_error():
            super().__init__(**kwargs)

    def mutate_model(self, model):
        with as_usage_error():
            return super().mutate_model(model)

    def mutate_evaluator(self, evaluator):
        with as_usage_error():
            return super().mutate_evaluator(evaluator)


def _strategy(method: str, kwargs: dict[str, Any]):
    if method == 'zodartspp':
        return _CheckedZODartsPP(**kwargs)
    if method == 'darts':
        from nni.nas.oneshot.pytorch.strategy import DARTS   # not nni.nas.strategy: its lazy import can fail

        from .nni_workarounds import ordered_darts_alphas
        ordered_darts_alphas()                               # so that a DARTS search resumes exactly
        return DARTS(**{'gradient_clip_val': 5.0, **kwargs})
    raise UsageError(f"--method must be 'zodartspp' or 'darts', got {method!r}")


def load_search_config(arch_path: Path) -> dict[str, Any]:
    """The ``search_config.json`` beside an ``architecture.json``, if any."""
    path = Path(arch_path).with_name('search_config.json')
    return read_json(path) if path.exists() else {}
