"""Kaldi-style data directories (docs/data-dir.md): the :class:`DataDir` value type.

A data directory is a handful of ``<key> <value>`` text files sorted in C byte
order. :class:`DataDir` keeps the tables as written (paths verbatim, so that a
subset or split of a directory with relative paths stays relative) and turns
them into :class:`Utterance` records on demand, resolving relative paths
against the current working directory (Kaldi's convention: recipes run from the
corpus' recipe directory).

This module holds the type and what it answers about itself; each other concern
has its own module, which the methods below call:

- :mod:`.layout`: file names and value rules (we never execute data);
- :mod:`.reading`: loading, strict or lenient;
- :mod:`.writing`: building tables from utterances, saving atomically;
- :mod:`.selection`: select, subset, split, combine;
- :mod:`.repair`: ``fix`` (Kaldi's fix_data_dir.sh);
- :mod:`.datadir_ops`: the ``xllm data`` operations on directories on disk;
- :mod:`.validate`: every check of Kaldi's validate_data_dir.sh, and ours.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..errors import XllmError
from . import reading, repair, selection, writing
from .layout import IMAGE_SCP, PROMPT, TEXT, UTT2DUR, UTT2SPK, VIDEO_SCP, resolve_path
from .tables import c_sorted
from .utterance import Utterance

__all__ = ["DataDir", "Utterance", "write_datadir"]


@dataclass
class DataDir:
    """The tables of a data directory, keyed as in the files, values as written.

    ``utt2spk`` defines the set of utterances. Without ``segments`` each
    utterance is a whole recording (``wav.scp`` key = utterance id).
    """

    wav: dict[str, str] = field(default_factory=dict)  # recording -> path
    utt2spk: dict[str, str] = field(default_factory=dict)
    text: dict[str, str] | None = None
    segments: dict[str, tuple[str, float, float]] | None = None  # utt -> (recording, start, end)
    utt2dur: dict[str, float] | None = None
    reco2dur: dict[str, float] | None = None
    image: dict[str, str] | None = None
    video: dict[str, str] | None = None
    prompt: dict[str, str] | None = None
    path: Path | None = None  # where it was loaded from
    # Filled by load(): line numbers per file and key, the spk2utt file as read,
    # problems found by a lenient load, recordings whose wav.scp value we reject.
    lines: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)
    spk2utt_file: dict[str, list[str]] | None = field(default=None, repr=False)
    load_problems: list[str] = field(default_factory=list, repr=False)
    unsorted: dict[str, int] = field(default_factory=dict, repr=False)
    rejected_wav: dict[str, str] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------- reading, writing
    @classmethod
    def load(cls, path: str | Path, lenient: bool = False) -> "DataDir":
        """Read the files present in ``path``; ``wav.scp`` and ``utt2spk`` are required.

        Strict (default): raise ``XllmError("file:line: problem")`` at the first
        malformed line, duplicate key, bad UTF-8 or rejected ``wav.scp`` value.
        Files need not be sorted (``xllm data validate`` reports that).
        Lenient: collect those problems in ``load_problems`` and skip the lines.
        """
        return reading.load_datadir(cls, path, lenient)

    @classmethod
    def from_utterances(cls, utts: Iterable[Utterance]) -> "DataDir":
        """Build the tables for a list of utterances (e.g. from corpus prep).

        ``segments`` is written when any utterance is part of a recording (has a
        start/end or a recording id other than its utterance id); whole-recording
        utterances then get a ``0 <duration>`` segment. ``utt2dur`` is written
        when every utterance has a duration, ``reco2dur`` too when there are no
        segments. Optional per-utterance fields are written for the utterances
        that have them.
        """
        return writing.tables_from_utterances(cls, utts)

    def save(self, path: str | Path, invalidates: Iterable[str] = ()) -> None:
        """Write the tables to ``path`` (C-sorted, spk2utt from utt2spk), replacing it as a whole.

        Other files in ``path`` are kept; a table this DataDir lacks is removed only
        when xllm wrote it or it is in ``invalidates`` (see :func:`.writing.save_datadir`).
        """
        writing.save_datadir(self, path, invalidates)

    # ------------------------------------------------------------------- access
    def utt_ids(self) -> list[str]:
        return c_sorted(self.utt2spk)

    def speakers(self) -> dict[str, list[str]]:
        """spk2utt: speaker -> its utterances, both C-sorted."""
        spk2utt: dict[str, list[str]] = {}
        for utt in self.utt_ids():
            spk2utt.setdefault(self.utt2spk[utt], []).append(utt)
        return {spk: spk2utt[spk] for spk in c_sorted(spk2utt)}

    def per_utterance_tables(self) -> list[tuple[str, dict | None]]:
        """(file name, table) of the optional files keyed by utterance id (segments aside)."""
        return [
            (TEXT, self.text),
            (UTT2DUR, self.utt2dur),
            (IMAGE_SCP, self.image),
            (VIDEO_SCP, self.video),
            (PROMPT, self.prompt),
        ]

    def recording_of(self, utt: str) -> str:
        return self.segments[utt][0] if self.segments is not None and utt in self.segments else utt

    def __len__(self) -> int:
        return len(self.utt2spk)

    def _where(self, name: str, key: str) -> str:
        base = self.path / name if self.path is not None else Path(name)
        line = self.lines.get(name, {}).get(key)
        return f"{base}:{line}" if line is not None else f"{base}"

    def _fix_hint(self) -> str:
        return f" (fix with: xllm data fix {self.path})" if self.path is not None else ""

    def duration_of(self, utt: str) -> float | None:
        """utt2dur, else the segment's length, else the recording's reco2dur."""
        if self.utt2dur is not None and utt in self.utt2dur:
            return self.utt2dur[utt]
        if self.segments is not None and utt in self.segments:
            _, start, end = self.segments[utt]
            return end - start
        if self.segments is None and self.reco2dur is not None:
            return self.reco2dur.get(utt)
        return None

    def utterances(self) -> list[Utterance]:
        """All utterances, sorted by id; paths resolved. Raises on inconsistent tables.

        An utterance needs audio: a ``wav.scp`` entry for its recording (and a
        segment when the directory has ``segments``).
        """
        out = []
        for utt in self.utt_ids():
            if self.segments is not None:
                if utt not in self.segments:
                    raise XllmError(
                        f"{self._where(UTT2SPK, utt)}: utterance '{utt}' has no line in segments{self._fix_hint()}"
                    )
                rec, start, end = self.segments[utt]
            else:
                rec, start, end = utt, None, None
            if rec not in self.wav:
                raise XllmError(
                    f"{self._where(UTT2SPK, utt)}: utterance '{utt}' has no audio: recording '{rec}' is not in wav.scp{self._fix_hint()}"
                )
            out.append(
                Utterance(
                    utt_id=utt,
                    spk=self.utt2spk[utt],
                    recording=rec,
                    path=resolve_path(self.wav[rec]),
                    start=start,
                    end=end,
                    text=self.text.get(utt) if self.text is not None else None,
                    duration=self.duration_of(utt),
                    image=resolve_path(self.image[utt]) if self.image and utt in self.image else None,
                    video=resolve_path(self.video[utt]) if self.video and utt in self.video else None,
                    prompt=self.prompt.get(utt) if self.prompt is not None else None,
                )
            )
        return out

    # --------------------------------------------------------------- selecting
    def select(self, utts: Iterable[str]) -> "DataDir":
        """A DataDir with only ``utts`` (and the recordings they use); values copied verbatim."""
        return selection.select(self, utts)

    def subset(
        self,
        first: int | None = None,
        last: int | None = None,
        utt_list: Iterable[str] | None = None,
        spk_list: Iterable[str] | None = None,
    ) -> "DataDir":
        """Exactly one of: the first/last N utterances (C order), listed utterances, listed speakers."""
        return selection.subset(self, first=first, last=last, utt_list=utt_list, spk_list=spk_list)

    def split(self, n: int, per_spk: bool = False) -> list["DataDir"]:
        """``n`` contiguous parts (C order): balanced utterance counts, or whole speakers with ``per_spk``."""
        return selection.split(self, n, per_spk=per_spk)

    @classmethod
    def combine(cls, dirs: Sequence["DataDir"], names: Sequence[str] | None = None) -> tuple["DataDir", list[str]]:
        """Merge data dirs; returns the result and warnings.

        A duplicate utterance id is an error naming both directories; a recording
        id shared with a different path too. ``text``/``utt2dur``/``segments``
        present in only some directories: text and utt2dur are left out (with a
        warning, as Kaldi's combine_data.sh does); whole-recording utterances get
        a segment when they have a known duration.
        """
        return selection.combine(cls, dirs, names)

    # ------------------------------------------------------------------ repair
    def fix(self, probe: Callable[[str], float] | None = None) -> tuple["DataDir", list[str]]:
        """Keep the utterances usable in every file (as Kaldi's fix_data_dir.sh); returns notes.

        An utterance survives when it is in utt2spk, has a non-empty transcript and
        a segment when text/segments exist, its segment is valid and its recording
        has a wav.scp entry. Recordings no utterance uses are dropped; the other
        files are filtered. Missing utt2dur/reco2dur lines are filled from the
        segments or with ``probe(audio_path) -> seconds`` (which raises XllmError
        for unreadable audio); without a probe (or when it fails) the incomplete
        file is left out. Audio files are not opened otherwise.
        """
        return repair.fix(self, probe)

    # ------------------------------------------------------------ statistics
    def info(self) -> dict:
        """Counts and duration statistics (seconds) as a JSON-ready dict."""
        ids = self.utt_ids()
        durations = [d for d in (self.duration_of(u) for u in ids) if d is not None]
        recordings = {self.recording_of(u) for u in ids}
        stats: dict[str, float | None] = {}
        if durations:
            ordered = sorted(durations)
            stats = {
                "min": ordered[0],
                "mean": statistics.fmean(ordered),
                "median": statistics.median(ordered),
                "max": ordered[-1],
            }
            for p in (5, 10, 25, 75, 90, 95, 99):
                stats[f"p{p}"] = _percentile(ordered, p)
        return {
            "path": str(self.path) if self.path is not None else None,
            "utterances": len(ids),
            "speakers": len(set(self.utt2spk.values())),
            "recordings": len(recordings),
            "total_hours": sum(durations) / 3600.0 if durations else None,
            "durations_known": len(durations),
            "duration_seconds": stats or None,
            "segments": self.segments is not None,
            "text": sum(1 for u in ids if self.text is not None and u in self.text),
            "images": sum(1 for u in ids if self.image is not None and u in self.image),
            "video": sum(1 for u in ids if self.video is not None and u in self.video),
            "prompts": sum(1 for u in ids if self.prompt is not None and u in self.prompt),
        }


def _percentile(ordered: list[float], p: float) -> float:
    """Linear-interpolated percentile of sorted values (numpy's default method)."""
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def write_datadir(path: str | Path, utterances: Iterable[Utterance]) -> None:
    """Write a data directory for ``utterances`` (corpus prep's one call)."""
    DataDir.from_utterances(utterances).save(path)
