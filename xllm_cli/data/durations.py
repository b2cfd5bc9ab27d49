"""How long is this file, or this utterance: every duration the toolkit measures.

Durations come from headers, never from decoding: libsndfile for the formats it
reads (no subprocess), a direct RIFF parse for corpus-scale WAV listings
(:mod:`.wavheader`), and ``ffmpeg.probe`` for everything else (mp3, m4a, the
audio or video stream of a container). Every failure is a one-line XllmError
naming the file; no function here guesses a duration (callers that can live
with an unknown one catch XllmError and say so).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import XllmError
from .media import corrupt, existing_file, first_stream, is_soundfile_path, probe_media
from .wavheader import parse_wav_header

if TYPE_CHECKING:  # pragma: no cover
    from .utterance import Utterance


def audio_duration(path: str | Path) -> float:
    """Seconds of audio from the file header: soundfile for WAV/FLAC/OGG/..., ffprobe for the rest."""
    path = existing_file(path)
    if is_soundfile_path(path):
        try:
            return _soundfile_info(path)[0]
        except Exception as e:  # libsndfile cannot parse it: ffprobe may
            if shutil.which("ffprobe") is None:
                raise corrupt(path, f"{type(e).__name__}: {e}") from None
    return stream_duration(path, "audio")


def audio_info(path: str | Path) -> tuple[float, int | None]:
    """(seconds, sample rate or None) from the file header, for ``xllm data validate --check-audio``.

    soundfile first, whatever the extension (no subprocess, and it knows the
    rate); ffprobe for what libsndfile cannot read (mp3, m4a, video).
    """
    path = existing_file(path)
    try:
        return _soundfile_info(path)
    except Exception as e:  # not a soundfile format: ffprobe reads the others
        if is_soundfile_path(path) and shutil.which("ffprobe") is None:
            raise corrupt(path, f"{type(e).__name__}: {e}") from None
    info = probe_media(path)
    stream = first_stream(info, "audio")
    seconds = _duration_of(path, info, "audio")
    try:
        rate = int(stream.get("sample_rate") or 0) or None
    except ValueError:
        rate = None
    return seconds, rate


def video_duration(path: str | Path) -> float:
    """Duration in seconds of the first video stream (container duration as a fallback)."""
    return stream_duration(existing_file(path, "video"), "video")


def stream_duration(path: Path, kind: str) -> float:
    """Duration of the first ``kind`` ("audio"/"video") stream of ``path``, else of the container."""
    return _duration_of(path, probe_media(path), kind)


def wav_duration(path: str) -> float:
    """Seconds of audio in a wav file: RIFF header parse, soundfile for anything unusual.

    The fast path of corpus preparation (no ffprobe: a wav that libsndfile cannot
    read is an error).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise XllmError(f"{path}: cannot open audio file ({e.strerror})") from None
    try:
        seconds = parse_wav_header(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    if seconds is not None:
        return seconds
    try:
        return _soundfile_info(Path(path))[0]
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError for bad files
        raise XllmError(f"{path}: not a readable audio file ({e})") from None


def utterance_duration(utt: "Utterance") -> float:
    """Seconds of an utterance: its known duration (utt2dur), else its segment, else the audio header."""
    if utt.duration is not None:
        return float(utt.duration)
    if utt.start is not None and utt.end is not None:
        return float(utt.end - utt.start)
    return audio_duration(utt.path)


def _soundfile_info(path: Path) -> tuple[float, int]:
    import soundfile

    info = soundfile.info(str(path))
    return info.frames / float(info.samplerate), int(info.samplerate)


def _duration_of(path: Path, info: dict, kind: str) -> float:
    stream = first_stream(info, kind)
    if stream is None:
        raise XllmError(f"{path}: no {kind} stream")
    for value in (stream.get("duration"), (info.get("format") or {}).get("duration")):
        try:
            if value is not None and float(value) > 0:
                return float(value)
        except ValueError:
            continue
    raise corrupt(path, f"no duration in the {kind} stream or container header")
