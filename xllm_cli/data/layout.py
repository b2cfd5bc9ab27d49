"""What a data directory is made of: its file names and what their values may be.

Shared by reading, writing, repairing and validating data directories (see
docs/data-dir.md), so that each of those modules depends on this one and not on
each other. We never execute data: ``wav.scp`` values that are command pipes
(``... |``) or Kaldi archive specifiers (``ark:...``, ``foo.ark:1234``) are rejected.
"""

from __future__ import annotations

import math
import os
import re

# Every file a data directory may hold. spk2utt is derived from utt2spk;
# reco2dur (recording durations) is written when known because lhotse's Kaldi
# importer reads it instead of opening every audio file.
WAV_SCP = "wav.scp"
TEXT = "text"
UTT2SPK = "utt2spk"
SPK2UTT = "spk2utt"
SEGMENTS = "segments"
UTT2DUR = "utt2dur"
RECO2DUR = "reco2dur"
IMAGE_SCP = "image.scp"
VIDEO_SCP = "video.scp"
PROMPT = "prompt"
KNOWN_FILES = (WAV_SCP, TEXT, UTT2SPK, SPK2UTT, SEGMENTS, UTT2DUR, RECO2DUR, IMAGE_SCP, VIDEO_SCP, PROMPT)
BACKUP_DIR = ".backup"  # xllm data fix: .backup.1, .backup.2, ... (one per run)
# The tables xllm wrote into a data directory, one name a line: only those may be
# removed by a later write (Kaldi tools ignore files they do not know).
WRITTEN_LIST = ".xllm_written"
MISSING_CORE_FILE = "file not found (a data directory needs wav.scp and utt2spk)"
SEGMENT_END_TOLERANCE = 0.02  # seconds a segment may run past the recording (rounding)

_ARK_SPEC = re.compile(r"^(ark|scp)(,[a-z]+)*:")
_ARK_OFFSET = re.compile(r"\S:\d+(\[[^\]]*\])?$")


def format_seconds(value: float) -> str:
    """Seconds with at most 4 decimals and no trailing zeros (``1.5``, ``0``, ``12.3456``)."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def wav_value_problem(value: str) -> str | None:
    """Why a ``wav.scp`` value is unusable, or None. We read files; we never run commands."""
    v = value.strip()
    if v.endswith("|"):
        return (
            "command pipes ('... |') are not supported (data is never executed); "
            "convert the audio to a file and list its path"
        )
    if v == "-":
        return "'-' (standard input) is not supported; list an audio file path"
    if _ARK_SPEC.match(v) or _ARK_OFFSET.search(v):
        return (
            f"'{v}' looks like a Kaldi archive specifier (ark:/scp:/file.ark:offset), which is not "
            "supported; list an audio file path"
        )
    return None


def resolve_path(value: str) -> str:
    """Absolute paths stay; relative ones are relative to the current working directory."""
    return value if os.path.isabs(value) else os.path.abspath(value)


def parse_float(text: str) -> float | None:
    """A finite float, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_segment(value: str) -> tuple[str, float, float] | str:
    """``<recording> <start> <end>`` -> tuple, or the problem as a string."""
    fields_ = value.split()
    if len(fields_) != 3:
        return f"segments lines are '<utt> <recording> <start> <end>', got '{value}'"
    rec, start_text, end_text = fields_
    if end_text == "-1":
        return "end time -1 (to the end of the recording) is not supported; write the end in seconds"
    start, end = parse_float(start_text), parse_float(end_text)
    if start is None or end is None:
        return f"start/end '{start_text} {end_text}' are not numbers"
    return rec, start, end


# Value checks of the tables, ``(key, value) -> (parsed value, problem or None)``.
def check_wav(rec: str, value: str) -> tuple[str, str | None]:
    problem = wav_value_problem(value)
    return value, f"recording '{rec}': {problem}" if problem else None


def check_speaker(utt: str, spk: str) -> tuple[str, str | None]:
    return spk, f"utterance '{utt}': speaker id '{spk}' has spaces" if len(spk.split()) != 1 else None


def check_segment(utt: str, value: str) -> tuple[tuple[str, float, float] | None, str | None]:
    parsed = parse_segment(value)
    return (None, f"utterance '{utt}': {parsed}") if isinstance(parsed, str) else (parsed, None)


def check_duration(key: str, value: str) -> tuple[float | None, str | None]:
    seconds = parse_float(value)
    if seconds is None or seconds < 0:
        return None, f"'{key}': duration '{value}' is not a number >= 0"
    return seconds, None
