"""Latency: a lookup table of the supernet's units measured with torch, and an additive prediction (``cost_model``).

A unit is a module with no choice inside (an operation candidate, a stem, a head) or one sample of a mixed
operation, measured alone at its input shape from the supernet trace (batch 1 by default) on the device the
model will run on: warm-up, then the median of repeats. What the units do not hold (the calls between them:
Python, additions, concatenation) is calibrated on a few random frozen models as a cost per unit called and a
constant, ``latency = sum(units) + per_call * units called + shift`` (least squares on their measured latencies,
``per_call >= 0``); units called is itself a polynomial, so the prediction stays additive and its expectation exact. The table is saved as JSON beside the results and reused with ``latency_table=``; it belongs to
one space and input shape (its ``space`` key) and one device.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from nni.nas.oneshot.pytorch.supermodule.operation import MixedOperation

from .cost_model import CostPolynomial, operation_layer
from .trace import SupernetTrace, resized_inputs

__all__ = ['LatencyTable', 'LatencyCost', 'measure_ms', 'measured_latency', 'space_key', 'latency_polynomial']

CALIBRATION = ('per_call', 'shift')


def space_key(labels: Mapping[str, object], input_shape: Sequence[int]) -> str:
    """A fingerprint of a space's choices and the input shape."""
    text = json.dumps({'labels': {lab: [repr(v) for v in m.values] for lab, m in sorted(labels.items())},
                       'input_shape': list(input_shape)}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@torch.no_grad()
def measure_ms(module: nn.Module, args: tuple, warmup: int = 3, repeats: int = 15) -> float:
    """Median wall-clock milliseconds of ``module(*args)`` in eval mode (its mode restored)."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
    times = []
    try:
        for k in range(warmup + repeats):
            start = time.perf_counter()
            module(*args)
            if cuda:
                torch.cuda.synchronize()
            if k >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        for m, training in modes.items():
            m.training = training
    return 1e3 * statistics.median(times)


class LatencyTable:
    """Milliseconds per unit for one space (``space``, see :func:`space_key`) on one device."""

    def __init__(self, space: str, device: str, entries: dict[str, float] | None = None, batch_size: int = 1,
                 threads: int | None = None):
        self.space, self.device, self.batch_size = space, device, batch_size
        self.threads = torch.get_num_threads() if threads is None else threads
        self.entries = dict(entries or {})
        self.loaded = entries is not None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps({'space': self.space, 'device': self.device, 'batch_size': self.batch_size,
                                    'threads': self.threads, 'entries': self.entries}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> 'LatencyTable':
        try:
            data = json.loads(Path(path).read_text())
            return cls(data['space'], data['device'], {k: float(v) for k, v in data['entries'].items()},
                       data.get('batch_size', 1), data.get('threads'))
        except FileNotFoundError:
            raise ValueError(f'latency_table {path} does not exist: give the latency_table.json of an earlier search') from None
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
            raise ValueError(f'latency_table {path} is not a latency table (nni-zodarts writes latency_table.json)') from None

    def lookup(self, key: str, measure: Callable[[], float]) -> float:
        if key not in self.entries:
            if self.loaded:
                raise ValueError(f'the latency table has no entry {key!r}: it was measured on another space; '
                                 'drop latency_table to measure this one')
            self.entries[key] = measure()
        return self.entries[key]


class LatencyCost:
    """Latency units (see the module docstring), looked up in ``table`` or measured into it."""
    integral = False

    def __init__(self, trace: SupernetTrace, table: LatencyTable, warmup: int = 3, repeats: int = 15):
        self.trace, self.table, self.warmup, self.repeats = trace, table, warmup, repeats

    def own(self, module: nn.Module) -> float:
        return 0.0                                       # in the measured constant

    def whole(self, module: nn.Module) -> float:
        args = self.trace.inputs.get(module)
        if args is None:                                 # never ran
            return 0.0
        return self.table.lookup(self.trace.names[module],
                                 lambda: measure_ms(module, _batch(args, self.table.batch_size), self.warmup, self.repeats))

    def operation(self, module: MixedOperation, arguments: dict) -> float:
        args = self.trace.inputs.get(module)
        if args is None:
            return 0.0
        key = f'{self.trace.names[module]}({", ".join(f"{k}={v!r}" for k, v in sorted(arguments.items()))})'

        def measure() -> float:
            device = args[0].device
            layer = operation_layer(module, arguments).to(device)
            return measure_ms(layer, _batch(resized_inputs(layer, args, device), self.table.batch_size),
                              self.warmup, self.repeats)

        return self.table.lookup(key, measure)


class UnitCalls(LatencyCost):
    """1 for every latency unit that runs: how many units an architecture calls."""

    def whole(self, module: nn.Module) -> float:
        return float(module in self.trace.inputs)

    def operation(self, module: MixedOperation, arguments: dict) -> float:
        return float(module in self.trace.inputs)


def _batch(args: tuple, batch_size: int) -> tuple:
    """The traced (batch 1) inputs at ``batch_size``."""
    if batch_size == 1:
        return args
    return tuple(a.expand(batch_size, *a.shape[1:]).contiguous() if isinstance(a, torch.Tensor) else a for a in args)


def latency_polynomial(supernet: nn.Module, labels, trace: SupernetTrace, table: LatencyTable,
                       freeze: Callable[[Mapping[str, object]], nn.Module], input_shape: Sequence[int],
                       num_calibration: int = 8, seed: int = 0) -> CostPolynomial:
    """The additive latency prediction, calibrated on ``num_calibration`` random frozen models (``freeze``:
    ``arch -> module`` on the table's device) unless the table holds the calibration already."""
    poly = CostPolynomial(supernet, labels, LatencyCost(trace, table))
    calls = CostPolynomial(supernet, labels, UnitCalls(trace, table))
    if not all(k in table.entries for k in CALIBRATION):
        rng = np.random.RandomState(seed)
        archs = [{lab: m.random(random_state=rng) for lab, m in labels.items()} for _ in range(num_calibration)]
        gap = np.array([measured_latency(freeze(arch), input_shape, table.batch_size, table.device) - poly.count(arch)
                        for arch in archs])
        count = np.array([calls.count(arch) for arch in archs])
        per_call, shift = np.polyfit(count, gap, 1) if np.ptp(count) > 0 else (0.0, float(np.median(gap)))
        if per_call < 0:                                 # noise swamped the spread: a constant only
            per_call, shift = 0.0, float(np.median(gap))
        table.entries.update(per_call=float(per_call), shift=float(shift))
    poly.add(calls, table.entries['per_call'], table.entries['shift'])
    return poly


def measured_latency(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1, device: str = 'cpu') -> float:
    """Milliseconds of one call of ``model`` on a zero batch (the frozen model's measured latency at export)."""
    model = model.to(device)
    return measure_ms(model, (torch.zeros((batch_size, *input_shape), device=device),), repeats=25)
