import itertools
import random

import nni
import pytest
import torch
from nni.nas.nn.pytorch import ModelSpace, Repeat
from torch import nn

from nni_zodarts import ZODartsPP
from nni_zodarts.budget import hinge_penalty, parse_budget
from search_spaces import NB201Space, SizeVariableSpace, dead_cells, prune_dead_edges
from spaces import TinySpace


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def mutated(space):
    strategy = ZODartsPP(size_search_start_epoch=0)
    strategy.mutate_model(space)
    return strategy


def random_arch(space, rng):
    return {label: rng.choice(m.values) for label, m in space.simplify().items()}


def test_spec_example_all_1x1_depth_1_1_2_is_130971():
    arch = {label: m.values[0] for label, m in SizeVariableSpace(num_classes=11).simplify().items()}
    arch.update({label: 'nor_conv_1x1' for label in arch if label[-3:-2] == 'e' or label.split('_')[-1].startswith('e')})
    arch.update(s0_depth=1, s1_depth=1, s2_depth=2)
    assert n_params(SizeVariableSpace(num_classes=11).freeze(arch)) == 130_971
    assert mutated(SizeVariableSpace(num_classes=11)).polynomial.count(arch) == 130_971


@pytest.mark.parametrize('make', [
    lambda: SizeVariableSpace(in_channels=1, num_classes=2),
    lambda: SizeVariableSpace(in_channels=3, num_classes=5, width_multipliers=(0.5, 0.75, 1.0)),
    lambda: NB201Space(in_channels=3, num_classes=4),
    lambda: TinySpace(),
])
def test_count_equals_frozen_model(make):
    poly, rng = mutated(make()).polynomial, random.Random(0)
    for _ in range(6):
        arch = random_arch(make(), rng)
        assert poly.count(arch) == n_params(make().freeze(arch)), arch


def test_expectation_is_exact_against_enumeration():
    space = TinySpace()
    labels = space.simplify()
    poly = mutated(TinySpace()).polynomial
    torch.manual_seed(3)
    probs = {lab: torch.softmax(torch.randn(len(m.values), dtype=torch.float64), 0) for lab, m in labels.items()}
    brute = 0.0
    for values in itertools.product(*(m.values for m in labels.values())):
        arch = dict(zip(labels, values))
        weight = 1.0
        for lab, v in arch.items():
            weight *= float(probs[lab][labels[lab].values.index(v)])
        brute += weight * n_params(TinySpace().freeze(arch))
    assert float(poly.expectation(probs)) == pytest.approx(brute, rel=1e-9)


def test_expectation_is_differentiable():
    poly = mutated(SizeVariableSpace()).polynomial
    alphas = {lab: torch.zeros(len(c), dtype=torch.float64, requires_grad=True) for lab, c in poly.choices.items()}
    expected = poly.expectation({lab: torch.softmax(a, 0) for lab, a in alphas.items()})
    expected.backward()
    k = alphas['s2_e10_k'].grad                   # stage-3 kernel sizes [7, 5, 3]: more mass on 7x7 costs more
    assert k[0] > k[1] > k[2]
    assert alphas['s2_depth'].grad[2] > alphas['s2_depth'].grad[0]


def test_hinge_penalty_two_sided():
    p = torch.tensor([50.0, 150.0, 400.0])
    assert torch.allclose(hinge_penalty(p, 100, 300, unit=100), torch.tensor([0.5, 0.0, 1.0]))


@pytest.mark.parametrize('bad', [-5, 0, (300, 100), (-1, 10), 'big', (1, 2, 3)])
def test_bad_budgets_are_refused(bad):
    with pytest.raises(ValueError, match='param_budget'):
        parse_budget(bad)


def test_budget_forms():
    assert parse_budget(None) is None
    assert parse_budget(1000) == (0.0, 1000.0)
    assert parse_budget((10, 20)) == (10.0, 20.0)


def test_most_probable_within_window_is_the_best_of_all_architectures_inside_it():
    poly = mutated(TinySpace()).polynomial
    every = [dict(zip(poly.choices, values)) for values in itertools.product(*poly.choices.values())]
    counts = sorted({poly.count(arch) for arch in every})
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    for i, j in ((1, -2), (2, -4), (3, 8), (0, 5), (5, 9), (6, 6)):     # windows between two counts of the space
        probs = {lab: torch.distributions.Dirichlet(torch.ones(len(c), dtype=torch.float64)).sample()
                 for lab, c in poly.choices.items()}
        lower, upper = counts[i], counts[j]
        start = {lab: c[int(probs[lab].argmax())] for lab, c in poly.choices.items()}
        arch, params, inside = poly.most_probable_within(probs, lower, upper, start, generator=g)

        def log_prob(a):
            return sum(float(probs[lab][poly.choices[lab].index(a[lab])].log()) for lab in poly.choices)

        best = max((a for a in every if lower <= poly.count(a) <= upper), key=log_prob)
        assert inside and lower <= params <= upper and params == poly.count(arch)
        assert log_prob(arch) == pytest.approx(log_prob(best))


def test_most_probable_within_window():
    poly = mutated(SizeVariableSpace()).polynomial
    probs = {lab: torch.full((len(c),), 1 / len(c), dtype=torch.float64) for lab, c in poly.choices.items()}
    probs['s2_e10'] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)     # strongly wants a big conv
    start = {lab: c[-1] if lab.endswith('depth') else c[3] if lab[-1].isdigit() else 7 for lab, c in poly.choices.items()}
    assert poly.count(start) > 1_000_000
    arch, params, inside = poly.most_probable_within(probs, 0, 300_000, start, generator=torch.Generator().manual_seed(0))
    assert inside and params <= 300_000 and poly.count(arch) == params
    assert poly.smallest() < 300_000
    _, _, possible = poly.most_probable_within(probs, 0, poly.smallest() - 1, start)
    assert not possible


def test_most_probable_within_counts_and_returns_the_simplified_network_and_skips_unusable_ones():
    poly = mutated(SizeVariableSpace()).polynomial
    probs = {lab: torch.full((len(c),), 1 / len(c), dtype=torch.float64) for lab, c in poly.choices.items()}
    for lab, choices in poly.choices.items():
        if 'none' in choices:                                  # every edge prefers `none`: the cheapest, but dead
            probs[lab] = torch.tensor([0.6 if c == 'none' else 0.1 for c in choices], dtype=torch.float64)
    start = {lab: 'none' if 'none' in c else c[0] for lab, c in poly.choices.items()}
    unchecked, _, _ = poly.most_probable_within(probs, 0, 300_000, start, generator=torch.Generator().manual_seed(0))
    assert dead_cells(unchecked)
    arch, params, inside = poly.most_probable_within(probs, 0, 300_000, start, generator=torch.Generator().manual_seed(0),
                                                     simplify=lambda a: None if dead_cells(a) else prune_dead_edges(a))
    assert inside and params <= 300_000 and dead_cells(arch) == [] and arch == prune_dead_edges(arch)
    assert params == poly.count(arch)
    # A window only the pruned network fits: the argmax's edges e10 and e21 feed node 2, which the output never reads.
    live = {**start, **{f's{s}_e{i}': 'nor_conv_1x1' for s in range(3) for i in ('10', '21', '30')}}
    lean = prune_dead_edges(live)
    assert lean == {**start, **{f's{s}_e30': 'nor_conv_1x1' for s in range(3)}}
    probs = {lab: torch.tensor([0.6 if c == live[lab] else 0.4 / (len(cs) - 1) for c in cs], dtype=torch.float64)
             for lab, cs in poly.choices.items()}
    arch, params, inside = poly.most_probable_within(probs, 0, poly.count(lean), live, simplify=prune_dead_edges)
    assert inside and arch == lean and params == poly.count(lean)


class TwoLabelDepthSpace(ModelSpace):
    """A ``Repeat`` whose depth is an expression of two labels."""

    def __init__(self):
        super().__init__()
        self.body = Repeat(lambda i: nn.Linear(3, 3), nni.choice('a', [1, 2]) + nni.choice('b', [0, 2]))
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.body(x))


def test_a_depth_built_from_several_labels_is_counted_exactly():
    poly = mutated(TwoLabelDepthSpace()).polynomial
    for a, b in itertools.product([1, 2], [0, 2]):
        arch = {'a': a, 'b': b}
        assert poly.count(arch) == n_params(TwoLabelDepthSpace().freeze(arch)) == 12 * (a + b) + 8


def test_kernel_branches_are_separate_convolutions_with_their_own_bn_and_count_exactly():
    """``kernel_mode='branches'`` (the paper's): the supernet holds a ReLU-Conv(k)-BN per kernel size of every
    kernel-variable conv; ``space.freeze`` keeps the chosen one; the count and E[FLOPs] follow the frozen models."""
    from search_spaces.ops import KernelBranch, MixedKernelBranches
    from nni_zodarts.trace import count_flops

    make = lambda: SizeVariableSpace(in_channels=1, num_classes=2, kernel_mode='branches')
    strategy = ZODartsPP(size_search_start_epoch=0, input_shape=(1, 28, 28))
    supernet = strategy.mutate_model(make())
    mixed = [m for m in supernet.modules() if isinstance(m, MixedKernelBranches)]
    assert mixed and all(sorted(m.branches) == ['3', '5', '7'] for m in mixed)
    assert all(isinstance(m.branches[k][2], nn.BatchNorm2d) for m in mixed for k in m.branches)
    assert 's0_e10_k' in strategy.size_labels                # held at 7x7 before the size phase, like 'shared'
    rng = random.Random(3)
    for _ in range(4):
        arch = random_arch(make(), rng)
        model = make().freeze(arch)
        assert strategy.polynomial.count(arch) == n_params(model)
        with torch.no_grad():
            assert strategy.costs['flops'].count(arch) == count_flops(model.eval(), torch.zeros(1, 1, 28, 28))
        if arch['s0_e10'] == 'kernel_variable_conv':
            conv = model.stages[0][0].edges['10'].branch[1]
            assert conv.kernel_size == (arch['s0_e10_k'],) * 2
            assert type(model.stages[0][0].edges['10']) is KernelBranch and repr(model)   # a plain module
    shared = SizeVariableSpace(in_channels=1, num_classes=2)
    arch = random_arch(shared, rng)
    assert n_params(make().freeze(arch)) == n_params(shared.freeze(arch))   # one frozen network per architecture
