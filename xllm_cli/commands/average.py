"""``xllm average``: average a stage's best checkpoints into ``EXP/stageN/averaged/``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._options import trust_remote_code_option


def register(app: typer.Typer) -> None:
    app.command("average")(average)


def average(
    exp: Path = typer.Option(..., "--exp", help="Experiment directory."),
    stage: int = typer.Option(..., "--stage", help="Stage whose checkpoints to average (1-3)."),
    num: int = typer.Option(5, "--num", help="How many of the best checkpoints (by validation score)."),
    modality: str = typer.Option("speech", "--modality", help="Stage 2 only: the modality's run (speech, image, video)."),
    trust_remote_code: bool = trust_remote_code_option(),
) -> None:
    """Average the NUM best checkpoints of a stage (by validation loss or CER).

    The result, EXP/stageN/averaged/, is what later stages and decoding use in
    place of best/. Keep enough checkpoints with the recipe's stageN.keep_best.

    Example: xllm average --exp exp/tiny --stage 3 --num 5
    """
    from ..console import console
    from ..errors import XllmError
    from ..training.average import average_stage
    from ..trust import allow_remote_code

    allow_remote_code(trust_remote_code)
    if num < 1:
        raise XllmError("--num must be at least 1")
    out = average_stage(exp, stage, num, modality)
    console.print(f"{out}: average of the {num} best checkpoints of stage {stage}")
