"""Scoring: CER/WER/SER with alignments, per-speaker breakdowns and Kaldi/sclite result files.

``from xllm_cli.scoring import score_texts`` is the entry point; see ``align.py``
for the counting, ``normalize.py`` for what is normalised away, ``writers.py`` for
the decode-directory files, ``sclite.py`` for the NIST cross-check and
``results.py`` for collecting ``result.txt`` files into RESULTS.md.
"""

from .align import Counts, ScoreResult, UttScore, default_speaker, score_texts
from .normalize import DEFAULT_UNIT, NormalizeOptions, UNITS, normalize_text, scoring_defaults, tokenize
from .results import ResultLine, collect_results, parse_result_line, results_markdown
from .writers import (
    read_text,
    result_lines,
    score_and_write,
    write_decode_dir,
)

__all__ = [
    "Counts", "ScoreResult", "UttScore", "default_speaker", "score_texts",
    "DEFAULT_UNIT", "NormalizeOptions", "UNITS", "normalize_text", "scoring_defaults", "tokenize",
    "ResultLine", "collect_results", "parse_result_line", "results_markdown",
    "read_text", "result_lines", "score_and_write", "write_decode_dir",
]
