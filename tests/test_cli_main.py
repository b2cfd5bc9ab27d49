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


# --- issue 12: every failure and every interrupt exits non-zero ---------------


def _train_args():
    return ["train", "--stage", "1", "--config", "recipe.yaml", "--exp", "exp", "--ngpu", "2"]


@pytest.mark.parametrize("child_code, status", [(1, 1), (-2, 130), (-9, 137)])
def test_failed_torchrun_launch_exits_non_zero(monkeypatch, capsys, tmp_path, child_code, status):
    """``xllm train --ngpu 2`` whose torchrun fails (or is interrupted) used to exit 0."""
    monkeypatch.chdir(tmp_path)  # the launcher locks exp/stage1 in the working directory
    import xllm_cli.config as config
    import xllm_cli.training.distributed as distributed

    monkeypatch.setattr(config, "load_recipe", lambda path, overrides: {"stage1": {}})
    monkeypatch.setattr(distributed, "under_torchrun", lambda: False)
    monkeypatch.setattr(distributed, "relaunch_under_torchrun", lambda argv, n: child_code)
    with pytest.raises(SystemExit) as exit_info:
        main.run(_train_args())
    assert exit_info.value.code == status


def test_ctrl_c_in_a_command_exits_130(monkeypatch, capsys, tmp_path):
    """Typer turns a KeyboardInterrupt into a *returned* 130 when not standalone: it was dropped."""
    monkeypatch.chdir(tmp_path)
    import xllm_cli.config as config

    def interrupted(path, overrides):
        raise KeyboardInterrupt

    monkeypatch.setattr(config, "load_recipe", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main.run(_train_args())
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip().endswith("xllm: error: interrupted")


def test_success_still_exits_zero(capsys):
    main.run(["--version"])  # returns normally: status 0


def test_exit_status_mapping():
    assert [main.exit_status(c) for c in (None, 0, 3, -2, -15, True, "x", 300)] == [0, 0, 3, 130, 143, 0, 0, 1]


def test_refused_pickle_never_suggests_weights_only_false(monkeypatch, capsys):
    """torch's message for a refused pickle advises ``weights_only=False`` (running the file's code)."""
    import pickle

    message = ("Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` "
               "argument in `torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` set "
               "to `False` will likely succeed.\nWeightsUnpickler error: Unsupported global: GLOBAL os.system "
               "was not an allowed global by default.")
    monkeypatch.setattr(main, "app", lambda **kwargs: _raise(pickle.UnpicklingError(message))())
    monkeypatch.setitem(main._state, "debug", False)
    with pytest.raises(SystemExit) as exit_info:
        main.run(["anything"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights_only" not in err and "os.system" in err
