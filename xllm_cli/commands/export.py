"""``xllm export``: convert models for deployment (CTranslate2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import XllmError
from ._help import example_last
from ._options import trust_remote_code_option

export_app = typer.Typer(
    help=(
        "Convert models to CTranslate2 for fast CPU/GPU inference: the experiment's frozen LLM "
        "(n-best rescoring with `xllm decode --rescore ct2`) or a Whisper model (baseline with "
        "`xllm decode --whisper DIR`)."
    ),
    epilog="Example: xllm export ct2 exp/tiny --quantization int8",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_QUANT_HELP = "Weight type: int8 (default; fast on CPU), int8_float32, int8_float16, int8_bfloat16, int16, float16, bfloat16, float32."


def _check_out(out: Path, source: Path) -> None:
    """Refuse an --out that is, or contains, the model being converted.

    The converter replaces --out as a whole (with --force): the input would be
    deleted with it, and the conversion would fail half-way on a missing model.
    """
    out_real, src_real = out.resolve(), source.resolve()
    if out_real == src_real or out_real in src_real.parents:
        raise XllmError(f"{out}: --out is or contains the input model {source}; give another output directory")


def _up_to_date(out: Path, source: Path, quantization: str) -> bool:
    info = out / "xllm_export.json"
    if not info.is_file() or not (out / "model.bin").is_file():
        return False
    try:
        data = json.loads(info.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return data.get("source") == str(source.resolve()) and data.get("quantization") == quantization


@export_app.command("ct2")
def export_ct2_cmd(
    exp: Optional[Path] = typer.Argument(None, help="Experiment directory (its LLM is found from the stage's config.yaml)."),
    exp_opt: Optional[Path] = typer.Option(None, "--exp", help="Same as the EXP argument."),
    stage: Optional[int] = typer.Option(
        None, "--stage", help="Read model.llm.path from EXP/stageN/{averaged,best}/config.yaml (default: highest stage)."),
    llm: Optional[Path] = typer.Option(None, "--llm", help="Convert this Hugging Face LLM directory instead of looking it up."),
    quantization: str = typer.Option("int8", "--quantization", "-q", help=_QUANT_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: EXP/ct2_llm)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output directory."),
    trust_remote_code: bool = trust_remote_code_option(),
) -> None:
    """Convert the experiment's frozen LLM to CTranslate2 (for n-best rescoring).

    The LLM is the Hugging Face directory named by model.llm.path in the stage's
    model config (the tiny preset's EXP/stage0/llm). CTranslate2 cannot take soft
    prompts, so it serves as a text-side LM that re-ranks first-pass n-best lists.
    An output already converted from the same LLM and quantization is left as is.

    Example: xllm export ct2 exp/tiny --stage 3 --quantization int8
    """
    from ..decoding.ct2 import export_llm_ct2, find_llm_dir
    from ..trust import allow_remote_code

    allow_remote_code(trust_remote_code)
    exp = exp or exp_opt
    if exp is None and llm is None:
        raise XllmError("give an experiment directory (EXP or --exp) or --llm DIR")
    llm_dir = llm if llm is not None else find_llm_dir(exp, stage)
    if out is None:
        if exp is None:
            raise XllmError("--out DIR is needed with --llm and no experiment directory")
        out = Path(exp) / "ct2_llm"
    _check_out(out, llm_dir)
    if out.exists() and not force and _up_to_date(out, llm_dir, quantization):
        print(f"{out}: up to date ({llm_dir}, {quantization})")
        return
    export_llm_ct2(llm_dir, out, quantization=quantization, force=force)
    print(f"{out}: CTranslate2 {quantization} model of {llm_dir}")


@export_app.command("whisper")
def export_whisper_cmd(
    model_dir: Path = typer.Argument(..., help="Hugging Face Whisper directory (WhisperForConditionalGeneration + tokenizer)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output CTranslate2 directory."),
    quantization: str = typer.Option("int8", "--quantization", "-q", help=_QUANT_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output directory."),
    trust_remote_code: bool = trust_remote_code_option(),
) -> None:
    """Convert a Hugging Face Whisper model to CTranslate2 for the baseline decoder.

    The tokenizer and preprocessor_config.json are copied along, so the output
    directory is all `xllm decode --whisper DIR` needs.

    Example: xllm export whisper downloads/whisper-small --out exp/whisper_small_ct2
    """
    from ..decoding.ct2 import convert_to_ct2
    from ..trust import allow_remote_code

    allow_remote_code(trust_remote_code)
    _check_out(out, model_dir)
    if out.exists() and not force and _up_to_date(out, model_dir, quantization):
        print(f"{out}: up to date ({model_dir}, {quantization})")
        return
    convert_to_ct2(model_dir, out, quantization=quantization, force=force)
    print(f"{out}: CTranslate2 {quantization} Whisper model of {model_dir}")


def register(app: typer.Typer) -> None:
    example_last(export_app)
    app.add_typer(export_app, name="export")
