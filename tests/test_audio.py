"""Audio input: formats, segments, resampling, streaming, and the one-line errors."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from xllm_cli.data import audio as A
from xllm_cli.data.audio import iter_audio_blocks, load_audio, load_utterance
from xllm_cli.data.durations import audio_duration
from xllm_cli.data.media import require_ffmpeg
from xllm_cli.data.utterance import Utterance
from xllm_cli.errors import XllmError

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def ramp_tone(seconds: float, rate: int) -> np.ndarray:
    """A 440 Hz tone whose loudness rises linearly: position in the file is visible in the level."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * (0.1 + 0.8 * t / seconds)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    wave = ramp_tone(3.0, 16000)
    sf.write(d / "a.wav", wave, 16000)
    sf.write(d / "a.flac", wave, 16000)
    if shutil.which("ffmpeg"):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(d / "a.wav"), "-b:a", "128k", str(d / "a.mp3")],
                       check=True)
    return d, wave


@pytest.mark.parametrize("ext", ["wav", "flac", pytest.param("mp3", marks=needs_ffmpeg)])
def test_load_formats(files, ext):
    d, wave = files
    out = load_audio(d / f"a.{ext}")
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - len(wave)) <= 0.05 * 16000  # mp3 may pad a few ms
    if ext != "mp3":
        np.testing.assert_allclose(out, wave, atol=1e-3 if ext == "flac" else 1e-4)
    else:
        assert abs(rms(out) - rms(wave)) < 0.05 * rms(wave)
    assert abs(audio_duration(d / f"a.{ext}") - 3.0) < 0.1


@pytest.mark.parametrize("ext", ["wav", pytest.param("mp3", marks=needs_ffmpeg)])
def test_segment_slicing(files, ext):
    d, wave = files
    seg = load_audio(d / f"a.{ext}", start=1.0, end=1.5)
    assert abs(len(seg) - 8000) <= 64
    expected = load_audio(d / f"a.{ext}")[16000:24000]  # lossy formats change the level a little
    assert abs(rms(seg) - rms(expected)) < 0.02 * rms(expected)  # the rising level says where we are
    assert rms(seg) > rms(wave[:8000]) * 1.5 and rms(seg) < rms(wave[-8000:]) / 1.3
    utt = Utterance("u", "s", "r", str(d / f"a.{ext}"), start=2.0, end=2.25)
    assert abs(len(load_utterance(utt)) - 4000) <= 64


def test_segment_reads_only_that_part(files, monkeypatch):
    """soundfile path: the read is for the segment's frames, not the whole file."""
    d, _ = files
    asked = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        asked.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    load_audio(d / "a.wav", start=1.0, end=1.5)
    assert asked == [8000]


def test_resample_stereo_44k(tmp_path):
    rate = 44100
    t = np.arange(2 * rate) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1).astype(np.float32), rate)
    out = load_audio(tmp_path / "st.wav")
    assert out.ndim == 1 and abs(len(out) - 32000) <= 2
    spectrum = np.abs(np.fft.rfft(out))
    peak_hz = np.argmax(spectrum) * 16000 / len(out)
    assert abs(peak_hz - 440) < 2
    assert abs(rms(out[1000:-1000]) - 0.5 / np.sqrt(2)) < 0.01  # channels averaged, level kept


@needs_ffmpeg
def test_resample_through_ffmpeg(tmp_path):
    rate = 44100
    t = np.arange(rate) / rate
    sf.write(tmp_path / "st.wav", np.stack([np.sin(2 * np.pi * 1000 * t)] * 2, 1).astype(np.float32) * 0.5, rate)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "st.wav"), str(tmp_path / "st.mp3")], check=True)
    out = load_audio(tmp_path / "st.mp3")
    assert abs(len(out) - 16000) < 0.06 * 16000
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * 16000 / len(out)
    assert abs(peak_hz - 1000) < 3


@needs_ffmpeg
def test_iter_audio_blocks_covers_file(tmp_path):
    wave = ramp_tone(7.3, 22050)  # not 16 kHz: goes through the ffmpeg pipe
    sf.write(tmp_path / "long.wav", wave, 22050)
    blocks = list(iter_audio_blocks(tmp_path / "long.wav", block_seconds=2.0))
    assert all(len(b) == 32000 for b in blocks[:-1])
    assert 0 < len(blocks[-1]) <= 32000
    total = sum(len(b) for b in blocks)
    assert abs(total - 7.3 * 16000) <= 16
    whole = load_audio(tmp_path / "long.wav")  # torchaudio's resampler; the blocks used ffmpeg's
    joined = np.concatenate(blocks)
    inner = slice(1000, min(len(whole), total) - 1000)  # resampler edge effects differ
    np.testing.assert_allclose(joined[inner], whole[inner], atol=5e-3)


def test_iter_audio_blocks_native_rate(files):
    d, wave = files
    blocks = list(iter_audio_blocks(d / "a.wav", block_seconds=1.0))
    assert [len(b) for b in blocks] == [16000, 16000, 16000]
    np.testing.assert_allclose(np.concatenate(blocks), wave, atol=1e-4)


@needs_ffmpeg
def test_iter_audio_blocks_stops_ffmpeg_early(tmp_path):
    sf.write(tmp_path / "x.wav", ramp_tone(5.0, 8000), 8000)
    gen = iter_audio_blocks(tmp_path / "x.wav", block_seconds=1.0)
    first = next(gen)
    gen.close()  # must kill the ffmpeg process, not hang
    assert len(first) == 16000


def test_missing_ffmpeg_one_line(tmp_path, monkeypatch, files):
    d, _ = files
    monkeypatch.setattr(A.shutil, "which", lambda name: None)
    with pytest.raises(XllmError) as e:
        require_ffmpeg()
    assert "ffmpeg not found" in str(e.value) and "apt-get install ffmpeg" in str(e.value)
    assert "\n" not in str(e.value)
    (tmp_path / "x.mp3").write_bytes(b"\xff\xfb" * 100)
    with pytest.raises(XllmError, match="ffmpeg not found"):
        load_audio(tmp_path / "x.mp3")
    assert len(load_audio(d / "a.wav")) == 48000  # wav needs no ffmpeg


def test_missing_ffmpeg_cli_message(tmp_path):
    """Through the CLI with an empty PATH: one line, no traceback."""
    import sys

    (tmp_path / "x.mp3").write_bytes(b"\xff\xfb" * 100)
    code = (
        "import sys; from xllm_cli.main import _fail; from xllm_cli.data.audio import load_audio\n"
        "from xllm_cli.errors import XllmError\n"
        f"try: load_audio({str(tmp_path / 'x.mp3')!r})\n"
        "except XllmError as e: _fail(str(e))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": str(tmp_path)})
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "ffmpeg not found" in r.stderr


@pytest.mark.parametrize("name", ["bad.wav", pytest.param("bad.mp3", marks=needs_ffmpeg)])
def test_corrupt_file_names_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"RIFF" + b"garbage" * 50)
    with pytest.raises(XllmError) as e:
        load_audio(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(XllmError, match=str(path).replace(".", r"\.")):
        audio_duration(path)


def test_missing_file(tmp_path):
    with pytest.raises(XllmError, match="not found"):
        load_audio(tmp_path / "nope.wav")
