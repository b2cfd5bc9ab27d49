"""xllm transcribe: VAD-chunked long audio, batched decoding, text/SRT/VTT/JSON output,
bounded memory on an 11-minute file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xllm_cli.data.vad import VadChunker, VadOptions
from xllm_cli.decoding import transcribe as T
from tiny_exp import build_tiny_exp

SR = 16000


def voiced(seconds: float, f0: float = 150.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = sum(0.1 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 15))
    return (x * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


class FakeChunkDecoder:
    """Names each chunk by its length; records batch sizes."""

    def __init__(self):
        self.batch_sizes = []

    def decode_chunks(self, chunks, source):
        self.batch_sizes.append(len(chunks))
        return [f"speech of {c.duration:.1f} seconds" for c in chunks]


@pytest.fixture
def islands_wav(tmp_path) -> Path:
    """Speech at 1-3 s, 5-6.5 s and 9-12 s."""
    wave = np.concatenate([silence(1), voiced(2), silence(2), voiced(1.5), silence(2.5), voiced(3), silence(1)])
    path = tmp_path / "talk.wav"
    sf.write(path, wave, SR)
    return path


def run(files, fmt, out=None, decoder=None, batch_size=2):
    decoder = decoder or FakeChunkDecoder()
    printed = []
    opts = T.TranscribeOptions(exp=None, files=list(files), format=fmt, out=out, batch_size=batch_size)
    results = T.run_transcribe(opts, decoder_factory=lambda o: decoder, echo=printed.append)
    return results, "".join(printed), decoder


def test_segments_follow_the_speech(islands_wav):
    (t,), text, decoder = run([islands_wav], "text")
    assert [(round(s.start), round(s.end)) for s in t.segments] == [(1, 3), (5, 7), (9, 12)]
    assert decoder.batch_sizes == [2, 1]
    assert text.splitlines() == [s.text for s in t.segments]
    assert t.duration == pytest.approx(13.0, abs=0.01)


def test_srt_is_valid(islands_wav, tmp_path):
    (t,), _, _ = run([islands_wav], "srt", out=tmp_path / "out")
    srt = (tmp_path / "out" / "talk.srt").read_text(encoding="utf-8")
    blocks = srt.strip().split("\n\n")
    assert len(blocks) == 3
    stamp = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
    previous_end = -1.0
    for i, block in enumerate(blocks, start=1):
        number, times, text = block.split("\n")
        assert number == str(i)
        m = re.fullmatch(f"{stamp} --> {stamp}", times)
        assert m, times
        g = [int(x) for x in m.groups()]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        assert previous_end <= start < end
        assert start == pytest.approx(t.segments[i - 1].start, abs=0.001)
        previous_end = end
        assert text.startswith("speech of")


def test_vtt_is_valid(islands_wav):
    _, vtt, _ = run([islands_wav], "vtt")
    assert vtt.startswith("WEBVTT\n\n")
    cues = re.findall(r"^(\d\d:\d\d:\d\d\.\d\d\d) --> (\d\d:\d\d:\d\d\.\d\d\d)\n(.+)$", vtt, flags=re.M)
    assert len(cues) == 3 and cues[0][0].startswith("00:00:00.") and cues[2][1].startswith("00:00:12.")


def test_json_has_segments_with_times(islands_wav, tmp_path):
    other = tmp_path / "sub" / "talk.flac"  # same stem: written as talk.2.json, not over talk.json
    other.parent.mkdir()
    sf.write(other, np.concatenate([silence(0.5), voiced(1.0), silence(0.5)]), SR)
    results, _, _ = run([islands_wav, other], "json", out=tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "talk.json").read_text(encoding="utf-8"))
    assert doc["file"] == str(islands_wav)
    assert [set(s) for s in doc["segments"]] == [{"start", "end", "text"}] * 3
    assert all(s["start"] < s["end"] for s in doc["segments"])
    assert doc["text"] == " ".join(s["text"] for s in doc["segments"])
    doc2 = json.loads((tmp_path / "out" / "talk.2.json").read_text(encoding="utf-8"))
    assert len(doc2["segments"]) == 1


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_video_file_audio_track(islands_wav, tmp_path):
    video = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=blue:s=64x48:d=13", "-i", str(islands_wav),
                    "-shortest", "-c:v", "libx264", "-c:a", "aac", "-pix_fmt", "yuv420p", str(video)],
                   check=True, capture_output=True)
    (t,), _, _ = run([video], "text")
    assert [(round(s.start), round(s.end)) for s in t.segments] == [(1, 3), (5, 7), (9, 12)]


def test_eleven_minute_file_streams_with_bounded_memory(tmp_path):
    """An 11-minute WAV is read in blocks and chunked incrementally: the chunker holds
    at most about one chunk, and batches stay at --batch-size."""
    path = tmp_path / "long.wav"
    unit = np.concatenate([voiced(8.0), silence(0.15), voiced(10.0), silence(1.2)])  # 19.35 s
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        for _ in range(35):  # 677 s, written piece by piece
            f.write(unit)
    from xllm_cli.data.audio import iter_audio_blocks

    vad = VadOptions(max_chunk=12.0)
    chunker = VadChunker(vad)
    decoder = FakeChunkDecoder()
    biggest_block = 0

    def blocks():
        nonlocal biggest_block
        for b in iter_audio_blocks(path, block_seconds=T.BLOCK_SECONDS):
            biggest_block = max(biggest_block, len(b))
            yield b

    t = T.transcribe_stream(blocks(), decoder, path, vad, batch_size=4, chunker=chunker)
    assert t.duration == pytest.approx(35 * len(unit) / SR, abs=0.01)
    assert len(t.segments) >= 70  # two chunks per unit: 18 s of speech does not fit in 12 s
    assert max(s.end - s.start for s in t.segments) <= 12.0
    assert max(decoder.batch_sizes) == 4
    assert chunker.max_samples_held <= 12.1 * SR  # never the whole file (677 s)
    assert biggest_block <= T.BLOCK_SECONDS * SR


def test_cli_missing_file_is_one_line_error(tmp_path):
    (tmp_path / "exp").mkdir()
    proc = subprocess.run([sys.executable, "-m", "xllm_cli", "transcribe", "--exp", str(tmp_path / "exp"),
                           str(tmp_path / "missing.wav")], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "missing.wav" in lines[0]


def test_bad_format_is_rejected(islands_wav):
    from xllm_cli.errors import XllmError

    with pytest.raises(XllmError, match="--format"):
        run([islands_wav], "docx")


# ----------------------------------------------------------------------------- the real tiny model


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_tiny_model_transcribes_audio_and_video_with_image(islands_wav, tmp_path):
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    exp = build_tiny_exp(tmp_path, ["你好世界", "今天天气很好"], vision=True, sharp=False)
    image = tmp_path / "scene.png"
    Image.new("RGB", (80, 60), (200, 30, 30)).save(image)
    video = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=s=64x48:d=13:r=5", "-i", str(islands_wav),
                    "-shortest", "-c:v", "libx264", "-c:a", "aac", "-pix_fmt", "yuv420p", str(video)],
                   check=True, capture_output=True)
    opts = T.TranscribeOptions(exp=exp, files=[islands_wav, video], image=image, format="json", out=tmp_path / "out",
                               batch_size=2)
    decoder = T.build_chunk_decoder(opts)
    results = T.run_transcribe(opts, decoder_factory=lambda o: decoder)
    assert [len(t.segments) for t in results] == [3, 3]
    assert decoder.image is not None and tuple(decoder.image.shape) == (3, 64, 64)
    assert decoder._video[0] == str(video) and tuple(decoder._video[1].shape) == (8, 3, 64, 64)  # frames of the mp4
    for name in ("talk.json", "clip.json"):
        doc = json.loads((tmp_path / "out" / name).read_text(encoding="utf-8"))
        assert [round(s["start"]) for s in doc["segments"]] == [1, 5, 9]
        assert all(isinstance(s["text"], str) for s in doc["segments"])


def test_several_files_print_text_with_headers_but_need_out_for_srt(islands_wav, tmp_path):
    from xllm_cli.errors import XllmError

    other = tmp_path / "other.wav"
    sf.write(other, np.concatenate([silence(0.5), voiced(1.0), silence(0.5)]), SR)
    _, text, _ = run([islands_wav, other], "text")
    assert text.splitlines()[0] == f"==> {islands_wav} <==" and f"==> {other} <==" in text.splitlines()
    with pytest.raises(XllmError, match="--out"):
        run([islands_wav, other], "srt")


def test_out_is_checked_before_the_model_loads(islands_wav, tmp_path, monkeypatch):
    """--out that cannot take the results fails at once, in one line: no model is loaded, nothing decoded."""
    from xllm_cli.errors import XllmError

    def no_model(opts):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(T, "build_chunk_decoder", no_model)
    other = tmp_path / "other.wav"
    sf.write(other, np.concatenate([silence(0.5), voiced(1.0), silence(0.5)]), SR)
    existing = tmp_path / "notes"
    existing.write_text("mine\n")
    cases = [
        ([islands_wav, other], "srt", tmp_path / "subs.srt", "a file, but 2 inputs need a directory"),
        ([islands_wav, other], "text", existing, "a file, but 2 inputs need a directory"),
        ([islands_wav], "srt", existing / "subs", "is a file, not a directory"),
        ([islands_wav], "srt", existing / "deeper" / "talk.srt", "is a file, not a directory"),
    ]
    for files, fmt, out, message in cases:
        opts = T.TranscribeOptions(exp=tmp_path, files=files, format=fmt, out=out)
        with pytest.raises(XllmError, match=message):
            T.run_transcribe(opts)
    assert existing.read_text() == "mine\n"


def test_out_may_name_the_file_of_a_single_input(islands_wav, tmp_path):
    run([islands_wav], "srt", out=tmp_path / "subs" / "talk-en.srt")
    assert (tmp_path / "subs" / "talk-en.srt").read_text(encoding="utf-8").startswith("1\n00:00:0")
    assert not (tmp_path / "subs" / "talk-en.srt" / "talk.srt").exists()
