"""Result files written atomically (temp file + rename), so a kill never leaves a truncated one."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ['atomic_write', 'write_json', 'write_csv', 'read_json', 'OutputError', 'prepare_output']


class OutputError(Exception):
    """An output directory that would be overwritten; the message says what to pass."""


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then move the temp file over ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    def dump(tmp: str) -> None:
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=2, default=_plain)
            f.write('\n')
    return atomic_write(path, dump)


def write_csv(path: str | Path, frame) -> Path:
    """Write a pandas DataFrame."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def _plain(value: Any) -> Any:
    if hasattr(value, 'item'):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f'cannot write {type(value).__name__} to JSON')


def prepare_output(directory: str | Path, results: list[str], *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create ``directory``; refuse one that already holds any of ``results`` unless told to overwrite or resume."""
    directory = Path(directory)
    if overwrite and resume:
        raise OutputError('pass either --overwrite or --resume, not both')
    found = [name for name in results if (directory / name).exists()]
    if found and not (overwrite or resume):
        raise OutputError(f'{directory} already holds results ({", ".join(found)}): pass --resume to continue, '
                          f'--overwrite to replace them, or choose another --output')
    directory.mkdir(parents=True, exist_ok=True)
    return directory
