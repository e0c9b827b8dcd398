"""MedMNIST as in-memory tensors: loading through ``medmnist``, the search and retrain splits, batched augmentation.

MedMNIST is small, so every split lives in one uint8 tensor (on the training device if wanted) and a batch is
one index, one crop and one flip on the whole batch: no per-sample PIL transforms and no worker processes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

__all__ = ['DataError', 'MedMNISTData', 'load_medmnist', 'search_split', 'cap', 'TensorImages', 'make_loader', 'EMBEDDED_ROOT',
           'PAPER_SEARCH_BATCH', 'PAPER_RETRAIN_BATCH']

EMBEDDED_ROOT = Path(__file__).parent / 'data'            # ships breastmnist.npz (CC BY 4.0), the offline default
# Spec §7 and §9: the authors' per-dataset batch sizes.
PAPER_SEARCH_BATCH = {'organamnist': 256, 'organcmnist': 256, 'organsmnist': 256, 'octmnist': 512, 'tissuemnist': 512,
                      'pathmnist': 512, 'pneumoniamnist': 32, 'breastmnist': 16, 'dermamnist': 128, 'bloodmnist': 128,
                      'retinamnist': 16, 'chestmnist': 256}
PAPER_RETRAIN_BATCH = {'organamnist': 128, 'organcmnist': 128, 'organsmnist': 128, 'octmnist': 128, 'pathmnist': 128,
                       'tissuemnist': 256, 'pneumoniamnist': 16, 'breastmnist': 64, 'bloodmnist': 32, 'dermamnist': 32,
                       'retinamnist': 32, 'chestmnist': 128}


class DataError(Exception):
    """A data set that cannot be used as asked; the message says what to fix."""


@dataclass
class MedMNISTData:
    flag: str
    task: str
    n_channels: int
    n_classes: int
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]    # split -> (uint8 images [N, C, H, W], int64 labels [N])


def _info(flag: str) -> dict:
    from medmnist import INFO
    if flag not in INFO or flag.endswith('3d'):
        names = ', '.join(f for f in INFO if not f.endswith('3d'))
        raise DataError(f'unknown dataset {flag!r}: choose one of {names}')
    return INFO[flag]


def load_medmnist(flag: str, root: str | Path | None = None, size: int = 28, download: bool = False) -> MedMNISTData:
    """Load every split of a 2D MedMNIST data set as tensors, checking the file's MD5 against ``medmnist.INFO``.

    ``root=None`` uses the embedded BreastMNIST (28x28) for ``breastmnist`` and ``~/.medmnist`` otherwise.
    """
    import medmnist
    info = _info(flag)
    if root is None:
        root = EMBEDDED_ROOT if (flag, size) == ('breastmnist', 28) else Path.home() / '.medmnist'
    root = Path(root).expanduser()
    suffix = '' if size == 28 else f'_{size}'
    path = root / f'{flag}{suffix}.npz'
    if not path.exists() and not download:
        raise DataError(f'{path} not found: pass --data-root with the folder holding {path.name} '
                        f'(nni-zodarts search/retrain/run also take --download, where the network allows)')
    dataset_class = getattr(medmnist, info['python_class'])
    splits = {}
    try:
        for split in ('train', 'val', 'test'):
            ds = dataset_class(split=split, root=str(root), size=size, download=download and not path.exists())
            images = torch.from_numpy(np.ascontiguousarray(ds.imgs))
            images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2).contiguous()
            labels = torch.from_numpy(np.asarray(ds.labels)).long()
            splits[split] = images, (labels[:, 0] if info['task'] != 'multi-label, binary-class' else labels)
    except DataError:
        raise
    except Exception as err:                               # a truncated or foreign file: say what to do
        raise DataError(f'cannot read {path} ({type(err).__name__}: {err}); re-download it or point --data-root '
                        f'at a good copy') from None
    expected = info['MD5' if size == 28 else f'MD5_{size}']
    if _md5(path) != expected:
        raise DataError(f'{path} has the wrong checksum (expected MD5 {expected}): re-download it or point '
                        f'--data-root at a good copy')
    return MedMNISTData(flag, info['task'], info['n_channels'], len(info['label']), splits)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def cap(images: torch.Tensor, labels: torch.Tensor, max_samples: int | None, seed: int):
    """At most ``max_samples`` items, drawn without replacement with ``seed`` (for quick runs)."""
    if max_samples is None or max_samples >= len(labels):
        return images, labels
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:max_samples]
    return images[keep], labels[keep]


def search_split(data: MedMNISTData, seed: int, max_samples: int | None = None):
    """Spec §7: official train+val, shuffled with ``seed`` and halved into weight / architecture halves."""
    images = torch.cat([data.splits['train'][0], data.splits['val'][0]])
    labels = torch.cat([data.splits['train'][1], data.splits['val'][1]])
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    half = len(order) // 2
    weight_half = cap(images[order[:half]], labels[order[:half]], max_samples, seed)
    arch_half = cap(images[order[half:]], labels[order[half:]], max_samples, seed + 1)
    return weight_half, arch_half


class TensorImages(Dataset):
    """Images held as one uint8 tensor; ``__getitems__`` serves a whole batch, normalised to [-1, 1] and, when
    ``augment``, randomly cropped (4-pixel zero padding) and flipped, as in the search pipeline of spec §7."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool = False, device: str | None = None):
        self.images = images.to(device) if device else images
        self.labels = labels.to(device) if device else labels
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices, device=self.images.device)
        x = self.images[index].float().div_(127.5).sub_(1.0)
        if self.augment:
            x = random_crop_flip(x)
        return x, self.labels[index]

    def __getitem__(self, i: int):
        x, y = self.__getitems__([i])
        return x[0], y[0]


def random_crop_flip(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Per-sample random crop after zero padding, and a horizontal flip with probability 1/2."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(n, h, w)
    flip = torch.rand(n, device=x.device) < 0.5
    cols = torch.where(flip.view(n, 1, 1), cols.flip(-1), cols)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()


def _batch_as_is(batch):
    return batch


def make_loader(images, labels, batch_size: int, *, train: bool, device: str | None = None) -> DataLoader:
    """A ``DataLoader`` over :class:`TensorImages` (shuffled and augmented when ``train``), batches built in place."""
    return DataLoader(TensorImages(images, labels, augment=train, device=device), batch_size=batch_size,
                      shuffle=train, collate_fn=_batch_as_is)
