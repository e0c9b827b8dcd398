"""Run ``nni-zodarts`` in-process and return its exit code, whether it returns or exits."""
from nni_zodarts.cli import main


def run_cli(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as stop:
        return stop.code
