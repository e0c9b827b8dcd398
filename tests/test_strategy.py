import itertools

import pytest
import torch
from nni.nas.evaluator.pytorch import Classification
from nni.nas.experiment import NasExperiment
from torch.utils.data import DataLoader, TensorDataset

from nni_zodarts import ZODartsPP
from nni_zodarts.architect import ZOArchitect, clone_optimizer
from nni_zodarts.module import ZODartsPPModule
from nni_zodarts.sparsemax import sparsemax
from spaces import FixedSpace, InputSpace, TinySpace


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def evaluator(epochs=2, n=64, batch=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * n, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long()
    loader = lambda a, b: DataLoader(TensorDataset(x[a:b], y[a:b]), batch_size=batch)
    return Classification(train_dataloaders=loader(0, n), val_dataloaders=loader(n, 2 * n), num_classes=2,
                          max_epochs=epochs, accelerator='cpu', logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, learning_rate=0.05,
                          optimizer=torch.optim.SGD)


def search(strategy, epochs=2, seed=0, space=None):
    torch.manual_seed(seed)
    space = space or TinySpace()
    exp = NasExperiment(space, evaluator(epochs), strategy)
    exp.run()
    arch = exp.export_top_models(formatter='dict')[0]
    exp.stop()
    return arch


@pytest.mark.parametrize('kwargs, message', [
    (dict(mu=0), 'mu'), (dict(mu=-1.0), 'mu'), (dict(param_budget=-5), 'param_budget'),
    (dict(param_budget=(500, 100)), 'lower bound'), (dict(zo_mode='exact'), 'zo_mode'),
    (dict(normalization='gumbel'), 'normalization'), (dict(num_directions=0), 'num_directions'),
    (dict(temperature_decay=1.5), 'temperature_decay'), (dict(penalty={'baseline': 1}), 'param_budget'),
    (dict(perturbed_steps=11), 'perturbed_steps'), (dict(perturbed_steps=0), 'perturbed_steps'),
    (dict(mu_reference='all'), 'mu_reference'),
])
def test_bad_arguments_say_what_to_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ZODartsPP(**kwargs)


@pytest.mark.parametrize('mode', ['implicit', 'direct'])
def test_search_exports_a_valid_architecture(mode):
    strategy = ZODartsPP(zo_mode=mode, arc_update_interval=2, size_search_start_epoch=1, mu=0.05, temperature_interval=1)
    arch = search(strategy)
    labels = TinySpace().simplify()
    assert set(arch) == set(labels) and all(arch[k] in labels[k].values for k in labels)
    model = TinySpace().freeze(arch)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 2)
    assert n_params(model) == strategy.polynomial.count(arch)
    alphas = strategy.oneshot_module.arch_parameters()
    assert all(torch.isfinite(a).all() for a in alphas)
    assert any(a.abs().max() > 0.01 for a in alphas)       # Adam moved alpha away from its 1e-3 initialisation
    probs = strategy.export_probs()
    assert all(abs(sum(p.values()) - 1) < 1e-5 for p in probs.values())


def expected_params_by_enumeration(alphas: dict, tau: float) -> torch.Tensor:
    """E[#params] of TinySpace under sparsemax(alpha / tau), summed over its 36 frozen architectures."""
    labels = TinySpace().simplify()
    probs = {lab: sparsemax(alphas[lab] / tau) for lab in labels}
    total = 0
    for values in itertools.product(*(labels[lab].values for lab in labels)):
        arch = dict(zip(labels, values))
        weight = torch.stack([probs[lab][labels[lab].values.index(v)] for lab, v in arch.items()]).prod()
        total = total + weight * n_params(TinySpace().freeze(arch))
    return total


@pytest.mark.parametrize('budget', [None, 250])
def test_the_step_writes_eq5_along_the_perturbation_each_copy_was_trained_with(monkeypatch, budget):
    """The module's wiring of Eq. 5, recomputed from what it actually ran: the direction of each label from the
    perturbed copy's alpha, the implicit term from the copy's weights, the gradients by a separate backward; with a
    budget, the objective adds (15 / tau) * hinge(E[params]) (spec §6), E[params] here by enumeration."""
    from torch.func import functional_call

    checked = []
    step = ZODartsPPModule._architecture_step

    def spy(self, val_batch, batch_idx):
        window = self.architect.window
        names, weights = self._names()
        copy = window.copies[0]
        alphas = {lab: self._alphas[lab].detach().clone().requires_grad_() for lab in window.labels}
        buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        params = {n: w.detach().clone().requires_grad_() for n, w in weights.items()}
        x, y = val_batch
        loss = torch.nn.functional.cross_entropy(
            functional_call(self.model, {**params, **buffers, **{names[lab]: a for lab, a in alphas.items()}}, (x,)), y)
        if budget is not None:
            expected = expected_params_by_enumeration(alphas, self.temperature)
            loss = loss + 15 / self.temperature * torch.clamp(expected - budget, min=0) / 100
        grads = dict(zip([*alphas, *params], torch.autograd.grad(loss, [*alphas.values(), *params.values()],
                                                                   allow_unused=True)))
        u = {lab: (copy.alphas[names[lab]] - self._alphas[lab].detach()) / window.mu for lab in window.labels}
        alpha = torch.cat([self._alphas[lab].detach() for lab in window.labels])
        assert window.mu == pytest.approx(0.05 * float(alpha.norm()))        # mu scales with |alpha| (spec §5)
        slope = sum((grads[lab] * u[lab]).sum() for lab in alphas if grads[lab] is not None)
        slope = slope + sum(((copy.weights[n] - weights[n].detach()) * grads[n]).sum() / window.mu
                            for n in params if grads[n] is not None)
        step(self, val_batch, batch_idx)
        for lab in window.labels:
            torch.testing.assert_close(self._alphas[lab].grad, slope * u[lab], rtol=1e-3, atol=1e-7)
        checked.append(len(window.labels))

    monkeypatch.setattr(ZODartsPPModule, '_architecture_step', spy)
    search(ZODartsPP(arc_update_interval=2, size_search_start_epoch=0, mu=0.05, param_budget=budget, budget_unit=100,
                     budget_weight=15), epochs=1)
    labels = TinySpace().simplify()
    assert checked and all(n == len(labels) for n in checked)       # every label, sizes included


def test_direct_mode_steps_along_the_two_point_difference_of_eq4(monkeypatch):
    """Eq. 4 from what the step ran: F at alpha and at alpha + mu u_k by separate forwards;
    mu = 0.05 max(|alpha|, 1)."""
    from torch.func import functional_call

    checked = []
    step = ZODartsPPModule._architecture_step

    def spy(self, val_batch, batch_idx):
        labels, (names, _) = self.active_labels(), self._names()
        alpha = torch.cat([self._alphas[lab].detach() for lab in labels])
        directions, mu = self._directions(labels, batch_idx)
        assert mu == pytest.approx(0.05 * max(float(alpha.norm()), 1.0))
        x, y = val_batch

        def objective(vector):
            parts = torch.split(vector, [self._alphas[lab].numel() for lab in labels])
            overrides = {**{n: b.clone() for n, b in self.model.named_buffers()},
                         **{names[lab]: a for lab, a in zip(labels, parts)}}
            with torch.no_grad():
                return torch.nn.functional.cross_entropy(functional_call(self.model, overrides, (x,)), y)

        f0 = objective(alpha)
        expected = torch.stack([(objective(alpha + mu * u) - f0) / mu * u for u in directions]).mean(0)
        step(self, val_batch, batch_idx)
        torch.testing.assert_close(torch.cat([self._alphas[lab].grad for lab in labels]), expected,
                                   rtol=1e-4, atol=1e-7)
        checked.append(batch_idx)

    monkeypatch.setattr(ZODartsPPModule, '_architecture_step', spy)
    search(ZODartsPP(zo_mode='direct', arc_update_interval=2, size_search_start_epoch=0, mu=0.05), epochs=1)
    assert checked


def test_size_choices_are_held_at_their_largest_until_the_size_phase(monkeypatch):
    steps, step = [], ZODartsPPModule._architecture_step

    def spy(self, val_batch, batch_idx):
        before = {lab: a.detach().clone() for lab, a in self._alphas.items()}
        step(self, val_batch, batch_idx)
        steps.append({lab: (before[lab], a.detach().clone(), a.grad) for lab, a in self._alphas.items()})

    monkeypatch.setattr(ZODartsPPModule, '_architecture_step', spy)
    strategy = ZODartsPP(arc_update_interval=2, size_search_start_epoch=5)
    with pytest.warns(RuntimeWarning, match='size_search_start_epoch=5 is not below the 1 epochs'):
        search(strategy, epochs=1)
    assert steps
    for alphas in steps:                        # each step: a ZO estimate for the operations only; sizes untouched
        before, after, grad = alphas['op']
        assert grad is not None and grad.abs().max() > 0 and not torch.equal(before, after)
        for label in ('width', 'depth', 'op_k'):
            before, after, grad = alphas[label]
            assert grad is None and torch.equal(before, after)
    probs = strategy.export_probs()
    assert probs['width'][8] == 1 and probs['depth'][3] == 1 and probs['op_k'][3] == 1


@pytest.mark.parametrize('mode', ['implicit', 'direct'])
def test_the_architecture_step_leaves_bn_running_statistics_alone(monkeypatch, mode):
    checked, step = [], ZODartsPPModule._architecture_step

    def spy(self, val_batch, batch_idx):
        before = {n: b.clone() for n, b in self.model.named_buffers()}
        step(self, val_batch, batch_idx)
        checked.append(all(torch.equal(before[n], b) for n, b in self.model.named_buffers()))

    monkeypatch.setattr(ZODartsPPModule, '_architecture_step', spy)
    search(ZODartsPP(zo_mode=mode, arc_update_interval=2, size_search_start_epoch=0), epochs=1)
    assert checked and all(checked)                 # validation batches never enter the running mean and variance


def test_the_size_phase_restarts_the_size_alphas_and_adam(monkeypatch):
    seen, start = {}, ZODartsPPModule.on_train_epoch_start

    def spy(self):
        before = {lab: a.detach().clone() for lab, a in self._alphas.items()}
        had_state = bool(self.architecture_optimizers().optimizer.state)
        start(self)
        after = {lab: a.detach().clone() for lab, a in self._alphas.items()}
        seen[self.trainer.current_epoch] = before, after, had_state, bool(self.architecture_optimizers().optimizer.state)

    monkeypatch.setattr(ZODartsPPModule, 'on_train_epoch_start', spy)
    search(ZODartsPP(arc_update_interval=2, size_search_start_epoch=1), epochs=2)
    before, after, had_state, has_state = seen[1]
    assert had_state and not has_state                               # Adam starts afresh with the size phase
    for label in ('width', 'depth', 'op_k'):                        # held one-hot -> a fresh near-uniform table
        assert before[label].max() > 100 and 0 < after[label].abs().max() < 0.01
    assert torch.equal(before['op'], after['op'])                    # the operations keep what they learnt
    assert torch.equal(seen[0][0]['width'], seen[0][1]['width'])      # epoch 0 leaves them held


def test_budget_moves_the_expectation_and_bounds_the_export():
    common = dict(arc_update_interval=2, size_search_start_epoch=0, mu=0.05, arc_learning_rate=0.1)
    free = ZODartsPP(**common)
    search(free, epochs=3)
    tight = ZODartsPP(param_budget=250, budget_unit=100, budget_weight=15, **common)
    arch = search(tight, epochs=3)
    assert tight.expected_params() < free.expected_params() - 20
    assert n_params(TinySpace().freeze(arch)) <= 250


def test_a_budget_no_architecture_fits_warns_and_exports_the_closest():
    strategy = ZODartsPP(arc_update_interval=2, size_search_start_epoch=0, param_budget=(1900, 5000))
    with pytest.warns(RuntimeWarning, match='No architecture found with 1900 <= params <= 5000'):
        arch = search(strategy, epochs=1)
    labels = TinySpace().simplify()
    largest = max(n_params(TinySpace().freeze(dict(zip(labels, values))))
                  for values in itertools.product(*(m.values for m in labels.values())))
    assert n_params(TinySpace().freeze(arch)) == largest < 1900


def test_perturbed_optimizer_clone_follows_the_same_rule():
    w = torch.nn.Parameter(torch.randn(5))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, nesterov=True, weight_decay=3e-4)
    for _ in range(3):
        w.grad = torch.randn(5)
        opt.step()
    clone = w.detach().clone().requires_grad_()
    copy = clone_optimizer(opt, {'w': w}, {'w': clone})
    grad = torch.randn(5)
    w.grad, clone.grad = grad.clone(), grad.clone()
    opt.step()
    copy.step()
    assert torch.equal(w.detach(), clone.detach())       # same momentum state, same update: W' - W is only from alpha


def test_input_choice_space_is_searched():
    strategy = ZODartsPP(arc_update_interval=2, size_search_start_epoch=0, mu=0.05)
    arch = search(strategy, space=InputSpace())
    assert arch['branch'] in ([0], [1]) and arch['k'] in (5, 3)
    model = InputSpace().freeze(arch)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 2)
    assert n_params(model) == strategy.polynomial.count(arch)


def test_frozen_weights_are_left_out_of_the_implicit_step():
    space = InputSpace()
    space.fc.requires_grad_(False)                       # e.g. a pretrained head the user keeps fixed
    before = space.fc.weight.detach().clone()
    strategy = ZODartsPP(arc_update_interval=2, size_search_start_epoch=0, mu=0.05)
    search(strategy, epochs=1, space=space)
    assert torch.equal(space.fc.weight, before)          # the space is mutated in place: the same Linear
    assert any(a.abs().max() > 0.01 for a in strategy.oneshot_module.arch_parameters())


def test_space_without_choices_is_refused():
    with pytest.raises(ValueError, match='no choices'):
        ZODartsPP().mutate_model(FixedSpace())


@pytest.mark.parametrize('scale', [0.0, 1.0])
def test_perturbed_weights_differ_from_w_only_through_alpha(monkeypatch, scale):
    """Eq. 5's ``W' - W`` must come from ``mu u`` alone: with the direction scaled to 0 the perturbed copy (its
    functional forward, BN buffers, clipping and cloned optimizer) follows ``W`` bit for bit; with ``u`` it moves."""
    gaps = []
    step, perturb = ZODartsPPModule._architecture_step, ZOArchitect._steps

    def recording_step(self, val_batch, batch_idx):
        weights = self._names()[1]
        gaps.extend(max(float((c.weights[n] - p).detach().abs().max()) for n, p in weights.items())
                    for c in self.architect.window.copies)
        return step(self, val_batch, batch_idx)

    monkeypatch.setattr(ZODartsPPModule, '_architecture_step', recording_step)
    monkeypatch.setattr(ZOArchitect, '_steps', staticmethod(lambda alphas, steps: perturb(alphas, steps * scale)))
    search(ZODartsPP(arc_update_interval=4, size_search_start_epoch=1, mu=0.05, temperature_interval=1), epochs=2)
    assert len(gaps) >= 4
    assert (max(gaps) == 0) if scale == 0 else (min(gaps) > 0)


@pytest.mark.parametrize('k', [1, 3])
def test_w_prime_exists_only_for_the_last_k_steps_of_a_window(monkeypatch, k):
    """``perturbed_steps=k``: before the window's last ``k`` weight steps there is no ``W'`` (``W' == W``); it
    opens at step ``T - k`` and follows ``W`` for ``k`` steps, then the architecture step closes it."""
    events = []
    open_window, perturbed_step = ZOArchitect.open_window, ZOArchitect.perturbed_step

    def spy_open(self, alphas, directions, mu, optimizer):
        events.append('open')
        open_window(self, alphas, directions, mu, optimizer)
        assert all(torch.equal(c.weights[n], w.detach()) for c in self.window.copies for n, w in self.weights.items())

    monkeypatch.setattr(ZOArchitect, 'open_window', spy_open)
    monkeypatch.setattr(ZOArchitect, 'perturbed_step',          # a step that trains copies: inside a window
                        lambda self, batch: (self.window and events.append('w')) or perturbed_step(self, batch))
    step = ZODartsPPModule._architecture_step
    monkeypatch.setattr(ZODartsPPModule, '_architecture_step', lambda self, val, i: events.append(f'arch@{i % 4}') or step(self, val, i))
    search(ZODartsPP(arc_update_interval=4, perturbed_steps=k, size_search_start_epoch=0, mu=0.05), epochs=1)
    windows = ' '.join(events).split('open')[1:]
    assert windows and all(w.split() == ['w'] * k + ['arch@3'] for w in windows), events


def test_mu_can_be_relative_to_the_operation_tables_only(monkeypatch):
    seen = []
    directions = ZODartsPPModule._directions

    def spy(self, labels, step):
        out = directions(self, labels, step)
        ops = torch.cat([self._alphas[lab].detach() for lab in labels if lab in self._op_labels])
        seen.append((out[1], 0.05 * float(ops.norm()), len(labels) > len([lab for lab in labels if lab in self._op_labels])))
        return out

    monkeypatch.setattr(ZODartsPPModule, '_directions', spy)
    search(ZODartsPP(arc_update_interval=2, size_search_start_epoch=0, mu=0.05, mu_reference='operations'), epochs=1)
    assert seen and all(mu == pytest.approx(expected) and sizes_perturbed for mu, expected, sizes_perturbed in seen)
