"""Atomic file writing: write to a temporary name beside the target, then rename.

A killed job never leaves a half-written file under the final name. The
temporary file is made by ``mkstemp`` (mode 0600, so that nobody reads it
half-written); before the rename it gets the mode an ordinary ``open()`` would
have given (0666 less the umask), so results stay readable by the group or
others as the user's umask intends. :func:`apply_umask` does the same for
folders made by ``mkdtemp`` (0700) and renamed into place.

A full disk (or quota) while writing is a one-line :class:`XllmError` naming the
file, and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import XllmError

_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (threads may be writing)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc: the classic two-call dance
    os.umask(mask)
    return mask


def apply_umask(path: str | Path) -> None:
    """Give ``path`` the mode ``open()``/``mkdir()`` would have: 0666 (files) or 0777 (folders) less the umask.

    For files and folders made by ``mkstemp``/``mkdtemp`` (0600/0700) before they are
    renamed into place.
    """
    base = 0o777 if stat.S_ISDIR(os.stat(path).st_mode) else 0o666
    os.chmod(path, base & ~current_umask())


def _disk_full(path: Path, e: OSError) -> XllmError | None:
    """The one-line error for a full disk or quota, else None."""
    problem = _FULL.get(e.errno)
    return XllmError(f"{path}: {problem}") if problem else None


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        full = _disk_full(path, e) if isinstance(e, OSError) else None
        if full is not None:
            raise full from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_save(path: str | Path, save_fn) -> None:
    """Call ``save_fn(tmp_path)`` (e.g. safetensors' ``save_file``) then rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_fn(tmp)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        full = _disk_full(path, e) if isinstance(e, OSError) else None
        if full is not None:
            raise full from None
        raise
