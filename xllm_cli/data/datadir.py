"""Kaldi-style data directories (DESIGN.md §3): load, save and transform them.

A data directory is a handful of ``<key> <value>`` text files sorted in C byte
order. :class:`DataDir` keeps the tables as written (paths verbatim, so that a
subset or split of a directory with relative paths stays relative) and turns
them into :class:`Utterance` records on demand, resolving relative paths
against the current working directory (Kaldi's convention: recipes run from the
corpus' recipe directory).

We never execute data: ``wav.scp`` values that are command pipes (``... |``) or
Kaldi archive specifiers (``ark:...``, ``foo.ark:1234``) are rejected with an
error naming the file and line.

Loading comes in two flavours: strict (the default; the first problem is raised
as ``file:line: problem``) and lenient (problems are collected, offending lines
skipped) which ``validate`` and ``fix`` use to look at broken directories.
Cross-file consistency (an utterance without audio, ...) is only checked when
:meth:`DataDir.utterances` builds records, by :meth:`DataDir.validate` and
repaired by :meth:`DataDir.fix`.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..errors import XllmError, at, require_dir, require_file
from ..fsutil import atomic_write
from .tables import c_sort_key, decode_line, duplicate_key, parse_table_line, read_lines, split_lines, write_table

# Every file this module reads and writes. spk2utt is derived from utt2spk;
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
BACKUP_DIR = ".backup"
MISSING_CORE_FILE = "file not found (a data directory needs wav.scp and utt2spk)"

_ARK_SPEC = re.compile(r"^(ark|scp)(,[a-z]+)*:")
_ARK_OFFSET = re.compile(r"\S:\d+(\[[^\]]*\])?$")


@dataclass
class Utterance:
    """One utterance with everything the data directory says about it."""

    utt_id: str
    spk: str
    recording: str
    path: str  # audio (or video) file of the recording; absolute once loaded
    start: float | None = None  # from segments (seconds in the recording)
    end: float | None = None
    text: str | None = None
    duration: float | None = None  # seconds of speech (utt2dur, else end - start)
    image: str | None = None
    video: str | None = None
    prompt: str | None = None


def c_sorted(keys: Iterable[str]) -> list[str]:
    """Keys sorted as ``LC_ALL=C sort`` would (UTF-8 bytes)."""
    return sorted(keys, key=c_sort_key)


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


def _parse_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class _Reader:
    """Reads one table, strictly (raise at the first problem) or leniently (collect, skip).

    Keeps each key's line number so that later checks can point at the line.
    """

    def __init__(self, lenient: bool, problems: list[str]):
        self.lenient = lenient
        self.problems = problems
        self.unsorted: dict[str, int] = {}  # file -> first out-of-order line

    def problem(self, path: Path, line: int | None, message: str) -> None:
        self.report(at(path, line, message))

    def report(self, error: XllmError) -> None:
        if not self.lenient:
            raise error
        self.problems.append(str(error))

    def read(self, path: Path, allow_empty: bool = False) -> tuple[dict[str, str], dict[str, int]]:
        table: dict[str, str] = {}
        lines: dict[str, int] = {}
        previous: bytes | None = None
        for number, raw in enumerate(split_lines(path.read_bytes()), start=1):
            try:
                key, value = parse_table_line(path, number, decode_line(path, number, raw), allow_empty)
                if key in table:
                    raise duplicate_key(path, number, key, lines[key])
            except XllmError as e:  # strict: raised again; lenient: noted, line skipped
                self.report(e)
                continue
            sort_key = c_sort_key(key)
            if previous is not None and sort_key < previous and path.name not in self.unsorted:
                self.unsorted[path.name] = number
            previous = sort_key if previous is None else max(previous, sort_key)
            table[key] = value
            lines[key] = number
        return table, lines


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

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path, lenient: bool = False) -> "DataDir":
        """Read the files present in ``path``; ``wav.scp`` and ``utt2spk`` are required.

        Strict (default): raise ``XllmError("file:line: problem")`` at the first
        malformed line, duplicate key, bad UTF-8 or rejected ``wav.scp`` value.
        Files need not be sorted (``xllm data validate`` reports that).
        Lenient: collect those problems in ``load_problems`` and skip the lines.
        """
        root = require_dir(path, "data directory")
        problems: list[str] = []
        reader = _Reader(lenient, problems)
        dd = cls(path=root, load_problems=problems)

        def read(name: str, allow_empty: bool = False) -> dict[str, str] | None:
            file = root / name
            if not file.is_file():
                return None
            table, lines = reader.read(file, allow_empty)
            dd.lines[name] = lines
            return table

        def read_parsed(name: str, parse, rejected: dict[str, str] | None = None) -> dict | None:
            """Read ``name`` and convert each value with ``parse(key, value) -> (value, problem)``;
            a line with a problem is reported and left out (kept in ``rejected`` when given)."""
            table = read(name)
            if table is None:
                return None
            parsed_table = {}
            for key, value in table.items():
                parsed, problem = parse(key, value)
                if problem is None:
                    parsed_table[key] = parsed
                    continue
                reader.problem(root / name, dd.lines[name][key], problem)
                if rejected is not None:
                    rejected[key] = value
            return parsed_table

        for name in (WAV_SCP, UTT2SPK):
            if not (root / name).is_file():
                reader.problem(root / name, None, MISSING_CORE_FILE)
        dd.wav = read_parsed(WAV_SCP, _check_wav, rejected=dd.rejected_wav) or {}
        dd.utt2spk = read_parsed(UTT2SPK, _check_speaker) or {}
        spk2utt = read(SPK2UTT)
        if spk2utt is not None:
            dd.spk2utt_file = {spk: utts.split() for spk, utts in spk2utt.items()}
        dd.text = read(TEXT, allow_empty=True)
        dd.image = read(IMAGE_SCP)
        dd.video = read(VIDEO_SCP)
        dd.prompt = read(PROMPT)
        dd.segments = read_parsed(SEGMENTS, _check_segment)
        dd.utt2dur = read_parsed(UTT2DUR, _check_duration)
        dd.reco2dur = read_parsed(RECO2DUR, _check_duration)
        dd.unsorted = dict(reader.unsorted)
        return dd

    # ------------------------------------------------------------ construction
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
        utts = list(utts)
        dd = cls()
        seen: set[str] = set()
        for u in utts:
            for what, value in (("utterance id", u.utt_id), ("speaker id", u.spk), ("recording id", u.recording)):
                if not value or len(value.split()) != 1 or value != value.strip():
                    raise XllmError(f"utterance '{u.utt_id}': {what} '{value}' must be one non-empty word")
            if u.utt_id in seen:
                raise XllmError(f"duplicate utterance id '{u.utt_id}'")
            seen.add(u.utt_id)
            for what, value in (
                ("path", u.path),
                ("text", u.text),
                ("image", u.image),
                ("video", u.video),
                ("prompt", u.prompt),
            ):
                if value is not None and ("\n" in value or "\r" in value):
                    raise XllmError(f"utterance '{u.utt_id}': {what} contains a line break")
            problem = wav_value_problem(u.path)
            if problem:
                raise XllmError(f"utterance '{u.utt_id}': {problem}")
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
                    raise XllmError(
                        f"utterance '{u.utt_id}': needs an end time or a duration (the directory has segments)"
                    )
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

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path) -> None:
        """Write the tables to ``path``: C-sorted, each file atomically; spk2utt from utt2spk.

        Known files that this DataDir does not have are removed from ``path`` so that
        a stale ``segments`` or ``text`` from an earlier write cannot linger.
        """
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise XllmError(f"{root}: exists and is not a directory; give another output directory")
        root.mkdir(parents=True, exist_ok=True)
        tables: dict[str, dict[str, str]] = {
            WAV_SCP: self.wav,
            UTT2SPK: self.utt2spk,
            SPK2UTT: {spk: " ".join(utts) for spk, utts in self.speakers().items()},
        }
        if self.text is not None:
            tables[TEXT] = self.text
        if self.segments is not None:
            tables[SEGMENTS] = {
                utt: f"{rec} {format_seconds(start)} {format_seconds(end)}"
                for utt, (rec, start, end) in self.segments.items()
            }
        for name, durations in ((UTT2DUR, self.utt2dur), (RECO2DUR, self.reco2dur)):
            if durations is not None:
                tables[name] = {k: format_seconds(v) for k, v in durations.items()}
        for name, table in ((IMAGE_SCP, self.image), (VIDEO_SCP, self.video), (PROMPT, self.prompt)):
            if table is not None:
                tables[name] = table
        for name, table in tables.items():
            write_table(root / name, table)
        for name in KNOWN_FILES:
            if name not in tables and (root / name).is_file():
                (root / name).unlink()

    # --------------------------------------------------------------- selecting
    def select(self, utts: Iterable[str]) -> "DataDir":
        """A DataDir with only ``utts`` (and the recordings they use); values copied verbatim."""
        keep = set(utts) & set(self.utt2spk)
        recs = {self.recording_of(u) for u in keep}

        def pick(table, keys):
            return None if table is None else {k: v for k, v in table.items() if k in keys}

        return DataDir(
            wav=pick(self.wav, recs),
            utt2spk=pick(self.utt2spk, keep),
            text=pick(self.text, keep),
            segments=pick(self.segments, keep),
            utt2dur=pick(self.utt2dur, keep),
            reco2dur=pick(self.reco2dur, recs),
            image=pick(self.image, keep),
            video=pick(self.video, keep),
            prompt=pick(self.prompt, keep),
        )

    def subset(
        self,
        first: int | None = None,
        last: int | None = None,
        utt_list: Iterable[str] | None = None,
        spk_list: Iterable[str] | None = None,
    ) -> "DataDir":
        """Exactly one of: the first/last N utterances (C order), listed utterances, listed speakers."""
        given = [x is not None for x in (first, last, utt_list, spk_list)]
        if sum(given) != 1:
            raise XllmError("subset needs exactly one of --first, --last, --utt-list, --spk-list")
        ids = self.utt_ids()
        if first is not None or last is not None:
            n = first if first is not None else last
            if n < 0:
                raise XllmError(f"subset size must be >= 0, got {n}")
            return self.select(ids[:n] if first is not None else ids[len(ids) - n :])
        if utt_list is not None:
            return self.select(utt_list)
        speakers = set(spk_list)
        return self.select(u for u in ids if self.utt2spk[u] in speakers)

    def split(self, n: int, per_spk: bool = False) -> list["DataDir"]:
        """``n`` contiguous parts (C order): balanced utterance counts, or whole speakers with ``per_spk``."""
        if n < 1:
            raise XllmError(f"cannot split into {n} parts: need at least 1")
        ids = self.utt_ids()
        if not per_spk:
            if n > len(ids):
                raise XllmError(f"cannot split {len(ids)} utterances into {n} parts")
            return [self.select(ids[k * len(ids) // n : (k + 1) * len(ids) // n]) for k in range(n)]
        spk2utt = self.speakers()
        speakers = list(spk2utt)
        if n > len(speakers):
            raise XllmError(f"cannot split {len(speakers)} speakers into {n} parts (--per-spk keeps speakers whole)")
        # Cut the speaker list where the running utterance count is nearest to
        # k/n of the total, keeping at least one speaker per part.
        counts = [len(spk2utt[s]) for s in speakers]
        cumulative = [0]
        for c in counts:
            cumulative.append(cumulative[-1] + c)
        total = cumulative[-1]
        cuts = [0]
        for k in range(1, n):
            lo, hi = cuts[-1] + 1, len(speakers) - (n - k)
            target = k * total / n
            best = min(range(lo, hi + 1), key=lambda i: (abs(cumulative[i] - target), i))
            cuts.append(best)
        cuts.append(len(speakers))
        parts = []
        for a, b in zip(cuts, cuts[1:]):
            chosen = {s for s in speakers[a:b]}
            parts.append(self.select(u for u in ids if self.utt2spk[u] in chosen))
        return parts

    @classmethod
    def combine(cls, dirs: Sequence["DataDir"], names: Sequence[str] | None = None) -> tuple["DataDir", list[str]]:
        """Merge data dirs; returns the result and warnings.

        A duplicate utterance id is an error naming both directories; a recording
        id shared with a different path too. ``text``/``utt2dur``/``segments``
        present in only some directories: text and utt2dur are left out (with a
        warning, as Kaldi's combine_data.sh does); whole-recording utterances get
        a segment when they have a known duration.
        """
        names = (
            [str(d.path) if d.path is not None else f"#{i + 1}" for i, d in enumerate(dirs)]
            if names is None
            else list(names)
        )
        warnings: list[str] = []
        out = cls()
        owner: dict[str, str] = {}
        rec_owner: dict[str, str] = {}
        for d, name in zip(dirs, names):
            for utt in d.utt2spk:
                if utt in owner:
                    raise XllmError(f"duplicate utterance id '{utt}' in {owner[utt]} and {name}")
                owner[utt] = name
            for rec, value in d.wav.items():
                if rec in out.wav and out.wav[rec] != value:
                    raise XllmError(f"recording '{rec}' has different paths in {rec_owner[rec]} and {name}")
                out.wav[rec] = value
                rec_owner.setdefault(rec, name)
            out.utt2spk.update(d.utt2spk)
        for attr, file in (("text", TEXT), ("utt2dur", UTT2DUR), ("reco2dur", RECO2DUR)):
            tables = [getattr(d, attr) for d in dirs]
            if all(t is not None for t in tables):
                setattr(out, attr, {k: v for t in tables for k, v in t.items()})
            elif any(t is not None for t in tables):
                warnings.append(f"{file} is missing in some directories; the combined directory has none")
        for attr in ("image", "video", "prompt"):
            tables = [getattr(d, attr) for d in dirs if getattr(d, attr) is not None]
            if tables:
                setattr(out, attr, {k: v for t in tables for k, v in t.items()})
        if any(d.segments is not None for d in dirs):
            out.segments = {}
            for d, name in zip(dirs, names):
                if d.segments is not None:
                    out.segments.update(d.segments)
                    continue
                for utt in d.utt2spk:
                    dur = d.duration_of(utt)
                    if dur is None:
                        raise XllmError(
                            f"{name}: has no segments and no duration for '{utt}' while other directories have "
                            "segments; write utt2dur first"
                        )
                    out.segments[utt] = (utt, 0.0, dur)
        return out, warnings

    # ------------------------------------------------------------------ repair
    def fix(self, probe: Callable[[str], float] | None = None) -> tuple["DataDir", list[str]]:
        """Keep the utterances usable in every file (as Kaldi's fix_data_dir.sh); returns notes.

        An utterance survives when it is in utt2spk, has a non-empty transcript and
        a segment when text/segments exist, its segment is valid and its recording
        has a wav.scp entry. Recordings no utterance uses are dropped; the other
        files are filtered. Missing utt2dur/reco2dur lines are filled from the
        segments or with ``probe(audio_path) -> seconds``; without a probe (or when
        it fails) the incomplete file is left out. Audio files are not opened otherwise.
        """
        notes: list[str] = []
        keep = []
        for utt in self.utt_ids():
            reason = None
            if self.text is not None and utt not in self.text:
                reason = "no text"
            elif self.text is not None and not self.text[utt].strip():
                reason = "empty transcript"
            elif self.segments is not None and utt not in self.segments:
                reason = "no segment"
            elif self.recording_of(utt) not in self.wav:
                reason = f"no audio (recording '{self.recording_of(utt)}' not in wav.scp)"
            elif self.segments is not None:
                _, start, end = self.segments[utt]
                known = self.reco2dur.get(self.recording_of(utt)) if self.reco2dur is not None else None
                if not 0 <= start < end:
                    reason = f"bad segment {format_seconds(start)}..{format_seconds(end)}"
                elif known is not None and end > known + SEGMENT_END_TOLERANCE:
                    reason = f"segment ends at {format_seconds(end)} s, after the recording's end ({format_seconds(known)} s)"
            if reason is None:
                keep.append(utt)
            else:
                notes.append(f"dropped utterance '{utt}': {reason}")
        for name, table in [(SEGMENTS, self.segments), *self.per_utterance_tables()]:
            for key in table or {}:
                if key not in self.utt2spk:
                    notes.append(f"dropped '{key}' from {name}: not in utt2spk")
        fixed = self.select(keep)
        for rec in c_sorted(set(self.wav) - set(fixed.wav)):
            notes.append(f"dropped recording '{rec}' from wav.scp: no utterance uses it")
        fixed._complete_durations(probe, notes)
        return fixed, notes

    def _complete_durations(self, probe: Callable[[str], float] | None, notes: list[str]) -> None:
        """Fill missing utt2dur/reco2dur lines (segments, then ``probe``) or drop the incomplete file."""
        cache: dict[str, float | None] = {}

        def measure(rec: str) -> float | None:
            if rec not in cache:
                try:
                    cache[rec] = probe(resolve_path(self.wav[rec])) if probe is not None else None
                except Exception:  # unreadable audio: validate --check-audio reports it
                    cache[rec] = None
            return cache[rec]

        for name in (RECO2DUR, UTT2DUR):
            table = getattr(self, name)
            if table is None:
                continue
            keys = list(self.wav) if name == RECO2DUR else list(self.utt2spk)
            missing = [k for k in keys if k not in table]
            for key in missing:
                if name == UTT2DUR and self.segments is not None:
                    _, start, end = self.segments[key]
                    seconds = end - start
                else:
                    seconds = (self.reco2dur or {}).get(key) if name == UTT2DUR else None
                    seconds = measure(key) if seconds is None else seconds
                if seconds is None:
                    setattr(self, name, None)
                    notes.append(f"removed {name}: no duration for '{key}' (and maybe others)")
                    break
                table[key] = seconds
            else:
                if missing:
                    notes.append(f"added {len(missing)} missing line(s) to {name}")

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

    def validate(self, check_audio: bool = False):
        """Validate the directory this was loaded from (see :func:`validate.validate_datadir`)."""
        if self.path is None:
            raise XllmError("validate needs a data directory on disk: save it first")
        from .validate import validate_datadir

        return validate_datadir(self.path, check_audio=check_audio)


SEGMENT_END_TOLERANCE = 0.02  # seconds a segment may run past the recording (rounding)


def _parse_segment(value: str) -> tuple[str, float, float] | str:
    """``<recording> <start> <end>`` -> tuple, or the problem as a string."""
    fields_ = value.split()
    if len(fields_) != 3:
        return f"segments lines are '<utt> <recording> <start> <end>', got '{value}'"
    rec, start_text, end_text = fields_
    if end_text == "-1":
        return "end time -1 (to the end of the recording) is not supported; write the end in seconds"
    start, end = _parse_float(start_text), _parse_float(end_text)
    if start is None or end is None:
        return f"start/end '{start_text} {end_text}' are not numbers"
    return rec, start, end


def _check_wav(rec: str, value: str) -> tuple[str, str | None]:
    problem = wav_value_problem(value)
    return value, f"recording '{rec}': {problem}" if problem else None


def _check_speaker(utt: str, spk: str) -> tuple[str, str | None]:
    return spk, f"utterance '{utt}': speaker id '{spk}' has spaces" if len(spk.split()) != 1 else None


def _check_segment(utt: str, value: str) -> tuple[tuple[str, float, float] | None, str | None]:
    parsed = _parse_segment(value)
    return (None, f"utterance '{utt}': {parsed}") if isinstance(parsed, str) else (parsed, None)


def _check_duration(key: str, value: str) -> tuple[float | None, str | None]:
    seconds = _parse_float(value)
    if seconds is None or seconds < 0:
        return None, f"'{key}': duration '{value}' is not a number >= 0"
    return seconds, None


def _percentile(ordered: list[float], p: float) -> float:
    """Linear-interpolated percentile of sorted values (numpy's default method)."""
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# ---------------------------------------------------------------------------
# Directory-level operations used by the CLI and by recipes.


def write_datadir(path: str | Path, utterances: Iterable[Utterance]) -> None:
    """Write a data directory for ``utterances`` (corpus prep's one call)."""
    DataDir.from_utterances(utterances).save(path)


def backup_files(path: str | Path) -> Path:
    """Copy the known files of ``path`` into ``path/.backup/`` (replacing an older backup)."""
    root = Path(path)
    backup = root / BACKUP_DIR
    backup.mkdir(exist_ok=True)
    for name in KNOWN_FILES:
        old = backup / name
        if (root / name).is_file():
            shutil.copy2(root / name, old)
        elif old.exists():
            old.unlink()
    return backup


def fix_datadir(path: str | Path) -> list[str]:
    """Repair ``path`` in place (sort, drop unusable utterances, regenerate spk2utt).

    The original files are kept in ``path/.backup/``. Returns what was changed:
    lines skipped while reading and utterances/recordings dropped.
    """
    from .validate import probe_audio

    root = _require_datadir(path)
    dd = DataDir.load(root, lenient=True)
    fixed, notes = dd.fix(probe=lambda file: probe_audio(file)[0])
    notes = [f"skipped {p}" for p in dd.load_problems] + notes
    if len(dd) and not len(fixed):
        first = next((n for n in notes if n.startswith("dropped utterance")), "")
        raise XllmError(f"{root}: fixing would drop every utterance ({first}); nothing changed")
    backup_files(path)
    fixed.save(path)
    return notes


def _require_datadir(path: str | Path) -> Path:
    """``path`` as a Path; a one-line error unless it is a folder with wav.scp and utt2spk."""
    root = require_dir(path, "data directory")
    for name in (WAV_SCP, UTT2SPK):
        if not (root / name).is_file():
            raise at(root / name, None, MISSING_CORE_FILE)
    return root


def sort_datadir(path: str | Path) -> list[str]:
    """Sort every known file of ``path`` in C order (lines kept as they are); returns files changed.

    Only ordering changes: malformed lines are reported, not dropped, and spk2utt's
    utterance lists are sorted too.
    """
    root = _require_datadir(path)
    changed = []
    for name in KNOWN_FILES:
        file = root / name
        if not file.is_file():
            continue
        data = file.read_bytes()
        lines = []
        for number, line in read_lines(file):
            if not line.strip():
                raise at(file, number, f"blank line; fix it before sorting (or run: xllm data fix {root})")
            lines.append(line.strip())
        if name == SPK2UTT:
            lines = [" ".join([p[0]] + c_sorted(p[1:])) for p in (line.split() for line in lines)]
        new = sorted(lines, key=lambda line: c_sort_key(line.split(maxsplit=1)[0]))
        text = "".join(line + "\n" for line in new)
        if text.encode("utf-8") != data:
            with atomic_write(file) as f:
                f.write(text)
            changed.append(name)
    return changed


def read_id_list(path: str | Path) -> list[str]:
    """First field of each non-blank line (an utterance or speaker list; Kaldi tables work too)."""
    file = require_file(path, "list file")
    return [line.split()[0] for _, line in read_lines(file) if line.strip()]


def subset_datadir(
    path: str | Path,
    out: str | Path,
    first: int | None = None,
    last: int | None = None,
    utt_list: str | Path | None = None,
    spk_list: str | Path | None = None,
) -> tuple[DataDir, list[str]]:
    """Write a subset of ``path`` to ``out``; returns it and warnings (listed ids not found)."""
    dd = DataDir.load(path)
    warnings = []
    utts = read_id_list(utt_list) if utt_list is not None else None
    spks = read_id_list(spk_list) if spk_list is not None else None
    if utts is not None:
        missing = [u for u in utts if u not in dd.utt2spk]
        if missing:
            warnings.append(f"{utt_list}: {len(missing)} listed utterances are not in {path} (e.g. '{missing[0]}')")
    if spks is not None:
        known = set(dd.utt2spk.values())
        missing = [s for s in spks if s not in known]
        if missing:
            warnings.append(f"{spk_list}: {len(missing)} listed speakers are not in {path} (e.g. '{missing[0]}')")
    sub = dd.subset(first=first, last=last, utt_list=utts, spk_list=spks)
    if Path(out).resolve() == Path(path).resolve():
        raise XllmError(f"{out}: the subset must go to another directory than its source")
    sub.save(out)
    return sub, warnings


def split_datadir(path: str | Path, n: int, per_spk: bool = False) -> list[Path]:
    """Write ``path/split{n}/{1..n}`` (Kaldi's split_data.sh layout); returns the part dirs."""
    dd = DataDir.load(path)
    parts = dd.split(n, per_spk=per_spk)
    out = []
    for k, part in enumerate(parts, start=1):
        target = Path(path) / f"split{n}" / str(k)
        part.save(target)
        out.append(target)
    return out


def combine_datadirs(out: str | Path, dirs: Sequence[str | Path]) -> tuple[DataDir, list[str]]:
    """Write the union of ``dirs`` to ``out``; returns it and warnings."""
    if not dirs:
        raise XllmError("combine needs at least one source directory")
    loaded = [DataDir.load(d) for d in dirs]
    out_resolved = Path(out).resolve()
    for d in dirs:
        if Path(d).resolve() == out_resolved:
            raise XllmError(f"{out}: the output directory must not be one of the sources")
    combined, warnings = DataDir.combine(loaded, [str(d) for d in dirs])
    combined.save(out)
    return combined, warnings
