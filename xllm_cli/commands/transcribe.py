"""``xllm transcribe``: transcribe audio/video files of any length (VAD chunking)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._options import trust_remote_code_option


def transcribe(
    files: List[Path] = typer.Argument(..., metavar="FILE", help="Audio or video files (anything ffmpeg reads)."),
    exp: Path = typer.Option(..., "--exp", help="Experiment directory whose model transcribes."),
    image: Optional[Path] = typer.Option(None, "--image", help="An image giving context (for a model with an image interface)."),
    fmt: str = typer.Option("text", "--format", help="text (a line per chunk), srt, vtt or json (segments with times)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write OUT/<name>.<txt|srt|vtt|json> instead of printing; for one FILE, OUT may be the file (talk.srt)."),
    max_chunk: float = typer.Option(25.0, "--max-chunk", help="Longest speech chunk in seconds; longer speech is split at a pause."),
    vad_aggressiveness: int = typer.Option(2, "--vad-aggressiveness", help="webrtcvad mode 0-3 (3 drops the most non-speech)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Chunks decoded together."),
    stage: Optional[int] = typer.Option(None, "--stage", help="Model of this stage (default: latest of 3, 2)."),
    beam: int = typer.Option(1, "--beam", help="Beam size (1 = greedy)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (bf16 on cuda)."),
    trust_remote_code: bool = trust_remote_code_option(),
) -> None:
    """Transcribe FILE... with the model of EXP.

    Long recordings are streamed through webrtcvad and cut into speech
    chunks of at most --max-chunk seconds (short neighbours merged, long
    speech split at its quietest point), decoded --batch-size at a time;
    memory does not grow with the file's length. Timestamps are the
    chunks' start and end.

    Example: xllm transcribe --exp exp/mini talk.mp4 --format srt --out subs/
    """
    from ..console import setup_logging
    from ..decoding.transcribe import TranscribeOptions, run_transcribe
    from ..trust import allow_remote_code

    setup_logging()
    allow_remote_code(trust_remote_code)

    run_transcribe(
        TranscribeOptions(
            exp=exp, files=list(files), image=image, format=fmt, out=out, max_chunk=max_chunk,
            vad_aggressiveness=vad_aggressiveness, batch_size=batch_size, stage=stage, device=device, beam=beam,
        )
    )


def register(app: typer.Typer) -> None:
    app.command("transcribe")(transcribe)
