"""AISHELL-2 (iOS channel) and its 2018A-EVAL dev/test sets into Kaldi data directories.

Training corpus (CORPUS is the folder holding ``iOS/``, or ``AISHELL-2/iOS/`` as
lhotse expects, or the ``iOS`` folder itself)::

    iOS/data/wav.scp    ID0002W0001<TAB>wav/C0002/ID0002W0001.wav   (paths relative to iOS/data)
    iOS/data/trans.txt  ID0002W0001<TAB>厨房用具
    iOS/dev/...,  iOS/test/...   (same files)

  -> ``DATA/train``, ``DATA/dev``, ``DATA/test``.

Evaluation package (``AISHELL-DEV-TEST-SET/`` as released, also found under
other names; or given with ``eval_dir``)::

    AISHELL-DEV-TEST-SET/{iOS,Android,Mic}/{dev,test}/{wav.scp,trans.txt,wav/T0011/IT0011W0001.wav}

  -> ``DATA/dev_ios``, ``DATA/test_ios``, ``DATA/dev_android``, ... Folder names
are matched case-insensitively (``IOS``, ``MIC`` occur in the wild); a set folder
still packed as ``dev.tar.gz``/``test.tar.gz`` is extracted safely first; a set
without ``wav.scp`` is listed from its ``wav/`` folder.

Utterance ids are the corpus' own; the speaker is the id's prefix up to ``W``
(``ID0002``, ``IT0011``: the folder ``C0002``/``T0011`` under a name that is a
prefix of the utterance id, as Kaldi requires). Text: full-width Latin letters
to ASCII capitals, Latin letters upper-cased, whitespace runs collapsed (the
transcripts are not word-segmented, so a space there is a real one).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..console import log
from ..data.durations import wav_duration
from ..errors import XllmError, at
from .aishell import iter_id_lines, parse_transcript, speaker_of
from .common import PrepReport, audio_durations, report_orphans, set_stats, write_sets
from .archive import safe_extract

TRAIN_SETS = {"data": "train", "dev": "dev", "test": "test"}
CHANNELS = ("ios", "android", "mic")
EVAL_SETS = ("dev", "test")


def _find_entry(folder: Path, name: str, want_dir: bool) -> Path | None:
    """The folder (``want_dir``) or file in ``folder`` called ``name``, compared
    case-insensitively: releases spell ``iOS`` as ``IOS`` and ``Mic`` as ``MIC``."""
    exact = folder / name
    if exact.is_dir() if want_dir else exact.is_file():
        return exact
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.lower() == name.lower() and (entry.is_dir() if want_dir else entry.is_file()):
                    return Path(entry.path)
    except OSError:  # not a folder, or unreadable: nothing found there
        return None
    return None


def child(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` called ``name``, compared case-insensitively."""
    return _find_entry(folder, name, want_dir=True)


def child_file(folder: Path, name: str) -> Path | None:
    """The file of ``folder`` called ``name``, compared case-insensitively."""
    return _find_entry(folder, name, want_dir=False)


def find_ios_root(corpus: Path) -> Path | None:
    """The folder holding ``data/`` (training set) and ``dev/``, ``test/``; None when absent."""
    for candidate in (corpus, child(corpus, "AISHELL-2") or corpus / "AISHELL-2"):
        ios = child(candidate, "iOS")
        if ios is not None and (child(ios, "data") or child(ios, "dev") or child(ios, "test")):
            return ios
    if child(corpus, "data") is not None and child_file(child(corpus, "data"), "trans.txt") is not None:
        return corpus
    return None


def _has_eval_channels(folder: Path) -> bool:
    for channel in CHANNELS:
        c = child(folder, channel)
        if c is None:
            continue
        if child(c, "data") is not None:  # that is the training corpus' iOS folder
            return False
        if any(child(c, s) is not None or child_file(c, f"{s}.tar.gz") is not None for s in EVAL_SETS):
            return True
    return False


def find_eval_root(corpus: Path, ios_root: Path | None) -> Path | None:
    """A folder with ``{iOS,Android,Mic}/{dev,test}`` within two levels of ``corpus``."""
    skip = {ios_root.resolve()} if ios_root is not None else set()
    level = [corpus]
    for _ in range(3):
        below = []
        for folder in level:
            if folder.resolve() in skip:
                continue
            if _has_eval_channels(folder):
                return folder
            try:
                with os.scandir(folder) as it:
                    below.extend(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))
            except OSError:
                continue
        level = sorted(below)
    return None


def read_wav_scp(path: Path) -> dict[str, str]:
    """``utt -> absolute path``; relative paths are relative to the wav.scp's folder."""
    base = os.path.abspath(path.parent)
    out: dict[str, str] = {}
    for number, utt, rest in iter_id_lines(path, path.read_bytes()):
        value = rest.strip()
        if not value:
            raise at(path, number, f"utterance '{utt}' has no audio path")
        out[utt] = value if os.path.isabs(value) else os.path.normpath(os.path.join(base, value))
    return out


def list_wav_folder(folder: Path) -> dict[str, str]:
    """``utt -> path`` for every ``*.wav`` below ``folder`` (when a set has no wav.scp)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(os.path.abspath(folder)):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(".wav") and not name.startswith("."):
                utt = name[:-4]
                path = os.path.join(dirpath, name)
                if utt in out:
                    raise XllmError(f"{path}: duplicate utterance id '{utt}' (also {out[utt]})")
                out[utt] = path
    return out


def _set_folder(parent: Path, name: str) -> Path | None:
    """``parent/name``, extracting ``parent/name.tar.gz`` first when only that is there."""
    folder = child(parent, name)
    if folder is not None:
        return folder
    for suffix in (".tar.gz", ".tgz", ".tar"):
        tarball = child_file(parent, name + suffix)
        if tarball is not None:
            log.info(f"extracting {tarball}")
            safe_extract(tarball, parent)
            return child(parent, name)
    return None


def _read_set(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(``utt -> wav path``, ``utt -> text``) of one set folder."""
    trans = child_file(folder, "trans.txt")
    if trans is None:
        raise XllmError(f"{folder / 'trans.txt'}: transcript file not found")
    texts = parse_transcript(trans, trans.read_bytes(), remove_spaces=False)
    scp = child_file(folder, "wav.scp")
    if scp is not None:
        wavs = read_wav_scp(scp)
    elif child(folder, "wav") is not None:
        wavs = list_wav_folder(child(folder, "wav"))
    else:
        raise XllmError(f"{folder / 'wav.scp'}: file not found (and no wav/ folder to list)")
    return wavs, texts


def _maybe_duration(path: str) -> float | None:
    """None for a file that is not there (reported, skipped); errors for unreadable ones."""
    if not os.path.isfile(path):
        return None
    return wav_duration(path)


def _set_folders(ios_root: Path | None, eval_root: Path | None) -> list[tuple[str, Path]]:
    """``(output set name, set folder)`` of the training corpus and the evaluation package."""
    sources: list[tuple[str, Path]] = []
    if ios_root is not None:
        for folder_name, out_name in TRAIN_SETS.items():
            folder = _set_folder(ios_root, folder_name)
            if folder is not None:
                sources.append((out_name, folder))
    if eval_root is not None:
        for channel in CHANNELS:
            channel_dir = child(eval_root, channel)
            if channel_dir is None:
                continue
            for eval_set in EVAL_SETS:
                folder = _set_folder(channel_dir, eval_set)
                if folder is not None:
                    sources.append((f"{eval_set}_{channel}", folder))
    return sources


def _set_utterances(name: str, wavs: dict[str, str], texts: dict[str, str], report: PrepReport, jobs: int) -> list:
    """The utterances of one set that have both audio and text; the others are logged and
    added to ``report``."""
    from ..data.datadir import Utterance

    with_text = [u for u in wavs if u in texts]
    no_text = [wavs[u] for u in wavs if u not in texts]
    durations = audio_durations([wavs[u] for u in with_text], _maybe_duration, jobs=jobs)
    missing = [wavs[u] for u, d in zip(with_text, durations) if d is None]
    no_audio = sorted([u for u in texts if u not in wavs] + [os.path.basename(p)[:-4] for p in missing])
    report_orphans(f"{name}: audio entries without a transcript", no_text,
                   f"{name}: transcript lines without audio", no_audio)
    if missing:
        log.warning(f"{name}: {len(missing):,} wav.scp entries name files that do not exist (e.g. {missing[0]})")
    report.no_transcript.extend(no_text)
    report.no_audio.extend(no_audio)
    return [
        Utterance(utt_id=u, spk=speaker_of(u), recording=u, path=wavs[u], text=texts[u], duration=d)
        for u, d in zip(with_text, durations)
        if d is not None
    ]


def prepare_aishell2(
    corpus: str | Path, data: str | Path, eval_dir: str | Path | None = None, jobs: int = 1
) -> PrepReport:
    """Prepare AISHELL-2 into ``data/{train,dev,test}`` and, when the evaluation
    package is present, ``data/{dev,test}_{ios,android,mic}``."""
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise XllmError(f"{corpus}: corpus folder not found")
    ios_root = find_ios_root(corpus)
    if eval_dir is not None:
        eval_root: Path | None = Path(eval_dir)
        if not eval_root.is_dir():
            raise XllmError(f"{eval_root}: evaluation folder not found")
    else:
        eval_root = find_eval_root(corpus, ios_root)
    if ios_root is None and eval_root is None:
        raise XllmError(
            f"{corpus}: no AISHELL-2 corpus here (expected iOS/data/wav.scp and iOS/data/trans.txt, "
            "or an evaluation folder {iOS,Android,Mic}/{dev,test})"
        )

    sources = _set_folders(ios_root, eval_root)
    if not sources:
        raise XllmError(f"{corpus}: found no set folder (data/, dev/, test/) with wav.scp and trans.txt")
    # Every set's two lists are read (and checked) before anything is written.
    read = [(name, folder, *_read_set(folder)) for name, folder in sources]

    report = PrepReport()
    sets: dict[str, list] = {}
    for name, folder, wavs, texts in read:
        log.info(f"{folder}: {len(wavs):,} audio entries, {len(texts):,} transcript lines -> {Path(data) / name}")
        sets[name] = _set_utterances(name, wavs, texts, report, jobs)
        if not sets[name]:
            log.warning(f"{folder}: no utterance has both audio and text; {Path(data) / name} is not written")
    write_sets(data, sets)
    for name, utts in sets.items():
        if utts:
            report.sets[name] = stats = set_stats(utts)
            log.info(f"{Path(data) / name}: {stats.utterances:,} utterances, {stats.speakers} speakers, {stats.seconds / 3600:.2f} h")
    return report
