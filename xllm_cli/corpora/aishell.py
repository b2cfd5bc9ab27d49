"""AISHELL-1 (openslr 33) into Kaldi data directories ``DATA/{train,dev,test}``.

Layout as distributed (CORPUS is the folder holding ``data_aishell/``, or that
folder itself)::

    data_aishell/transcript/aishell_transcript_v0.8.txt   BAC009S0002W0122 而 对 楼市 成交 ...
    data_aishell/wav/S0002.tar.gz ...                      members train/S0002/BAC009S0002W0122.wav
    data_aishell/wav/{train,dev,test}/S0002/BAC009S0002W0122.wav   (once extracted)

A ``data_aishell.tgz`` beside (or instead of) ``data_aishell/`` is extracted
too. Tarballs are extracted in place, safely and resumably (see
:mod:`xllm_cli.corpora.archive`).

Identifiers. Utterance ids keep the corpus' own ``BAC009S0002W0122`` so that
per-utterance results line up with Kaldi, ESPnet, WeNet and lhotse; the
speaker id is the id's prefix up to ``W`` (``BAC009S0002``), which names the
same person as the folder ``S0002`` but, unlike it, is a prefix of the
utterance id as Kaldi requires (sorting by utterance then agrees with sorting
by speaker).

Text. The transcript's word-segmentation spaces are removed (every Mandarin
recipe scores characters); full-width Latin letters become ASCII and Latin
letters are upper-cased, as the WeNet and lhotse recipes do, so that the rare
English letters score consistently.

Speed. Durations come from parsing the RIFF header of each wav directly
(:func:`xllm_cli.data.durations.wav_duration`; a few microseconds, no decoding) with a soundfile
fallback for anything unusual; folders are listed with ``os.scandir``. The
real corpus (141,925 wavs) prepares in seconds once the file system has it
cached.

The pieces every corpus preparation shares (the report, text clean-up, duration
listing, writing several sets at once) live in :mod:`xllm_cli.corpora.common`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

from ..console import log, progress_bar
from ..data.durations import wav_duration
from ..data.tables import decode_line
from ..errors import XllmError, at
from .archive import is_extracted, safe_extract
from .common import PrepReport, audio_durations, clean_text, report_orphans, set_stats, write_sets

TRANSCRIPT = Path("transcript") / "aishell_transcript_v0.8.txt"
PARTS = ("train", "dev", "test")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# AISHELL-1's published sizes, for the sanity message after prep.
EXPECTED = {"train": (120098, 340), "dev": (14326, 40), "test": (7176, 20)}
_SPEAKER_OF = re.compile(r"^(.+?)W\d+$")


# ---------------------------------------------------------------------------
# AISHELL-1


def find_aishell_root(corpus: str | Path, extract: bool = True) -> Path:
    """The ``data_aishell`` folder for ``corpus`` (the folder holding it, or itself)."""
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise XllmError(f"{corpus}: corpus folder not found")
    for candidate in (corpus / "data_aishell", corpus):
        if (candidate / "wav").is_dir() or (candidate / "transcript").is_dir():
            return candidate
    for name in ("data_aishell.tgz", "data_aishell.tar.gz"):
        tarball = corpus / name
        if tarball.is_file() and extract:
            log.info(f"extracting {tarball} (once; a marker file makes reruns skip it)")
            safe_extract(tarball, corpus)
            if (corpus / "data_aishell").is_dir():
                return corpus / "data_aishell"
    raise XllmError(
        f"{corpus}: no AISHELL-1 corpus here (expected data_aishell/wav/ and "
        f"data_aishell/{TRANSCRIPT.as_posix()}, or data_aishell.tgz)"
    )


def read_aishell_transcript(path: str | Path, remove_spaces: bool = True) -> dict[str, str]:
    """``utt -> text``; one-line errors name file:line for no text, duplicates, bad UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise XllmError(f"{path}: transcript file not found")
    return parse_transcript(path, path.read_bytes(), remove_spaces=remove_spaces)


def iter_id_lines(path: Path, data: bytes) -> Iterator[tuple[int, str, str]]:
    """``(line number, utterance id, rest of the line)`` of a corpus list (``<id> <value>``,
    space or tab separated); blank lines skipped, a byte-order mark dropped, a repeated
    id or bad UTF-8 a one-line error naming the line."""
    first_line: dict[str, int] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        parts = decode_line(path, number, raw).split(maxsplit=1)
        if not parts:
            continue
        utt = parts[0].lstrip("\ufeff")
        if utt in first_line:
            raise at(path, number, f"duplicate utterance id '{utt}' (first on line {first_line[utt]})")
        first_line[utt] = number
        yield number, utt, parts[1] if len(parts) > 1 else ""


def parse_transcript(path: Path, data: bytes, remove_spaces: bool) -> dict[str, str]:
    """Parse ``<id> <text>`` lines (space or tab separated); blank lines are ignored."""
    texts: dict[str, str] = {}
    for number, utt, rest in iter_id_lines(path, data):
        text = clean_text(rest, remove_spaces)
        if not text:
            raise at(path, number, f"utterance '{utt}' has no text")
        texts[utt] = text
    return texts


def extract_aishell_wavs(wav_dir: Path) -> int:
    """Extract the per-speaker tarballs of ``wav_dir`` not yet extracted; returns how many."""
    with os.scandir(wav_dir) as it:
        tarballs = sorted(
            Path(e.path) for e in it if e.is_file() and e.name.endswith(ARCHIVE_SUFFIXES) and not e.name.startswith(".")
        )
    todo = [t for t in tarballs if not is_extracted(t, wav_dir)]
    if tarballs:
        log.info(f"{wav_dir}: {len(tarballs)} tarballs, {len(tarballs) - len(todo)} extracted before, {len(todo)} to extract")
    if not todo:
        return 0
    with progress_bar("tarballs") as progress:
        task = progress.add_task("extract", total=len(todo))
        for tarball in todo:
            safe_extract(tarball, wav_dir)
            progress.advance(task)
    return len(todo)


def scan_aishell_wavs(wav_dir: Path) -> dict[str, list[tuple[str, str, str]]]:
    """``part -> [(utt, speaker folder, path)]`` from ``wav/{train,dev,test}/S*/*.wav``.

    A wav id seen twice (in two folders) is an error naming both files.
    """
    found: dict[str, list[tuple[str, str, str]]] = {}
    seen: dict[str, str] = {}
    for part in PARTS:
        part_dir = os.path.join(wav_dir, part)
        if not os.path.isdir(part_dir):
            continue
        rows: list[tuple[str, str, str]] = []
        with os.scandir(part_dir) as speakers:
            speaker_dirs = sorted((e.name, e.path) for e in speakers if e.is_dir() and not e.name.startswith("."))
        for spk, spk_path in speaker_dirs:
            with os.scandir(spk_path) as files:
                for entry in files:
                    name = entry.name
                    if not name.endswith(".wav") or name.startswith(".") or not entry.is_file():
                        continue
                    utt = name[:-4]
                    if utt in seen:
                        raise XllmError(f"{entry.path}: duplicate utterance id '{utt}' (also {seen[utt]})")
                    seen[utt] = entry.path
                    rows.append((utt, spk, entry.path))
        found[part] = rows
    return found


def prepare_aishell(corpus: str | Path, data: str | Path, extract: bool = True, jobs: int = 1) -> PrepReport:
    """Prepare AISHELL-1 from ``corpus`` into ``data/{train,dev,test}``; returns a report.

    The transcript is checked before anything is extracted or written; the
    three sets are written in hidden folders and renamed into place at the end,
    so a failure leaves ``data`` as it was.
    """
    from ..data.datadir import Utterance

    root = find_aishell_root(corpus, extract=extract)
    texts = read_aishell_transcript(root / TRANSCRIPT)
    wav_dir = root / "wav"
    if not wav_dir.is_dir():
        raise XllmError(f"{wav_dir}: audio folder not found")
    report = PrepReport()
    if extract:
        report.extracted = extract_aishell_wavs(wav_dir)
    found = scan_aishell_wavs(Path(os.path.abspath(wav_dir)))
    if not any(found.values()):
        raise XllmError(f"{wav_dir}: no wav files in train/, dev/ or test/ (tarballs not extracted? rerun without --no-extract)")

    keep: dict[str, list[tuple[str, str, str]]] = {}
    matched: set[str] = set()
    for part, rows in found.items():
        kept = []
        for utt, spk, path in rows:
            if utt in texts:
                kept.append((utt, spk, path))
                matched.add(utt)
            else:
                report.no_transcript.append(path)
        keep[part] = kept
    report.no_audio = sorted(u for u in texts if u not in matched)
    report_orphans("wav files without a transcript", report.no_transcript, "transcript lines without audio", report.no_audio)

    paths = [path for rows in keep.values() for _, _, path in rows]
    durations = audio_durations(paths, wav_duration, jobs=jobs)
    sets: dict[str, list] = {}
    position = 0
    for part, rows in keep.items():
        utts = []
        for utt, _, path in rows:
            utts.append(Utterance(utt_id=utt, spk=speaker_of(utt), recording=utt, path=path,
                                  text=texts[utt], duration=durations[position]))
            position += 1
        sets[part] = utts
    write_sets(data, sets)
    for part, utts in sets.items():
        if not utts:
            continue
        report.sets[part] = set_stats(utts)
        stats = report.sets[part]
        expected = EXPECTED.get(part)
        note = ""
        if expected and (stats.utterances, stats.speakers) != expected:
            note = f" (the full AISHELL-1 {part} set has {expected[0]:,} utterances, {expected[1]} speakers)"
        log.info(f"{Path(data) / part}: {stats.utterances:,} utterances, {stats.speakers} speakers, {stats.seconds / 3600:.2f} h{note}")
    return report


def speaker_of(utt: str) -> str:
    """``BAC009S0002W0122`` -> ``BAC009S0002``; ids of another shape are their own speaker."""
    m = _SPEAKER_OF.match(utt)
    return m.group(1) if m else utt
