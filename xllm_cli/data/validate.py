"""Data directory validation: the checks of Kaldi's utils/validate_data_dir.sh, and ours.

Every problem is reported as ``file:line: problem`` (line omitted when a whole
file is at fault) so that an editor can jump to it. Errors make a directory
unusable; warnings are things Kaldi tools dislike or that are probably mistakes.
A rule that fires on many lines is reported for the first few and then summed up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import XllmError
from .datadir import DataDir
from .durations import AudioHeader, audio_header
from .layout import (
    IMAGE_SCP,
    KNOWN_FILES,
    RECO2DUR,
    SEGMENT_END_TOLERANCE,
    SEGMENTS,
    SPK2UTT,
    TEXT,
    UTT2DUR,
    UTT2SPK,
    VIDEO_SCP,
    WAV_SCP,
    format_seconds,
    resolve_path,
)
from .tables import c_sort_key

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
MAX_UTTERANCE_SECONDS = 3600.0
DURATION_TOLERANCE = 0.1  # utt2dur vs. audio / segments
MAX_REPORTS_PER_RULE = 20


@dataclass
class ValidationReport:
    """Problems found in a data directory, each ``file:line: problem``."""

    path: Path
    num_utterances: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class _Collector:
    """Adds problems, capping each rule at MAX_REPORTS_PER_RULE lines per file."""

    def __init__(self, report: ValidationReport):
        self.report = report
        self.counts: dict[tuple[str, str, bool], int] = {}

    def add(self, rule: str, where: str, message: str, warning: bool = False) -> None:
        """One problem at ``where`` (``file:line`` or ``file``)."""
        file, _, line = where.rpartition(":")
        self.add_text(
            rule, file if line.isdigit() else where, f"{where}: {'warning: ' if warning else ''}{message}", warning
        )

    def add_text(self, rule: str, file: str, text: str, warning: bool = False) -> None:
        """A problem already formatted as ``file:line: problem``."""
        key = (rule, file, warning)
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        if count <= MAX_REPORTS_PER_RULE:
            (self.report.warnings if warning else self.report.errors).append(text)

    def finish(self) -> None:
        for (rule, file, warning), count in self.counts.items():
            if count > MAX_REPORTS_PER_RULE:
                target = self.report.warnings if warning else self.report.errors
                target.append(f"{file}: ... and {count - MAX_REPORTS_PER_RULE} more like this ({rule})")


def validate_datadir(path: str | Path, check_audio: bool = False) -> ValidationReport:
    """Check a data directory; see the module docstring. Never raises for bad content.

    Every audio file's header is read (cheap: no decoding): an unreadable or
    truncated file is an error, one Kaldi or lhotse cannot read as is a warning.
    ``check_audio`` also decodes every file in full (slow), which finds damage
    past the header.
    """
    root = Path(path)
    report = ValidationReport(path=root)
    if not root.is_dir():
        report.errors.append(f"{root}: data directory not found")
        return report
    dd = DataDir.load(root, lenient=True)
    report.num_utterances = len(dd.utt2spk)
    c = _Collector(report)
    if not dd.utt2spk and (root / UTT2SPK).is_file():
        c.add("empty", str(root / UTT2SPK), "no utterances: the data directory is empty")
    for problem in dd.load_problems:
        file = next((str(root / n) for n in KNOWN_FILES if problem.startswith(f"{root / n}:")), str(root))
        c.add_text("unreadable line", file, problem)

    def where(name: str, key: str | None = None) -> str:
        line = dd.lines.get(name, {}).get(key) if key is not None else None
        return f"{root / name}:{line}" if line is not None else f"{root / name}"

    for name, line in dd.unsorted.items():
        c.add(
            "unsorted",
            f"{root / name}:{line}",
            f"keys are not sorted in C byte order (fix with: xllm data sort {root})",
        )

    _check_speakers(dd, c, where, root)
    _check_audio_entries(dd, c, where)
    _check_referenced_files(dd, c, where)
    _check_per_utterance_files(dd, c, where)
    _check_reco2dur(dd, c, where)
    measured = _probe_all(dd, c, where)
    rec_dur = _check_audio_headers(dd, c, where, measured)  # recording durations: the headers, else reco2dur
    if check_audio:
        _decode_all(dd, c, where, measured)
    _check_segment_ends(dd, c, where, rec_dur)
    c.finish()
    return report


def _check_audio_entries(dd: DataDir, c: _Collector, where) -> None:
    """Every utterance needs a recording in wav.scp (through its segment when there are segments)."""
    utts = set(dd.utt2spk)
    used_recs: set[str] = set()
    if dd.segments is None:
        for utt in dd.utt2spk:
            used_recs.add(utt)
            if utt not in dd.wav and utt not in dd.rejected_wav:
                c.add("no-audio", where(UTT2SPK, utt), f"utterance '{utt}' has no audio: no wav.scp entry '{utt}'")
        for rec in dd.wav:
            if rec not in utts:
                c.add(
                    "orphan-recording",
                    where(WAV_SCP, rec),
                    f"recording '{rec}' is not an utterance in utt2spk (without segments, wav.scp keys are utterance ids)",
                )
    else:
        for utt in dd.utt2spk:
            if utt not in dd.segments:
                c.add("no-segment", where(UTT2SPK, utt), f"utterance '{utt}' has no line in segments")
        for utt, (rec, start, end) in dd.segments.items():
            if utt not in utts:
                c.add("unknown-utt", where(SEGMENTS, utt), f"utterance '{utt}' is not in utt2spk")
            used_recs.add(rec)
            if rec not in dd.wav and rec not in dd.rejected_wav:
                c.add("no-audio", where(SEGMENTS, utt), f"utterance '{utt}': recording '{rec}' is not in wav.scp")
            if start < 0:
                c.add(
                    "bad-segment", where(SEGMENTS, utt), f"utterance '{utt}': start {format_seconds(start)} is negative"
                )
            if end <= start:
                c.add(
                    "bad-segment",
                    where(SEGMENTS, utt),
                    f"utterance '{utt}': end {format_seconds(end)} is not after start {format_seconds(start)}",
                )
        for rec in dd.wav:
            if rec not in used_recs:
                c.add("unused-recording", where(WAV_SCP, rec), f"recording '{rec}' is used by no segment", warning=True)


def _check_referenced_files(dd: DataDir, c: _Collector, where) -> None:
    """Audio, image and video files named by the tables exist."""
    for name, table in ((WAV_SCP, dd.wav), (IMAGE_SCP, dd.image), (VIDEO_SCP, dd.video)):
        for key, value in (table or {}).items():
            if not os.path.isfile(resolve_path(value)):
                c.add("missing-file", where(name, key), f"'{key}': file not found: {resolve_path(value)}")


def _check_per_utterance_files(dd: DataDir, c: _Collector, where) -> None:
    """text, utt2dur, image.scp, video.scp, prompt: keys are utterances; text and utt2dur cover them all."""
    utts = set(dd.utt2spk)
    for name, table in dd.per_utterance_tables():
        for key in table or {}:
            if key not in utts:
                c.add("unknown-utt", where(name, key), f"'{key}' is not an utterance in utt2spk")
    if dd.text is not None:
        _check_every_utterance_in(dd, dd.text, c, where, "no-text", "has no transcript in text")
        for utt, transcript in dd.text.items():
            if not transcript.strip():
                c.add("empty-text", where(TEXT, utt), f"utterance '{utt}' has an empty transcript")
    if dd.utt2dur is not None:
        _check_every_utterance_in(dd, dd.utt2dur, c, where, "no-dur", "has no line in utt2dur")
        for utt, seconds in dd.utt2dur.items():
            if seconds <= 0:
                c.add(
                    "bad-dur",
                    where(UTT2DUR, utt),
                    f"utterance '{utt}': duration {format_seconds(seconds)} is not positive",
                )
            elif dd.segments is not None and utt in dd.segments:
                _, start, end = dd.segments[utt]
                if end > start and abs((end - start) - seconds) > DURATION_TOLERANCE:
                    c.add(
                        "dur-mismatch",
                        where(UTT2DUR, utt),
                        f"utterance '{utt}': utt2dur says {format_seconds(seconds)} s, its segment is {format_seconds(end - start)} s",
                    )


def _check_reco2dur(dd: DataDir, c: _Collector, where) -> None:
    """reco2dur covers wav.scp with positive durations."""
    if dd.reco2dur is not None:
        for rec in dd.wav:
            if rec not in dd.reco2dur:
                c.add("no-dur", where(WAV_SCP, rec), f"recording '{rec}' has no line in reco2dur")
        for rec, seconds in dd.reco2dur.items():
            if rec not in dd.wav and rec not in dd.rejected_wav:
                c.add("unknown-rec", where(RECO2DUR, rec), f"recording '{rec}' is not in wav.scp")
            elif seconds <= 0:
                c.add(
                    "bad-dur",
                    where(RECO2DUR, rec),
                    f"recording '{rec}': duration {format_seconds(seconds)} is not positive",
                )


def _check_audio_headers(dd: DataDir, c: _Collector, where, measured: dict[str, AudioHeader]) -> dict[str, float]:
    """The audio headers read: sample rate, length, agreement with reco2dur/utt2dur; returns recording durations."""
    rec_dur: dict[str, float] = dict(dd.reco2dur or {})
    for rec, header in measured.items():
        seconds, rate = header.seconds, header.rate
        if header.truncated:
            c.add("truncated", where(WAV_SCP, rec), f"recording '{rec}': {header.truncated}: {resolve_path(dd.wav[rec])}")
        kaldi = header.kaldi_problem()
        if kaldi:
            c.add(
                "not-kaldi-audio",
                where(WAV_SCP, rec),
                f"recording '{rec}': {kaldi}: Kaldi and lhotse read 16 kHz mono 16-bit PCM WAV "
                "(convert with: xllm prep dir AUDIO_DIR DATA --resample 16000)",
                warning=True,
            )
        if rate is not None and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            c.add(
                "rate",
                where(WAV_SCP, rec),
                f"recording '{rec}': sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}",
            )
        if seconds <= 0:
            c.add("empty-audio", where(WAV_SCP, rec), f"recording '{rec}': audio is empty (0 s)")
            continue
        if dd.reco2dur is not None and rec in dd.reco2dur and abs(dd.reco2dur[rec] - seconds) > DURATION_TOLERANCE:
            c.add(
                "dur-mismatch",
                where(RECO2DUR, rec),
                f"recording '{rec}': reco2dur says {format_seconds(dd.reco2dur[rec])} s, the audio is {format_seconds(seconds)} s",
            )
        rec_dur[rec] = seconds
    for utt in dd.utt2spk:
        if dd.segments is not None:
            if utt not in dd.segments:
                continue
            _, start, end = dd.segments[utt]
            actual = end - start
        elif utt in rec_dur:
            actual = rec_dur[utt]
        else:
            continue
        if actual >= MAX_UTTERANCE_SECONDS:
            c.add(
                "too-long",
                where(UTT2SPK, utt),
                f"utterance '{utt}' is {format_seconds(actual)} s long (>= 1 h); segment the recording",
            )
        if (
            dd.segments is None
            and dd.utt2dur is not None
            and utt in dd.utt2dur
            and abs(dd.utt2dur[utt] - actual) > DURATION_TOLERANCE
        ):
            c.add(
                "dur-mismatch",
                where(UTT2DUR, utt),
                f"utterance '{utt}': utt2dur says {format_seconds(dd.utt2dur[utt])} s, the audio is {format_seconds(actual)} s",
            )
    return rec_dur


def _check_segment_ends(dd: DataDir, c: _Collector, where, rec_dur: dict[str, float]) -> None:
    """No segment ends after the end of its recording (when that is known)."""
    if dd.segments is not None:
        for utt, (rec, start, end) in dd.segments.items():
            if rec in rec_dur and end > rec_dur[rec] + SEGMENT_END_TOLERANCE:
                c.add(
                    "past-end",
                    where(SEGMENTS, utt),
                    f"utterance '{utt}': segment ends at {format_seconds(end)} s, after the end of recording '{rec}' "
                    f"({format_seconds(rec_dur[rec])} s)",
                )


def _check_every_utterance_in(dd: DataDir, table: dict, c: _Collector, where, rule: str, problem: str) -> None:
    """An optional per-utterance file, once present, must cover every utterance of utt2spk."""
    for utt in dd.utt2spk:
        if utt not in table:
            c.add(rule, where(UTT2SPK, utt), f"utterance '{utt}' {problem}")


def _probe_all(dd: DataDir, c: _Collector, where) -> dict[str, AudioHeader]:
    """Read the header of every existing audio file (with a progress bar on a terminal)."""
    from ..console import progress_bar

    measured: dict[str, AudioHeader] = {}
    with progress_bar("files", transient=True) as bar:
        task = bar.add_task("audio headers", total=len(dd.wav))
        for rec, value in dd.wav.items():
            bar.advance(task)
            file = resolve_path(value)
            if not os.path.isfile(file):
                continue  # reported as a missing file
            try:
                measured[rec] = audio_header(file)
            except XllmError as e:
                c.add("unreadable", where(WAV_SCP, rec), f"recording '{rec}': {e}")
    return measured


def _decode_all(dd: DataDir, c: _Collector, where, readable: dict[str, AudioHeader]) -> None:
    """Decode every audio file with a readable header in full: damage past a sound header shows only here."""
    from ..console import progress_bar
    from .audio import load_audio

    with progress_bar("files", transient=True) as bar:
        task = bar.add_task("decode audio", total=len(readable))
        for rec in readable:
            bar.advance(task)
            try:
                load_audio(resolve_path(dd.wav[rec]))
            except XllmError as e:
                c.add("undecodable", where(WAV_SCP, rec), f"recording '{rec}': {e}")


def _check_speakers(dd: DataDir, c: _Collector, where, root: Path) -> None:
    """utt2spk/spk2utt agree; speaker ids prefix utterance ids (Kaldi's sorting rule)."""
    if dd.spk2utt_file is None:
        if (root / UTT2SPK).is_file():
            c.add("no-spk2utt", str(root / SPK2UTT), f"file not found (regenerate it with: xllm data fix {root})")
    else:
        listed: dict[str, str] = {}
        for spk, members in dd.spk2utt_file.items():
            for utt in members:
                if utt in listed:
                    c.add(
                        "spk2utt",
                        where(SPK2UTT, spk),
                        f"utterance '{utt}' is listed twice (also under '{listed[utt]}')",
                    )
                    continue
                listed[utt] = spk
                if utt not in dd.utt2spk:
                    c.add("spk2utt", where(SPK2UTT, spk), f"utterance '{utt}' of speaker '{spk}' is not in utt2spk")
                elif dd.utt2spk[utt] != spk:
                    c.add(
                        "spk2utt",
                        where(SPK2UTT, spk),
                        f"utterance '{utt}' is under speaker '{spk}' but utt2spk says '{dd.utt2spk[utt]}'",
                    )
            if [c_sort_key(u) for u in members] != sorted(c_sort_key(u) for u in members):
                c.add(
                    "spk2utt-order",
                    where(SPK2UTT, spk),
                    f"speaker '{spk}': utterances are not sorted (fix with: xllm data sort {root})",
                )
        for utt, spk in dd.utt2spk.items():
            if utt not in listed:
                c.add("spk2utt", where(UTT2SPK, utt), f"utterance '{utt}' (speaker '{spk}') is missing from spk2utt")
    for utt, spk in dd.utt2spk.items():
        if not utt.startswith(spk):
            c.add(
                "prefix",
                where(UTT2SPK, utt),
                f"speaker id '{spk}' is not a prefix of utterance id '{utt}'",
                warning=True,
            )
    by_utt = sorted(dd.utt2spk, key=c_sort_key)
    by_spk = sorted(dd.utt2spk, key=lambda u: (c_sort_key(dd.utt2spk[u]), c_sort_key(u)))
    if by_utt != by_spk:
        c.add(
            "spk-order",
            str(root / UTT2SPK),
            "not in sorted order when sorted first on speaker-id: sorting by speaker then utterance gives another "
            "order than sorting by utterance, which Kaldi's validate_data_dir.sh rejects (make every utterance id "
            "its speaker id followed by '-', with no '-' or other character sorting before it in speaker ids)",
        )
