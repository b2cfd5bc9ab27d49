"""A user's own folder of audio files into one Kaldi data directory.

Two ways to give transcripts:

* beside the audio: ``AUDIO_DIR/spk1/a.wav`` with ``AUDIO_DIR/spk1/a.txt``
  (the whole file is the transcript; line breaks become spaces). Audio files
  without a ``.txt`` are reported and skipped.
* a TSV file: ``path<TAB>transcript`` per line (an optional header row
  ``path<TAB>text`` is skipped); relative paths are relative to ``AUDIO_DIR``.

Ids: the speaker is the file's folder path relative to ``AUDIO_DIR``, parts
joined by ``_``, characters other than letters, digits, ``_`` and ``.`` replaced
by ``_`` (``spk-1/a b.wav`` -> ``spk_1``); the utterance id is the speaker, ``-``
and the file's stem (``spk_1-a_b``). Speaker ids never hold a ``-``, so utt2spk
sorts the same by utterance and by speaker, as Kaldi requires (see
:func:`ids_for`); files directly in ``AUDIO_DIR`` are their own speaker. Two files
that map to the same id are an error naming both.

Text is kept as written (case, punctuation), whitespace runs collapsed.
Durations come from :func:`xllm_cli.data.durations.audio_duration` (any format
ffmpeg reads). ``--resample 16000`` converts what Kaldi and lhotse cannot read
(FLAC, MP3, 44.1 kHz stereo ...) to 16 kHz mono WAV under ``DATA/wav/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from ..console import log
from ..data.tables import decode_line, split_lines
from ..errors import XllmError, at, require_dir, require_file
from .common import PrepReport, audio_durations, clean_text, report_orphans, set_stats

DEFAULT_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "opus", "m4a", "aac", "wma", "webm", "mp4", "mkv")
_UNSAFE = re.compile(r"[^\w.\-]+")
_HEADER_PATHS = {"path", "audio", "file", "filename", "wav", "audio_path", "audio_filepath"}
_HEADER_TEXTS = {"text", "transcript", "transcription", "sentence", "label"}


def sanitize(part: str) -> str:
    """One id component: no whitespace or separators, never empty."""
    cleaned = _UNSAFE.sub("_", part).strip("_")
    return cleaned or "_"


def ids_for(rel_path: str) -> tuple[str, str]:
    """``(utt_id, speaker)`` for a path relative to the audio folder, before :func:`assign_ids`
    makes speakers unique.

    The speaker is the folder path, parts joined by ``_`` and ``-`` replaced by ``_``;
    the utterance id is the speaker, ``-``, the file's stem (a file at the top is its
    own speaker: the id is the speaker). With no ``-`` in speaker ids and every other
    character allowed in them sorting after ``-``, sorting utt2spk by utterance or by
    speaker then utterance gives the same order, as Kaldi's validate_data_dir.sh
    requires (speakers ``a`` and ``a-b`` would break it: ``a-b-x`` < ``a-x``).
    """
    parts = [p for p in rel_path.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    stem = sanitize(os.path.splitext(parts[-1])[0])
    folders = [sanitize(p) for p in parts[:-1]]
    if not folders:
        spk = _speaker_safe(stem)
        return spk, spk
    spk = "_".join(_speaker_safe(f) for f in folders)
    return f"{spk}-{stem}", spk


def _speaker_safe(part: str) -> str:
    return part.replace("-", "_")


def assign_ids(rel_paths: Sequence[str]) -> list[tuple[str, str]]:
    """``(utt_id, speaker)`` per path: :func:`ids_for`, with distinct speakers kept distinct.

    Two folders (or top-level files) whose speaker ids coincide (``a-b`` and ``a_b``
    both give ``a_b``) get ``_2``, ``_3`` ... on the later one, in path order, and a warning.
    """
    speaker_of: dict[str, str] = {}  # the folder (or top-level file) -> its speaker id
    taken: set[str] = set()
    out = []
    for rel in rel_paths:
        utt, spk = ids_for(rel)
        parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".", "..")]
        owner = "/".join(parts[:-1]) or rel  # a file at the top is its own speaker
        if owner not in speaker_of:
            unique, n = spk, 1
            while unique in taken:
                n += 1
                unique = f"{spk}_{n}"
            if unique != spk:
                log.warning(f"'{owner}' would get the speaker id '{spk}' of another folder or file; it is '{unique}'")
            speaker_of[owner] = unique
            taken.add(unique)
        unique = speaker_of[owner]
        out.append((unique + utt[len(spk):], unique))
    return out


def parse_extensions(text: str | Sequence[str] | None) -> tuple[str, ...]:
    if text is None:
        return DEFAULT_EXTENSIONS
    items = text.split(",") if isinstance(text, str) else list(text)
    exts = tuple(e.strip().lower().lstrip(".") for e in items if e.strip())
    if not exts:
        raise XllmError(f"--ext '{text}': give at least one extension, e.g. wav,flac")
    return exts


def find_audio(audio_dir: Path, extensions: Sequence[str]) -> list[str]:
    """Absolute paths of the audio files below ``audio_dir``, in a stable order."""
    wanted = {"." + e for e in extensions}
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.abspath(audio_dir)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in wanted and not name.startswith("."):
                out.append(os.path.join(dirpath, name))
    return out


def read_text_file(path: str) -> str | None:
    """The transcript in ``path``, whitespace collapsed; None when it has no text."""
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise at(path, line, f"not valid UTF-8 (byte {e.start})") from None
    return clean_text(text.lstrip("\ufeff"), remove_spaces=False, upper=False) or None


def read_tsv(tsv: Path, audio_dir: Path, empty: list[str]) -> list[tuple[str, str, int]]:
    """``[(absolute audio path, text, line)]`` from a ``path<TAB>transcript`` file.

    A line whose transcript is empty is skipped and noted (``file:line``) in ``empty``.
    """
    base = os.path.abspath(audio_dir)
    rows: list[tuple[str, str, int]] = []
    first: dict[str, int] = {}
    for number, raw in enumerate(split_lines(tsv.read_bytes()), start=1):
        line = decode_line(tsv, number, raw)
        if number == 1:
            line = line.lstrip("\ufeff")
        if not line.strip():
            continue
        if "\t" not in line:
            raise at(tsv, number, "expected 'path<TAB>transcript'")
        path_text, text = line.split("\t", 1)
        path_text = path_text.strip()
        if number == 1 and path_text.lower() in _HEADER_PATHS and text.strip().lower() in _HEADER_TEXTS:
            continue
        text = clean_text(text, remove_spaces=False, upper=False)
        if not path_text:
            raise at(tsv, number, "no audio path")
        if not text:
            empty.append(f"{tsv}:{number}")
            continue
        path = path_text if os.path.isabs(path_text) else os.path.normpath(os.path.join(base, path_text))
        if not os.path.isfile(path):
            raise at(tsv, number, f"audio file not found: {path}")
        if path in first:
            raise at(tsv, number, f"duplicate audio file '{path_text}' (first on line {first[path]})")
        first[path] = number
        rows.append((path, text, number))
    return rows


def check_output_dir(audio_dir: str | Path, data: str | Path) -> None:
    """Refuse an output folder whose files are the user's own, before anything is written.

    Writing a data directory overwrites its tables and removes the ones the new
    directory lacks (a stale ``segments`` or ``prompt``). In the audio folder
    itself, or in a folder that is not a data directory (no ``wav.scp``) but has
    such files, those are the user's files, not ours: never touch them.
    """
    from ..data.layout import KNOWN_FILES, WAV_SCP

    data = Path(data)
    if not data.exists():
        return
    if os.path.isdir(audio_dir) and os.path.samefile(audio_dir, data):
        raise XllmError(f"{data}: is the audio folder itself; a data directory written there would overwrite or "
                        f"remove your files ({', '.join(KNOWN_FILES)}): give another DATA folder, e.g. data/mine")
    if data.is_dir() and not (data / WAV_SCP).is_file():
        theirs = [name for name in KNOWN_FILES if (data / name).exists()]
        if theirs:
            raise XllmError(f"{data}: not a data directory (no {WAV_SCP}) but has {', '.join(theirs)}, which "
                            f"writing one would overwrite or remove: give another DATA folder")


def prepare_dir(
    audio_dir: str | Path,
    data: str | Path,
    tsv: str | Path | None = None,
    extensions: str | Sequence[str] | None = None,
    jobs: int = 1,
    resample: int | None = None,
) -> PrepReport:
    """Prepare ``audio_dir`` (with ``.txt`` transcripts or a TSV) into the data directory ``data``.

    Transcripts with no text are skipped and counted (``report.empty_transcript``),
    as audio without a transcript is. ``resample``: convert the audio that is not
    16-bit mono PCM WAV at that rate into ``data/wav/`` (:mod:`.resample`; ``jobs``
    processes) and list the converted files in wav.scp.
    """
    from ..data.datadir import Utterance, write_datadir
    from ..data.durations import audio_duration

    audio_dir = require_dir(audio_dir, "audio folder")
    check_output_dir(audio_dir, data)
    report = PrepReport()
    # (path, text, where the text came from) for each utterance to write
    rows: list[tuple[str, str, str]] = []
    if tsv is not None:
        tsv = require_file(tsv, "TSV file")
        rows = [(p, t, f"{tsv}:{n}") for p, t, n in read_tsv(tsv, audio_dir, report.empty_transcript)]
    else:
        exts = parse_extensions(extensions)
        files = find_audio(audio_dir, exts)
        if not files:
            raise XllmError(f"{audio_dir}: no audio files with extension {', '.join('.' + e for e in exts)}")
        for path in files:
            txt = os.path.splitext(path)[0] + ".txt"
            text = read_text_file(txt) if os.path.isfile(txt) else None
            if text is not None:
                rows.append((path, text, txt))
            else:
                (report.empty_transcript if os.path.isfile(txt) else report.no_transcript).append(path)
        report_orphans("audio files without a .txt transcript", report.no_transcript, "", [])
    report_orphans("audio files with an empty transcript", report.empty_transcript, "", [])
    if not rows:
        raise XllmError(f"{audio_dir}: no audio file has a transcript (a same-named .txt beside it, or give --tsv)")

    base = os.path.abspath(audio_dir)
    rels = []
    for path, _, _ in rows:
        rel = os.path.relpath(path, base)
        rels.append(path.lstrip("/") if rel.startswith("..") else rel)
    ids = assign_ids(rels)
    seen: dict[str, str] = {}
    for (path, _, where), (utt, _) in zip(rows, ids):
        if utt in seen:
            raise XllmError(f"{where}: '{path}' gets the utterance id '{utt}', as does '{seen[utt]}'; rename one of them")
        seen[utt] = path
    paths = [p for p, _, _ in rows]
    if resample:
        from .resample import convert_all

        paths = convert_all(paths, Path(data) / "wav", [utt for utt, _ in ids], resample, jobs=jobs)
    durations = audio_durations(paths, audio_duration, jobs=jobs)
    utts = [
        Utterance(utt_id=utt, spk=spk, recording=utt, path=path, text=text, duration=duration)
        for path, (_, text, _), (utt, spk), duration in zip(paths, rows, ids, durations)
    ]
    write_datadir(data, utts)
    report.sets[Path(data).name] = stats = set_stats(utts)
    log.info(f"{data}: {stats.utterances:,} utterances, {stats.speakers} speakers, {stats.seconds / 3600:.2f} h")
    return report
