"""The ``xllm data`` operations on data directories on disk: fix, sort, subset, split, combine.

Each reads a directory, transforms it with :class:`~.datadir.DataDir` and writes
the result as a whole (:mod:`.dirswap`); a change in place keeps the original
files in ``.backup.N/`` (docs/data-dir.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from ..errors import XllmError, at, require_dir, require_file
from ..fsutil import atomic_write
from .datadir import DataDir
from .dirswap import replacing_dir
from .durations import audio_header
from .layout import BACKUP_DIR, KNOWN_FILES, MISSING_CORE_FILE, SPK2UTT, UTT2SPK, WAV_SCP
from .tables import c_sort_key, c_sorted, read_lines


def backup_files(path: str | Path) -> Path:
    """Copy the known files of ``path`` into a new ``path/.backup.N`` and return it.

    N is one more than the highest existing number, so running ``fix`` twice keeps
    the original files in ``.backup.1`` (a single ``.backup/`` would have been
    overwritten by the already-fixed ones). The folder appears complete or not at all.
    """
    root = Path(path)
    numbers = [int(p.name.rsplit(".", 1)[1]) for p in root.glob(f"{BACKUP_DIR}.*") if p.name.rsplit(".", 1)[1].isdigit()]
    backup = root / f"{BACKUP_DIR}.{max(numbers, default=0) + 1}"
    with replacing_dir(backup) as tmp:
        for name in KNOWN_FILES:
            if (root / name).is_file():
                shutil.copy2(root / name, tmp / name)
    return backup


def require_datadir(path: str | Path) -> Path:
    """``path`` as a Path; a one-line error unless it is a folder with wav.scp and utt2spk."""
    root = require_dir(path, "data directory")
    for name in (WAV_SCP, UTT2SPK):
        if not (root / name).is_file():
            raise at(root / name, None, MISSING_CORE_FILE)
    return root


def fix_datadir(path: str | Path) -> tuple[list[str], Path]:
    """Repair ``path`` in place (sort, drop unusable utterances, regenerate spk2utt, strip a BOM).

    The original files are kept in ``path/.backup.N`` (returned with the notes:
    lines skipped while reading and utterances/recordings dropped). Missing
    durations are read from the audio headers.
    """
    root = require_datadir(path)
    dd = DataDir.load(root, lenient=True)
    fixed, notes = dd.fix(probe=lambda file: audio_header(file).seconds)  # the header validate reads
    notes = [f"skipped {p}" for p in dd.load_problems] + notes
    if len(dd) and not len(fixed):
        first = next((n for n in notes if n.startswith("dropped utterance")), "")
        raise XllmError(f"{root}: fixing would drop every utterance ({first}); nothing changed")
    backup = backup_files(path)
    # fix read every table of this very directory: one it no longer writes (an utt2dur it
    # could not complete) is meant to go, and its original is in the backup.
    fixed.save(path, invalidates=KNOWN_FILES)
    return notes, backup


def sort_datadir(path: str | Path) -> list[str]:
    """Sort every known file of ``path`` in C order (lines kept as they are); returns files changed.

    Only ordering changes: malformed lines are reported, not dropped, and spk2utt's
    utterance lists are sorted too.
    """
    root = require_datadir(path)
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
