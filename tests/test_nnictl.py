"""The smoke sweep through nnictl and NNI's web UI: trials succeed with per-epoch and final metrics."""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NNICTL = shutil.which('nnictl', path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get('PATH', ''))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def rest(port: int, path: str):
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/v1/nni/{path}', timeout=10) as response:
        return json.load(response)


@contextlib.contextmanager
def nnictl_experiment(config: Path, trials: int = 2):
    """``nnictl create --config CONFIG`` on a free loopback port; yields ``(port, jobs)`` once all ``trials``
    have ended (or 10 minutes passed), and stops the experiment afterwards."""
    port = free_port()
    env = {**os.environ, 'PATH': str(Path(sys.executable).parent) + os.pathsep + os.environ.get('PATH', '')}
    try:
        created = subprocess.run([NNICTL, 'create', '--config', config.name, '--port', str(port)], cwd=config.parent,
                                 env=env, capture_output=True, text=True, timeout=180)
        assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]
        deadline, jobs = time.time() + 600, []
        while time.time() < deadline:
            jobs = rest(port, 'trial-jobs')
            if len(jobs) == trials and all(j['status'] in ('SUCCEEDED', 'FAILED', 'USER_CANCELED') for j in jobs):
                break
            time.sleep(3)
        yield port, jobs
    finally:
        subprocess.run([NNICTL, 'stop', '--port', str(port)], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope='module')
def smoke_experiment():
    """The smoke sweep (examples/nnictl/smoke.yml), run to the end."""
    if NNICTL is None:
        pytest.skip('nnictl is not installed')
    with nnictl_experiment(ROOT / 'examples' / 'nnictl' / 'smoke.yml') as result:
        yield result


def test_smoke_trials_succeed_with_intermediate_and_final_metrics(smoke_experiment):
    port, jobs = smoke_experiment
    assert [j['status'] for j in jobs] == ['SUCCEEDED', 'SUCCEEDED'], jobs
    metrics = rest(port, 'metric-data')
    for job in jobs:
        mine = [m for m in metrics if m['trialJobId'] == job['trialJobId']]
        periodical = [json.loads(json.loads(m['data'])) for m in mine if m['type'] == 'PERIODICAL']
        final = [json.loads(json.loads(m['data'])) for m in mine if m['type'] == 'FINAL']
        assert len(periodical) == 2 and {'default', 'expected_params', 'expected_flops', 'temperature'} <= set(periodical[0])
        assert len(final) == 1 and {'default', 'params', 'flops', 'test_acc', 'test_auc'} <= set(final[0])


def test_report_collects_the_sweep(smoke_experiment, tmp_path):
    from nni_zodarts.report import collect, pareto_front, plot_pareto
    port, jobs = smoke_experiment
    experiment_id = rest(port, 'experiment')['id']
    frame = collect(experiment_id, port)
    assert sorted(frame['trial']) == sorted(j['trialJobId'] for j in jobs)
    assert {'param_budget', 'default', 'params', 'test_acc', 'test_auc'} <= set(frame.columns)
    front = pareto_front(frame, score='test_acc')
    assert front['params'].is_monotonic_increasing and front['test_acc'].is_monotonic_increasing
    assert plot_pareto(frame, tmp_path / 'pareto.png', 'test_acc').read_bytes()[:4] == b'\x89PNG'


def test_pareto_front_keeps_the_trials_no_smaller_or_equal_one_beats():
    import pandas as pd
    from nni_zodarts.report import pareto_front
    frame = pd.DataFrame({'params': [100, 200, 150, 300, 200, 400], 'default': [0.7, 0.8, 0.6, 0.75, 0.85, 0.9]},
                         index=list('abcdef'))
    assert list(pareto_front(frame).index) == ['a', 'e', 'f']       # c: a is smaller and better; b: e, same size


def test_web_ui_trial_page_screenshot(smoke_experiment, tmp_path):
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    if chromium is None:
        pytest.skip('no Chromium for the web UI screenshot (apt-get install chromium)')
    port, _ = smoke_experiment
    shot = tmp_path / 'webui.png'
    subprocess.run([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                    '--disable-background-networking', '--disable-component-update', '--disable-sync',
                    f'--user-data-dir={tmp_path / "profile"}', '--window-size=1400,1000',
                    '--virtual-time-budget=8000', f'--screenshot={shot}', f'http://127.0.0.1:{port}/detail'],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    if os.environ.get('NNI_ZODARTS_SAVE_SCREENSHOT'):
        shutil.copy(shot, ROOT / 'docs' / 'nnictl_webui.png')


SSHD = shutil.which('sshd', path='/usr/sbin:/usr/local/sbin:' + os.environ.get('PATH', ''))


@pytest.fixture(scope='module')
def loopback_sshd(tmp_path_factory):
    """An sshd of our own on 127.0.0.1 (free port, temporary host and client keys): the 'remote' machine."""
    if SSHD is None or shutil.which('ssh-keygen') is None:
        pytest.skip('no OpenSSH server (apt-get install openssh-server)')
    if os.geteuid() != 0:
        pytest.skip('the loopback sshd logs in as the current user only when run as root')
    home = tmp_path_factory.mktemp('ssh')
    for key in ('host', 'client'):
        subprocess.run(['ssh-keygen', '-q', '-t', 'rsa', '-b', '2048', '-m', 'PEM', '-N', '', '-f', str(home / key)],
                       check=True)
    shutil.copy(home / 'client.pub', home / 'authorized_keys')
    port = free_port()
    (home / 'sshd_config').write_text(
        f'Port {port}\nListenAddress 127.0.0.1\nHostKey {home / "host"}\nAuthorizedKeysFile {home / "authorized_keys"}\n'
        'PasswordAuthentication no\nPermitRootLogin yes\nStrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n'
        f'PidFile {home / "sshd.pid"}\n')
    Path('/run/sshd').mkdir(exist_ok=True)
    daemon = subprocess.Popen([SSHD, '-D', '-e', '-f', str(home / 'sshd_config')], stderr=subprocess.DEVNULL)
    time.sleep(1)
    yield port, home / 'client'
    daemon.terminate()
    daemon.wait()


def test_remote_training_service_over_loopback_ssh(loopback_sshd, tmp_path):
    import yaml
    ssh_port, key = loopback_sshd
    config = yaml.safe_load((ROOT / 'examples' / 'nnictl' / 'remote.yml').read_text())
    config['trainingService']['machineList'] = [{'host': '127.0.0.1', 'port': ssh_port, 'user': 'root',
                                                 'sshKeyFile': str(key), 'pythonPath': str(Path(sys.executable).parent)}]
    config['maxTrialNumber'] = 1                # the transport is under test; the sweep's two trials run locally above
    path = ROOT / 'examples' / 'nnictl' / f'.remote-test-{ssh_port}.yml'
    path.write_text(yaml.safe_dump(config))
    try:
        with nnictl_experiment(path, trials=1) as (port, jobs):
            assert [j['status'] for j in jobs] == ['SUCCEEDED'], jobs
            finals = [m for m in rest(port, 'metric-data') if m['type'] == 'FINAL']
            assert len(finals) == 1 and {'params', 'test_acc'} <= set(json.loads(json.loads(finals[0]['data'])))
    finally:
        path.unlink(missing_ok=True)
