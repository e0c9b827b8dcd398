"""``nni-zodarts``: search, retrain, or both, on MedMNIST (:mod:`nni_zodarts.commands`), one nnictl trial
(:mod:`nni_zodarts.trial`) or the report of an nnictl experiment (:mod:`nni_zodarts.report`). Only dispatches:
those modules never import this one."""
from __future__ import annotations

import sys

from . import trial
from .commands import build_parser, run_command


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['trial']:                               # parameters come from NNI: see nni_zodarts.trial
        return trial.main(argv[1:])
    if argv[:1] == ['report']:
        from .report import main as report_main            # when asked for: it imports pandas
        return report_main(argv[1:])
    return run_command(build_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
