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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import XllmError
from .layout import format_seconds
from .media import corrupt, existing_file, first_stream, is_soundfile_path, probe_media
from .wavheader import parse_wav_header, read_wav_file_header

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


@dataclass
class AudioHeader:
    """What an audio file's header says, for ``xllm data validate`` and ``xllm data fix``."""

    seconds: float
    rate: int | None  # Hz; None when the header does not say
    channels: int | None
    container: str  # libsndfile's format (WAV, FLAC, ...) or ffprobe's format name (mp3, mov,mp4,...)
    codec: str  # libsndfile's subtype (PCM_16, FLOAT, ...) or ffprobe's codec name
    truncated: str | None = None  # why the file is cut short (a wav whose data ends before its header says)

    def kaldi_problem(self) -> str | None:
        """Why Kaldi (and lhotse's Kaldi import) cannot read this file as is, or None.

        They read 16 kHz mono 16-bit PCM RIFF/WAV; anything else needs a pipe or a conversion.
        """
        problems = []
        if self.container not in ("WAV", "WAVEX") or not self.codec.startswith("PCM_"):
            problems.append(f"{self.container} {self.codec}, not RIFF/WAV PCM")
        elif self.codec != "PCM_16":
            problems.append(f"{self.codec.removeprefix('PCM_')}-bit PCM, not 16-bit")
        if self.rate is not None and self.rate != 16000:
            problems.append(f"{self.rate} Hz, not 16 kHz")
        if self.channels is not None and self.channels != 1:
            problems.append(f"{self.channels} channels, not mono")
        return "; ".join(problems) or None


def audio_header(path: str | Path) -> AudioHeader:
    """The header of an audio file: libsndfile first, whatever the extension (no subprocess),
    ffprobe for what it cannot read (mp3, m4a, video). Raises XllmError for an unreadable file."""
    path = existing_file(path)
    try:
        import soundfile

        info = soundfile.info(str(path))
    except Exception as e:  # not a soundfile format: ffprobe reads the others
        if is_soundfile_path(path) and shutil.which("ffprobe") is None:
            raise corrupt(path, f"{type(e).__name__}: {e}") from None
    else:
        return AudioHeader(info.frames / float(info.samplerate), int(info.samplerate), int(info.channels),
                           info.format, info.subtype, wav_truncation(path) if info.format == "WAV" else None)
    probe = probe_media(path)
    stream = first_stream(probe, "audio")
    seconds = _duration_of(path, probe, "audio")

    def number(key: str) -> int | None:
        try:
            return int(stream.get(key) or 0) or None
        except ValueError:
            return None

    container = str((probe.get("format") or {}).get("format_name", "?"))
    return AudioHeader(seconds, number("sample_rate"), number("channels"), container, str(stream.get("codec_name", "?")))


def wav_truncation(path: str | Path) -> str | None:
    """Why a PCM WAV file is cut short (its data ends before the header says), or None.

    libsndfile reads such a file without complaint, just shorter: an interrupted
    copy would train or be scored as if it were the whole recording.
    """
    try:
        riff = read_wav_file_header(str(path))
    except OSError:
        return None  # unreadable: the reader that opens it next says why
    if riff is None or not riff.truncated:
        return None
    promised = (riff.declared // riff.block_align) / riff.rate
    return (f"truncated wav: the header promises {format_seconds(promised)} s of audio, "
            f"the file holds {format_seconds(riff.seconds)} s")


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
        raise XllmError(f"no {kind} stream in {path}")
    for value in (stream.get("duration"), (info.get("format") or {}).get("duration")):
        try:
            if value is not None and float(value) > 0:
                return float(value)
        except ValueError:
            continue
    raise corrupt(path, f"no duration in the {kind} stream or container header")
