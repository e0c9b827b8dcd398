import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from cli_run import run_cli
from nni_zodarts import trial
from nni_zodarts.cli import main
from nni_zodarts.commands import _search_kwargs, build_parser
from nni_zodarts.errors import UsageError
from nni_zodarts.retrain import build_model
from nni_zodarts.search import sample_architecture
from search_spaces import SizeVariableSpace

QUICK = ['--max-samples', '48', '--batch-size', '8', '--quiet']


def settings(args) -> dict:
    """The search settings a parsed command line gives, the strategy's arguments among them."""
    kwargs = _search_kwargs(args)
    return {**kwargs, **kwargs['strategy']}


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('run')
    assert main(['run', '--epochs', '2', '--retrain-epochs', '2', '--output', str(out), *QUICK]) == 0
    return out


def test_run_writes_well_formed_results(demo_run, capsys):
    search, retrain = demo_run / 'search', demo_run / 'retrain'
    arch = json.loads((search / 'architecture.json').read_text())
    labels = SizeVariableSpace().simplify()
    assert set(arch) == set(labels) and all(arch[k] in labels[k].values for k in arch)

    history = pd.read_csv(search / 'search_history.csv')
    assert list(history['epoch']) == [0, 1]
    for column in ['train_loss', 'train_acc', 'arch_loss', 'val_loss', 'val_acc', 'temperature', 'expected_params',
                   'seconds', 'search_seconds', 'zo_mu', 'zo_first_order', 'zo_implicit', 'zo_weight_gap']:
        assert history[column].notna().all(), column
    assert (history['zo_weight_gap'] > 0).all() and (history['zo_mu'] > 0).all()     # W' moved away from W
    assert history['temperature'].tolist() == [1.5, 1.125]          # demo preset: decay every epoch
    assert history['lr'].iloc[0] == pytest.approx(0.1) and history['lr'].iloc[1] < 0.1   # each epoch's own rate
    alpha = pd.read_csv(search / 'alpha_history.csv')
    sums = alpha.groupby(['epoch', 'label'])['probability'].sum()
    assert set(alpha['label']) == set(labels) and ((sums - 1).abs() < 1e-5).all()

    pngs = sorted((search / 'plots').glob('*.png'))
    assert [p.name for p in pngs] == ['probabilities_s0.png', 'probabilities_s1.png', 'probabilities_s2.png',
                                      'search_curves.png']
    assert all(p.read_bytes()[:4] == b'\x89PNG' for p in pngs)
    assert (search / 'checkpoints' / 'latest.ckpt').exists()
    assert list((search / 'logs').glob('search/version_*/metrics.csv'))

    metrics = json.loads((retrain / 'retrain_metrics.json').read_text())
    for key in ['test_acc', 'test_auc', 'test_acc_max_over_epochs', 'params', 'epochs', 'seconds']:
        assert key in metrics
    assert 0 <= metrics['test_acc'] <= 1 and 0 <= metrics['test_auc'] <= 1 and metrics['epochs'] == 2
    config = json.loads((search / 'search_config.json').read_text())
    model = build_model(arch, config['space'], config['space_kwargs'])
    model.load_state_dict(torch.load(retrain / 'model.pt', weights_only=True))
    assert sum(p.numel() for p in model.parameters()) == metrics['params'] == config['params']


def test_retrain_alone_with_onnx(demo_run, tmp_path):
    onnx = pytest.importorskip('onnx')
    out = tmp_path / 'again'
    assert main(['retrain', '--arch', str(demo_run / 'search' / 'architecture.json'), '--epochs', '1', '--onnx',
                 '--output', str(out), *QUICK]) == 0
    onnx.checker.check_model(onnx.load(out / 'model.onnx'))
    from onnx.reference import ReferenceEvaluator                 # the exported graph computes what the network does
    config = json.loads((demo_run / 'search' / 'search_config.json').read_text())
    model = build_model(json.loads((demo_run / 'search' / 'architecture.json').read_text()), config['space'],
                        config['space_kwargs'])
    model.load_state_dict(torch.load(out / 'model.pt', weights_only=True))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    [logits] = ReferenceEvaluator(str(out / 'model.onnx')).run(None, {'image': x.numpy()})
    assert logits.shape == (2, 2) and np.allclose(logits, expected, atol=1e-4)


def test_bf16_mixed_retraining_changes_the_arithmetic_not_the_weights_dtype(demo_run, tmp_path, monkeypatch):
    arch = demo_run / 'search' / 'architecture.json'
    for check in ('_is_avx512_bf16_supported', '_is_amx_tile_supported'):    # a CPU without bf16: a warning says so
        monkeypatch.setattr(torch.cpu, check, lambda: False)
    weights = {}
    for precision in ['32', '32', 'bf16-mixed']:        # float32 twice: deterministic, so bf16 alone explains a change
        out = tmp_path / f'{precision}-{len(weights)}'
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            assert main(['retrain', '--arch', str(arch), '--epochs', '1', '--precision', precision, '--output',
                         str(out), *QUICK]) == 0
        slow = [w for w in caught if 'no AVX512-BF16 or AMX' in str(w.message)]
        assert len(slow) == (precision == 'bf16-mixed')
        assert json.loads((out / 'retrain_metrics.json').read_text())['precision'] == precision
        weights[out.name] = torch.load(out / 'model.pt', weights_only=True)
    fp32, again, bf16 = weights.values()
    assert all(v.dtype == fp32[k].dtype for k, v in bf16.items())
    conv = next(k for k, v in fp32.items() if v.dim() == 4)
    assert torch.equal(fp32[conv], again[conv]) and not torch.allclose(fp32[conv], bf16[conv], atol=1e-6)


def test_retraining_on_train_and_val_keeps_the_last_epoch(demo_run, tmp_path):
    assert json.loads((demo_run / 'retrain' / 'retrain_metrics.json').read_text())['train_images'] == 48
    out = tmp_path / 'trainval'
    assert main(['retrain', '--arch', str(demo_run / 'search' / 'architecture.json'), '--epochs', '2',
                 '--train-on', 'train+val', '--output', str(out), *QUICK]) == 0
    metrics = json.loads((out / 'retrain_metrics.json').read_text())
    assert metrics['train_images'] == 96 and metrics['train_on'] == 'train+val'       # 48 of each split
    assert metrics['selection'] == 'last epoch' and metrics['best_epoch'] == 1 and metrics['best_val_acc'] is None
    assert 'val_acc' not in pd.read_csv(out / 'retrain_history.csv')
    assert not (out / 'checkpoints' / 'best.ckpt').exists()
    last = torch.load(out / 'checkpoints' / 'latest.ckpt', weights_only=False)['state_dict']
    weights = torch.load(out / 'model.pt', weights_only=True)
    assert all(torch.equal(v, last[f'model.{k}']) for k, v in weights.items())


def test_sampled_architecture_keeps_to_the_budget(tmp_path):
    assert main(['search', '--epochs', '2', '--derive', 'sample', '--param-budget', '150000', '--output', str(tmp_path),
                 *QUICK]) == 0
    config = json.loads((tmp_path / 'search_config.json').read_text())
    arch = json.loads((tmp_path / 'architecture.json').read_text())
    assert config['derive'] == 'sample' and config['params'] <= 150_000
    count = lambda a: sum(p.numel() for p in build_model(a, config['space'], config['space_kwargs']).parameters())
    assert count(arch) == config['params']
    probs = {lab: dict(map(tuple, pairs)) for lab, pairs in json.loads((tmp_path / 'probabilities.json').read_text()).items()}
    assert count(sample_architecture(probs, torch.Generator().manual_seed(0))) > 150_000    # the first draw is too big
    inside = sample_architecture(probs, torch.Generator().manual_seed(0), accept=lambda a: count(a) <= 150_000)
    assert arch == inside                                      # drawn again until inside, not the budgeted argmax


def test_search_on_another_medmnist_file(tmp_path, retina_like):
    assert main(['search', '--dataset', 'retinamnist', '--data-root', str(retina_like), '--epochs', '1',
                 '--space', 'nb201', '--output', str(tmp_path / 'out'), *QUICK]) == 0
    config = json.loads((tmp_path / 'out' / 'search_config.json').read_text())
    assert config['space_kwargs'] == {'in_channels': 3, 'num_classes': 5}
    model = build_model(json.loads((tmp_path / 'out' / 'architecture.json').read_text()), 'nb201', config['space_kwargs'])
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 5)


@pytest.mark.parametrize('command, flags, schedule', [
    ('search', [], dict(epochs=8, size_search_start_epoch=4, temperature_interval=1)),
    ('search', ['--epochs', '40'], dict(epochs=40, size_search_start_epoch=20, temperature_interval=1)),
    ('search', ['--epochs', '40', '--temperature-interval', '4'],
     dict(epochs=40, size_search_start_epoch=20, temperature_interval=4)),
    ('run', ['--preset', 'paper'], dict(epochs=40, schedule_epochs=50, size_search_start_epoch=20, temperature_interval=5)),
    ('run', ['--preset', 'paper', '--epochs', '60', '--temperature-interval', '3'],
     dict(epochs=60, schedule_epochs=60, size_search_start_epoch=30, temperature_interval=3)),
])
def test_epochs_stretch_the_preset_and_temperature_interval_replaces_its_interval(command, flags, schedule):
    kwargs = settings(build_parser().parse_args([command, *flags, '--output', 'unused']))
    assert {key: kwargs.get(key) for key in schedule} == schedule


def test_temperature_interval_reaches_the_strategy(tmp_path, monkeypatch):
    import nni_zodarts.search
    made, real = [], nni_zodarts.search._strategy

    class Made(Exception):                                  # stop once the strategy exists: no search is needed
        pass

    def strategy(method, kwargs):
        made.append(real(method, kwargs))
        raise Made

    monkeypatch.setattr(nni_zodarts.search, '_strategy', strategy)
    with pytest.raises(Made):
        main(['search', '--epochs', '40', '--temperature-interval', '4', '--output', str(tmp_path), *QUICK])
    assert made[0].config.temperature_interval == 4 and made[0].config.size_search_start_epoch == 20


def test_an_nnictl_trial_takes_temperature_interval_from_the_tuner(monkeypatch, tmp_path):
    import nni
    monkeypatch.setenv('NNI_OUTPUT_DIR', str(tmp_path))
    monkeypatch.setattr(nni, 'get_next_parameter', lambda: {'temperature_interval': 3, 'param_budget': None})
    ran = []
    monkeypatch.setattr(trial, 'run_command', lambda args, on_epoch: ran.append(args) or 0)
    assert trial.main(['--epochs', '4']) == 0
    assert settings(ran[0])['temperature_interval'] == 3


def test_an_nnictl_trial_takes_hardware_budgets_from_the_tuner(monkeypatch, tmp_path):
    import nni
    monkeypatch.setenv('NNI_OUTPUT_DIR', str(tmp_path))
    monkeypatch.setattr(nni, 'get_next_parameter', lambda: {'flops_budget': 20_000_000, 'latency_budget': [1, 2.5]})
    ran = []
    monkeypatch.setattr(trial, 'run_command', lambda args, on_epoch: ran.append(args) or 0)
    assert trial.main([]) == 0
    kwargs = settings(ran[0])
    assert kwargs['flops_budget'] == 20e6 and kwargs['latency_budget'] == (1.0, 2.5)


@pytest.mark.parametrize('args, message', [
    (['search', '--dataset', 'nosuchmnist'], 'unknown dataset'),
    (['search', '--dataset', 'pneumoniamnist', '--data-root', '{tmp}'], '--data-root'),
    (['search', '--param-budget', '0'], 'budget'),
    (['search', '--param-budget', '500:100'], 'lower bound'),
    (['search', '--flops-budget', '20M:10M'], 'lower bound'),
    (['search', '--flops-budget', 'lots'], 'e.g. 300k or 20M'),
    (['search', '--latency-budget', '2ms'], 'milliseconds'),
    (['search', '--flops-budget', '1k'], 'below the smallest architecture'),
    (['search', '--latency-table', '{tmp}/none.json'], 'does not exist'),
    (['search', '--epochs', '0'], '--epochs'),
    (['search', '--devices', '0'], '--devices'),
    (['search', '--method', 'darts', '--param-budget', '100000'], '--param-budget needs --method zodartspp'),
    (['search', '--method', 'darts', '--mu', '0.01'], '--mu needs --method zodartspp'),
    (['search', '--temperature-interval', '0'], '--temperature-interval'),
    (['search', '--temperature-interval', '1.5'], '--temperature-interval'),
    (['search', '--method', 'darts', '--temperature-interval', '2'], '--temperature-interval needs --method zodartspp'),
    (['search', '--no-such-flag'], 'unrecognized'),
    (['search', '--overwrite', '--resume'], 'either --overwrite or --resume'),
    (['retrain', '--arch', '{tmp}/missing.json'], 'not found'),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    args = [a.format(tmp=tmp_path) for a in args] + ['--output', str(tmp_path / 'out')]
    code = run_cli(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / 'out' / 'architecture.json').exists()


def test_existing_results_are_not_overwritten(demo_run, capsys):
    before = (demo_run / 'search' / 'architecture.json').read_bytes()
    assert run_cli(['search', '--output', str(demo_run / 'search'), *QUICK]) == 2
    assert 'already holds results' in capsys.readouterr().err
    assert (demo_run / 'search' / 'architecture.json').read_bytes() == before


def test_console_script_exit_code(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'nni_zodarts.cli', 'search', '--epochs', '-3', '--output',
                           str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and 'Traceback' not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_an_error_raised_outside_the_package_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):                         # stands for a library: not nni_zodarts, not search_spaces
        raise ValueError('deep inside a library')

    monkeypatch.setattr('nni_zodarts.search.load_medmnist', broken)
    with pytest.raises(ValueError, match='deep inside a library'):
        main(['search', '--output', str(tmp_path / 'out'), *QUICK])


def test_the_type_of_an_error_decides_not_where_it_was_raised(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):                         # raised outside the package, but about the user's input
        raise UsageError('no such thing: pass another --flag')

    monkeypatch.setattr('nni_zodarts.search.load_medmnist', refuse)
    assert run_cli(['search', '--output', str(tmp_path / 'out'), *QUICK]) == 2
    assert capsys.readouterr().err == 'nni-zodarts search: error: no such thing: pass another --flag\n'

    def bug(*args, **kwargs):                            # a plain ValueError raised in this package: a bug
        sample_architecture({'s0_depth': {1: 1.0}}, torch.Generator(), tries=0)

    monkeypatch.setattr('nni_zodarts.search.load_medmnist', bug)
    with pytest.raises(ValueError, match='0 sampled architectures') as raised:
        main(['search', '--output', str(tmp_path / 'out'), *QUICK])
    assert not isinstance(raised.value, UsageError)
