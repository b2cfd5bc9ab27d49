"""Cross-check with NIST sclite (SCTK), when it is installed.

sclite weighs substitutions 4 and insertions/deletions 3 each, so on ambiguous
alignments its ins/del/sub split — rarely even its total — can differ from the
unit-cost Levenshtein counts of Kaldi's ``compute-wer`` and ``score_texts``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import XllmError

_CANDIDATES = ("/usr/lib/sctk/bin/sclite",)


def find_sclite() -> list[str] | None:
    """The command prefix that runs sclite, or None when SCTK is not installed."""
    exe = shutil.which("sclite")
    if exe:
        return [exe]
    for path in _CANDIDATES:
        if Path(path).is_file():
            return [path]
    sctk = shutil.which("sctk")
    if sctk:
        return [sctk, "sclite"]
    return None


@dataclass
class ScliteSummary:
    """Counts from sclite's detailed report (``.dtl``) plus its per-speaker ``.sys`` table."""

    n: int
    correct: int
    subs: int
    dels: int
    ins: int
    errors: int
    sentences: int
    sentence_errors: int
    sys_report: str


_DTL = {
    "errors": r"Percent Total Error\s*=.*\(\s*(\d+)\)",
    "correct": r"Percent Correct\s*=.*\(\s*(\d+)\)",
    "subs": r"Percent Substitution\s*=.*\(\s*(\d+)\)",
    "dels": r"Percent Deletions\s*=.*\(\s*(\d+)\)",
    "ins": r"Percent Insertions\s*=.*\(\s*(\d+)\)",
    "n": r"Ref\. words\s*=.*\(\s*(\d+)\)",
    "sentences": r"^\s*sentences\s+(\d+)",
    "sentence_errors": r"^\s*with errors\s+.*\(\s*(\d+)\)",
}


def parse_dtl(text: str) -> dict[str, int]:
    values = {}
    for key, pattern in _DTL.items():
        m = re.search(pattern, text, flags=re.MULTILINE)
        if not m:
            raise XllmError(f"sclite report: no '{key}' figure found")
        values[key] = int(m.group(1))
    return values


def run_sclite(ref_trn: str | Path, hyp_trn: str | Path, out_dir: str | Path, name: str = "sclite") -> ScliteSummary:
    """Run ``sclite -r REF trn -h HYP trn -i rm -e utf-8 -s -o sum dtl`` writing into ``out_dir``."""
    cmd = find_sclite()
    if cmd is None:
        raise XllmError("sclite not found: install SCTK (Debian/Ubuntu: apt-get install sctk)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [*cmd, "-r", str(ref_trn), "trn", "-h", str(hyp_trn), "trn", "-i", "rm", "-e", "utf-8", "-s",
            "-o", "sum", "dtl", "-O", str(out_dir), "-n", name]
    proc = subprocess.run(args, capture_output=True, text=True)
    sys_path, dtl_path = out_dir / f"{name}.sys", out_dir / f"{name}.dtl"
    if proc.returncode != 0 or not dtl_path.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise XllmError(f"sclite failed (exit {proc.returncode}): {' | '.join(tail)}")
    values = parse_dtl(dtl_path.read_text(encoding="utf-8", errors="replace"))
    report = sys_path.read_text(encoding="utf-8", errors="replace") if sys_path.is_file() else ""
    return ScliteSummary(sys_report=report.strip("\n"), **values)
