"""What every corpus preparation shares: its report, text clean-up, durations, writing the sets.

``prepare_<corpus>`` functions (aishell, aishell2, generic folders, and any you add:
docs/extending.md) build utterances their own way and finish with these pieces, so
that every ``xllm prep`` reports, cleans text and writes data directories alike.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..console import log, progress_bar


@dataclass
class SetStats:
    utterances: int
    speakers: int
    seconds: float


@dataclass
class PrepReport:
    """What a corpus preparation did: per-set figures and what it skipped."""

    sets: dict[str, SetStats] = field(default_factory=dict)
    no_transcript: list[str] = field(default_factory=list)  # audio files without a transcript
    no_audio: list[str] = field(default_factory=list)  # transcript ids without audio
    empty_transcript: list[str] = field(default_factory=list)  # audio files (or TSV lines) whose transcript is empty
    extracted: int = 0  # archives extracted by this run

    @property
    def utterances(self) -> int:
        return sum(s.utterances for s in self.sets.values())


# One translate table: full-width Latin letters to ASCII capitals, ASCII lower case to upper case.
_UPPER_ASCII = {c: c - 0xFEE0 for c in range(0xFF21, 0xFF3B)}
_UPPER_ASCII |= {c: c - 0xFEE0 - 32 for c in range(0xFF41, 0xFF5B)}
_UPPER_ASCII |= {c: c - 32 for c in range(ord("a"), ord("z") + 1)}
_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str, remove_spaces: bool, upper: bool = True) -> str:
    """Full-width Latin letters to ASCII capitals (and a-z upper-cased) when ``upper``;
    whitespace removed (``remove_spaces``) or collapsed to single spaces."""
    if upper:
        text = text.translate(_UPPER_ASCII)
    if remove_spaces:
        return "".join(text.split())
    return _WHITESPACE.sub(" ", text).strip()


def audio_durations(paths: Sequence[str], duration_fn: Callable[[str], float], jobs: int = 1) -> list[float]:
    """Durations of ``paths`` in order, with a progress bar; ``jobs`` > 1 reads headers in threads.

    Threads help on network or cold file systems where each open waits on I/O;
    on a warm local cache one thread is as fast.
    """
    out: list[float] = []
    step = 2000
    with progress_bar("files") as progress:
        task = progress.add_task("durations", total=len(paths))
        if jobs <= 1:
            for start in range(0, len(paths), step):
                out.extend(duration_fn(p) for p in paths[start:start + step])
                progress.advance(task, min(step, len(paths) - start))
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=jobs) as pool:
                for start in range(0, len(paths), step):
                    out.extend(pool.map(duration_fn, paths[start:start + step], chunksize=64))
                    progress.advance(task, min(step, len(paths) - start))
    return out


def report_orphans(what_audio: str, no_text: list[str], what_text: str, no_audio: list[str]) -> None:
    """Log the counts (and a few examples) of skipped files/lines; the full lists go to the log file."""
    for what, items in ((what_audio, no_text), (what_text, no_audio)):
        if not items:
            continue
        examples = ", ".join(os.path.basename(i) for i in items[:3])
        log.warning(f"skipped {len(items):,} {what} (e.g. {examples}); full list in the log file")
        for item in items:
            log.debug(f"skipped ({what}): {item}")


def set_stats(utts: Iterable) -> SetStats:
    utts = list(utts)
    return SetStats(
        utterances=len(utts),
        speakers=len({u.spk for u in utts}),
        seconds=sum(u.duration or 0.0 for u in utts),
    )


def write_sets(data: str | Path, sets: dict[str, list]) -> None:
    """Write ``data/<name>`` for each set; all are complete or none is replaced.

    Every set is staged beside its folder first (:func:`xllm_cli.data.writing.stage_datadir`);
    only when every set is written are they swapped in, so an error (a bad id, a
    full disk) leaves ``data`` as it was. Files of the old folders that xllm does
    not manage (a user's ``conf/``, logs) are carried over.
    """
    from ..data.datadir import DataDir
    from ..data.writing import stage_datadir

    data = Path(data)
    existed = data.exists()
    staged = []
    try:
        for name, utts in sets.items():
            if utts:
                staged.append(stage_datadir(DataDir.from_utterances(utts), data / name))
    except BaseException:
        for part in staged:
            part.discard()
        if not existed and data.is_dir() and not any(data.iterdir()):
            data.rmdir()
        raise
    for part in staged:
        part.commit()
