"""One search on two CPU processes (Lightning DDP, gloo) against one process on the same global batches."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

SCRIPT = Path(__file__).with_name('ddp_search.py')


def _search(out: Path, *flags: str) -> list[dict]:
    done = subprocess.run([sys.executable, str(SCRIPT), *flags, '--out', str(out)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(path, weights_only=True) for path in sorted(out.glob('alpha_rank*.pt'))]


@pytest.mark.parametrize('zo_mode', ['implicit', 'direct'])
def test_two_processes_keep_alpha_identical_and_match_one_process(tmp_path, zo_mode):
    rank0, rank1 = _search(tmp_path / 'ddp', '--devices', '2', '--batch-size', '8', '--zo-mode', zo_mode)
    (single,) = _search(tmp_path / 'single', '--devices', '1', '--batch-size', '16', '--zo-mode', zo_mode)
    assert rank0['world_size'] == 2 and single['world_size'] == 1
    assert rank0['spread'] == 0.0                                   # the module's own end-of-epoch check ran
    for label, alpha in rank0['alpha'].items():
        assert torch.equal(alpha, rank1['alpha'][label]), label     # bit for bit on both ranks
        scale = float(alpha.abs().max())
        assert scale > 5e-3, label                                  # the search moved it (it starts at 1e-3)
        # Same global batches, other float summation order, amplified by Adam's sign-like first steps.
        torch.testing.assert_close(alpha, single['alpha'][label], atol=0.05 * scale, rtol=0, msg=label)
    for name, weight in rank0['weights'].items():                  # plain SGD: a sum-for-mean slip would show
        assert torch.equal(weight, rank1['weights'][name]), name
        torch.testing.assert_close(weight, single['weights'][name], atol=1e-4, rtol=1e-3, msg=name)
    if zo_mode == 'implicit':                                       # the tolerance does tell batches apart
        (control,) = _search(tmp_path / 'control', '--devices', '1', '--batch-size', '16', '--sequential')
        assert max(float((alpha - control['alpha'][label]).abs().max()) / float(alpha.abs().max())
                   for label, alpha in rank0['alpha'].items()) > 0.05


def test_cli_search_on_two_processes_writes_one_set_of_results(tmp_path):
    out = tmp_path / 'search'
    # conftest gives every subprocess OMP_NUM_THREADS threads; each of the two ranks gets its share instead (as
    # ddp_search.py's torch.set_num_threads(1) does), since ranks that wait for each other at every all-reduce while
    # their threads outnumber the cores take minutes per epoch on a busy machine instead of seconds.
    threads = max(1, int(os.environ.get('OMP_NUM_THREADS') or os.cpu_count() or 1) // 2)
    done = subprocess.run([sys.executable, '-m', 'nni_zodarts.cli', 'search', '--devices', '2', '--accelerator', 'cpu',
                           '--epochs', '2', '--max-samples', '48', '--batch-size', '2', '--quiet', '--output', str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': str(threads)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('architecture:') == 1                  # printed by rank 0 only
    history = pd.read_csv(out / 'search_history.csv')
    # alpha steps in both epochs, the second opening the size phase (its tables restart), and bit-equal alphas on
    # both ranks after each
    assert list(history['epoch']) == [0, 1] and history['arch_loss'].notna().all()
    assert (history['alpha_rank_spread'] == 0).all()
    config = json.loads((out / 'search_config.json').read_text())
    assert config['devices'] == 2 and config['strategy']['size_search_start_epoch'] == 1
