"""An ``nnictl`` trial: one ZO-DARTS++ search (and, optionally, a retraining) with metrics for NNI's web UI.

``trialCommand: nni-zodarts trial --dataset breastmnist --epochs 10`` in an experiment config; the tuner's
parameters (``param_budget``, ``flops_budget``, ``latency_budget``, ``seed``, ``epochs``, ``zo_mode``,
``retrain_epochs``, ... : any ``nni-zodarts run`` option, ``-`` written ``_``) override the command line. Every epoch
reports ``{'default': val_acc, 'expected_params', 'expected_flops', 'temperature'}`` (and ``expected_latency`` with a
latency budget); the end reports ``{'default', 'params', 'flops', 'search_seconds'}`` (and ``latency_ms``,
``measured_latency_ms``) plus ``test_acc``/``test_auc`` when it retrains. ``default`` is always a validation accuracy, never a test one.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from .commands import build_parser, run_command

__all__ = ['epoch_reporter', 'main']


def epoch_reporter(channel) -> Callable[[dict], None]:
    """Report one ``search_history.csv`` row per epoch as an intermediate result through ``channel``."""
    def report(row: dict) -> None:
        costs = {k: row[k] for k in ('expected_params', 'expected_flops', 'expected_latency') if k in row}
        channel.report_intermediate_result({'default': row['val_acc'], **costs, 'temperature': row['temperature']})
    return report


def main(argv: list[str] | None = None) -> int:
    import nni
    argv = list(sys.argv[1:] if argv is None else argv)
    params = nni.get_next_parameter() or {}
    for key, value in params.items():
        if key in ('param_budget', 'flops_budget', 'latency_budget', 'retrain_epochs') and not value:
            continue                                    # 0 / None: unconstrained, no retraining
        argv += [f'--{key.replace("_", "-")}', str(value if not isinstance(value, (list, tuple)) else ':'.join(map(str, value)))]
    output = Path(os.environ.get('NNI_OUTPUT_DIR', 'runs/trial'))
    args = build_parser().parse_args(['run', '--output', str(output), '--quiet', *argv])
    if not args.retrain_epochs:
        args.retrain_epochs = 0
    if args.devices > 1:            # helper processes would ask NNI for parameters again and may get others
        print('nni-zodarts trial: error: --devices > 1 is not supported in nnictl trials: use one device per trial',
              file=sys.stderr)
        return 2
    from .nni_workarounds import TrialChannel
    return run_command(args, on_epoch=epoch_reporter(TrialChannel()))


if __name__ == '__main__':
    sys.exit(main())
