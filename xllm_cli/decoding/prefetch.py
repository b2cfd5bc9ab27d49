"""Preparing the next batches in a background thread while the model decodes this one."""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask under Slurm or taskset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Prepare the next batches in a background thread while the model decodes this one.

    Feature extraction and audio decoding (ffmpeg, numpy, torch ops) release the
    GIL, so this overlaps data loading with decoding without worker processes.
    An exception in the thread is raised in the consumer.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((True, item))
            q.put((True, done))
        except BaseException as e:  # handed to the consumer
            q.put((False, e))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)
