"""Issue 12: worker processes die with their parent (``xllm_cli.procutil.die_with_parent``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from xllm_cli.procutil import die_with_parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux only")

POOL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from xllm_cli.procutil import die_with_parent

    def pid(_):
        time.sleep(0.3)  # keep both workers busy so that each reports once
        return os.getpid()

    def nap(_):
        time.sleep(60)

    if __name__ == "__main__":
        init = die_with_parent if sys.argv[1] == "armed" else None
        with ProcessPoolExecutor(2, initializer=init) as pool:
            print(" ".join(map(str, sorted(set(pool.map(pid, range(2)))))), flush=True)
            list(pool.map(nap, range(2)))
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has died already
    except FileNotFoundError:
        return False


def _workers_after_kill(tmp_path, mode: str, wait: float) -> list[int]:
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True, env=env)
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert workers, "the pool script printed no worker ids"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.05)
    left = [p for p in workers if _alive(p)]
    for p in left:  # the control case: do not leave them running
        os.kill(p, signal.SIGKILL)
    return left


def test_pool_workers_die_with_a_killed_parent(tmp_path):
    assert _workers_after_kill(tmp_path, "armed", wait=5) == []


def test_without_the_helper_workers_outlive_the_parent(tmp_path):
    """The control: what `kill -9 xllm prep mini` did before (why the helper exists)."""
    assert _workers_after_kill(tmp_path, "plain", wait=1) != []


def test_prep_mini_pool_uses_the_helper(monkeypatch, tmp_path):
    from xllm_cli.corpora import mini

    seen = {}

    class FakePool:
        def __init__(self, max_workers=None, initializer=None, initargs=()):
            seen["initializer"] = initializer

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, batches):
            return [[mini.UttResult(j.utt_id, 1.0, None, True) for j in batch] for batch in batches]

    monkeypatch.setattr(mini, "ProcessPoolExecutor", FakePool)
    monkeypatch.setattr(mini, "_check_tools", lambda backend: "binary")
    mini.prepare_mini(tmp_path / "data", mini.MiniOptions(scale=0.01, jobs=2), progress=False)
    assert seen["initializer"] is die_with_parent
