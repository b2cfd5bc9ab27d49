"""Collect ``result.txt`` files under an experiment root into one table (ESPnet's RESULTS.md)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(
    r"^%(?P<metric>[A-Z]+)\s+(?P<value>[0-9.]+|nan|inf)\s+\[\s*(?P<errors>\d+)\s*/\s*(?P<n>\d+)"
    r"(?:\s*,\s*(?P<ins>\d+) ins,\s*(?P<dels>\d+) del,\s*(?P<subs>\d+) sub)?\s*\]\s*(?P<label>.*)$"
)
_METRIC_ORDER = {"CER": 0, "WER": 1, "MER": 2, "SER": 9}


@dataclass
class ResultLine:
    decode_dir: str
    metric: str
    value: float
    errors: int
    n: int
    ins: int | None = None
    dels: int | None = None
    subs: int | None = None


def parse_result_line(line: str, decode_dir: str = "") -> ResultLine | None:
    """Parse one ``%CER 4.52 [ 4737 / 104765, 116 ins, 198 del, 4423 sub ] dir`` line (None if not one)."""
    m = _LINE.match(line.strip())
    if not m:
        return None
    opt = lambda k: int(m.group(k)) if m.group(k) is not None else None  # noqa: E731
    return ResultLine(decode_dir or m.group("label").strip(), m.group("metric"), float(m.group("value")),
                      int(m.group("errors")), int(m.group("n")), opt("ins"), opt("dels"), opt("subs"))


def collect_results(root: str | Path) -> list[ResultLine]:
    """Every result line of every ``result.txt`` below ``root``, sorted by decode dir then metric.

    The decode dir is shown as ``root`` joined with the path below it (what a user typed).
    """
    root = Path(root)
    found: list[ResultLine] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "result.txt" not in filenames:
            continue
        rel = Path(dirpath).relative_to(root)
        shown = str(root / rel) if str(rel) != "." else str(root)
        for line in (Path(dirpath) / "result.txt").read_text(encoding="utf-8", errors="replace").splitlines():
            parsed = parse_result_line(line, decode_dir=shown)
            if parsed is not None:
                found.append(parsed)
    found.sort(key=lambda r: (r.decode_dir.encode("utf-8"), _METRIC_ORDER.get(r.metric, 5), r.metric))
    return found


def results_markdown(results: list[ResultLine], title: str = "Results") -> str:
    """A markdown table: decode dir, metric, value, errors, N, ins, del, sub."""
    show = lambda x: "-" if x is None else str(x)  # noqa: E731
    lines = [
        f"# {title}", "",
        "| decode dir | metric | value | errors | N | ins | del | sub |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.decode_dir} | {r.metric} | {r.value:.2f} | {r.errors} | {r.n} | "
                     f"{show(r.ins)} | {show(r.dels)} | {show(r.subs)} |")
    return "\n".join(lines) + "\n"
