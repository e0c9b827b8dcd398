"""An ``nnictl`` trial: one ZO-DARTS++ search (and, optionally, a retraining) with metrics for NNI's web UI.

``trialCommand: nni-zodarts trial --dataset breastmnist --epochs 10`` in an experiment config; the tuner's
parameters (``param_budget``, ``seed``, ``epochs``, ``zo_mode``, ``retrain_epochs``, ... : any ``nni-zodarts
run`` option, ``-`` written ``_``) override the command line. Every epoch reports ``{'default': val_acc,
'expected_params', 'temperature'}``; the end reports ``{'default', 'params', 'search_seconds'}`` plus
``test_acc``/``test_auc`` when it retrains. ``default`` is always a validation accuracy, never a test one.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ['report_epoch', 'main']


def report_epoch(row: dict) -> None:
    """``nni.report_intermediate_result`` for one ``search_history.csv`` row."""
    import nni
    nni.report_intermediate_result({'default': row['val_acc'], 'expected_params': row['expected_params'],
                                    'temperature': row['temperature']})


def main(argv: list[str] | None = None) -> int:
    import nni

    from .cli import build_parser, run_command
    argv = list(sys.argv[1:] if argv is None else argv)
    params = nni.get_next_parameter() or {}
    for key, value in params.items():
        if key in ('param_budget', 'retrain_epochs') and not value:
            continue                                    # 0 / None: unconstrained, no retraining
        argv += [f'--{key.replace("_", "-")}', str(value if not isinstance(value, (list, tuple)) else ':'.join(map(str, value)))]
    output = Path(os.environ.get('NNI_OUTPUT_DIR', 'runs/trial'))
    args = build_parser().parse_args(['run', '--output', str(output), '--quiet', *argv])
    if not args.retrain_epochs:
        args.retrain_epochs = 0
    return run_command(args, trial=True)


if __name__ == '__main__':
    sys.exit(main())
