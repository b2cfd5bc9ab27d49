"""Worker processes that die with their parent.

``kill -9`` of a command (or of the shell job running it) cannot run any
clean-up code, so a process pool's workers would live on, burning CPU and
holding files. On Linux the kernel can signal a child when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); a worker asks for that in its initializer:

    ProcessPoolExecutor(n, initializer=die_with_parent)
    multiprocessing.Pool(n, initializer=die_with_parent)

or, where an initializer is already used, calls ``die_with_parent()`` first
thing in it. Elsewhere (no prctl) it is a no-op: the pool's own shutdown is all
there is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent exits; True when armed.

    The parent could die between the fork and this call (the signal would never
    come): the parent id is read before and after arming, and a change means the
    parent is already gone, so the process exits at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent == 1 or os.getppid() != parent:
        os._exit(1)
    return True
