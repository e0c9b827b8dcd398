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
