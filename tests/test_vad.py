"""VAD chunking: speech islands are found, chunk limits hold, memory stays bounded."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from xllm_cli.data.vad import VadChunker, VadOptions, iter_speech_chunks, split_speech
from xllm_cli.errors import XllmError

SR = 16000


def voiced(seconds: float, f0: float = 150.0, tremolo: float = 0.0) -> np.ndarray:
    """A harmonic, voice-like tone (webrtcvad calls it speech; a pure sine it does not)."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(0.1 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 15))
    if tremolo:
        x = x * (1 + 0.5 * np.sin(2 * np.pi * tremolo * t))
    return x.astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def espeak(text: str, tmp_path) -> np.ndarray:
    import soundfile as sf
    import torch
    import torchaudio

    wav = tmp_path / "tts.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(wav), text], check=True, capture_output=True)
    x, sr = sf.read(wav, dtype="float32")
    return torchaudio.functional.resample(torch.from_numpy(x), sr, SR).numpy()


def test_tone_bursts_give_one_chunk_per_island():
    # islands at 1.0-2.5 s and 5.0-7.0 s, separated by 2.5 s of silence
    wave = np.concatenate([silence(1.0), voiced(1.5), silence(2.5), voiced(2.0), silence(1.0)])
    chunks = split_speech(wave, VadOptions(aggressiveness=2, pad=0.2))
    assert len(chunks) == 2
    (a, b) = chunks
    assert a.start == pytest.approx(0.8, abs=0.1) and a.end == pytest.approx(2.7, abs=0.1)
    assert b.start == pytest.approx(4.8, abs=0.1) and b.end == pytest.approx(7.2, abs=0.1)
    # the samples are the recording's samples at those times
    start = int(round(b.start * SR))
    assert np.array_equal(b.samples, wave[start : start + len(b.samples)])
    assert len(b.samples) == pytest.approx(b.duration * SR, abs=1)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_speech_islands(tmp_path):
    one = espeak("the quick brown fox jumps over the lazy dog", tmp_path)
    two = espeak("speech recognition with a large language model", tmp_path)
    wave = np.concatenate([silence(1.0), one, silence(3.0), two, silence(1.0)])
    chunks = split_speech(wave, VadOptions(aggressiveness=2))
    assert len(chunks) == 2
    one_start, one_end = 1.0, 1.0 + len(one) / SR
    two_start = one_end + 3.0
    two_end = two_start + len(two) / SR
    # each chunk lies around its phrase (espeak pads its clips with a little silence)
    assert one_start - 0.3 <= chunks[0].start and chunks[0].end <= one_end + 0.3
    assert two_start - 0.3 <= chunks[1].start and chunks[1].end <= two_end + 0.3
    assert chunks[0].duration > 0.7 * (one_end - one_start)
    assert chunks[1].duration > 0.7 * (two_end - two_start)


def test_short_neighbours_are_merged():
    # two 0.4 s words 0.3 s apart are one chunk; a short word 1.2 s before a long one joins it
    wave = np.concatenate([silence(1), voiced(0.4), silence(0.3), voiced(0.4), silence(3), voiced(0.5), silence(1.2),
                           voiced(3.0), silence(1)])
    chunks = split_speech(wave, VadOptions(max_gap=0.5, min_chunk=1.0, short_gap=1.5))
    assert len(chunks) == 2
    assert chunks[0].start < 1.0 and chunks[0].end > 2.1
    assert chunks[1].start < 5.1 and chunks[1].end > 9.8


def test_long_speech_is_split_at_pauses_within_max_chunk():
    # 63 s of speech with 0.15 s pauses every 7 s: chunks <= 20 s, cut inside pauses
    pieces, pauses = [], []
    t = 0.0
    for _ in range(9):
        pieces += [voiced(7.0), silence(0.15)]
        t += 7.0
        pauses.append((t, t + 0.15))
        t += 0.15
    wave = np.concatenate(pieces)
    chunks = split_speech(wave, VadOptions(max_chunk=20.0))
    assert all(c.duration <= 20.0 + 1e-6 for c in chunks)
    for a, b in zip(chunks, chunks[1:]):
        assert a.end == pytest.approx(b.start)  # split, not trimmed: nothing lost
        assert any(lo - 0.031 <= a.end <= hi + 0.031 for lo, hi in pauses), a.end
    assert chunks[0].start == 0.0 and chunks[-1].end > t - 0.5


def test_steady_speech_is_cut_hard_at_max_chunk():
    chunks = split_speech(voiced(50.0), VadOptions(max_chunk=20.0))
    assert [round(c.duration) for c in chunks] == [20, 20, 10]
    assert all(c.duration <= 20.0 for c in chunks)


def test_clicks_are_dropped():
    wave = np.concatenate([silence(1.0), voiced(0.06), silence(2.0)])
    assert split_speech(wave, VadOptions(min_speech=0.15)) == []


def test_streaming_in_odd_blocks_equals_one_shot():
    wave = np.concatenate([silence(0.7), voiced(2.3, tremolo=3), silence(1.9), voiced(30.0, tremolo=3), silence(0.5)])
    whole = split_speech(wave, VadOptions(max_chunk=12.0))
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.integers(0, len(wave), size=40))
    blocks = np.split(wave, cuts)
    streamed = list(iter_speech_chunks(blocks, VadOptions(max_chunk=12.0)))
    assert [(c.start, c.end) for c in streamed] == [(c.start, c.end) for c in whole]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(streamed, whole))


def test_memory_stays_bounded_on_an_eleven_minute_stream():
    """11 minutes streamed in 10 s blocks: the chunker never holds more than about one chunk."""
    unit = np.concatenate([voiced(6.0, tremolo=2), silence(0.2), voiced(9.0, tremolo=2), silence(1.5)])

    def blocks():  # generated on the fly: the test itself never holds the recording either
        pos, total = 0, 11 * 60 * SR
        period = len(unit)
        while pos < total:
            n = min(10 * SR, total - pos)
            idx = (np.arange(pos, pos + n)) % period
            yield unit[idx]
            pos += n

    opts = VadOptions(max_chunk=20.0)
    chunker = VadChunker(opts)
    count = 0
    longest = 0.0
    for chunk in iter_speech_chunks(blocks(), chunker=chunker):
        count += 1
        longest = max(longest, chunk.duration)
    assert count >= 660 / 16.7 * 0.9
    assert longest <= 20.0
    assert chunker.max_samples_held <= (20.0 + 0.1) * SR


@pytest.mark.parametrize("bad", [dict(aggressiveness=4), dict(max_chunk=0.5), dict(pad=-1.0)])
def test_bad_options_are_user_errors(bad):
    with pytest.raises(XllmError):
        VadChunker(VadOptions(**bad))
