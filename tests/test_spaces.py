"""The dead-cell and dead-edge rules (the authors' checkNone, spec §8) against the networks themselves."""
import itertools
import math

import pytest
import torch

from nni_zodarts.retrain import ArchitectureError, build_model
from nni_zodarts.search import sample_architecture
from search_spaces import create_space, dead_cells, most_probable_alive, prune_dead_edges
from search_spaces.ops import EDGES


def _uniform(space='size_variable', none=1.0):
    labels = create_space(space).simplify()
    return {label: {v: (none if v == 'none' else 1.0) for v in choice.values} for label, choice in labels.items()}


def _draw(probs, generator) -> dict:
    """One architecture drawn label by label, unchecked (``sample_architecture`` mends and prunes)."""
    return {label: list(dist)[int(torch.multinomial(torch.tensor(list(dist.values())), 1, generator=generator))]
            for label, dist in probs.items()}


def _ignores_its_input(arch, space) -> bool:
    """No gradient reaches the images: exactly zero, not merely small (a deep untrained net contracts its inputs)."""
    model = create_space(space, track_running_stats=True).freeze(arch).eval()
    images = torch.randn(2, 1, 28, 28, requires_grad=True)
    model(images).sum().backward()
    return images.grad is None or not images.grad.any()


@pytest.mark.parametrize('space', ['size_variable', 'nb201'])
def test_dead_cells_are_exactly_the_architectures_that_ignore_their_input(space):
    generator, outcomes = torch.Generator().manual_seed(0), []
    probs = _uniform(space, none=3.0)                        # many `none` edges, so both kinds occur
    for _ in range(12):
        arch = _draw(probs, generator)
        dead = bool(dead_cells(arch))
        assert dead == _ignores_its_input(arch, space), arch
        outcomes.append(dead)
    assert any(outcomes) and not all(outcomes)


def _outputs(arch, space, weights, images):
    """The frozen network's training-mode output with ``weights`` (a superset of its own state) loaded."""
    model = create_space(space).freeze(arch).train()
    own = model.state_dict()
    assert all(weights[k].shape == v.shape for k, v in own.items())
    model.load_state_dict({k: weights[k] for k in own})
    return model(images)


@pytest.mark.parametrize('space', ['size_variable', 'nb201'])
def test_pruning_keeps_the_function_and_removes_every_edge_that_does_nothing(space):
    generator, removed_weights = torch.Generator().manual_seed(0), []
    probs, images = _uniform(space, none=3.0), torch.randn(4, 1, 28, 28)
    archs = (_draw(probs, generator) for _ in range(60))
    pruned_a_conv = lambda a: any('conv' in str(op) and prune_dead_edges(a)[lab] == 'none' for lab, op in a.items())
    for arch in [a for a in archs if not dead_cells(a) and pruned_a_conv(a)][:2]:
        lean = prune_dead_edges(arch)
        assert prune_dead_edges(lean) == lean and dead_cells(lean) == []
        full = create_space(space).freeze(arch)
        weights = full.state_dict()
        reference = _outputs(arch, space, weights, images)
        assert torch.allclose(_outputs(lean, space, weights, images), reference, atol=1e-5)
        lean_params = sum(p.numel() for p in create_space(space).freeze(lean).parameters())
        removed_weights.append(sum(p.numel() for p in full.parameters()) - lean_params)
        assert sum(p.numel() for p in build_model(arch, space, {}).parameters()) == lean_params   # retrains it lean
        for label in [lab for lab, op in lean.items() if op != 'none' and lab[-3:-2] == 'e' and lab[-2:].isdigit()]:
            cut = {**lean, label: 'none'}                    # every edge left matters
            assert not torch.allclose(_outputs(cut, space, weights, images), reference, atol=1e-3), label
    assert len(removed_weights) == 2 and all(n > 0 for n in removed_weights)


def test_a_path_through_an_intermediate_node_keeps_the_cell_alive():
    alive = {'cell_e10': 'skip_connect', 'cell_e20': 'none', 'cell_e21': 'nor_conv_1x1',
             'cell_e30': 'none', 'cell_e31': 'none', 'cell_e32': 'avg_pool_3x3'}
    assert dead_cells(alive) == []
    assert dead_cells({**alive, 'cell_e10': 'none'}) == ['cell']
    assert dead_cells({'block_e10': 'none', 'block_e21': 'none'}) == []     # not a six-edge cell


def test_sampling_draws_again_until_every_cell_is_alive_and_retrain_refuses_a_dead_one():
    generator = torch.Generator().manual_seed(0)
    draws = [sample_architecture(_uniform(none=20.0), generator) for _ in range(5)]
    assert all(dead_cells(arch) == [] for arch in draws)
    with pytest.raises(ValueError, match='every path'):
        sample_architecture(_uniform(none=1e9), generator, tries=3)
    small = sample_architecture(_uniform(), generator, accept=lambda a: a['s2_depth'] == 1 and a['s2_e30'] == 'none')
    assert small['s2_depth'] == 1 and small['s2_e30'] == 'none'
    with pytest.raises(ValueError, match='accepted'):
        sample_architecture(_uniform(), generator, tries=3, accept=lambda a: False)
    assert all(prune_dead_edges(arch) == arch for arch in draws)
    dead = {**draws[0], 's1_e30': 'none', 's1_e31': 'none', 's1_e32': 'none'}
    with pytest.raises(ArchitectureError, match='cell s1 has no input-to-output path'):
        build_model(dead, 'size_variable', {})


def test_mending_a_dead_cell_gives_its_most_probable_live_form():
    ops = ['none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3']
    labels = [f'cell_e{i}{j}' for i, j in EDGES]
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        probs = {}
        for lab in labels:                                   # `none` first, the rest random below it
            rest = torch.rand(4, generator=generator)
            probs[lab] = dict(zip(ops, [1.0, *(rest / rest.sum() * 0.9).tolist()]))
        argmax = {lab: 'none' for lab in labels}
        mended = most_probable_alive(argmax, probs)
        live = [dict(zip(labels, c)) for c in itertools.product(ops, repeat=6)]
        live = [a for a in live if not dead_cells(a)]
        best = max(live, key=lambda a: sum(math.log(probs[lab][a[lab]]) for lab in labels))
        assert mended == best
    alive = {**argmax, 'cell_e30': 'skip_connect'}
    assert most_probable_alive(alive, probs) == alive
