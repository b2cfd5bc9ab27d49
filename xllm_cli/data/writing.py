"""Building a data directory's tables from utterances, and writing them to disk.

Every file is C-sorted and written atomically (see :func:`.tables.write_table`);
files a directory no longer has are removed so that a stale ``segments`` or
``text`` from an earlier write cannot linger (docs/data-dir.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..errors import XllmError
from .layout import (
    IMAGE_SCP,
    KNOWN_FILES,
    PROMPT,
    RECO2DUR,
    SEGMENTS,
    SPK2UTT,
    TEXT,
    UTT2DUR,
    UTT2SPK,
    VIDEO_SCP,
    WAV_SCP,
    format_seconds,
    wav_value_problem,
)
from .tables import write_table
from .utterance import Utterance

if TYPE_CHECKING:  # pragma: no cover
    from .datadir import DataDir


def tables_from_utterances(cls: type["DataDir"], utts: Iterable[Utterance]) -> "DataDir":
    """A ``cls`` with the tables of ``utts``; see :meth:`DataDir.from_utterances`."""
    utts = list(utts)
    dd = cls()
    seen: set[str] = set()
    for u in utts:
        _check_utterance(u, seen)
        old = dd.wav.setdefault(u.recording, u.path)
        if old != u.path:
            raise XllmError(f"recording '{u.recording}' has two paths: '{old}' and '{u.path}'")
        dd.utt2spk[u.utt_id] = u.spk
    segmented = any(u.start is not None or u.end is not None or u.recording != u.utt_id for u in utts)
    if segmented:
        dd.segments = {}
        for u in utts:
            start = 0.0 if u.start is None else float(u.start)
            end = u.end if u.end is not None else (start + u.duration if u.duration is not None else None)
            if end is None:
                raise XllmError(f"utterance '{u.utt_id}': needs an end time or a duration (the directory has segments)")
            if not 0 <= start < end:
                raise XllmError(f"utterance '{u.utt_id}': segment {start}..{end} must have 0 <= start < end")
            dd.segments[u.utt_id] = (u.recording, start, float(end))
    durations = {u.utt_id: u.duration for u in utts}
    if utts and all(d is not None for d in durations.values()):
        dd.utt2dur = {k: float(v) for k, v in durations.items()}
    elif segmented:
        dd.utt2dur = {k: end - start for k, (_, start, end) in dd.segments.items()}
    if dd.utt2dur is not None and not segmented:
        dd.reco2dur = dict(dd.utt2dur)
    for name in ("text", "image", "video", "prompt"):
        table = {u.utt_id: getattr(u, name) for u in utts if getattr(u, name) is not None}
        if table:
            setattr(dd, name, table)
    return dd


def _check_utterance(u: Utterance, seen: set[str]) -> None:
    """One-word unique ids, no line breaks in values, a readable (never executed) audio path."""
    for what, value in (("utterance id", u.utt_id), ("speaker id", u.spk), ("recording id", u.recording)):
        if not value or len(value.split()) != 1 or value != value.strip():
            raise XllmError(f"utterance '{u.utt_id}': {what} '{value}' must be one non-empty word")
    if u.utt_id in seen:
        raise XllmError(f"duplicate utterance id '{u.utt_id}'")
    seen.add(u.utt_id)
    for what, value in (("path", u.path), ("text", u.text), ("image", u.image), ("video", u.video), ("prompt", u.prompt)):
        if value is not None and ("\n" in value or "\r" in value):
            raise XllmError(f"utterance '{u.utt_id}': {what} contains a line break")
    problem = wav_value_problem(u.path)
    if problem:
        raise XllmError(f"utterance '{u.utt_id}': {problem}")


def save_datadir(dd: "DataDir", path: str | Path) -> None:
    """Write ``dd``'s tables to ``path``; see :meth:`DataDir.save`."""
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise XllmError(f"{root}: exists and is not a directory; give another output directory")
    root.mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict[str, str]] = {
        WAV_SCP: dd.wav,
        UTT2SPK: dd.utt2spk,
        SPK2UTT: {spk: " ".join(utts) for spk, utts in dd.speakers().items()},
    }
    if dd.text is not None:
        tables[TEXT] = dd.text
    if dd.segments is not None:
        tables[SEGMENTS] = {
            utt: f"{rec} {format_seconds(start)} {format_seconds(end)}" for utt, (rec, start, end) in dd.segments.items()
        }
    for name, durations in ((UTT2DUR, dd.utt2dur), (RECO2DUR, dd.reco2dur)):
        if durations is not None:
            tables[name] = {k: format_seconds(v) for k, v in durations.items()}
    for name, table in ((IMAGE_SCP, dd.image), (VIDEO_SCP, dd.video), (PROMPT, dd.prompt)):
        if table is not None:
            tables[name] = table
    for name, table in tables.items():
        write_table(root / name, table)
    for name in KNOWN_FILES:
        if name not in tables and (root / name).is_file():
            (root / name).unlink()
