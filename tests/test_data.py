"""nni_zodarts.data: the search split, the augmentation and the checksum check."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nni_zodarts.data import EMBEDDED_ROOT, DataError, MedMNISTData, load_medmnist, random_crop_flip, search_split


def test_search_split_halves_train_and_val_by_seed():
    labels = torch.arange(100)                              # labels name the images
    images = torch.zeros(100, 1, 2, 2, dtype=torch.uint8)
    splits = {'train': (images[:80], labels[:80]), 'val': (images[80:], labels[80:]), 'test': (images[:0], labels[:0])}
    data = MedMNISTData('x', 'multi-class', 1, 100, splits)
    (_, a), (_, b) = search_split(data, seed=1)
    assert len(a) == len(b) == 50 and sorted(torch.cat([a, b]).tolist()) == list(range(100))   # disjoint, complete
    assert torch.equal(search_split(data, seed=1)[0][1], a) and not torch.equal(search_split(data, seed=2)[0][1], a)
    (_, a_cap), (_, b_cap) = search_split(data, seed=1, max_samples=10)     # --max-samples caps each half
    assert len(a_cap) == len(b_cap) == 10 and set(a_cap.tolist()) <= set(a.tolist())
    assert set(b_cap.tolist()) <= set(b.tolist())


def test_random_crop_flip_is_a_window_of_the_padded_image_maybe_mirrored():
    torch.manual_seed(0)
    x = torch.randn(32, 2, 6, 5)
    out = random_crop_flip(x)
    padded = F.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(len(x)):
        crops = [(dy, dx, padded[i, :, dy:dy + 6, dx:dx + 5]) for dy in range(9) for dx in range(9)]
        windows = {(dy, dx, flip) for dy, dx, crop in crops for flip in (False, True)
                   if torch.equal(out[i], crop.flip(-1) if flip else crop)}
        assert windows, f'sample {i} is no window of its padded image'
        flips += all(flip for *_, flip in windows)
    assert 0 < flips < len(x)                                   # some mirrored, some not


def test_a_file_with_another_checksum_is_refused(tmp_path):
    with np.load(EMBEDDED_ROOT / 'breastmnist.npz') as npz:
        np.savez(tmp_path / 'breastmnist.npz', **{k: npz[k] for k in npz.files})   # same arrays, other bytes
    with pytest.raises(DataError, match='wrong checksum'):
        load_medmnist('breastmnist', tmp_path)
