"""``xllm transcribe``: transcribe audio/video files of any length (an experiment's model or a Whisper baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._options import trust_remote_code_option
from ._whisper_options import (channel_option, initial_prompt_option, language_option, t2s_option, task_option,
                               temperature_option, whisper_option)


def transcribe(
    files: List[Path] = typer.Argument(..., metavar="FILE", help="Audio or video files (anything ffmpeg reads)."),
    exp: Optional[Path] = typer.Option(None, "--exp", help="Experiment directory whose model transcribes (or --whisper)."),
    whisper: Optional[Path] = whisper_option("transcribe"),
    image: Optional[Path] = typer.Option(None, "--image", help="An image giving context (for a model with an image interface)."),
    fmt: str = typer.Option("text", "--format", help="text (a line per segment), srt, vtt or json (segments with times)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write OUT/<name>.<txt|srt|vtt|json> instead of printing; for one FILE, OUT may be the file (talk.srt)."),
    max_chunk: float = typer.Option(25.0, "--max-chunk", help="Longest speech chunk in seconds (--exp); longer speech is split at a pause."),
    vad_aggressiveness: int = typer.Option(2, "--vad-aggressiveness", help="webrtcvad mode 0-3 (--exp; 3 drops the most non-speech)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Chunks decoded together (--exp)."),
    stage: Optional[int] = typer.Option(None, "--stage", help="Model of this stage (default: latest of 3, 2)."),
    beam: int = typer.Option(1, "--beam", help="Beam size (1 = greedy; faster-whisper's default is 5)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (bf16 on cuda; float16 for --whisper)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CTranslate2 threads for --whisper (default: 4 or the cores)."),
    language: Optional[str] = language_option(),
    task: str = task_option(),
    initial_prompt: Optional[str] = initial_prompt_option(),
    temperature: Optional[str] = temperature_option(),
    word_timestamps: bool = typer.Option(False, "--word-timestamps",
                                         help="With --whisper: word start/end times in --format json (cross-attention alignment)."),
    t2s: bool = t2s_option(),
    channel: str = channel_option(),
    trust_remote_code: bool = trust_remote_code_option(),
) -> None:
    """Transcribe FILE... with the model of EXP, or with a CTranslate2 Whisper model (--whisper).

    Files are streamed, so memory does not grow with their length. With --exp
    they go through webrtcvad and are cut into speech chunks of at most
    --max-chunk seconds (short neighbours merged, long speech split at its
    quietest point), decoded --batch-size at a time; timestamps are the
    chunks'. With --whisper the model seeks through the file 30 s window by
    window as faster-whisper does (language detected per file unless
    --language), and its own timestamps make the segments.

    Example (Whisper baseline): xllm transcribe --whisper models/whisper-base-ct2 lecture.mp3 --beam 5 --format json --word-timestamps

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
            channel=channel, threads=threads, whisper=whisper, language=language, task=task,
            initial_prompt=initial_prompt, temperature=temperature, word_timestamps=word_timestamps, t2s=t2s,
        )
    )


def register(app: typer.Typer) -> None:
    app.command("transcribe")(transcribe)
