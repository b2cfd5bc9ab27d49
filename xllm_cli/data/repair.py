"""Repairing a data directory's tables, as Kaldi's fix_data_dir.sh does.

Only the tables are touched here; reading the audio headers for missing
durations is the caller's ``probe`` (see :func:`.datadir_ops.fix_datadir`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..errors import XllmError
from .layout import RECO2DUR, SEGMENT_END_TOLERANCE, SEGMENTS, UTT2DUR, format_seconds, resolve_path
from .selection import select
from .tables import c_sorted

if TYPE_CHECKING:  # pragma: no cover
    from .datadir import DataDir


def fix(dd: "DataDir", probe: Callable[[str], float] | None = None) -> tuple["DataDir", list[str]]:
    """Keep the utterances usable in every file; returns the fixed tables and notes (see :meth:`DataDir.fix`)."""
    notes: list[str] = []
    keep = []
    for utt in dd.utt_ids():
        reason = _unusable(dd, utt)
        if reason is None:
            keep.append(utt)
        else:
            notes.append(f"dropped utterance '{utt}': {reason}")
    for name, table in [(SEGMENTS, dd.segments), *dd.per_utterance_tables()]:
        for key in table or {}:
            if key not in dd.utt2spk:
                notes.append(f"dropped '{key}' from {name}: not in utt2spk")
    fixed = select(dd, keep)
    for rec in c_sorted(set(dd.wav) - set(fixed.wav)):
        notes.append(f"dropped recording '{rec}' from wav.scp: no utterance uses it")
    complete_durations(fixed, probe, notes)
    return fixed, notes


def _unusable(dd: "DataDir", utt: str) -> str | None:
    """Why ``utt`` cannot be kept, or None."""
    if dd.text is not None and utt not in dd.text:
        return "no text"
    if dd.text is not None and not dd.text[utt].strip():
        return "empty transcript"
    if dd.segments is not None and utt not in dd.segments:
        return "no segment"
    if dd.recording_of(utt) not in dd.wav:
        return f"no audio (recording '{dd.recording_of(utt)}' not in wav.scp)"
    if dd.segments is not None:
        _, start, end = dd.segments[utt]
        known = dd.reco2dur.get(dd.recording_of(utt)) if dd.reco2dur is not None else None
        if not 0 <= start < end:
            return f"bad segment {format_seconds(start)}..{format_seconds(end)}"
        if known is not None and end > known + SEGMENT_END_TOLERANCE:
            return f"segment ends at {format_seconds(end)} s, after the recording's end ({format_seconds(known)} s)"
    return None


def complete_durations(dd: "DataDir", probe: Callable[[str], float] | None, notes: list[str]) -> None:
    """Fill missing utt2dur/reco2dur lines (segments, then ``probe``) or drop the incomplete file.

    ``probe`` raises XllmError for audio it cannot read; that recording's
    duration is then unknown and the incomplete file is left out (``xllm data
    validate --check-audio`` names the unreadable file).
    """
    cache: dict[str, float | None] = {}

    def measure(rec: str) -> float | None:
        if rec not in cache:
            try:
                cache[rec] = probe(resolve_path(dd.wav[rec])) if probe is not None else None
            except XllmError:
                cache[rec] = None
        return cache[rec]

    for name in (RECO2DUR, UTT2DUR):
        table = getattr(dd, name)
        if table is None:
            continue
        keys = list(dd.wav) if name == RECO2DUR else list(dd.utt2spk)
        missing = [k for k in keys if k not in table]
        for key in missing:
            if name == UTT2DUR and dd.segments is not None:
                _, start, end = dd.segments[key]
                seconds = end - start
            else:
                seconds = (dd.reco2dur or {}).get(key) if name == UTT2DUR else None
                seconds = measure(key) if seconds is None else seconds
            if seconds is None:
                setattr(dd, name, None)
                notes.append(f"removed {name}: no duration for '{key}' (and maybe others)")
                break
            table[key] = seconds
        else:
            if missing:
                notes.append(f"added {len(missing)} missing line(s) to {name}")
