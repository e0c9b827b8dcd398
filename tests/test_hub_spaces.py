"""ZODartsPP on NNI's own model-space hub and on NNI's ``Cell``: searched, costed, exported, frozen."""
import itertools

import numpy as np
import pytest
import torch
from nni.nas.evaluator.pytorch import Classification
from nni.nas.experiment import NasExperiment
from nni.nas.hub import pytorch as hub
from torch.utils.data import DataLoader, TensorDataset

from nni_zodarts import ZODartsPP
from nni_zodarts.cost_model import frozen_counter
from nni_zodarts.sparsemax import sparsemax
from nni_zodarts.trace import count_flops
from spaces import CellSpace, ShapeShiftingSpace

# Every space NNI 3.0's DARTS searches, at a size a CPU test can afford (3x16x16 images, 10 classes).
CELL = dict(width=(4, 8), num_cells=(3, 6), dataset='cifar')
HUB = {
    'DARTS': lambda: hub.DARTS(**CELL),
    'ENAS': lambda: hub.ENAS(**CELL),
    'NASNet': lambda: hub.NASNet(**CELL),
    'AmoebaNet': lambda: hub.AmoebaNet(**CELL),
    'PNAS': lambda: hub.PNAS(**CELL),
    'NasBench201': lambda: hub.NasBench201(stem_out_channels=4, num_modules_per_stack=1, num_labels=10),
    'ProxylessNAS': lambda: hub.ProxylessNAS(num_labels=10, base_widths=(8, 8, 8, 8, 8, 8, 8, 16, 32)),
    'MobileNetV3Space': lambda: hub.MobileNetV3Space(num_labels=10, base_widths=(8, 8, 8, 8, 8, 8, 8, 16, 32),
                                                     width_multipliers=(0.5, 1.0), expand_ratios=(1., 2.),
                                                     depth_range=(1, 2)),
    'ShuffleNetSpace': lambda: hub.ShuffleNetSpace(num_labels=10, channel_search=True),
    'AutoFormer': lambda: hub.AutoFormer(search_embed_dim=(16, 32), search_mlp_ratio=(1.0, 2.0), search_num_heads=(1, 2),
                                         search_depth=(1, 2), img_size=16, patch_size=8, num_labels=10),
}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def evaluator(n=4, batch=4):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2 * n, 3, 16, 16, generator=g), torch.randint(0, 10, (2 * n,), generator=g)
    loader = lambda a, b: DataLoader(TensorDataset(x[a:b], y[a:b]), batch_size=batch)
    return Classification(train_dataloaders=loader(0, n), val_dataloaders=loader(n, 2 * n), num_classes=10,
                          max_epochs=1, accelerator='cpu', logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False)


def random_arch(space, seed):
    rng = np.random.RandomState(seed)
    return {label: mutable.random(random_state=rng) for label, mutable in space.simplify().items()}


# Every space is searched with the implicit ZO estimate under a budget (the frozen count of one random
# architecture). The direct estimate, without a budget, on every space but ENAS, NASNet, AmoebaNet and PNAS: they
# are DARTS's class (NNI's NDS) with other operations, and the estimate never looks at the operations.
NDS_LIKE_DARTS = ('ENAS', 'NASNet', 'AmoebaNet', 'PNAS')
CASES = [(name, 'implicit', True) for name in HUB] + [(name, 'direct', False) for name in HUB if name not in NDS_LIKE_DARTS]


@pytest.mark.parametrize('name, mode, budgeted', CASES)
def test_hub_space_is_searched_and_exported_inside_the_budget(name, mode, budgeted):
    make = HUB[name]
    space = make()
    labels = space.simplify()
    budget = frozen_counter(space)(random_arch(space, 1)) if budgeted else None
    strategy = ZODartsPP(zo_mode=mode, param_budget=budget, arc_update_interval=1, size_search_start_epoch=0)
    torch.manual_seed(0)
    experiment = NasExperiment(space, evaluator(), strategy)
    experiment.run()
    arch = experiment.export_top_models(formatter='dict')[0]
    experiment.stop()

    alphas = strategy.oneshot_module._alphas
    assert set(alphas) == set(labels)                          # every label of the space is searched ...
    assert all(alphas[lab].abs().max() > 0.008 for lab in labels)   # one Adam step (lr 0.015) moved each from ~1e-3
    probs = strategy.export_probs()
    assert set(probs) == set(labels)                           # ... and its probabilities come from the normaliser
    assert all(abs(sum(p.values()) - 1) < 1e-5 for p in probs.values())
    assert set(arch) == set(labels)
    model = make().freeze(arch)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert n_params(model) == strategy.polynomial.true_count(arch)
    if budgeted:
        assert n_params(model) <= budget


@pytest.mark.parametrize('name', list(HUB))
def test_hub_space_parameters_and_flops_are_the_frozen_models(name):
    strategy = ZODartsPP(size_search_start_epoch=0, input_shape=(3, 16, 16))
    strategy.mutate_model(HUB[name]())
    params, flops = strategy.costs['params'], strategy.costs['flops']
    assert params.exact and flops.exact
    for seed in range(2, 4):                     # other architectures than the ones the counts were checked on
        arch = random_arch(HUB[name](), seed)
        model = HUB[name]().freeze(arch)
        assert params.count(arch) == n_params(model), arch
        with torch.no_grad():
            assert flops.count(arch) == count_flops(model.eval(), torch.zeros(1, 3, 16, 16)) > 0, arch


def test_a_supernet_unlike_its_frozen_models_is_held_to_the_budget_by_their_count():
    strategy = ZODartsPP(size_search_start_epoch=0, param_budget=70)
    with pytest.warns(RuntimeWarning, match='differs from the frozen models'):
        strategy.mutate_model(ShapeShiftingSpace())
    poly = strategy.polynomial
    assert not poly.exact
    for op in (0, 1):
        assert poly.true_count({'op': op}) == n_params(ShapeShiftingSpace().freeze({'op': op}))
    probs = {'op': torch.tensor([0.1, 0.9])}        # op 1 is more probable, but its frozen model has 90 parameters
    arch, params, inside = poly.most_probable_within(probs, 0, 70, {'op': 1})
    assert (arch, params, inside) == ({'op': 0}, 60, True)


@pytest.mark.parametrize('merge_op', ['all', 'loose_end'])
def test_cell_expectation_equals_the_mean_over_every_frozen_architecture(merge_op):
    strategy = ZODartsPP(size_search_start_epoch=0)
    strategy.mutate_model(CellSpace(merge_op))
    labels = CellSpace(merge_op).simplify()
    assert any(label.startswith('cell/input') for label in labels)
    torch.manual_seed(1)
    probs = {lab: sparsemax(torch.randn(len(m.values), dtype=torch.float64) / 0.7) for lab, m in labels.items()}
    brute = 0.0
    for values in itertools.product(*(m.values for m in labels.values())):
        weight = np.prod([float(probs[lab][labels[lab].values.index(v)]) for lab, v in zip(labels, values)])
        if weight:
            arch = {lab: [v] if lab.startswith('cell/input') else v for lab, v in zip(labels, values)}
            brute += weight * n_params(CellSpace(merge_op).freeze(arch))
    assert float(strategy.polynomial.expectation(probs)) == pytest.approx(brute, rel=1e-9)


def test_expectation_on_the_darts_space_is_the_mean_of_sampled_counts():
    strategy = ZODartsPP(size_search_start_epoch=0)
    strategy.mutate_model(HUB['DARTS']())
    poly = strategy.polynomial
    g = torch.Generator().manual_seed(0)
    probs = {lab: torch.softmax(torch.randn(len(c), generator=g, dtype=torch.float64) * 2, 0) for lab, c in poly.choices.items()}
    draws = torch.stack([torch.multinomial(probs[lab], 20_000, replacement=True, generator=g) for lab in poly.labels], 1)
    counts = poly._counts(draws)
    assert float(poly.expectation(probs)) == pytest.approx(float(counts.mean()), abs=4 * float(counts.std()) / 20_000 ** 0.5)


def test_a_constraint_nni_cannot_differentiate_is_refused_by_name():
    space = hub.NasBench101(stem_out_channels=4, num_stacks=1, num_modules_per_stack=1, num_labels=10)
    with pytest.raises(ValueError, match="cannot search 'cell/final'"):
        ZODartsPP().mutate_model(space)


def test_importing_the_plugin_first_leaves_nni_strategies_working():
    import subprocess
    import sys
    code = ('import nni_zodarts; from nni.nas.strategy import DARTS, GumbelDARTS, ENAS, RandomOneShot, Proxyless; '
            'from nni.nas.oneshot.pytorch.strategy import OneShotStrategy; '
            'assert all(issubclass(s, OneShotStrategy) for s in (DARTS, GumbelDARTS, ENAS, RandomOneShot, Proxyless))')
    subprocess.run([sys.executable, '-c', code], check=True)
