"""Reading a data directory's tables from disk, strictly or leniently.

Strict (the default): the first problem is raised as ``file:line: problem``.
Lenient: problems are collected and the offending lines skipped, which
``xllm data validate`` and ``xllm data fix`` use to look at broken directories.
Cross-file consistency (an utterance without audio, ...) is not checked here:
see :meth:`DataDir.utterances`, :mod:`.validate` and :mod:`.repair`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import XllmError, at, require_dir
from .layout import (
    IMAGE_SCP,
    MISSING_CORE_FILE,
    PROMPT,
    RECO2DUR,
    SEGMENTS,
    SPK2UTT,
    TEXT,
    UTT2DUR,
    UTT2SPK,
    VIDEO_SCP,
    WAV_SCP,
    check_duration,
    check_segment,
    check_speaker,
    check_wav,
)
from .tables import UTF8_BOM, bom_error, c_sort_key, decode_line, duplicate_key, parse_table_line, split_lines

if TYPE_CHECKING:  # pragma: no cover
    from .datadir import DataDir


class TableReader:
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
        data = path.read_bytes()
        if data.startswith(UTF8_BOM):  # strict: an error; lenient: noted, and read without it (fix drops it)
            self.report(bom_error(path))
            data = data[len(UTF8_BOM):]
        for number, raw in enumerate(split_lines(data), start=1):
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


def load_datadir(cls: type["DataDir"], path: str | Path, lenient: bool = False) -> "DataDir":
    """Read the files present in ``path`` into a ``cls``; see :meth:`DataDir.load`."""
    root = require_dir(path, "data directory")
    problems: list[str] = []
    reader = TableReader(lenient, problems)
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
    dd.wav = read_parsed(WAV_SCP, check_wav, rejected=dd.rejected_wav) or {}
    dd.utt2spk = read_parsed(UTT2SPK, check_speaker) or {}
    spk2utt = read(SPK2UTT)
    if spk2utt is not None:
        dd.spk2utt_file = {spk: utts.split() for spk, utts in spk2utt.items()}
    dd.text = read(TEXT, allow_empty=True)
    dd.image = read(IMAGE_SCP)
    dd.video = read(VIDEO_SCP)
    dd.prompt = read(PROMPT)
    dd.segments = read_parsed(SEGMENTS, check_segment)
    dd.utt2dur = read_parsed(UTT2DUR, check_duration)
    dd.reco2dur = read_parsed(RECO2DUR, check_duration)
    dd.unsorted = dict(reader.unsorted)
    return dd
