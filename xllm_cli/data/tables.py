"""Kaldi tables: text files of ``<key> <value>`` lines, sorted by key in C (byte) order.

These are the building blocks of a data directory (wav.scp, text, utt2spk, ...).
Reading reports the file and line of any problem; writing is atomic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from ..errors import XllmError, at
from ..fsutil import atomic_write


def c_sort_key(key: str) -> bytes:
    """Kaldi sorts with ``LC_ALL=C``: compare the UTF-8 bytes."""
    return key.encode("utf-8")


def c_sorted(keys: Iterable[str]) -> list[str]:
    """Keys sorted as ``LC_ALL=C sort`` would (UTF-8 bytes)."""
    return sorted(keys, key=c_sort_key)


def split_lines(data: bytes) -> list[bytes]:
    """The lines of a file's bytes: newline and a CR before it dropped; no phantom last line."""
    lines = [raw[:-1] if raw.endswith(b"\r") else raw for raw in data.split(b"\n")]
    if lines and lines[-1] == b"":  # the file ends with a newline, or is empty
        lines.pop()
    return lines


UTF8_BOM = b"\xef\xbb\xbf"
BOM_PROBLEM = "starts with a UTF-8 BOM; xllm data fix strips it"


def bom_error(path: str | Path) -> XllmError:
    """A Kaldi table must not start with a BOM (Windows editors add one): Kaldi would read it
    as part of the first key, so ``\ufeffutt1`` would match nothing."""
    return at(path, 1, BOM_PROBLEM)


def decode_line(path: str | Path, number: int, raw: bytes) -> str:
    """One line as text, or a one-line error naming ``path:number`` when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise at(path, number, f"not valid UTF-8 (byte {e.start})") from None


def read_lines(path: str | Path) -> list[tuple[int, str]]:
    """Return ``(line_number, line)`` pairs of a UTF-8 text file, newline stripped.

    Blank lines are kept so that validators can report them.
    """
    path = Path(path)
    if not path.is_file():
        raise XllmError(f"{path}: file not found")
    data = path.read_bytes()
    if data.startswith(UTF8_BOM):
        raise bom_error(path)
    raws = split_lines(data)
    return [(number, decode_line(path, number, raw)) for number, raw in enumerate(raws, start=1)]


def read_table(path: str | Path, allow_empty_value: bool = False) -> dict[str, str]:
    """Read ``<key> <value>`` lines into an insertion-ordered dict.

    Raises a one-line error naming the file and line for a blank line, a missing
    value or a duplicate key.
    """
    table: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in read_lines(path):
        key, value = parse_table_line(path, number, line, allow_empty_value)
        if key in table:
            raise duplicate_key(path, number, key, first_line[key])
        table[key] = value
        first_line[key] = number
    return table


def parse_table_line(path: str | Path, number: int, line: str, allow_empty_value: bool = False) -> tuple[str, str]:
    """``(key, value)`` of one ``<key> <value>`` line, or a one-line error naming ``path:number``."""
    parts = line.strip().split(maxsplit=1)
    if not parts:
        raise at(path, number, "blank line")
    key = parts[0]
    value = parts[1].strip() if len(parts) > 1 else ""
    if not value and not allow_empty_value:
        raise at(path, number, f"key '{key}' has no value")
    return key, value


def duplicate_key(path: str | Path, number: int, key: str, first: int) -> XllmError:
    return at(path, number, f"duplicate key '{key}' (first on line {first})")


def write_table(path: str | Path, items: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
    """Write ``<key> <value>`` lines sorted in C order, atomically."""
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    pairs.sort(key=lambda kv: c_sort_key(kv[0]))
    with atomic_write(path) as f:
        for key, value in pairs:
            f.write(f"{key} {value}\n" if value != "" else f"{key}\n")
