"""Building a data directory's tables from utterances, and writing them to disk.

Every file is C-sorted, and the directory is replaced as a whole (see
:func:`save_datadir`): a full disk half-way leaves the old directory as it was.
Tables an earlier xllm write produced and the new directory lacks are removed, so
a stale ``segments`` cannot linger; tables someone else wrote are never deleted
(docs/data-dir.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..errors import XllmError
from ..fsutil import atomic_write_text
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
    WRITTEN_LIST,
    format_seconds,
    wav_value_problem,
)
from .dirswap import StagedDir
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


def datadir_tables(dd: "DataDir") -> dict[str, dict[str, str]]:
    """The files ``dd`` writes: file name -> ``{key: value}`` (spk2utt from utt2spk)."""
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
    return tables


def written_by_xllm(root: Path) -> set[str]:
    """The tables an earlier xllm write left in ``root`` (its :data:`.layout.WRITTEN_LIST`)."""
    listing = root / WRITTEN_LIST
    if not listing.is_file():
        return set()
    return {line.strip() for line in listing.read_text(encoding="utf-8", errors="replace").splitlines()} & set(KNOWN_FILES)


def stage_datadir(dd: "DataDir", path: str | Path, invalidates: Iterable[str] = ()) -> StagedDir:
    """``dd``'s tables written into a staged copy of ``path`` (see :func:`save_datadir`); not yet in place."""
    root = Path(path)
    tables = datadir_tables(dd)
    if root.is_dir():
        allowed = written_by_xllm(root) | set(invalidates)
        for name in KNOWN_FILES:
            if name not in tables and name not in allowed and (root / name).exists():
                raise XllmError(
                    f"{root / name}: not written by xllm, and the new data directory has no {name}; keeping it "
                    f"would leave {root} inconsistent and xllm never deletes your files: move it away, or give "
                    "another output directory"
                )
    staged = StagedDir(root, carry=lambda name: name not in KNOWN_FILES and name != WRITTEN_LIST)
    try:
        for name, table in tables.items():
            write_table(staged.tmp / name, table)
        atomic_write_text(staged.tmp / WRITTEN_LIST, "".join(f"{name}\n" for name in sorted(tables)))
    except BaseException:
        staged.discard()
        raise
    return staged


def save_datadir(dd: "DataDir", path: str | Path, invalidates: Iterable[str] = ()) -> None:
    """Write ``dd``'s tables to ``path`` as a whole: the old directory or the new one, never a mix.

    The tables go into a temporary sibling that replaces ``path`` once complete
    (:mod:`.dirswap`); other entries of the old ``path`` (``conf/``, ``cmvn``,
    logs) are carried over. A known table the new directory lacks is dropped when
    an earlier xllm write produced it (listed in ``.xllm_written``) or the caller
    ``invalidates`` it (``fix`` read and rewrote that very directory); anyone
    else's is never deleted: that is an error, before anything is written.
    """
    stage_datadir(dd, path, invalidates).commit()
