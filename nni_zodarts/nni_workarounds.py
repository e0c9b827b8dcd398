"""Every work-around for NNI 3.0 on a current stack, in one place (see docs/nni_notes in the spec set).

* torch >= 2.4 classes that are not modules make NNI warn at import (harmless): filtered while the package imports
  NNI (``importing_nni``); ``quiet_nni`` filters NNI's and Lightning's run-time noise while the package runs NNI.
  Neither changes the filters of the importing process.
* filelock >= 3.12 makes ``NasExperiment.run()`` hang forever (NNI pins ``filelock<3.12``): checked here.
* NNI's sequential engine swaps the trial command channel while a one-shot search trains, so metrics reported
  from inside the search of an nnictl trial would never reach the web UI: ``TrialChannel`` keeps the real one.
* NNI's ``DartsLightningModule.arch_parameters`` returns ``list(set(alphas))``, an order that depends on memory
  addresses, so a resumed DARTS search hands Adam's saved state to other alphas: ``ordered_darts_alphas``.
* NNI bugs A (DARTS ``penalty=`` has no gradient), B (int/float profiler sums) and C (the parameter
  profiler hangs on ``Repeat``) are avoided by ``budget.ParamPolynomial``, not patched.
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version

__all__ = ['importing_nni', 'quiet_nni', 'check_filelock', 'ordered_darts_alphas', 'TrialChannel']


IMPORT_NOISE = r'.*is found to be not a nn\.Module'      # NNI on torch >= 2.4, at import: harmless


@contextmanager
def importing_nni():
    """NNI's import-time warnings silenced for the imports inside, the warning filters restored after."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message=IMPORT_NOISE, category=RuntimeWarning)
        yield


@contextmanager
def quiet_nni():
    """Silence, inside, the warnings and log lines NNI and Lightning print on every run that say nothing to a user;
    the filters are restored after (the package runs its searches and retrainings inside)."""
    def drop(record) -> bool:                     # NNI logs this once per config validation, a dozen times a run
        return 'will be ignored for sequential' not in record.getMessage()

    def drop_failed(record) -> bool:              # NNI logs a failed run twice before re-raising it; the package
        message = record.getMessage()             # reports it itself (one line, or a bug's traceback)
        return not (message.endswith('fails to be executed.') or message == 'Strategy failed to execute.')

    filters = [(logging.getLogger('nni.nas.experiment.config.experiment'), drop),
               (logging.getLogger('nni.nas.execution.sequential'), drop_failed),
               (logging.getLogger('nni.nas.strategy.base'), drop_failed)]
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message=IMPORT_NOISE, category=RuntimeWarning)
        warnings.filterwarnings('ignore', message=r'.*`isinstance\(treespec, LeafSpec\)` is deprecated')
        warnings.filterwarnings('ignore', message=r'.*training_service.* will be ignored')
        warnings.filterwarnings('ignore', message=r'.*please try to wrap PyTorch DataLoader with nni.trace')
        warnings.filterwarnings('ignore', message=r'.*does not have many workers')
        warnings.filterwarnings('ignore', message=r'.*`weights_only` was not set')     # Lightning's own checkpoints
        # On several devices Lightning asks for sync_dist: the epoch metrics are equal on every rank (temperature,
        # alpha_rank_spread) or rank 0's evaluation of the whole validation half (val_acc, val_loss)
        warnings.filterwarnings('ignore', message=r"It is recommended to use `self.log\('.*sync_dist=True\)`")
        # Only with --resume or --overwrite (prepare_output refuses a used folder otherwise) the checkpoint folder
        # holds checkpoints already; on resume Lightning ends the restored epoch before any metric exists.
        warnings.filterwarnings('ignore', message=r'Checkpoint directory .* exists and is not empty')
        warnings.filterwarnings('ignore', message=r"`ModelCheckpoint\(monitor='val_select'\)` could not find the monitored key")
        for logger, keep in filters:
            logger.addFilter(keep)
        try:
            yield
        finally:
            for logger, keep in filters:
                logger.removeFilter(keep)


def check_filelock() -> None:
    """Raise a clear error instead of NNI's silent hang when filelock is too new."""
    try:
        major, minor = (int(x) for x in version('filelock').split('.')[:2])
    except (PackageNotFoundError, ValueError):
        return
    if (major, minor) >= (3, 12):
        raise RuntimeError(f'filelock {major}.{minor} makes NNI 3.0 experiments hang: pip install "filelock<3.12"')


def ordered_darts_alphas() -> None:
    """Make NNI's DARTS list its alphas once each in module order (NNI: ``list(set(...))``), so that the
    architecture optimizer's state of a checkpoint maps back onto the same alphas when a search resumes."""
    from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule

    def arch_parameters(self) -> list:
        alphas = [p for m in self.supernet_modules() if hasattr(m, 'arch_parameters') for p in m.arch_parameters()]
        return list(dict.fromkeys(alphas))            # shared alphas (same label) appear once, first place kept

    DartsLightningModule.arch_parameters = arch_parameters


class TrialChannel:
    """The trial command channel an nnictl trial started with, for ``report_intermediate_result`` calls made
    while NNI's sequential engine has put its own channel in place (nni/nas/execution/sequential.py)."""

    def __init__(self) -> None:
        from nni.runtime.trial_command_channel import get_default_trial_command_channel
        self.channel = get_default_trial_command_channel()

    def report_intermediate_result(self, metric) -> None:
        import nni
        from nni.runtime.trial_command_channel import get_default_trial_command_channel, set_default_trial_command_channel
        current = get_default_trial_command_channel()
        set_default_trial_command_channel(self.channel)
        try:
            nni.report_intermediate_result(metric)
        finally:
            set_default_trial_command_channel(current)
