"""Resume after SIGKILL, determinism, NaN, bad input and safe files (the README's Reliability section)."""
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from cli_run import run_cli
from nni_zodarts.training import RetrainModule, SearchModule

QUICK = ['--max-samples', '48', '--batch-size', '8', '--quiet']
SEARCH = ['search', '--epochs', '3', *QUICK]          # the size phase opens at epoch 2, after the kill below


def final_alpha(directory: Path) -> pd.DataFrame:
    alpha = pd.read_csv(directory / 'alpha_history.csv')
    return alpha[alpha['epoch'] == alpha['epoch'].max()].reset_index(drop=True)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp('reference')
    assert run_cli([*SEARCH, '--output', str(out)]) == 0
    return out


def test_same_seed_twice_gives_identical_alpha_and_architecture(reference, tmp_path):
    assert run_cli([*SEARCH, '--output', str(tmp_path)]) == 0
    assert json.loads((tmp_path / 'architecture.json').read_text()) == json.loads((reference / 'architecture.json').read_text())
    pd.testing.assert_frame_equal(final_alpha(tmp_path), final_alpha(reference))


def kill_when(command, output: Path, ready, timeout=240, signum=signal.SIGKILL) -> tuple[int, str]:
    """Start ``command`` in a process, send it ``signum`` once ``ready()``: its exit code and stderr."""
    proc = subprocess.Popen([sys.executable, '-m', 'nni_zodarts.cli', *command, '--output', str(output)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, 'the run ended before it could be killed'
    os.kill(proc.pid, signum)
    _, err = proc.communicate()
    return proc.returncode, err


def test_search_killed_then_resumed_ends_like_an_uninterrupted_run(reference, tmp_path):
    history = tmp_path / 'search_history.csv'
    last = tmp_path / 'checkpoints' / 'latest.ckpt'
    kill_when(SEARCH, tmp_path, lambda: last.exists() and history.exists() and len(pd.read_csv(history)) >= 2)
    assert not (tmp_path / 'architecture.json').exists()
    before = pd.read_csv(history)
    epoch_done = torch.load(last, map_location='cpu', weights_only=True)['epoch']
    assert run_cli([*SEARCH, '--output', str(tmp_path)]) == 2                 # refuses to touch a partial run
    assert run_cli([*SEARCH, '--resume', '--output', str(tmp_path)]) == 0
    assert json.loads((tmp_path / 'architecture.json').read_text()) == json.loads((reference / 'architecture.json').read_text())
    resumed, straight = final_alpha(tmp_path), final_alpha(reference)
    assert (resumed[['label', 'choice']] == straight[['label', 'choice']]).all().all()
    assert resumed['probability'].sub(straight['probability']).abs().max() < 1e-5
    after = pd.read_csv(history)
    assert list(after['epoch']) == [0, 1, 2]
    kept = after[after['epoch'] <= epoch_done]['seconds'].tolist()     # epochs before the checkpoint were not redone
    assert kept == before[before['epoch'] <= epoch_done]['seconds'].tolist()


def test_darts_search_killed_then_resumed_ends_like_an_uninterrupted_run(tmp_path):
    darts = ['search', '--epochs', '2', *QUICK, '--method', 'darts']         # no size phase to cross
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert run_cli([*darts, '--output', str(straight)]) == 0
    # SIGTERM here (SIGKILL above): Lightning stops after the batch; the run says so and fails, it does not exit 0
    code, err = kill_when(darts, resumed, lambda: saved_epoch(resumed / 'checkpoints' / 'latest.ckpt') >= 0,
                          signum=signal.SIGTERM)
    assert code == 143 and err.strip().splitlines()[-1].endswith('(--resume continues from it)'), (code, err)
    assert not (resumed / 'architecture.json').exists()
    epoch_done = saved_epoch(resumed / 'checkpoints' / 'latest.ckpt')
    before = pd.read_csv(resumed / 'search_history.csv')
    assert run_cli([*darts, '--resume', '--output', str(resumed)]) == 0
    a, b = final_alpha(straight), final_alpha(resumed)
    assert (a[['label', 'choice']] == b[['label', 'choice']]).all().all()
    assert b['probability'].sub(a['probability']).abs().max() < 1e-5     # Adam's state went back to its own alpha
    after = pd.read_csv(resumed / 'search_history.csv')                 # and the saved epochs were not run again
    kept = after[after['epoch'] <= epoch_done]['seconds'].tolist()
    assert kept == before[before['epoch'] <= epoch_done]['seconds'].tolist()


def saved_epoch(path: Path) -> int:
    """The epoch of the checkpoint at ``path``; -1 while there is none (or it is being written)."""
    try:
        return torch.load(path, map_location='cpu', weights_only=False)['epoch']
    except (OSError, RuntimeError, EOFError, KeyError):
        return -1


def test_retrain_killed_then_resumed_ends_like_an_uninterrupted_run(reference, tmp_path, monkeypatch):
    command = ['retrain', '--arch', str(reference / 'architecture.json'), '--epochs', '4', *QUICK]
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert run_cli([*command, '--output', str(straight)]) == 0
    kill_when(command, resumed, lambda: saved_epoch(resumed / 'checkpoints' / 'latest.ckpt') >= 1)
    epoch_done = saved_epoch(resumed / 'checkpoints' / 'latest.ckpt')
    seconds_at_kill = torch.load(resumed / 'checkpoints' / 'latest.ckpt', weights_only=False)['fit_seconds']
    trained, step = set(), RetrainModule.training_step
    monkeypatch.setattr(RetrainModule, 'training_step',
                        lambda self, *args: trained.add(self.current_epoch) or step(self, *args))
    assert run_cli([*command, '--resume', '--output', str(resumed)]) == 0
    assert min(trained) == epoch_done + 1                               # the saved epochs were not run again
    a, b = (json.loads((d / 'retrain_metrics.json').read_text()) for d in (straight, resumed))
    assert b['seconds'] > seconds_at_kill > 0                           # training time adds up over the resume
    history = pd.read_csv(straight / 'retrain_history.csv')
    chosen = history.sort_values(['val_acc', 'val_loss'], ascending=[False, True]).iloc[0]   # ties: lower loss
    assert a['best_epoch'] == chosen['epoch'] and a['best_val_acc'] == pytest.approx(chosen['val_acc'])
    for key in ('test_acc', 'test_auc', 'best_epoch', 'best_val_acc', 'test_acc_max_over_epochs', 'params'):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key
    wa, wb = (torch.load(d / 'model.pt', weights_only=True) for d in (straight, resumed))
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)


def test_nan_stops_with_epoch_and_step_and_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    original = SearchModule.training_step

    def poisoned(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float('nan') if self.trainer.current_epoch == 1 and batch_idx == 2 else loss

    monkeypatch.setattr(SearchModule, 'training_step', poisoned)
    said = []                                      # what NNI logs of the failure on top of the CLI's one line
    listener = logging.Handler(logging.ERROR)
    listener.emit = lambda record: said.append(record.getMessage())
    nni_loggers = [logging.getLogger(name) for name in ('nni.nas.execution.sequential', 'nni.nas.strategy.base')]
    for logger in nni_loggers:
        logger.addHandler(listener)
    try:
        assert run_cli([*SEARCH, '--output', str(tmp_path)]) == 3
    finally:
        for logger in nni_loggers:
            logger.removeHandler(listener)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'epoch 1, step 2' in err and '--resume' in err and said == []
    checkpoint = torch.load(tmp_path / 'checkpoints' / 'latest.ckpt', map_location='cpu', weights_only=False)
    assert checkpoint['epoch'] == 0
    assert all(torch.isfinite(v).all() for v in checkpoint['state_dict'].values() if v.is_floating_point())
    assert not (tmp_path / 'architecture.json').exists()


@pytest.mark.parametrize('args, message', [
    (['search', '--mu', '0'], 'mu must be > 0'),
    (['search', '--param-budget', '1000'], 'smallest architecture'),
    (['search', '--data-root', '{corrupt}'], 'cannot read'),
    (['retrain', '--arch', '{badarch}'], "unknown key 'conv9'"),
    (['retrain', '--arch', '{badvalue}'], "'s0_depth'"),
    (['retrain', '--arch', '{dead}'], 'cell s2 has no input-to-output path'),
    (['retrain', '--arch', '{reference}/architecture.json', '--dataset', 'retinamnist', '--data-root', '{rgb}'],
     'channels'),
])
def test_bad_input_table(args, message, reference, tmp_path, capsys, request):
    corrupt = tmp_path / 'corrupt'
    corrupt.mkdir()
    (corrupt / 'breastmnist.npz').write_bytes(b'not a zip file')
    arch = json.loads((reference / 'architecture.json').read_text())
    (tmp_path / 'badarch.json').write_text(json.dumps({**arch, 'conv9': 1}))
    (tmp_path / 'badvalue.json').write_text(json.dumps({**arch, 's0_depth': 7}))
    (tmp_path / 'dead.json').write_text(json.dumps({**arch, **{f's2_e3{j}': 'none' for j in range(3)}}))
    rgb = request.getfixturevalue('retina_like') if '{rgb}' in args else None
    fill = dict(corrupt=corrupt, badarch=tmp_path / 'badarch.json', badvalue=tmp_path / 'badvalue.json',
                dead=tmp_path / 'dead.json', reference=reference, rgb=rgb)
    out = tmp_path / 'out'
    code = run_cli([a.format(**fill) for a in args] + ['--output', str(out), *QUICK])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (out / 'architecture.json').exists() and not (out / 'retrain_metrics.json').exists()


def test_a_run_folder_moved_since_its_checkpoint_keeps_its_best_epoch(tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.demos.boring_classes import BoringModel
    from nni_zodarts.checkpointing import MovedFolderResume, latest_checkpoint

    class Falling(BoringModel):                                 # the monitored score is best in epoch 0
        def on_train_epoch_end(self):
            self.log('score', -float(self.current_epoch))

    def fit(folder, epochs, resume=None):
        best = pl.callbacks.ModelCheckpoint(dirpath=folder, monitor='score', mode='max', filename='best',
                                            enable_version_counter=False)
        pl.Trainer(max_epochs=epochs, callbacks=[MovedFolderResume(), best, latest_checkpoint(folder)], logger=False,
                   limit_train_batches=2, limit_val_batches=0, enable_progress_bar=False,
                   enable_model_summary=False).fit(Falling(), ckpt_path=resume)
        return best

    fit(tmp_path / 'a', 2)
    (tmp_path / 'a').rename(tmp_path / 'b')                     # Lightning alone would forget the best score here
    best = fit(tmp_path / 'b', 4, resume=tmp_path / 'b' / 'latest.ckpt')
    assert best.best_model_score == 0 and Path(best.best_model_path) == (tmp_path / 'b' / 'best.ckpt').resolve()
    assert torch.load(best.best_model_path, weights_only=False)['epoch'] == 0
