"""``xllm decode``: decode a data directory with an experiment's model and score it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand

from ._options import trust_remote_code_option
from ._scoring_options import (keep_spaces_option, lower_option, normalize_options, nfkc_option, punct_option,
                               unit_option)
from ._whisper_options import (channel_option, initial_prompt_option, language_option, t2s_option,
                               task_option, temperature_option, whisper_option)

_ARGS = "xllm_cli.decode.args"  # click Context.meta key: the decode arguments as given


class _KeepsItsArguments(TyperCommand):
    """Keeps the arguments ``xllm decode`` was given, so that the --nj workers can rerun them."""

    def make_context(self, info_name, args, parent=None, **extra):
        given = list(args)  # click's parser consumes the list it is handed
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta[_ARGS] = _one_item_per_option(self, given)
        return ctx


def _one_item_per_option(command: TyperCommand, args: list[str]) -> list[str]:
    """``--name value`` -> ``--name=value`` for options that take a value; flags stay as they are."""
    takes_value = {name for p in command.params if p.param_type_name == "option" and not p.is_flag for name in p.opts}
    out, i = [], 0
    while i < len(args):
        if args[i] in takes_value and i + 1 < len(args):
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out


def decode(
    ctx: typer.Context,
    exp: Optional[Path] = typer.Option(
        None, "--exp", help="Experiment directory (EXP/stageN/best or averaged holds the model); not needed with --whisper."),
    data: Path = typer.Option(..., "--data", help="Kaldi data directory to decode; its basename names the set."),
    stage: Optional[int] = typer.Option(None, "--stage", help="Model of this stage (default: latest of 3, 2 for llm; 1 for nar)."),
    wer: bool = typer.Option(False, "--wer", help="Print the result lines (CER for Chinese, WER for space-delimited text; "
                                                  "scored as xllm score does, see --unit/--lower/--no-punct); needs DATA/text."),
    beam: int = typer.Option(1, "--beam", help="Beam size (1 = greedy)."),
    nbest: int = typer.Option(1, "--nbest", help="Hypotheses kept per utterance in nbest.jsonl (<= --beam)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Utterances per batch (default: 16)."),
    max_batch_seconds: Optional[float] = typer.Option(
        None, "--max-batch-seconds", help="Instead of --batch-size: at most this many padded seconds of audio per batch."
    ),
    max_new_tokens: Optional[int] = typer.Option(
        None, "--max-new-tokens", help="Cap on generated tokens (default: bounded by the input length)."
    ),
    nj: int = typer.Option(1, "--nj", help="Parallel jobs: split DATA into DATA/split{N} and decode the parts in N processes."),
    mode: str = typer.Option("llm", "--mode", help="The decoding system: llm (LLM generation from the soft prompts), nar (the C-Former's own classifier), or one that a plugin registers (docs/extending.md)."),
    no_image: bool = typer.Option(False, "--no-image", help="Ignore image.scp (decode from speech alone)."),
    no_video: bool = typer.Option(False, "--no-video", help="Ignore video.scp frames (speech only)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (bf16 on cuda)."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Decode directory suffix (default: from stage/mode/beam/--no-image)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The decode directory itself (default: EXP/decode_<set>_<tag>)."),
    rescore: Optional[str] = typer.Option(
        None, "--rescore", help="ct2: rescore the n-best with the exported CTranslate2 LLM (EXP/ct2_llm; xllm export ct2)."
    ),
    lm_weight: float = typer.Option(0.5, "--lm-weight", help="Weight of the CTranslate2 LLM score in --rescore."),
    whisper: Optional[Path] = whisper_option("decode"),
    language: Optional[str] = language_option(),
    task: str = task_option(),
    initial_prompt: Optional[str] = initial_prompt_option(),
    temperature: Optional[str] = temperature_option(),
    t2s: bool = t2s_option(),
    channel: str = channel_option(),
    unit: str = unit_option(),
    remove_punct: bool = punct_option(),
    nfkc: bool = nfkc_option(),
    lower: bool = lower_option(),
    keep_spaces: bool = keep_spaces_option(),
    part: Optional[str] = typer.Option(None, "--part", hidden=True, help="Internal (--nj workers): decode part k/N."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="Torch threads, CTranslate2 threads with --whisper (default: all cores; with --nj, cores / N per job)."
    ),
    max_duration: Optional[float] = typer.Option(
        None, "--max-duration",
        help="Longest utterance decoded, in seconds (default: 60; none with --whisper, which decodes long "
             "utterances 30 s window by window). Longer ones are skipped: segment them (xllm transcribe does).",
    ),
    strict: bool = typer.Option(
        False, "--strict",
        help="Fail on an utterance that cannot be decoded (unreadable, empty, outside its file, too long) "
             "instead of skipping it and listing it in DECODE/skipped.",
    ),
    trust_remote_code: bool = trust_remote_code_option(),
) -> None:
    """Decode DATA with the model of EXP (or a Whisper baseline) and write EXP/decode_<set>_<tag>/.

    The decode directory holds hyp (Kaldi text, every decoded utterance),
    nbest.jsonl, decode.log, skipped (utterances that could not be decoded, with
    the reason) and, when DATA has a text file, ref, hyp.trn/ref.trn (sclite),
    per_utt alignments and result.txt. Utterances are decoded in batches sorted by length; a killed job
    resumes where it stopped, and with --nj a rerun skips finished parts. The
    real-time factor (decode seconds / audio seconds) is printed at the end.
    Scoring folds case and removes punctuation by default, as xllm score does;
    result.txt names the normalisation used.

    With --whisper DIR a CTranslate2 Whisper model decodes instead (no trained
    experiment needed: EXP defaults to exp/whisper_<name>), as faster-whisper
    would: language detected unless --language, long utterances decoded 30 s
    window by window; the directory is decode_<set>_whisper_beamN[_lang][_t2s].

    Example (Whisper baseline): xllm decode --whisper models/whisper-base-ct2 --data data/aishell_test --language zh --t2s --beam 5 --wer

    Example: xllm decode --exp exp/mini --data data/test --stage 3 --beam 4 --wer --nj 2
    """
    from ..decoding.decode import run_decode
    from ..decoding.options import DecodeOptions, parse_part
    from ..trust import allow_remote_code

    allow_remote_code(trust_remote_code)  # --nj workers get the flag with the rest of the arguments
    opts = DecodeOptions(
        exp=exp, data=data, stage=stage, mode=mode, beam=beam, nbest=nbest, batch_size=batch_size,
        max_batch_seconds=max_batch_seconds, max_new_tokens=max_new_tokens, nj=nj, use_image=not no_image,
        use_video=not no_video, device=device, tag=tag, wer=wer, rescore=rescore, lm_weight=lm_weight,
        whisper=whisper, part=parse_part(part) if part else None, threads=threads, max_duration=max_duration,
        strict=strict, out=out, language=language, task=task, initial_prompt=initial_prompt, temperature=temperature,
        t2s=t2s, channel=channel, unit=unit, normalize=normalize_options(unit, remove_punct, nfkc, lower, keep_spaces),
        argv=ctx.meta.get(_ARGS),
    )
    run_decode(opts)


def register(app: typer.Typer) -> None:
    app.command("decode", cls=_KeepsItsArguments)(decode)
