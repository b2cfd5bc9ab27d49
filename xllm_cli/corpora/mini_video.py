"""Short clips for the mini corpus: a moving picture of the spoken scene plus the speech.

Frames are rendered with :mod:`mini_images` (the objects drift along a path so
that frames differ over time) and piped as raw RGB into ffmpeg, which muxes
them with the utterance's wav into an MP4 (MPEG-4 Part 2 video, which every
ffmpeg build can encode, and AAC audio). Arguments are built with ffmpeg-python
and run as a list; the file appears under its final name only when complete.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import numpy as np

from ..data.media import require_ffmpeg
from ..errors import XllmError
from .mini_images import Scene, render

FPS = 10


def frame_shift(i: int, n: int, phase: float) -> tuple[float, float]:
    """A slow loop: objects drift by up to 6% of the picture over the clip."""
    t = i / max(n - 1, 1)
    return 0.06 * math.sin(2 * math.pi * t + phase), 0.04 * math.cos(2 * math.pi * t + phase)


def write_video(out: Path, scene: Scene, wav: Path, duration: float, size: int = 96, phase: float = 0.0) -> None:
    """Render ``duration`` seconds of ``scene`` at FPS frames/s and mux with ``wav`` into ``out``."""
    import ffmpeg

    n = max(1, int(math.ceil(duration * FPS)))
    frames = np.stack([np.asarray(render(scene, size, frame_shift(i, n, phase))) for i in range(n)])
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}{out.suffix}")
    video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{size}x{size}", framerate=FPS)
    audio = ffmpeg.input(str(wav))
    args = (
        ffmpeg.output(video, audio, str(tmp), vcodec="mpeg4", pix_fmt="yuv420p", acodec="aac",
                      ar=16000, ac=1, **{"q:v": 3, "b:a": "64k"})
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y")
        .compile(cmd=require_ffmpeg())
    )
    result = subprocess.run(args, input=frames.tobytes(), capture_output=True, check=False)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise XllmError(f"{out}: ffmpeg could not write the video: {lines[-1] if lines else 'no message'}")
    os.replace(tmp, out)
