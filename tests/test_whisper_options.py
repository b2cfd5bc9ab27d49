"""The Whisper baseline's options without a model: decode directory names, --t2s, option checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xllm_cli.decoding import job
from xllm_cli.decoding.options import DecodeOptions
from xllm_cli.errors import XllmError
from xllm_cli.main import app

runner = CliRunner()


def test_decode_dirs_are_named_by_beam_and_language(tmp_path):
    """--beam 5 no longer overwrites --beam 1: whisper_beamN, then language, task, t2s, channel."""
    data = tmp_path / "data" / "dev"

    def out(**kw):
        opts = DecodeOptions(exp=tmp_path / "exp", data=data, whisper=tmp_path / "base_ct2", **kw)
        opts.validate()
        return job.decode_dir_for(opts, None).name

    assert out() == "decode_dev_whisper_beam1"
    assert out(beam=5) == "decode_dev_whisper_beam5"
    assert out(beam=5, language="zh", t2s=True) == "decode_dev_whisper_beam5_zh_t2s"
    assert out(task="translate", channel="left") == "decode_dev_whisper_beam1_translate_left"
    # no --exp: exp/whisper_<model dir name>; --out: the directory itself
    opts = DecodeOptions(exp=None, data=data, whisper=tmp_path / "base_ct2", beam=2)
    assert job.decode_dir_for(opts, None) == Path("exp/whisper_base_ct2/decode_dev_whisper_beam2")
    opts.out = tmp_path / "mine"
    assert job.decode_dir_for(opts, None) == tmp_path / "mine"


def test_search_options_are_in_the_fingerprint(tmp_path):
    base = dict(exp=tmp_path, data=tmp_path, whisper=tmp_path)
    fps = [job.decode_fingerprint(DecodeOptions(**base, **kw), None)
           for kw in ({}, {"initial_prompt": "AISHELL"}, {"temperature": "0"}, {"t2s": True})]
    assert len({str(f) for f in fps}) == 4  # a changed option never reuses the old hypotheses


def test_whisper_options_need_whisper_and_llm_needs_exp(tmp_path):
    with pytest.raises(XllmError, match="--language is an option of the Whisper baseline"):
        DecodeOptions(exp=tmp_path, data=tmp_path, language="en").validate()
    with pytest.raises(XllmError, match="--exp is required"):
        DecodeOptions(exp=None, data=tmp_path).validate()
    with pytest.raises(XllmError, match="--channel must be one of mix, left, right"):
        DecodeOptions(exp=None, data=tmp_path, whisper=tmp_path, channel="centre").validate()
    with pytest.raises(XllmError, match="--task must be"):
        DecodeOptions(exp=None, data=tmp_path, whisper=tmp_path, task="summarise").validate()
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")
    res = runner.invoke(app, ["transcribe", str(wav)])
    assert res.exit_code != 0 and "give --exp EXP" in str(res.exception or res.output)
    res = runner.invoke(app, ["transcribe", str(wav), "--exp", str(tmp_path), "--t2s"])
    assert "--t2s is an option of the Whisper baseline" in str(res.exception or res.output)


def test_t2s_writes_simplified_chinese(tmp_path, monkeypatch):
    """Whisper writes Traditional characters; --t2s converts the hypotheses (OpenCC) before scoring."""
    pytest.importorskip("opencc")
    from xllm_cli.decoding import t2s
    from xllm_cli.decoding.whisper_system import WhisperSystem

    assert t2s.to_simplified("這是繁體中文，說話") == "这是繁体中文，说话"
    assert t2s.to_simplified("hello") == "hello"
    system = WhisperSystem.__new__(WhisperSystem)
    system.opts = DecodeOptions(exp=None, data=tmp_path, whisper=tmp_path, t2s=True)
    system.model = type("M", (), {"transcribe": lambda self, waves, batch_size: ["今天天氣很好"] * len(waves)})()
    batch = type("B", (), {"waves": [None, None]})()
    assert system.decode(batch) == [[("今天天气很好", 0.0)]] * 2


def test_t2s_without_opencc_is_a_one_line_error(monkeypatch):
    from xllm_cli.decoding import t2s

    t2s._converter.cache_clear()
    monkeypatch.setitem(sys.modules, "opencc", None)
    with pytest.raises(XllmError, match="pip install opencc"):
        t2s.to_simplified("說話")
    t2s._converter.cache_clear()


def test_help_documents_the_whisper_options():
    for command in ("decode", "transcribe"):
        res = runner.invoke(app, [command, "--help"], terminal_width=200)
        assert res.exit_code == 0
        for option in ("--whisper", "--language", "--task", "--initial-prompt", "--temperature", "--t2s",
                       "--channel", "Example"):
            assert option in res.output, (command, option)
    assert "--word-timestamps" in runner.invoke(app, ["transcribe", "--help"], terminal_width=200).output


@pytest.mark.parametrize("suffix", [".wav", ".ogg"])  # soundfile's path and ffmpeg's
def test_channel_choice_reads_one_side_of_stereo(tmp_path, suffix):
    import numpy as np
    import soundfile as sf

    from xllm_cli.data.audio import iter_audio_blocks, load_audio

    t = np.arange(16000) / 16000
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), np.zeros(16000)
    path = tmp_path / f"stereo{suffix}"
    sf.write(str(path), np.stack([left, right], axis=1).astype(np.float32), 16000)
    energy = {c: float(np.abs(load_audio(path, channel=c)).mean()) for c in ("left", "right", "mix")}
    assert energy["right"] < 0.01 < energy["mix"] < energy["left"]
    blocks = np.concatenate(list(iter_audio_blocks(path, block_seconds=0.3, channel="right")))
    assert blocks.size == pytest.approx(16000, abs=200) and float(np.abs(blocks).mean()) < 0.01
