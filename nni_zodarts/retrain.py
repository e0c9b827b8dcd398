"""Retrain an exported architecture from scratch on MedMNIST and report honest test metrics (spec §9)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from .data import PAPER_RETRAIN_BATCH, DataError, cap, load_medmnist, make_loader
from .nni_workarounds import quiet_nni
from .files import prepare_output, read_json, write_json
from .checkpointing import LATEST, MovedFolderResume, RNGStateCheckpoint, latest_checkpoint, without_nan_fill
from .search import load_search_config, resolve_device
from .training import RetrainModule, max_over_epochs, medmnist_metrics, progress_callbacks

__all__ = ['retrain', 'build_model', 'RETRAIN_RESULTS']

RETRAIN_RESULTS = ['retrain_metrics.json', 'model.pt', 'checkpoints']
TRAIN_ON = ['train', 'train+val']


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); without, bf16 autocast is emulated and slow.
    torch only exposes this privately: if that changes, assume it does."""
    checks = [getattr(torch.cpu, name, None) for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported')]
    return any(check() if check else True for check in checks)


class ArchitectureError(ValueError):
    """An architecture that does not fit its space; the message names the bad key or value."""


def build_model(arch: dict[str, Any], space: str, space_kwargs: dict[str, Any]) -> torch.nn.Module:
    """Freeze ``arch`` (NNI's dict format) in a fresh space with its dead edges pruned (the same function with
    fewer weights, spec §8); cells keep BN running statistics for deployment."""
    from search_spaces import create_space, dead_cells, prune_dead_edges
    model_space = create_space(space, track_running_stats=True, **space_kwargs)
    labels = model_space.simplify()
    unknown = sorted(set(arch) - set(labels))
    missing = sorted(set(labels) - set(arch))
    if unknown or missing:
        raise ArchitectureError(f'architecture does not fit the {space} space: '
                                + (f'unknown key {unknown[0]!r}' if unknown else f'missing key {missing[0]!r}'))
    for label, mutable in labels.items():
        if arch[label] not in mutable.values:
            raise ArchitectureError(f'architecture value {arch[label]!r} of {label!r} is not one of {mutable.values}')
    dead = dead_cells(arch)
    if dead:
        raise ArchitectureError(f'cell {dead[0]} has no input-to-output path without `none`, so the network would '
                                'predict one constant: derive another architecture (--derive sample, another --seed)')
    return model_space.freeze(prune_dead_edges(arch))


@quiet_nni()
def retrain(arch_path: str | Path, output: str | Path, *, dataset: str | None = None, data_root: str | None = None,
            download: bool = False, image_size: int | None = None, space: str | None = None, epochs: int = 20,
            batch_size: int | None = None, seed: int = 0, max_samples: int | None = None, accelerator: str = 'auto',
            onnx: bool = False, quiet: bool = False, overwrite: bool = False, resume: bool = False,
            learning_rate: float = 0.1, warmup_epochs: int = 10, precision: str = '32',
            train_on: str = 'train') -> dict[str, Any]:
    """Train ``arch_path`` from scratch on the official train split, select the epoch on the val split,
    test once. Writes ``retrain_metrics.json``, ``retrain_history.csv``, ``model.pt`` (and ``model.onnx``).
    ``train_on='train+val'`` trains on both splits, as the papers do (spec §9), and keeps the last epoch: nothing
    is left to select on, and the test set is still used once.
    ``precision`` is Lightning's: ``'bf16-mixed'`` trains under bf16 autocast (weights and the final test stay
    float32), about 1.5-2x faster on CPUs with AVX512-BF16/AMX and much slower on CPUs without."""
    import pandas as pd

    from .files import write_csv

    if epochs <= 0:
        raise ValueError(f'--epochs must be > 0, got {epochs}')
    if train_on not in TRAIN_ON:
        raise ValueError(f'--train-on must be one of {TRAIN_ON}, got {train_on!r}')
    arch_path = Path(arch_path)
    if not arch_path.exists():
        raise DataError(f'{arch_path} not found: pass the architecture.json written by `nni-zodarts search`')
    try:
        arch = read_json(arch_path)
    except ValueError as err:
        raise ArchitectureError(f'{arch_path} is not valid JSON ({err})') from None
    if not isinstance(arch, dict):
        raise ArchitectureError(f'{arch_path} must hold a JSON object {{label: value}}')
    config = load_search_config(arch_path)
    dataset = dataset or config.get('dataset', 'breastmnist')
    image_size = image_size or config.get('image_size', 28)
    space = space or config.get('space', 'size_variable')
    data = load_medmnist(dataset, data_root, image_size, download=download)
    space_kwargs = {**config.get('space_kwargs', {}), 'in_channels': data.n_channels, 'num_classes': data.n_classes}
    if config.get('space_kwargs', {}).get('in_channels', data.n_channels) != data.n_channels:
        raise DataError(f'{dataset} has {data.n_channels} channels but the architecture was searched on '
                        f'{config["space_kwargs"]["in_channels"]}: retrain on a data set like the searched one')
    pl.seed_everything(seed, workers=True, verbose=False)
    model = build_model(arch, space, space_kwargs)
    output = prepare_output(output, RETRAIN_RESULTS, overwrite=overwrite, resume=resume)
    params = sum(p.numel() for p in model.parameters())
    batch_size = batch_size or PAPER_RETRAIN_BATCH.get(dataset, 64)
    device = resolve_device(accelerator)
    if precision.startswith('bf16') and device is None and not cpu_has_bf16():
        warnings.warn(f'--precision {precision}: this CPU has no AVX512-BF16 or AMX, so bf16 is emulated, several '
                      'times slower than float32 (7-13x measured); drop --precision', RuntimeWarning)
    train = cap(*data.splits['train'], max_samples, seed)
    val = cap(*data.splits['val'], max_samples, seed + 1)
    evals = {'val': val, 'test': data.splits['test']}
    if train_on == 'train+val':
        train = tuple(torch.cat(parts) for parts in zip(train, evals.pop('val')))
    module = RetrainModule(model, data.n_classes, data.task, epochs, learning_rate=learning_rate,
                           warmup_epochs=warmup_epochs, eval_splits=tuple(evals))
    best = pl.callbacks.ModelCheckpoint(dirpath=output / 'checkpoints', monitor='val_select', mode='max',
                                        filename='best', enable_version_counter=False)
    latest = latest_checkpoint(output / 'checkpoints')
    trainer = pl.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, precision=precision,
                         callbacks=[*progress_callbacks(quiet), RNGStateCheckpoint(), MovedFolderResume(),
                                    *([best] if 'val' in evals else []),
                                    latest],
                         logger=[pl.loggers.CSVLogger(output / 'logs', name='retrain'),
                                 pl.loggers.TensorBoardLogger(output / 'logs', name='tensorboard')],
                         enable_progress_bar=not quiet, enable_model_summary=False, num_sanity_val_steps=0,
                         deterministic=True, log_every_n_steps=1)
    without_nan_fill()
    eval_loaders = [make_loader(*split, 512, train=False, device=device) for split in evals.values()]
    last = output / 'checkpoints' / LATEST
    trainer.fit(module, make_loader(*train, batch_size, train=True, device=device), eval_loaders,
                ckpt_path=str(last) if resume and last.exists() else None)

    selected = module.history[-1]['epoch']                   # train+val: the last epoch's weights, as trained
    if 'val' in evals:
        best_checkpoint = torch.load(best.best_model_path, map_location='cpu', weights_only=True)
        module.load_state_dict(best_checkpoint['state_dict'])
        selected = int(best_checkpoint['epoch'])
    test_acc, test_auc = evaluate(module.eval(), eval_loaders[-1], module.task)
    torch.save(module.model.state_dict(), output / 'model.pt')
    write_csv(output / 'retrain_history.csv', pd.DataFrame(module.history))
    metrics = {
        'dataset': dataset, 'space': space, 'architecture': str(arch_path), 'params': params,
        'test_acc': test_acc, 'test_auc': test_auc,
        'train_on': train_on, 'train_images': len(train[1]), 'best_epoch': selected,
        'best_val_acc': next(h.get('val_acc') for h in module.history if h['epoch'] == selected),
        'selection': 'max val_acc, ties to the lower val_loss' if 'val' in evals else 'last epoch',
        'test_acc_max_over_epochs': max_over_epochs(module.history, 'test_acc'),
        'epochs': epochs, 'batch_size': batch_size, 'seconds': module.fit_seconds, 'seed': seed,
        'device': str(module.device), 'precision': precision, 'weights': 'model.pt',
    }
    if onnx:
        metrics['onnx'] = export_onnx(module.model, data.n_channels, image_size, output / 'model.onnx')
    write_json(output / 'retrain_metrics.json', metrics)
    return metrics


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, task: str) -> tuple[float, float]:
    """(ACC, AUC) of ``model`` over ``loader`` on the model's device, in whatever train/eval mode it is in."""
    device = next(model.parameters()).device
    outputs = [(model(x.to(device)), y) for x, y in loader]
    return medmnist_metrics(torch.cat([o for o, _ in outputs]), torch.cat([y for _, y in outputs]), task)


def export_onnx(model: torch.nn.Module, channels: int, image_size: int, path: Path) -> str:
    model = model.cpu().eval()
    torch.onnx.export(model, (torch.randn(1, channels, image_size, image_size),), str(path), input_names=['image'],
                      output_names=['logits'], dynamic_axes={'image': {0: 'batch'}, 'logits': {0: 'batch'}}, dynamo=False)
    return path.name
