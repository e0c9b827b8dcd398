"""The Lightning module of ZO-DARTS++: DARTS's weight step, plus a zeroth-order architecture step every T steps.

Spec §1 on one screen (``training_step``): every step trains the weights ``W`` exactly as DARTS does; in
``'implicit'`` mode the :class:`~nni_zodarts.architect.ZOArchitect` trains perturbed copies ``W'`` beside them for
the last ``perturbed_steps`` steps of each window; every ``T`` steps it gives the ZO estimate of the validation
objective (CE + budget hinges) and Adam applies it to alpha. Here live the edges: when, DDP averaging across
ranks (``distributed``), finiteness checks and logging.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule

from .architect import ZOArchitect
from .budget import Budget, hinge_penalty, select_architecture
from .cost_model import CostPolynomial
from .distributed import ZODartsDDP, average_, broadcast_, rank_spread
from .sparsemax import TemperedSparsemax, temperature_at
from .zo_estimator import unit_directions

__all__ = ['ZOConfig', 'ZODartsPPModule']


@dataclass(frozen=True)
class ZOConfig:
    """The ZO-DARTS++ hyper-parameters a :class:`ZODartsPPModule` runs with (validated by ``ZODartsPP``)."""
    mu: float = 0.005
    num_directions: int = 1
    arc_update_interval: int = 10
    initial_temperature: float = 1.5
    temperature_decay: float = 0.75
    temperature_interval: int = 5
    size_search_start_epoch: int = 20
    param_budget: tuple[float, float] | None = None
    budget_weight: float = 15.0
    budget_unit: float = 1e6
    zo_mode: str = 'implicit'
    flops_budget: tuple[float, float] | None = None
    latency_budget: tuple[float, float] | None = None
    flops_unit: float = 1e8
    latency_unit: float = 1.0
    perturbed_steps: int | None = 1             # W' trains for the last k weight steps of a window (None: all T)
    mu_reference: str = 'searched'              # mu relative to the norm of 'searched' or 'operations' tables

    def budgets(self) -> list[Budget]:
        """The active budgets: ``params``, ``flops``, ``latency``, in that order."""
        windows = {'params': (self.param_budget, self.budget_unit), 'flops': (self.flops_budget, self.flops_unit),
                   'latency': (self.latency_budget, self.latency_unit)}
        return [Budget(cost, *window, unit) for cost, (window, unit) in windows.items() if window is not None]


class ZODartsPPModule(DartsLightningModule):
    """Search module of :class:`~nni_zodarts.ZODartsPP`. ``training_module`` must have a ``criterion``
    (NNI's ``Classification``/``Regression`` modules do) and take ``(x, y)`` batches."""

    def __init__(self, training_module, *, alphas: dict[str, nn.Parameter], size_labels: set[str],
                 normalizer: TemperedSparsemax, costs: dict[str, CostPolynomial], config: ZOConfig,
                 arc_learning_rate: float, gradient_clip_val: float | None,
                 log_prob_every_n_step: int = 10, warmup_epochs: int = 0):
        super().__init__(training_module, arc_learning_rate=arc_learning_rate, gradient_clip_val=gradient_clip_val,
                         log_prob_every_n_step=log_prob_every_n_step, warmup_epochs=warmup_epochs)
        if not hasattr(training_module, 'criterion'):
            raise TypeError('ZODartsPP needs an evaluator module with a `criterion` attribute, such as '
                            "NNI's Classification or Regression")
        self.cfg = config
        self._alphas = dict(sorted(alphas.items()))
        self._size_labels = set(size_labels)
        self._op_labels = [lab for lab in self._alphas if lab not in self._size_labels]
        # The size phase starts at size_search_start_epoch only when there is something to hold back.
        self.size_start = config.size_search_start_epoch if self._size_labels else 0
        self.normalizer = normalizer
        self.costs = dict(costs)                 # 'params', and 'flops' / 'latency' where the input shape is known
        self.polynomial = self.costs.get('params')
        self._architect: ZOArchitect | None = None
        self._seed = torch.initial_seed()       # ZO directions are a function of (seed, epoch, step): see _generator
        self.alpha_rank_spread = float('nan')   # max |alpha_rank - alpha_0| at the end of the last epoch (DDP check)
        self._name_cache: tuple[dict[str, str], dict[str, nn.Parameter]] | None = None

    # ----------------------------------------------------------------------------------------------- helpers
    @property
    def temperature(self) -> float:
        return self.normalizer.tau

    def _names(self) -> tuple[dict[str, str], dict[str, nn.Parameter]]:
        """``({label: alpha's name in the model}, {name: weight parameter})``, computed once."""
        if self._name_cache is None:
            alpha_ids = {id(a): lab for lab, a in self._alphas.items()}
            names, weights = {}, {}
            for name, p in self.model.named_parameters():
                if id(p) in alpha_ids:
                    names[alpha_ids[id(p)]] = name
                else:
                    weights[name] = p
            self._name_cache = names, weights
        return self._name_cache

    def active_labels(self) -> list[str]:
        """Labels searched now: operations always, sizes from ``size_search_start_epoch`` on (spec §7)."""
        if self.trainer.current_epoch >= self.size_start:
            return list(self._alphas)
        return self._op_labels

    def probabilities(self, alphas: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        alphas = {**self._alphas, **(alphas or {})}
        return {lab: self.normalizer(a) for lab, a in alphas.items()}

    def expected(self, cost: str, alphas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """E[cost] (``'params'``, ``'flops'``, ``'latency'``) under ``sparsemax(alpha / tau)``, differentiable."""
        if cost not in self.costs:
            raise RuntimeError(f'expected {cost} is unavailable for this space (see the warning at mutate_model)')
        return self.costs[cost].expectation(self.probabilities(alphas))

    def expected_params(self, alphas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.expected('params', alphas)

    @torch.no_grad()
    def expected_costs(self) -> dict[str, float]:
        """``{'expected_params': ..., 'expected_flops': ..., ...}`` now, for every cost this space has."""
        probs = self.probabilities()
        return {f'expected_{cost}': float(poly.expectation(probs)) for cost, poly in self.costs.items()}

    def budget_active(self) -> bool:
        return bool(self.cfg.budgets()) and self.trainer.current_epoch >= self.size_start

    def _loss(self, batch, overrides: dict[str, torch.Tensor]) -> torch.Tensor:
        x, y = batch[0], batch[1]
        return self.training_module.criterion(functional_call(self.model, overrides, (x,)), y)

    def _objective(self, batch, alphas: dict[str, torch.Tensor]) -> torch.Tensor:
        """Validation objective ``CE + (budget_weight / tau) R(alpha)`` (spec §6) at ``alphas`` (by label).

        Buffers are cloned so that the evaluation does not move BN running statistics (spec §5).
        """
        names, _ = self._names()
        overrides = {n: b.clone() for n, b in self.model.named_buffers()}
        overrides.update({names[lab]: a for lab, a in alphas.items()})
        loss = self._loss(batch, overrides)
        if self.budget_active():
            probs = self.probabilities(alphas)
            for b in self.cfg.budgets():
                expected = self.costs[b.cost].expectation(probs).to(loss.dtype)
                loss = loss + self.cfg.budget_weight / self.temperature * hinge_penalty(expected, b.lower, b.upper, b.unit)
        return loss

    def _generator(self, step: int) -> torch.Generator:
        """Random numbers for ``step`` of this epoch, the same whatever else drew from the global generator (data
        order, augmentation, the number of processes) and after a resume; rank 0's copy wins on several ranks."""
        key = np.random.SeedSequence([self._seed, self.trainer.current_epoch, step + 1]).generate_state(1, np.uint64)
        return torch.Generator().manual_seed(int(key[0]) & (2 ** 63 - 1))

    def _directions(self, labels: list[str], step: int) -> tuple[torch.Tensor, float]:
        flat = torch.cat([self._alphas[lab].detach() for lab in labels])
        operations = [lab for lab in labels if lab in self._op_labels] if self.cfg.mu_reference == 'operations' else []
        norm = float(torch.cat([self._alphas[lab].detach() for lab in operations]).norm() if operations else flat.norm())
        # 'direct' differences two float32 losses, so its step never shrinks below mu itself.
        mu = self.cfg.mu * (max(norm, 1.0) if self.cfg.zo_mode == 'direct' else norm)
        directions = unit_directions(self.cfg.num_directions, flat.numel(), generator=self._generator(step))
        return broadcast_(directions.to(flat), self._world), mu    # alpha's dtype and device

    def _split(self, labels: list[str], vector: torch.Tensor) -> dict[str, torch.Tensor]:
        sizes = [self._alphas[lab].numel() for lab in labels]
        return dict(zip(labels, torch.split(vector, sizes)))

    @property
    def _world(self) -> int:
        return self.trainer.world_size

    def manual_backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        """The weight step's backward, its gradients averaged over DDP ranks (see ``distributed``)."""
        super().manual_backward(loss, *args, **kwargs)
        average_([p.grad for p in self._names()[1].values() if p.grad is not None], self._world)

    def _weight_optimizer(self) -> torch.optim.Optimizer:
        (opt,) = [o for o in self.optimizers() if not getattr(o, 'is_arch_optimizer', False)]
        return opt.optimizer

    # ------------------------------------------------------------------------------------- the ZO-DARTS++ step
    @property
    def architect(self) -> ZOArchitect:
        if self._architect is None:
            names, weights = self._names()
            self._architect = ZOArchitect(self.model, weights, names, self._loss, self._objective,
                                          self.gradient_clip_val, lambda tensors: average_(tensors, self._world))
        return self._architect

    def training_step(self, batch, batch_idx):
        T = self.cfg.arc_update_interval
        window_start = batch_idx - batch_idx % T
        searching = (self.trainer.current_epoch >= self.warmup_epochs and bool(self.active_labels())
                     and window_start + T <= self.trainer.num_training_batches)   # a partial last window is skipped
        if searching and self.cfg.zo_mode == 'implicit' and batch_idx == window_start + T - self.perturbed_steps:
            labels = self.active_labels()
            directions, mu = self._directions(labels, batch_idx)
            self.architect.open_window({lab: self._alphas[lab] for lab in labels}, directions, mu, self._weight_optimizer())

        loss = self.training_module.training_step(batch['train'], batch_idx)       # DARTS phase 2: weight step
        weight_loss = loss['loss'] if isinstance(loss, dict) else loss
        finite = torch.isfinite(weight_loss.detach()).float()
        average_([finite], self._world)                                             # every rank stops together
        if finite < 1:
            raise FloatingPointError(f'non-finite training loss at epoch {self.trainer.current_epoch}, step {batch_idx}')
        self.advance_optimization(weight_loss, batch_idx, self.gradient_clip_val)
        if self.cfg.zo_mode == 'implicit':
            self.architect.perturbed_step(batch['train'])          # W' follows W on the same batch, in a window
        if searching and batch_idx == window_start + T - 1:
            self._architecture_step(batch['val'], batch_idx)
        self.advance_lr_schedulers(batch_idx)
        if self._world > 1 and batch_idx == self.trainer.num_training_batches - 1:   # all ranks here, in step
            self.alpha_rank_spread = rank_spread(list(self._alphas.values()), self._world)
            self.log('alpha_rank_spread', self.alpha_rank_spread, on_step=False, on_epoch=True)

        if batch_idx % self.log_prob_every_n_step == 0:
            self.log_probs(self.export_probs())
        return loss

    @property
    def perturbed_steps(self) -> int:
        return self.cfg.perturbed_steps or self.cfg.arc_update_interval

    def _architecture_step(self, val_batch, batch_idx: int) -> None:
        """One ZO estimate (the architect's), averaged over ranks, checked, applied by Adam and logged."""
        if self.cfg.zo_mode == 'implicit':
            window = self.architect.window
            labels, mu = window.labels, window.mu
            estimate, loss, diagnostics = self.architect.implicit(val_batch, {lab: self._alphas[lab] for lab in labels})
        else:
            labels = self.active_labels()
            directions, mu = self._directions(labels, batch_idx)
            estimate, loss, diagnostics = self.architect.direct(
                val_batch, {lab: self._alphas[lab] for lab in labels}, directions, mu)
        average_([estimate, loss], self._world)     # the slopes are linear in the per-rank losses (``distributed``)
        if not torch.isfinite(estimate).all() or not torch.isfinite(loss):
            raise FloatingPointError(f'non-finite architecture step at epoch {self.trainer.current_epoch}, '
                                     f'step {batch_idx} (validation objective {float(loss)})')
        arc_optim = self.architecture_optimizers()
        arc_optim.zero_grad()
        for lab, g in self._split(labels, estimate).items():
            self._alphas[lab].grad = g.to(self._alphas[lab].dtype)
        arc_optim.step()
        if not all(torch.isfinite(self._alphas[lab]).all() for lab in labels):
            raise FloatingPointError(f'non-finite alpha at epoch {self.trainer.current_epoch}, step {batch_idx}')
        self.log_dict({'arch_loss': float(loss), 'zo_mu': mu, 'zo_grad_norm': float(estimate.norm()), **diagnostics})
        for name, value in self.expected_costs().items():
            self.log(name, value, prog_bar=name == 'expected_params')

    # ---------------------------------------------------------------------------------------- epoch schedule
    def on_train_start(self):
        if self._world > 1 and not isinstance(self.trainer.strategy, ZODartsDDP):
            raise TypeError('ZODartsPP on several devices needs Trainer(strategy=nni_zodarts.ZODartsDDP()): torch\'s '
                            'DistributedDataParallel wrapper cannot run its several backward passes per step')
        if self.trainer.num_training_batches < self.cfg.arc_update_interval:
            warnings.warn(f'arc_update_interval={self.cfg.arc_update_interval} exceeds the {self.trainer.num_training_batches} '
                          'batches of an epoch, so alpha is never updated: lower arc_update_interval or the batch size.',
                          RuntimeWarning)
        if self._size_labels and self.trainer.max_epochs is not None and self.trainer.max_epochs <= self.size_start:
            warnings.warn(f'size_search_start_epoch={self.size_start} is not below the {self.trainer.max_epochs} '
                          'epochs of the search, so kernel size, depth and width stay at their largest and a '
                          'param_budget acts only at export: lower size_search_start_epoch (the paper: half the '
                          'epochs).', RuntimeWarning)
        return super().on_train_start()

    def on_train_epoch_start(self):
        epoch = self.trainer.current_epoch
        cfg = self.cfg
        self.normalizer.tau = temperature_at(epoch, cfg.initial_temperature, cfg.temperature_decay, cfg.temperature_interval)
        if self._architect is not None:
            self._architect.close_window()
        if self._size_labels and epoch == self.size_start and epoch > 0:
            # Size tables start afresh when the size-variable phase opens, with a new Adam state (spec §1, §5).
            with torch.no_grad():
                generator = self._generator(-1)
                for lab in sorted(self._size_labels):       # sorted: a set's order changes between processes
                    alpha = self._alphas[lab]
                    alpha.copy_(broadcast_(torch.randn(alpha.shape, generator=generator).to(alpha) * 1e-3, self._world))
            self.architecture_optimizers().optimizer.state.clear()
        for alpha in self._alphas.values():
            alpha.requires_grad_(False)          # alpha moves only through the ZO estimate
        self.log('temperature', self.normalizer.tau)     # the same on every rank: no sync (see ``distributed``)
        # Skip DartsLightningModule's warm-up toggling of requires_grad; keep the base class's redirect.
        return super(DartsLightningModule, self).on_train_epoch_start()

    # ------------------------------------------------------------------------------- optimizers and export
    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self._alphas.values())      # sorted by label, so optimizer state maps back on resume

    def configure_architecture_optimizers(self):
        return torch.optim.Adam(self.arch_parameters(), self.arc_learning_rate, betas=(0.5, 0.999), weight_decay=1e-3)

    def export(self) -> dict[str, Any]:
        """DARTS's argmax, mended by the space's ``mend_architecture`` hook if it has one; with budgets, the most
        probable architecture inside all of them (spec §6; see :func:`~nni_zodarts.budget.select_architecture`)."""
        mend = getattr(self.model, 'mend_architecture', None)
        arch = super().export()
        if mend is not None:
            arch = mend(arch, self.export_probs())
        with torch.no_grad():
            probs = {lab: p.detach().cpu() for lab, p in self.probabilities().items()}
        return select_architecture(self.model, arch, probs, self.costs, self.cfg.budgets())
