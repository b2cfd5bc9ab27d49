"""Issue 12: atomic writers respect the umask and turn a full disk into one line naming the file."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from xllm_cli import fsutil
from xllm_cli.errors import XllmError
from xllm_cli.fsutil import apply_umask, atomic_save, atomic_write, atomic_write_bytes, atomic_write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_get_the_mode_open_would_give(tmp_path, umask_022):
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_bytes(tmp_path / "b.bin", b"x")
    atomic_save(tmp_path / "c.bin", lambda tmp: open(tmp, "wb").write(b"x"))
    assert [_mode(tmp_path / n) for n in ("a.txt", "b.bin", "c.bin")] == [0o644] * 3
    os.umask(0o077)
    atomic_write_text(tmp_path / "private.txt", "x")
    assert _mode(tmp_path / "private.txt") == 0o600


def test_apply_umask_on_a_mkdtemp_folder(tmp_path, umask_022):
    import tempfile

    folder = tempfile.mkdtemp(dir=tmp_path)
    assert _mode(folder) == 0o700
    apply_umask(folder)
    assert _mode(folder) == 0o755


def test_current_umask_does_not_change_it(umask_022):
    assert fsutil.current_umask() == 0o022
    assert fsutil.current_umask() == 0o022


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_full_disk_is_one_line_naming_the_file_and_leaves_no_temp(tmp_path, monkeypatch, where):
    target = tmp_path / "out" / "text"
    full = OSError(errno.ENOSPC, "No space left on device")

    if where == "fsync":
        def no_space(fd):
            raise full
        monkeypatch.setattr(fsutil.os, "fsync", no_space)
    with pytest.raises(XllmError) as e:
        with atomic_write(target) as f:
            f.write("a line\n")
            if where == "write":
                raise full
    assert str(e.value) == f"{target}: no space left on device"
    assert os.listdir(target.parent) == []


def test_full_disk_in_atomic_save(tmp_path):
    def save(tmp):
        open(tmp, "wb").write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(XllmError, match=r"model.safetensors: no space left on device$"):
        atomic_save(tmp_path / "model.safetensors", save)
    assert os.listdir(tmp_path) == []


def test_other_errors_pass_through(tmp_path):
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "x") as f:
            raise ValueError("bug")
    assert os.listdir(tmp_path) == []
