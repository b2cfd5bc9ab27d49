"""User-facing errors.

Anything a user can fix (a bad path, a malformed line, a wrong option) is raised
as :class:`XllmError`; the CLI prints it as one line and exits non-zero, with no
traceback unless ``--debug`` is given.
"""

from __future__ import annotations

from pathlib import Path


class XllmError(Exception):
    """An error caused by the user's input, printed as one line."""


def at(path: str | Path, line: int | None, problem: str) -> XllmError:
    """An error that names a file and, when known, the line: ``path:line: problem``."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return XllmError(f"{where}: {problem}")


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise a one-line error when it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise XllmError(f"{path}: {what} not found")
    return path


def require_dir(path: str | Path, what: str = "directory") -> Path:
    """Return ``path`` as a Path, or raise a one-line error when it is not a directory."""
    path = Path(path)
    if not path.is_dir():
        raise XllmError(f"{path}: {what} not found")
    return path
