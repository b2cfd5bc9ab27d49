"""``xllm score``: CER/WER/SER of a hypothesis file against a reference file (Kaldi text)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

from ..errors import XllmError
from ._help import help_options
from ._scoring_options import (keep_spaces_option, lower_option, normalize_options, nfkc_option, punct_option,
                               unit_option)


def score_cmd(
    ref: Path = typer.Argument(..., help="Reference transcripts, Kaldi text (<utt-id> <text>)."),
    hyp: Path = typer.Argument(..., help="Hypotheses, Kaldi text; an utterance may have an empty line (<utt-id> only)."),
    unit: str = unit_option(),
    remove_punct: bool = punct_option(),
    nfkc: bool = nfkc_option(),
    lower: bool = lower_option(),
    keep_spaces: bool = keep_spaces_option(),
    utt2spk: Optional[Path] = typer.Option(
        None, "--utt2spk", help="utt2spk file for the per-speaker breakdown (default: utt-id prefix before '-' or '_').",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o",
        help="Write hyp, ref, hyp.trn, ref.trn, per_utt, per_spk and result.txt into this directory.",
    ),
    per_spk: bool = typer.Option(False, "--per-spk", help="Print a per-speaker table (to stderr)."),
    sclite: bool = typer.Option(
        False, "--sclite", help="Also score the trn files with NIST sclite (SCTK) and print its summary.",
    ),
) -> None:
    """Score hypotheses against references and print Kaldi compute-wer lines.

    Prints `%CER 4.52 [ 4737 / 104765, 116 ins, 198 del, 4423 sub ]` (or %WER / %MER)
    and `%SER` to stdout. By default English is scored as WER and Chinese as CER
    (--unit auto), case-folded and without punctuation, exactly as `xllm decode`
    scores; result.txt names the normalisation. References define the utterance
    set: a missing hypothesis counts as all deletions, a hypothesis without a
    reference is ignored (both warned).

    Example: xllm score data/test/text exp/tiny/decode_test/hyp --out exp/tiny/decode_test
    """
    from ..data.tables import read_table
    from ..scoring import read_text, result_lines, score_texts, write_decode_dir

    opts = normalize_options(unit, remove_punct, nfkc, lower, keep_spaces)
    if out is not None and out.exists() and not out.is_dir():
        raise XllmError(f"{out}: exists and is not a directory; give --out a directory")
    refs, hyps = read_text(ref), read_text(hyp)
    if not refs:
        raise XllmError(f"{ref}: no utterances")
    spk_map = read_table(utt2spk) if utt2spk is not None else None  # every utterance needs a speaker
    result = score_texts(refs, hyps, unit=unit, normalize=opts, utt2spk=spk_map)
    if out is not None:  # written before anything is printed: a failed write prints no result
        try:
            write_decode_dir(out, result, keep=(ref, hyp))  # --out may be where HYP lives: never rewrite it
        except OSError as e:  # e.g. a parent of --out is a file, or no permission
            raise XllmError(f"{out}: cannot write the decode directory ({e.strerror or e})") from None
    for line in result_lines(result, str(out) if out is not None else ""):
        print(line)
    if per_spk:
        _print_speakers(result)
    if sclite:
        _run_sclite(result, out)


def _print_speakers(result) -> None:
    from rich.table import Table

    from ..console import console

    table = Table(title=f"per speaker %{result.metric}")
    for col in ("speaker", "#utt", "#ref", "corr", "sub", "del", "ins", f"%{result.metric}", "%SER"):
        table.add_column(col, justify="left" if col == "speaker" else "right")
    rows = list(result.per_speaker.items()) + [("SUM", result.totals)]
    for spk, c in rows:
        table.add_row(spk, str(c.sentences), str(c.n), str(c.correct), str(c.subs), str(c.dels), str(c.ins),
                      f"{c.rate:.2f}", f"{c.ser:.2f}")
    console.print(table)


def _run_sclite(result, out: Optional[Path]) -> None:
    from ..scoring.sclite import run_sclite
    from ..scoring.writers import write_trn

    with tempfile.TemporaryDirectory(prefix="xllm-sclite-") as tmp:
        where = Path(out) if out is not None else Path(tmp)
        if out is None:
            write_trn(where / "ref.trn", result, "ref")
            write_trn(where / "hyp.trn", result, "hyp")
        summary = run_sclite(where / "ref.trn", where / "hyp.trn", where / "sclite" if out else where)
        print(summary.sys_report)
        print(f"sclite: {summary.errors} errors / {summary.n} ({summary.ins} ins, {summary.dels} del, "
              f"{summary.subs} sub); ours: {result.totals.errors} ({result.totals.ins} ins, "
              f"{result.totals.dels} del, {result.totals.subs} sub)")


def register(app: typer.Typer) -> None:
    app.command("score", **help_options(score_cmd))(score_cmd)
