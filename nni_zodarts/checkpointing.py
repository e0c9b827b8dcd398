"""Checkpoints a killed run resumes from: the latest state every epoch, with the random-number generators."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

__all__ = ['RNGStateCheckpoint', 'MovedFolderResume', 'SizePhaseSnapshot', 'latest_checkpoint', 'without_nan_fill',
           'LATEST', 'SIZE_PHASE']

LATEST = 'latest.ckpt'
SIZE_PHASE = 'size_phase_start.ckpt'


class RNGStateCheckpoint(pl.Callback):
    """Saves the Python, NumPy and torch (and CUDA) generators with every checkpoint and restores them on
    resume: data order, augmentation and ZO directions then continue as if the run had never stopped."""

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        # Tensors and plain values only, so the checkpoint still loads with torch.load(weights_only=True).
        state = {'python': random.getstate(), 'numpy': (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                        cached), 'torch': torch.get_rng_state()}
        if torch.cuda.is_available():
            state['cuda'] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state['python'])
        kind, keys, pos, has_gauss, cached = state['numpy']
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])


class MovedFolderResume(pl.Callback):
    """Resuming a run whose folder has moved since its checkpoint (renamed, or reached through another path):
    Lightning's ``ModelCheckpoint`` then forgets its best score, so a resumed retraining would keep the best epoch
    after the resume only. Before the callbacks load their state, this points it at the same files in the new
    folder."""

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        states = checkpoint.get('callbacks', {})
        for callback in trainer.callbacks:
            state = states.get(callback.state_key)
            if isinstance(callback, pl.callbacks.ModelCheckpoint) and state and state.get('dirpath') not in (
                    None, callback.dirpath):
                _move_state(state, callback.dirpath)


def _move_state(state: dict, folder: str) -> None:
    """A ``ModelCheckpoint`` state with its file paths pointed at the same file names in ``folder``."""
    def here(path):
        return str(Path(folder) / Path(path).name) if path else path
    state.update({key: here(state.get(key)) for key in ('best_model_path', 'kth_best_model_path', 'last_model_path')},
                 best_k_models={here(k): v for k, v in state.get('best_k_models', {}).items()}, dirpath=folder)


def latest_checkpoint(directory) -> pl.callbacks.ModelCheckpoint:
    """``directory/latest.ckpt``, rewritten at the end of every training epoch, after its validation (Lightning
    2.6 writes ``save_last`` only beside a top-k save, so this is a top-1 checkpoint without a monitor); search
    and retraining resume from the same point of an epoch."""
    return pl.callbacks.ModelCheckpoint(dirpath=directory, filename=LATEST[:-5], save_top_k=1,
                                        save_on_train_epoch_end=True, enable_version_counter=False)


class SizePhaseSnapshot(pl.callbacks.Checkpoint):
    """``directory/size_phase_start.ckpt``: the state at the end of the last epoch before the size phase (a
    ZO-DARTS++ module's ``size_start``). The budget acts only from there on (spec §6), so searches that differ only
    in ``param_budget`` are identical up to this point and one can continue from another's snapshot
    (``benchmarks.reproduce`` does). A ``Checkpoint``, so that Lightning calls it where it calls
    ``ModelCheckpoint``: after the module's epoch-end hooks, which makes the file the same as ``latest.ckpt`` then."""

    def __init__(self, directory):
        self.path = Path(directory) / SIZE_PHASE

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == getattr(pl_module, 'size_start', 0) - 1:     # NNI's DARTS has no size phase
            trainer.save_checkpoint(self.path)


def without_nan_fill() -> None:
    """Keep ``Trainer(deterministic=True)``'s deterministic algorithms (exact resume) but drop torch's filling of
    every new tensor with NaN (``fill_uninitialized_memory``, a guard against reading uninitialised memory): it
    cost 15-20% of a CPU search step here. Process-wide, as torch's flag is."""
    import torch.utils.deterministic
    torch.utils.deterministic.fill_uninitialized_memory = False
