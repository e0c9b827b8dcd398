"""What the benchmarks share: each measurement in its own process (so its peak memory is its own), and one
NasExperiment search on in-memory MedMNIST tensors, timed per epoch or per step by a Lightning callback."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def in_subprocess(module: str, argv: list[str], label: str) -> dict | None:
    """``python -m module *argv`` from the project root; the dict it printed on a ``RESULT {json}`` line, or
    ``None`` (with the tail of its stderr) when it failed."""
    done = subprocess.run([sys.executable, '-m', module, *argv], capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith('RESULT ')]
    if done.returncode or not lines:
        print(f'{label} failed:\n{done.stderr[-3000:]}', file=sys.stderr)
        return None
    return json.loads(lines[-1][len('RESULT '):])


def timed_search(space, strategy, data, batch: int, seed: int, *, schedule_epochs: int, per: str = 'epoch',
                 max_samples: int | None = None, workdir: str = '/tmp/nni-zodarts-bench', **trainer_kwargs):
    """Search ``space`` with ``strategy`` on ``data`` (a ``load_medmnist`` result) without loggers or checkpoints.
    Returns the exported architecture, the per-``epoch`` (or per-``batch``) seconds and the architecture-half tensors."""
    import pytorch_lightning as pl
    from nni.nas.evaluator.pytorch import Lightning, Trainer
    from nni.nas.experiment import NasExperiment

    from nni_zodarts.data import make_loader, search_split
    from nni_zodarts.training import SearchModule

    seconds: list[float] = []

    class Timer(pl.Callback):
        def start(self, *_):
            self.started = time.perf_counter()

        def stop(self, *_):
            seconds.append(time.perf_counter() - self.started)

    timer = Timer()                                    # on_train_epoch_start/end or on_train_batch_start/end
    setattr(timer, f'on_train_{per}_start', timer.start)
    setattr(timer, f'on_train_{per}_end', timer.stop)
    (wx, wy), (ax, ay) = search_split(data, seed, max_samples)
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      devices=1, callbacks=[timer], **trainer_kwargs)
    evaluator = Lightning(SearchModule(data.n_classes, schedule_epochs=schedule_epochs), trainer, train_dataloaders=make_loader(wx, wy, batch, train=True),
                          val_dataloaders=make_loader(ax, ay, batch, train=True))
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.experiment_working_directory = workdir
    experiment.run()
    arch = experiment.export_top_models(formatter='dict')[0]
    experiment.stop()
    return arch, seconds, (wx, wy), (ax, ay)
