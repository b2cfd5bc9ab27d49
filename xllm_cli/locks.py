"""One writer per experiment stage or decode directory.

Two ``xllm train`` runs on the same stage would both do all the work and interleave
one log; two decodes of the same set would race on its result files. A command that
writes such a directory holds an exclusive ``flock`` on ``DIR/.lock`` while it runs.
The kernel drops the lock when the process dies (even by ``kill -9``), so a stale
lock file never blocks a rerun; its content only says who holds it, for the message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import XllmError

LOCK_NAME = ".lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on {info['host']} ({info['command']}), since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def exclusive(directory: str | Path, what: str = "this directory") -> Iterator[None]:
    """Hold ``directory``'s lock for the ``with`` block; a second holder gets a one-line error."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise XllmError(f"{directory}: {what} is in use by {_holder(path)}; wait for it or stop it") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                "command": " ".join(["xllm", *sys.argv[1:]])[:200]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock
