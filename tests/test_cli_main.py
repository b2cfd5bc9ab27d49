"""The `xllm` entry point: version, usage errors and user errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xllm_cli import __version__, main
from xllm_cli.errors import XllmError


def xllm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xllm_cli", *args], capture_output=True, text=True, timeout=120)


def test_version():
    proc = xllm("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"xllm {__version__}"


def test_every_verb_is_registered():
    proc = xllm("--help")
    for verb in ("prep", "data", "train", "average", "decode", "score", "results", "transcribe", "export"):
        assert verb in proc.stdout


@pytest.mark.parametrize("args", [("nosuch",), ("data", "split", "d", "abc"), ("data", "combine", "out")])
def test_usage_errors_exit_2_without_traceback(args):
    proc = xllm(*args)
    assert proc.returncode == 2
    assert "Error:" in proc.stderr and "Traceback" not in proc.stderr


def test_user_error_is_one_line(tmp_path):
    proc = xllm("data", "validate", str(tmp_path / "missing"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xllm: error:") and "missing" in lines[0]


def _raise(exc):
    def command():
        raise exc
    return command


def test_internal_errors_are_one_line_unless_debugging(monkeypatch, capsys):
    monkeypatch.setattr(main, "app", lambda **kwargs: _raise(ZeroDivisionError("boom"))())
    monkeypatch.setitem(main._state, "debug", False)
    with pytest.raises(SystemExit) as exit_info:
        main.run(["anything"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError: boom" in err and "--debug" in err and "Traceback" not in err

    monkeypatch.setattr(main, "app", lambda **kwargs: _raise(XllmError("f.txt:3: bad"))())
    with pytest.raises(SystemExit):
        main.run(["--debug", "anything"])
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("xllm: error: f.txt:3: bad")
