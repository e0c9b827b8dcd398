import torch

from nni_zodarts import ZODartsPP
from nni_zodarts.supermodules import SparseMixedLayer, SparseMixedRepeat
from spaces import Counting, TinySpace


def supernet():
    strategy = ZODartsPP(size_search_start_epoch=0, initial_temperature=1.0)
    model = strategy.mutate_model(TinySpace())
    return strategy, model


def test_mutation_installs_sparse_modules_and_shared_normalizer():
    strategy, model = supernet()
    layers = [m for m in model.modules() if isinstance(m, SparseMixedLayer)]
    assert len(layers) == 3 and all(m._softmax is strategy.normalizer for m in layers)
    assert any(isinstance(m, SparseMixedRepeat) for m in model.modules())


def test_zero_weight_candidates_do_not_run_forward_or_backward():
    strategy, model = supernet()
    alphas = strategy._arch_parameters
    with torch.no_grad():
        alphas['op'].copy_(torch.tensor([1.0, 0.8, -2.0]))          # conv, skip alive; counted -> exactly 0
        alphas['depth'].copy_(torch.tensor([5.0, -5.0, -5.0]))       # depth 1 only
    x = torch.randn(4, 1, 8, 8)
    model(x).sum().backward()
    counted = [m for m in model.modules() if isinstance(m, Counting)]
    assert sum(m.calls for m in counted) == 0
    assert all(weights(m) and all(p.grad is None for p in weights(m)) for m in counted)
    blocks = [m for m in model.modules() if isinstance(m, SparseMixedRepeat)][0].blocks
    assert all(p.grad is None for p in weights(blocks[1]))            # depths 2, 3 have weight 0: never run
    assert all(p.grad is not None for p in weights(blocks[0].op['conv']))


def weights(module):
    return [p for name, p in module.named_parameters() if '_arch_alpha' not in name]


def test_skipping_gives_the_dense_result():
    strategy, model = supernet()
    with torch.no_grad():
        strategy._arch_parameters['op'].copy_(torch.tensor([1.0, 0.8, -2.0]))
    layer = [m for m in model.modules() if isinstance(m, SparseMixedLayer)][0]
    x = torch.randn(2, 8, 6, 6)
    weights = layer._softmax(layer._arch_alpha)
    dense = sum(w * layer[name](x) for name, w in zip(layer.names, weights))
    assert weights[2] == 0
    assert torch.allclose(layer(x), dense, atol=1e-6)


def test_one_hot_size_choice_runs_the_plain_operation():
    strategy, model = supernet()
    with torch.no_grad():
        strategy._arch_parameters['op_k'].copy_(torch.tensor([-3.0, 3.0]))   # kernel 1 with weight 1
    conv = [m for m in model.modules() if type(m).__name__ == 'MixedConv2d' and 'op_k' in m._arch_alpha][0]
    assert conv.forward_argument('kernel_size') == 1
    with torch.no_grad():
        strategy._arch_parameters['op_k'].copy_(torch.tensor([0.1, 0.0]))
    assert isinstance(conv.forward_argument('kernel_size'), dict)


def test_skipping_zero_weights_changes_no_output_and_no_gradient_of_the_whole_supernet(monkeypatch):
    import nni_zodarts.supermodules as supermodules
    strategy, model = supernet()
    with torch.no_grad():                         # every label has an exact zero: an op, a depth, a kernel, a width
        for label, alpha in {'op': [1.0, 0.8, -2.0], 'depth': [1.0, 0.9, -3.0], 'op_k': [0.2, 0.1],
                             'width': [1.0, -0.5]}.items():
            strategy._arch_parameters[label].copy_(torch.tensor(alpha))
    assert all((strategy.normalizer(a) == 0).any() for lab, a in strategy._arch_parameters.items() if lab != 'op_k')
    x = torch.randn(4, 1, 8, 8)

    def run():
        model.zero_grad(set_to_none=True)
        out = model(x)
        (out ** 2).sum().backward()
        return out.detach(), {n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                              for n, p in model.named_parameters()}

    sparse_out, sparse_grads = run()
    monkeypatch.setattr(supermodules, 'nonzero_options', lambda options: options)    # run every candidate
    dense_out, dense_grads = run()
    assert torch.allclose(sparse_out, dense_out, atol=1e-6)
    for name, grad in dense_grads.items():
        assert torch.allclose(sparse_grads[name], grad, atol=1e-6), name
    assert any(g.abs().max() > 0 for n, g in dense_grads.items() if '_arch_alpha' in n)
