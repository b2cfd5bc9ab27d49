"""Video input: duration and N frames sampled uniformly over a clip, as PIL images.

Frames are taken at the centres of N equal spans of the clip (t_i = (i + 0.5) *
duration / N), so they cover the whole clip; X-LLM's first-N-frames sampling
only ever sees the opening moment. Each frame is one ffmpeg call with input
seeking (``-ss`` before ``-i``), which decodes from the nearest keyframe only.
The audio track of a video is read with :func:`xllm_cli.data.audio.load_audio`;
its duration is :func:`xllm_cli.data.durations.video_duration`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from ..errors import XllmError
from .durations import video_duration
from .media import corrupt, existing_file, ffmpeg_failure, first_stream, probe_media, require_ffmpeg

__all__ = ["frame_times", "sample_frames", "video_duration"]


def frame_times(duration: float, num_frames: int) -> list[float]:
    """Centres of ``num_frames`` equal spans of ``[0, duration]``."""
    if num_frames <= 0:
        raise XllmError(f"number of frames must be positive, not {num_frames}")
    span = duration / num_frames
    return [(i + 0.5) * span for i in range(num_frames)]


def _video_size(path: Path) -> tuple[int, int]:
    stream = first_stream(probe_media(path), "video")
    if stream is None:
        raise XllmError(f"no video stream in {path}")
    return int(stream["width"]), int(stream["height"])


def _grab(path: Path, time: float, width: int, height: int, scale: bool) -> bytes:
    import ffmpeg

    stream = ffmpeg.input(str(path), ss=f"{max(time, 0.0):.6f}").video
    if scale:
        stream = stream.filter("scale", width, height)
    args = (
        stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", vframes=1)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
        .compile(cmd=require_ffmpeg())
    )
    result = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if result.returncode != 0:
        raise ffmpeg_failure(path, result.stderr, "video")
    return result.stdout


def sample_frames(path: str | Path, num_frames: int, size: tuple[int, int] | int | None = None) -> list:
    """``num_frames`` RGB frames (PIL images) uniformly spread over the clip.

    ``size`` (width, height), or an int for a square, rescales the frames.
    A timestamp past the last decodable frame (rounding at the very end of a
    clip) repeats the frame before it.
    """
    from PIL import Image

    path = existing_file(path, "video")
    duration = video_duration(path)
    if isinstance(size, int):
        size = (size, size)
    width, height = size if size is not None else _video_size(path)
    nbytes = width * height * 3
    frames: list = []
    for t in frame_times(duration, num_frames):
        data = _grab(path, t, width, height, scale=size is not None)
        if len(data) < nbytes:  # nothing decoded at t: step back towards the last frame
            data = _grab(path, max(t - 0.5, 0.0), width, height, scale=size is not None)
        if len(data) < nbytes:
            if not frames:
                raise corrupt(path, f"no video frame decodable at {t:.3f} s")
            frames.append(frames[-1].copy())
            continue
        pixels = np.frombuffer(data[:nbytes], dtype=np.uint8).reshape(height, width, 3)
        frames.append(Image.fromarray(pixels.copy(), "RGB"))
    return frames
