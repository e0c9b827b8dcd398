"""``UsageError``: input from the user that cannot be used as given, which ``nni-zodarts`` reports in one line."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

__all__ = ['UsageError', 'as_usage_error']


class UsageError(ValueError):
    """An argument, file or folder from the user that cannot be used as given; the message says what to fix.

    ``nni-zodarts`` prints it as one line and exits with code 2, as it does for
    :class:`~nni_zodarts.data.DataError`, :class:`~nni_zodarts.files.OutputError` and
    :class:`~nni_zodarts.retrain.ArchitectureError`; any other exception is a bug and shows its traceback."""


@contextmanager
def as_usage_error() -> Iterator[None]:
    """Re-raise a ``ValueError`` from the block as a :class:`UsageError`, for a block that checks the user's
    arguments with code that raises plain ``ValueError`` (such as :class:`~nni_zodarts.ZODartsPP`'s checks)."""
    try:
        yield
    except UsageError:
        raise
    except ValueError as err:
        raise UsageError(str(err)) from err
