"""``xllm results``: gather every result.txt under an experiment root into one markdown table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._help import help_options


def results_cmd(
    exp_root: Path = typer.Argument(..., help="Directory searched recursively for result.txt files (e.g. exp)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the table to this file (atomically) instead of stdout."),
    title: str = typer.Option("Results", "--title", help="Heading of the markdown page."),
) -> None:
    """Collect all result.txt files below EXP_ROOT into a RESULTS.md-style table.

    One row per result line: decode dir, metric (CER/WER/MER/SER), value, errors, N,
    ins, del, sub; sorted by decode dir, then metric.

    Example: xllm results exp --out RESULTS.md
    """
    from ..errors import XllmError, require_dir
    from ..fsutil import atomic_write_text
    from ..scoring import collect_results, results_markdown

    require_dir(exp_root, "experiment root")
    rows = collect_results(exp_root)
    if not rows:
        raise XllmError(f"{exp_root}: no result.txt with %CER/%WER lines found below it")
    text = results_markdown(rows, title=title)
    if out is None:
        print(text, end="")
    else:
        atomic_write_text(out, text)
        print(f"{out}: {len(rows)} result line(s)")


def register(app: typer.Typer) -> None:
    app.command("results", **help_options(results_cmd))(results_cmd)
