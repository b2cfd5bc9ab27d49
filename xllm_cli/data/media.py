"""ffmpeg and ffprobe as the data pipeline uses them: found on PATH, probed, failures in one line.

Audio reading, video frames and durations all run these tools; this module is
where a missing binary gets its install hint and where their stderr becomes a
one-line error naming the file. Commands are argument lists built by
ffmpeg-python (never a shell string); probing is ``ffmpeg.probe`` only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import XllmError, require_file

FFMPEG_MISSING = (
    "ffmpeg not found: install it (Debian/Ubuntu: sudo apt-get install ffmpeg; or conda install ffmpeg)"
)
# Extensions libsndfile reads; anything else (or a soundfile failure) goes to ffmpeg.
SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".w64", ".caf"}


def require_ffmpeg() -> str:
    """Path of the ``ffmpeg`` binary, or a one-line XllmError saying how to install it."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise XllmError(FFMPEG_MISSING)
    return path


def require_ffprobe() -> str:
    """Path of ``ffprobe`` (shipped with ffmpeg); same install hint when missing."""
    path = shutil.which("ffprobe")
    if path is None:
        raise XllmError(FFMPEG_MISSING.replace("ffmpeg not found", "ffprobe not found"))
    return path


def existing_file(path: str | Path, what: str = "audio") -> Path:
    """``path`` as a Path, or ``<path>: <what> file not found``."""
    return require_file(path, f"{what} file")


def is_soundfile_path(path: Path) -> bool:
    return path.suffix.lower() in SOUNDFILE_EXTENSIONS


def corrupt(path: str | Path, detail: str) -> XllmError:
    """``<path>: cannot read audio (corrupt or unsupported file): <detail>`` on one line."""
    detail = " ".join(detail.split())  # one line, whatever the library said
    if len(detail) > 200:
        detail = detail[:200] + "..."
    return XllmError(f"{path}: cannot read audio (corrupt or unsupported file): {detail}")


def ffmpeg_detail(stderr: bytes) -> str:
    """The last non-blank line of an ffmpeg/ffprobe stderr."""
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "ffmpeg failed"


def ffmpeg_failure(path: str | Path, stderr: bytes, kind: str = "audio") -> XllmError:
    """The one-line error for a failed ffmpeg run on ``path``.

    A file without the ``kind`` stream asked for (an mp4 with no audio track) makes
    ffmpeg say "Stream map '0:a' matches no streams. To ignore this, add a trailing
    '?' to the map", which means nothing to a user: say what is missing instead.
    """
    if b"matches no streams" in stderr:
        return XllmError(f"no {kind} stream in {path}")
    return corrupt(path, ffmpeg_detail(stderr))


def probe_media(path: Path) -> dict:
    """ffprobe's JSON about ``path`` (streams and container), through ``ffmpeg.probe``."""
    import ffmpeg

    try:
        return ffmpeg.probe(str(path), cmd=require_ffprobe())
    except ffmpeg.Error as e:
        raise corrupt(path, ffmpeg_detail(e.stderr or b"")) from None
    except (OSError, ValueError) as e:  # cannot run ffprobe, or it printed no JSON
        raise corrupt(path, f"{type(e).__name__}: {e}") from None


def first_stream(info: dict, kind: str) -> dict | None:
    """The first ``kind`` ("audio"/"video") stream of a probe result, or None."""
    return next((s for s in info.get("streams", []) if s.get("codec_type") == kind), None)
