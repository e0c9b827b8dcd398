import os

# One thread count for this process and the CLI subprocesses some tests start, so that their float sums (and the
# resume tests' comparisons between them) agree; OMP_NUM_THREADS, if set, wins.
THREADS = int(os.environ.get('OMP_NUM_THREADS') or min(2, os.cpu_count() or 1))
os.environ['OMP_NUM_THREADS'] = str(THREADS)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def retina_like(tmp_path, monkeypatch):
    """A folder with a synthetic RGB, five-class ``retinamnist.npz`` (the shared MedMNIST files are not beside a CI
    clone), whose checksum ``load_medmnist`` accepts in place of the real file's: the RGB and multi-class paths."""
    import numpy as np
    from medmnist import INFO

    import nni_zodarts.data
    rng = np.random.default_rng(0)
    root = tmp_path / 'retina_like'
    root.mkdir()
    np.savez(root / 'retinamnist.npz', **{f'{split}_{kind}': rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
                                          if kind == 'images' else rng.integers(0, 5, (n, 1))
                                          for split, n in (('train', 64), ('val', 32), ('test', 32))
                                          for kind in ('images', 'labels')})
    monkeypatch.setattr(nni_zodarts.data, '_md5', lambda path: INFO['retinamnist']['MD5'])
    return root
