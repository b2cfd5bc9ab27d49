"""Video input: uniform frame sampling, duration, the audio track, errors."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from xllm_cli.data.audio import load_audio
from xllm_cli.data.durations import audio_duration, video_duration
from xllm_cli.data.video import frame_times, sample_frames
from xllm_cli.errors import XllmError

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")

# One second each, in this order: the colour at time t tells which second t is in.
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255, 255, 255),
           "black": (0, 0, 0), "yellow": (255, 255, 0)}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """6 s at 10 fps, a solid colour per second, with a 440 Hz audio track."""
    out = tmp_path_factory.mktemp("video") / "colours.mp4"
    args = ["ffmpeg", "-v", "error", "-y"]
    for name in COLOURS:
        hexcolour = "0x" + "".join(f"{v:02X}" for v in COLOURS[name])
        args += ["-f", "lavfi", "-i", f"color=c={hexcolour}:s=32x24:d=1:r=10"]
    args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=6"]
    n = len(COLOURS)
    graph = "".join(f"[{i}:v]" for i in range(n)) + f"concat=n={n}:v=1:a=0[v]"
    args += ["-filter_complex", graph, "-map", "[v]", "-map", f"{n}:a", "-c:v", "mpeg4", "-q:v", "2",
             "-pix_fmt", "yuv420p", "-c:a", "aac", str(out)]
    subprocess.run(args, check=True)
    return out


def nearest(rgb) -> str:
    return min(COLOURS, key=lambda k: sum((a - b) ** 2 for a, b in zip(COLOURS[k], rgb)))


def test_frame_times_are_span_centres():
    assert frame_times(6.0, 3) == [1.0, 3.0, 5.0]
    assert frame_times(2.0, 4) == [0.25, 0.75, 1.25, 1.75]
    with pytest.raises(XllmError):
        frame_times(2.0, 0)


def test_duration(clip):
    assert abs(video_duration(clip) - 6.0) < 0.15


def test_sample_frames_uniform(clip):
    frames = sample_frames(clip, 6)
    assert len(frames) == 6 and all(f.size == (32, 24) and f.mode == "RGB" for f in frames)
    # centres of 6 one-second spans: one frame per colour, in order (NOT the first 6 frames = all red)
    assert [nearest(f.getpixel((16, 12))) for f in frames] == list(COLOURS)


def test_sample_frames_fewer_and_resized(clip):
    frames = sample_frames(clip, 4, size=16)
    assert all(f.size == (16, 16) for f in frames)
    # t = 0.75, 2.25, 3.75, 5.25 s
    assert [nearest(f.getpixel((8, 8))) for f in frames] == ["red", "blue", "white", "yellow"]
    assert np.asarray(frames[0]).reshape(-1, 3).std(axis=0).max() < 10  # solid colour survives scaling


def test_audio_track_of_video(clip):
    wave = load_audio(clip)
    assert abs(len(wave) - 6 * 16000) < 0.05 * 16000
    peak_hz = np.argmax(np.abs(np.fft.rfft(wave))) * 16000 / len(wave)
    assert abs(peak_hz - 440) < 3
    part = load_audio(clip, start=2.0, end=3.0)
    assert abs(len(part) - 16000) < 200
    assert abs(audio_duration(clip) - 6.0) < 0.15


def test_video_without_audio(tmp_path):
    out = tmp_path / "silent.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=16x16:d=1:r=5",
                    "-c:v", "mpeg4", str(out)], check=True)
    with pytest.raises(XllmError, match="silent.mp4"):
        load_audio(out)
    assert len(sample_frames(out, 2)) == 2


def test_corrupt_video_names_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)
    with pytest.raises(XllmError) as e:
        sample_frames(bad, 2)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(XllmError, match="not found"):
        video_duration(tmp_path / "missing.mp4")
