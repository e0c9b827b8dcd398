"""FLOPs and latency beside parameters: the counts, the windows at export, the latency table, ``derive``."""
import itertools
import json
import random

import pandas as pd
import pytest
import torch
from nni.nas.evaluator.pytorch import Classification
from nni.nas.experiment import NasExperiment
from torch.utils.data import DataLoader, TensorDataset

import nni_zodarts.latency
from nni_zodarts import ZODartsPP
from nni_zodarts.cli import main
from nni_zodarts.cost_model import most_probable_within
from nni_zodarts.trace import count_flops
from search_spaces import NB201Space, SizeVariableSpace
from spaces import TinySpace

QUICK = ['--max-samples', '48', '--batch-size', '8', '--quiet']


def flops_of(model, shape):
    return count_flops(model.eval(), torch.zeros((1, *shape)))


def shaped(space_shape, **kwargs):
    make, shape = space_shape
    strategy = ZODartsPP(size_search_start_epoch=0, input_shape=shape, **kwargs)
    strategy.mutate_model(make())
    return strategy


SPACES = {
    'size_variable': (lambda: SizeVariableSpace(in_channels=1, num_classes=2), (1, 28, 28)),
    'size_variable_width': (lambda: SizeVariableSpace(in_channels=3, num_classes=5, width_multipliers=(0.5, 1.0)),
                            (3, 28, 28)),
    'nb201': (lambda: NB201Space(in_channels=3, num_classes=4), (3, 16, 16)),
    'tiny': (TinySpace, (1, 8, 8)),
}


@pytest.mark.parametrize('name', list(SPACES))
def test_flops_count_is_flop_counter_modes_on_the_frozen_model(name):
    make, shape = SPACES[name]
    poly = shaped(SPACES[name]).costs['flops']
    # With width search the average pool's box filter (a depthwise conv) runs at the supernet's widest width, so
    # the polynomial is not exact there and the count comes from the frozen model.
    assert poly.exact == (name != 'size_variable_width')
    rng = random.Random(1)
    for _ in range(5):
        arch = {label: rng.choice(m.values) for label, m in make().simplify().items()}
        with torch.no_grad():
            assert poly.true_count(arch) == flops_of(make().freeze(arch), shape) > 0, arch


def test_expected_flops_is_the_mean_over_every_architecture():
    strategy = shaped(SPACES['tiny'])
    labels = TinySpace().simplify()
    probs = {lab: torch.softmax(torch.randn(len(m.values), dtype=torch.float64), 0) for lab, m in labels.items()}
    brute = 0.0
    for values in itertools.product(*(m.values for m in labels.values())):
        weight = 1.0
        for lab, v in zip(labels, values):
            weight *= float(probs[lab][labels[lab].values.index(v)])
        brute += weight * flops_of(TinySpace().freeze(dict(zip(labels, values))), (1, 8, 8))
    assert float(strategy.costs['flops'].expectation(probs)) == pytest.approx(brute, rel=1e-12)


def test_a_flops_hinge_step_lowers_the_expected_flops():
    strategy = shaped(SPACES['size_variable'])
    poly = strategy.costs['flops']
    labels = SizeVariableSpace().simplify()
    alphas = {lab: torch.zeros(len(m.values), dtype=torch.float64, requires_grad=True) for lab, m in labels.items()}
    before = float(poly.expectation({lab: torch.softmax(a.detach(), 0) for lab, a in alphas.items()}))
    upper = before / 2
    penalty = torch.relu(poly.expectation({lab: torch.softmax(a, 0) for lab, a in alphas.items()}) - upper) / 1e8
    penalty.backward()
    with torch.no_grad():
        after = float(poly.expectation({lab: torch.softmax(a - 1.0 * a.grad, 0) for lab, a in alphas.items()}))
    assert after < before


def test_export_is_the_most_probable_architecture_inside_every_window():
    strategy = shaped(SPACES['tiny'])
    params, flops = strategy.costs['params'], strategy.costs['flops']
    every = [dict(zip(params.choices, v)) for v in itertools.product(*params.choices.values())]
    g = torch.Generator().manual_seed(0)
    for trial in range(6):
        probs = {lab: torch.distributions.Dirichlet(torch.ones(len(c), dtype=torch.float64)).sample()
                 for lab, c in params.choices.items()}
        p_sorted = sorted({params.count(a) for a in every})
        f_sorted = sorted({flops.count(a) for a in every})
        windows = [(params, 0, p_sorted[len(p_sorted) // 2 + trial % 3]), (flops, f_sorted[trial], f_sorted[-2 - trial])]
        start = {lab: c[int(probs[lab].argmax())] for lab, c in params.choices.items()}
        arch, (p, f), inside = most_probable_within(windows, probs, start, generator=g)

        def log_prob(a):
            return sum(float(probs[lab][params.choices[lab].index(a[lab])].log()) for lab in params.choices)

        feasible = [a for a in every if all(lo <= c.count(a) <= hi for c, lo, hi in windows)]
        assert inside == bool(feasible)
        if feasible:
            assert (p, f) == (params.count(arch), flops.count(arch))
            assert all(lo <= c.count(arch) <= hi for c, lo, hi in windows)
            assert log_prob(arch) == pytest.approx(max(map(log_prob, feasible)))


def tiny_experiment(strategy, n=32):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2 * n, 1, 28, 28, generator=g), torch.randint(0, 2, (2 * n,), generator=g)
    loader = lambda a, b: DataLoader(TensorDataset(x[a:b], y[a:b]), batch_size=8)
    evaluator = Classification(train_dataloaders=loader(0, n), val_dataloaders=loader(n, 2 * n), num_classes=2,
                               max_epochs=2, accelerator='cpu', logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, enable_model_summary=False)
    experiment = NasExperiment(SizeVariableSpace(in_channels=1, num_classes=2), evaluator, strategy)
    experiment.run()
    arch = experiment.export_top_models(formatter='dict')[0]
    experiment.stop()
    return arch


@pytest.fixture(scope='module')
def searched():
    """A FLOPs- and latency-budgeted search (the input shape from the evaluator's data), its export and strategy."""
    latency_budget = 1e6                                   # any measured latency fits: timing is the machine's
    strategy = ZODartsPP(flops_budget=25e6, latency_budget=latency_budget, size_search_start_epoch=1,
                         arc_update_interval=2, temperature_interval=1)
    return strategy, tiny_experiment(strategy)


def test_a_flops_budgeted_search_exports_inside_it(searched):
    strategy, arch = searched
    assert strategy.input_shape == (1, 28, 28)
    frozen = flops_of(SizeVariableSpace(in_channels=1, num_classes=2).freeze(arch), (1, 28, 28))
    assert frozen == strategy.costs_of(arch)['flops'] <= 25e6
    assert strategy.expected('flops') > 0 and strategy.expected('latency') > 0


def test_the_latency_table_round_trips_and_belongs_to_its_space(searched, tmp_path, monkeypatch):
    strategy, arch = searched
    path = strategy.latency_table.save(tmp_path / 'latency_table.json')
    monkeypatch.setattr(nni_zodarts.latency, 'measure_ms', lambda *a, **k: pytest.fail('measured again'))
    again = shaped(SPACES['size_variable'], latency_table=str(path))
    probs = {lab: torch.softmax(torch.randn(len(c), dtype=torch.float64), 0)
             for lab, c in strategy.costs['latency'].choices.items()}
    assert float(again.costs['latency'].expectation(probs)) == pytest.approx(
        float(strategy.costs['latency'].expectation(probs)), rel=1e-12)
    assert again.costs_of(arch)['latency'] == pytest.approx(strategy.costs_of(arch)['latency'])
    with pytest.raises(ValueError, match='another space'):
        shaped((lambda: SizeVariableSpace(in_channels=3, num_classes=2), (3, 28, 28)), latency_table=str(path))
    (tmp_path / 'broken.json').write_text('{"entries": 3}')
    with pytest.raises(ValueError, match='is not a latency table'):
        ZODartsPP(latency_table=str(tmp_path / 'broken.json'))


def test_derive_gives_the_most_probable_architecture_inside_new_windows(searched):
    strategy, _ = searched
    smallest = strategy.costs['flops'].smallest()
    for upper in (smallest * 1.5, smallest * 3):
        arch = strategy.derive(flops_budget=upper, param_budget=500_000)
        assert strategy.costs_of(arch)['flops'] <= upper and strategy.costs_of(arch)['params'] <= 500_000
    with pytest.raises(ValueError, match='below the smallest architecture'):
        strategy.derive(flops_budget=smallest - 1)
    with pytest.raises(ValueError, match='above its upper bound'):
        strategy.derive(flops_budget=(2e7, 1e7))


@pytest.mark.parametrize('kwargs, message', [
    (dict(flops_budget=-1), 'flops_budget must be positive'),
    (dict(latency_budget=(3, 1)), 'latency_budget lower bound 3 is above'),
    (dict(input_shape=(0, 28)), 'input_shape must be'),
])
def test_bad_hardware_budgets_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ZODartsPP(**kwargs)


def test_a_flops_budget_below_the_space_is_refused_at_mutate():
    with pytest.raises(ValueError, match='flops_budget 1,000 is below the smallest architecture'):
        shaped(SPACES['size_variable'], flops_budget=1000)


def test_cli_derive_writes_a_retrainable_architecture_and_a_pareto_plot(tmp_path, capsys):
    search = tmp_path / 'search'
    assert main(['search', '--epochs', '2', '--flops-budget', '60M', '--output', str(search), *QUICK]) == 0
    config = json.loads((search / 'search_config.json').read_text())
    assert config['flops'] <= 60e6 and config['flops_budget'] == [0, 60e6] and config['input_shape'] == [1, 28, 28]
    assert pd.read_csv(search / 'search_history.csv')['expected_flops'].notna().all()
    for k, budget in enumerate(('15M', '40M')):
        assert main(['derive', '--search', str(search), '--flops-budget', budget, '--param-budget', '400k',
                     '--output', str(tmp_path / f'd{k}')]) == 0
    derived = json.loads((tmp_path / 'd0' / 'search_config.json').read_text())
    arch = json.loads((tmp_path / 'd0' / 'architecture.json').read_text())
    model = SizeVariableSpace(in_channels=1, num_classes=2).freeze(arch)
    assert flops_of(model, (1, 28, 28)) == derived['flops'] <= 15e6
    assert sum(p.numel() for p in model.parameters()) == derived['params'] <= 400e3
    assert 0 <= derived['supernet_val_acc'] <= 1
    table = pd.read_csv(search / 'derived.csv')
    assert len(table) == 2 and (search / 'pareto.png').read_bytes()[:4] == b'\x89PNG'
    assert main(['retrain', '--arch', str(tmp_path / 'd0' / 'architecture.json'), '--epochs', '1',
                 '--output', str(tmp_path / 'd0' / 'retrain'), *QUICK]) == 0
    capsys.readouterr()
    for bad in (['--flops-budget', '1k'], ['--flops-budget', '20M:10M'], ['--flops-budget=-5'], []):
        assert exit_code(['derive', '--search', str(search), *bad, '--output', str(tmp_path / 'bad')]) == 2, bad
        assert not (tmp_path / 'bad' / 'architecture.json').exists()
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exit:                          # argparse's errors
        return exit.code


def test_building_the_cost_models_draws_no_search_randomness():
    """Measuring latency builds real layers and frozen models; the search's random stream must be where it is
    without them (NNI's own alpha initialisation draws from it either way)."""
    torch.manual_seed(5)
    ZODartsPP(size_search_start_epoch=0).mutate_model(TinySpace())
    without = torch.random.get_rng_state()
    torch.manual_seed(5)
    strategy = shaped(SPACES['tiny'], latency_budget=1e6)
    assert 'latency' in strategy.costs and torch.equal(torch.random.get_rng_state(), without)
