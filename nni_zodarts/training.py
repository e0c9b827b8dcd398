"""Lightning modules: the search evaluator (spec §7) and the retraining of a frozen architecture (spec §9)."""
from __future__ import annotations

import time

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from nni.nas.evaluator.pytorch.lightning import ClassificationModule

__all__ = ['SearchModule', 'RetrainModule', 'medmnist_metrics']


class SearchModule(ClassificationModule):
    """NNI's ``ClassificationModule`` with the spec's weight optimiser: SGD (lr 0.1, momentum 0.9, Nesterov,
    wd 3e-4), cosine per epoch to ``eta_min`` over ``schedule_epochs`` (the paper: 50, read out at 40)."""

    def __init__(self, num_classes: int, learning_rate: float = 0.1, weight_decay: float = 3e-4,
                 schedule_epochs: int = 50, eta_min: float = 1e-3):
        super().__init__(criterion=nn.CrossEntropyLoss, learning_rate=learning_rate, weight_decay=weight_decay,
                         optimizer=torch.optim.SGD, num_classes=num_classes)
        self.schedule_epochs, self.eta_min = schedule_epochs, eta_min

    def on_validation_epoch_end(self):
        """Nothing to report: an nnictl trial reports through ``nni_zodarts.trial`` (NNI's default would report
        the last training batch's accuracy as the final result)."""

    def _final_report(self):
        pass

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate, momentum=0.9, nesterov=True,
                              weight_decay=self.hparams.weight_decay)
        return [opt], [torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.schedule_epochs, self.eta_min)]


def medmnist_metrics(logits: torch.Tensor, labels: torch.Tensor, task: str) -> tuple[float, float]:
    """(ACC, AUC) exactly as ``medmnist.evaluator`` computes them."""
    from medmnist.evaluator import getACC, getAUC
    scores = torch.softmax(logits.float(), -1).cpu().numpy()
    y = labels.cpu().numpy()
    try:
        auc = float(getAUC(y, scores, task))
    except ValueError:                                   # one class only in a tiny slice: AUC undefined
        auc = float('nan')
    return float(getACC(y, scores, task)), auc


class RetrainModule(pl.LightningModule):
    """Train a frozen architecture from scratch (spec §9, with the authors' bugs fixed):

    SGD (lr 0.1, momentum 0.9, weight decay 3e-4 actually applied), 10-epoch linear warm-up from 1%, then
    cosine to 0; cross-entropy with label smoothing 0.1; MixUp or CutMix (alpha 0.1) on every batch. Every
    epoch logs, for each of ``eval_splits`` (the order of the evaluation loaders), ``<split>_acc``/``_auc``/
    ``_loss``; with a ``val`` split also ``val_select`` (checkpoint selection: the validation accuracy, ties - the
    norm on small validation sets, e.g. 78 Breast images - going to the lower validation loss). ``test_acc`` is
    only for the papers' max-over-epochs figure: the reported test numbers are those of the selected weights.
    ``fit_seconds`` adds up the training time over resumed runs.
    """

    def __init__(self, model: nn.Module, num_classes: int, task: str, epochs: int, learning_rate: float = 0.1,
                 weight_decay: float = 3e-4, warmup_epochs: int = 10, label_smoothing: float = 0.1,
                 mix_alpha: float = 0.1, eval_splits: tuple[str, ...] = ('val', 'test')):
        super().__init__()
        from torchvision.transforms import v2
        # channels_last: the layout oneDNN's CPU convolutions prefer (15-20% faster retraining here); weights are
        # saved and loaded by value, so model.pt and checkpoints do not depend on it.
        self.model, self.task, self.epochs = model.to(memory_format=torch.channels_last), task, epochs
        self.learning_rate, self.weight_decay, self.eval_splits = learning_rate, weight_decay, eval_splits
        self.warmup_epochs = min(warmup_epochs, max(epochs - 1, 0))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.mix = v2.RandomChoice([v2.MixUp(alpha=mix_alpha, num_classes=num_classes),
                                    v2.CutMix(alpha=mix_alpha, num_classes=num_classes)]) if mix_alpha > 0 else None
        self._outputs: dict[int, list] = {}
        self.history: list[dict] = []
        self._seconds_before, self._fit_start = 0.0, None

    @property
    def fit_seconds(self) -> float:
        return self._seconds_before + (time.perf_counter() - self._fit_start if self._fit_start else 0.0)

    def on_fit_start(self):
        self._fit_start = time.perf_counter()

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.mix is not None:
            x, y = self.mix(x, y)
        loss = self.criterion(self(x), y)
        self.log('train_loss', loss, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, y = batch
        self._outputs.setdefault(dataloader_idx, []).append((self(x).detach().float(), y))   # bf16 under autocast

    def on_validation_epoch_end(self):
        metrics = {}
        for idx, name in enumerate(self.eval_splits):
            if idx in self._outputs:
                logits = torch.cat([o for o, _ in self._outputs[idx]])
                labels = torch.cat([y for _, y in self._outputs[idx]])
                metrics[f'{name}_loss'] = float(nn.functional.cross_entropy(logits, labels))
                metrics[f'{name}_acc'], metrics[f'{name}_auc'] = medmnist_metrics(logits, labels, self.task)
        self._outputs.clear()
        if not self.trainer.sanity_checking:
            self.log_dict(metrics, prog_bar=False)
            if 'val_acc' in metrics:    # float64: float32 cannot hold the tie-break (< 1e-4, below one ACC step)
                select = selection_score(metrics['val_acc'], metrics['val_loss'])
                self.log('val_select', torch.tensor(select, dtype=torch.float64))
            self.history.append({'epoch': self.current_epoch, **metrics})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint['metric_history'] = self.history          # so a resumed run still knows every epoch's metrics
        checkpoint['fit_seconds'] = self.fit_seconds

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get('metric_history', []))
        self._seconds_before = checkpoint.get('fit_seconds', 0.0)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.learning_rate, momentum=0.9, weight_decay=self.weight_decay)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(self.epochs - self.warmup_epochs, 1), eta_min=0)
        if self.warmup_epochs == 0:
            return [opt], [cosine]
        warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=self.warmup_epochs)
        return [opt], [torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[self.warmup_epochs])]


def selection_score(val_acc: float, val_loss: float) -> float:
    """The checkpoint-selection score: validation accuracy, ties going to the lower validation loss."""
    return val_acc - 1e-6 * np.minimum(val_loss, 100.0)       # floats or per-epoch columns alike


def max_over_epochs(history: list[dict], key: str) -> float:
    values = [h[key] for h in history if key in h and not np.isnan(h[key])]
    return max(values) if values else float('nan')


class PhaseProgressBar(pl.callbacks.TQDMProgressBar):
    """Lightning's progress bar with one line per phase: the training epochs, no bar per validation loader."""

    def init_validation_tqdm(self):
        from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm
        return Tqdm(disable=True)


def progress_callbacks(quiet: bool) -> list:
    """The progress bar of a search or retraining: none when ``quiet``."""
    return [] if quiet else [PhaseProgressBar()]
