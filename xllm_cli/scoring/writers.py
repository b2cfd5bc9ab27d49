"""Result files of a decode directory (docs/experiment.md), each written atomically.

``hyp``/``ref``   Kaldi text of the raw (un-normalised) transcripts, C-sorted.
``hyp.trn``/``ref.trn``  sclite ``trn``: the normalised scoring units separated by
                  spaces, then ``(spk-utt)`` — score them with
                  ``sclite -r ref.trn trn -h hyp.trn trn -i rm -e utf-8 -s``.
``per_utt``       Kaldi ``wer_per_utt_details.pl`` style alignment, four lines an
                  utterance: ``ref``, ``hyp``, ``op`` (C S I D) and ``#csid`` counts
                  (correct, substitutions, insertions, deletions); gaps are ``*``.
``per_spk``       Kaldi ``wer_per_spk_details.pl`` style table, ``raw`` counts and
                  ``sys`` percentages per speaker, then ``SUM``.
``result.txt``    ``compute-wer`` lines: ``%CER 4.52 [ 4737 / 104765, 116 ins, 198 del,
                  4423 sub ] DIR``, ``%SER 20.00 [ 2 / 10 ] DIR``, ``Scored N sentences, M not
                  present in hyp.``, and ``K hypotheses have no reference: not scored.``
                  when some do, and ``Normalisation: unit auto, case folded,
                  punctuation removed`` (what the numbers were computed on). Written last: it marks the directory *scored*
                  (``hyp``, written last by decoding, marks it *decoded*:
                  ``decoding/results.py``).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Iterable

from ..data.tables import read_table, write_table
from ..fsutil import atomic_write
from .align import Counts, ScoreResult, score_texts
from .normalize import NormalizeOptions

EPS = "*"


def read_text(path: str | Path) -> dict[str, str]:
    """Read a Kaldi ``text`` file; an utterance may have an empty transcript (an empty hypothesis)."""
    return read_table(path, allow_empty_value=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def result_lines(result: ScoreResult, label: str = "") -> list[str]:
    """The Kaldi ``compute-wer`` lines (metric, then %SER), with ``label`` appended when given."""
    t = result.totals
    tail = f" {label}" if label else ""
    return [
        f"%{result.metric} {t.rate:.2f} [ {t.errors} / {t.n}, {t.ins} ins, {t.dels} del, {t.subs} sub ]{tail}",
        f"%SER {t.ser:.2f} [ {t.sentence_errors} / {t.sentences} ]{tail}",
    ]


def write_kaldi_text(path: str | Path, texts: dict[str, str]) -> None:
    """C-sorted ``<utt> <text>`` lines; a transcript's line breaks become spaces."""
    write_table(path, {utt: _one_line(text) for utt, text in texts.items()})


def trn_id(spk: str, utt: str) -> str:
    """sclite's ``rm`` id: speaker, a dash, then the utterance id."""
    return f"{spk}-{utt}"


def write_trn(path: str | Path, result: ScoreResult, side: str) -> None:
    """Write ``ref.trn`` (``side='ref'``) or ``hyp.trn`` (``side='hyp'``)."""
    with atomic_write(path) as f:
        for u in result.utts:
            tokens = u.ref_tokens if side == "ref" else u.hyp_tokens
            f.write(f"{' '.join(tokens)} ({trn_id(u.spk, u.utt)})\n")


def display_width(text: str) -> int:
    """Columns a string takes in a terminal (wide CJK characters count 2)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def per_utt_lines(result: ScoreResult) -> list[str]:
    lines: list[str] = []
    for u in result.utts:
        cols = [(r if r is not None else EPS, h if h is not None else EPS, op) for op, r, h in u.ops]
        widths = [max(display_width(r), display_width(h), 1) for r, h, _ in cols]
        for name, idx in (("ref", 0), ("hyp", 1), ("op", 2)):
            cells = [_pad(c[idx], w) for c, w in zip(cols, widths)]
            lines.append(" ".join([u.utt, _pad(name, 3), *cells]).rstrip())
        c = u.counts
        lines.append(f"{u.utt} #csid {c.correct} {c.subs} {c.ins} {c.dels}")
    return lines


def per_spk_lines(result: ScoreResult) -> list[str]:
    header = ["SPEAKER", "id", "#SENT", "#WORD", "Corr", "Sub", "Ins", "Del", "Err", "S.Err"]
    rows = [header]

    def add(name: str, c: Counts) -> None:
        rows.append([name, "raw", str(c.sentences), str(c.n), str(c.correct), str(c.subs), str(c.ins),
                     str(c.dels), str(c.errors), str(c.sentence_errors)])
        pct = lambda x: f"{100.0 * x / max(c.n, 1):.2f}"  # noqa: E731
        rows.append([name, "sys", str(c.sentences), str(c.n), pct(c.correct), pct(c.subs), pct(c.ins),
                     pct(c.dels), pct(c.errors), f"{c.ser:.2f}"])

    for spk, c in result.per_speaker.items():
        add(spk, c)
    add("SUM", result.totals)
    widths = [max(display_width(r[i]) for r in rows) for i in range(len(header))]
    return [" ".join(_pad(cell, w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def _write_lines(path: Path, lines: list[str]) -> None:
    with atomic_write(path) as f:
        for line in lines:
            f.write(line + "\n")


def write_decode_dir(decode_dir: str | Path, result: ScoreResult, label: str | None = None,
                     keep: Iterable[str | Path] = ()) -> None:
    """Write hyp, ref, hyp.trn, ref.trn, per_utt, per_spk and result.txt into ``decode_dir``.

    ``result.txt`` is written last, so its presence means the directory is complete.
    A file in ``keep`` (the scored inputs: ``xllm score REF DIR/hyp --out DIR``) is
    never written over: ``hyp`` would lose the utterances REF does not have.
    """
    decode_dir = Path(decode_dir)
    decode_dir.mkdir(parents=True, exist_ok=True)
    inputs = [Path(p) for p in keep if Path(p).is_file()]

    def free(path: Path) -> bool:
        return not (path.is_file() and any(os.path.samefile(path, p) for p in inputs))

    if free(decode_dir / "ref"):
        write_kaldi_text(decode_dir / "ref", result.raw_refs)
    if free(decode_dir / "hyp"):
        write_kaldi_text(decode_dir / "hyp", result.raw_hyps)
    for name, side in (("ref.trn", "ref"), ("hyp.trn", "hyp")):
        if free(decode_dir / name):
            write_trn(decode_dir / name, result, side)
    for name, lines in (("per_utt", per_utt_lines(result)), ("per_spk", per_spk_lines(result))):
        if free(decode_dir / name):
            _write_lines(decode_dir / name, lines)
    lines = result_lines(result, str(decode_dir) if label is None else label)
    lines.append(f"Scored {result.totals.sentences} sentences, {len(result.missing)} not present in hyp.")
    if result.extra:
        lines.append(f"{len(result.extra)} hypotheses have no reference: not scored.")
    lines.append(result.normalize.describe(result.unit))
    if free(decode_dir / "result.txt"):
        _write_lines(decode_dir / "result.txt", lines)


def score_and_write(
    decode_dir: str | Path,
    refs: dict[str, str],
    hyps: dict[str, str],
    unit: str = "char",
    normalize: NormalizeOptions | None = None,
    utt2spk: dict[str, str] | None = None,
    label: str | None = None,
    keep: Iterable[str | Path] = (),
) -> ScoreResult:
    """``score_texts`` then ``write_decode_dir``: what ``xllm decode`` calls at the end.

    ``keep``: the input files in ``decode_dir`` that must not be written over
    (``xllm decode`` passes its ``hyp``, which holds every decoded utterance).
    """
    result = score_texts(refs, hyps, unit=unit, normalize=normalize, utt2spk=utt2spk)
    write_decode_dir(decode_dir, result, label=label, keep=keep)
    return result
