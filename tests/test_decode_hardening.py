"""xllm decode hardening: the recipe's frame count, hyp keeps every utterance, one decode per
directory, bad audio reported (never silently transcribed), --trust-remote-code."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from xllm_cli.data.datadir import Utterance, write_datadir
from xllm_cli.decoding import job
from xllm_cli.decoding import results as R
from xllm_cli.decoding.batches import make_batches
from xllm_cli.decoding.decode import run_decode
from xllm_cli.decoding.options import DecodeOptions
from xllm_cli.errors import XllmError
from xllm_cli.locks import exclusive
from tiny_exp import build_tiny_exp

TEXTS = ["你好世界", "今天天气很好"]


def wav(path: Path, seconds: float, rng=None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = rng or np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000, subtype="PCM_16")
    return str(path)


class Fake:
    """Answers with the utterance id; records what it decoded."""

    def __init__(self):
        self.seen = []

    def batches(self, utts):
        for g in make_batches(utts, 2, None, lambda u: u.duration):
            yield SimpleNamespace(utt_ids=[u.utt_id for u in g], durations=[u.duration for u in g])

    def decode(self, batch):
        self.seen.extend(batch.utt_ids)
        return [[(f"text of {u}", -1.0)] for u in batch.utt_ids]


def fake_exp(root: Path) -> Path:
    (root / "exp" / "stage3" / "best").mkdir(parents=True)
    (root / "exp" / "stage3" / "best" / "config.yaml").write_text("model: {}\n")
    return root / "exp"


# ----------------------------------------------------------------------------- 10.2: one frame count


def test_decoding_samples_as_many_video_frames_as_training(tmp_path, monkeypatch):
    """The stage's data.batch.num_frames (3 here) decides the frames per clip, not a default of 8."""
    from PIL import Image

    from xllm_cli.data import images

    exp = build_tiny_exp(tmp_path, TEXTS, vision=True, recipe="data:\n  batch:\n    num_frames: 3\n")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read: the loader is a spy")
    utts = [Utterance(utt_id=f"s-{k}", spk="s", recording=f"s-{k}", path=wav(tmp_path / f"{k}.wav", 0.5),
                      video=str(clip), duration=0.5) for k in range(2)]
    write_datadir(tmp_path / "data" / "test", utts)
    asked = []

    def spy(path, num_frames, transform):
        asked.append(num_frames)
        frame = transform(Image.new("RGB", (48, 48)))
        return frame.unsqueeze(0).repeat(num_frames, 1, 1, 1)

    monkeypatch.setattr(images, "load_video", spy)
    run_decode(DecodeOptions(exp=exp, data=tmp_path / "data" / "test", stage=3, max_new_tokens=2))
    assert asked == [3, 3]


# ----------------------------------------------------------------------------- 12.4/12.5: hyp, scoring


def test_hyp_keeps_utterances_without_a_reference_and_a_rerun_only_scores(tmp_path):
    utts = [Utterance(utt_id=f"s-{k}", spk="s", recording=f"s-{k}", path=wav(tmp_path / f"{k}.wav", 0.3),
                      text="text of s-0" if k == 0 else ("other words" if k == 1 else None), duration=0.3)
            for k in range(4)]
    write_datadir(tmp_path / "data" / "test", utts)
    (tmp_path / "data" / "test" / "text").write_text("s-0 text of s-0\ns-1 other words\n")  # 2 of 4 references
    exp = fake_exp(tmp_path)
    opts = DecodeOptions(exp=exp, data=tmp_path / "data" / "test", stage=3)
    first = Fake()
    summary = run_decode(opts, decoder_factory=lambda o, s: first)
    out = summary.decode_dir
    assert sorted(R.read_hyp(out / "hyp")) == ["s-0", "s-1", "s-2", "s-3"]  # scoring did not cut it down
    result = (out / "result.txt").read_text(encoding="utf-8")
    assert "Scored 2 sentences, 0 not present in hyp." in result
    assert "2 hypotheses have no reference: not scored." in result
    assert summary.result_lines[1].startswith("%SER 50.00 [ 1 / 2 ]")  # s-0 right, s-1 wrong

    again = Fake()
    run_decode(opts, decoder_factory=lambda o, s: again)
    assert again.seen == []  # decoded once: the rerun only scores
    assert sorted(R.read_hyp(out / "hyp")) == ["s-0", "s-1", "s-2", "s-3"]


def test_a_second_decode_of_the_same_directory_is_refused(tmp_path):
    utts = [Utterance(utt_id="s-0", spk="s", recording="s-0", path=wav(tmp_path / "0.wav", 0.3), duration=0.3)]
    write_datadir(tmp_path / "data" / "test", utts)
    opts = DecodeOptions(exp=fake_exp(tmp_path), data=tmp_path / "data" / "test", stage=3)
    out = job.decode_dir_for(opts, 3)
    with exclusive(out, "this decode directory"):  # another `xllm decode` of the same set is running
        fake = Fake()
        with pytest.raises(XllmError, match=rf"^{re.escape(str(out))}: this decode directory is in use by pid"):
            run_decode(opts, decoder_factory=lambda o, s: fake)
        assert fake.seen == []
    run_decode(opts, decoder_factory=lambda o, s: Fake())  # once it is done, decoding works


# ----------------------------------------------------------------------------- 12.15: bad audio


@pytest.fixture(scope="module")
def tiny_exp(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    return build_tiny_exp(tmp_path_factory.mktemp("tiny"), TEXTS)


def bad_audio_data(root: Path) -> tuple[Path, Path]:
    """Two data dirs: whole files (2 good, 1 truncated, 1 without samples, 1 of 61 s; durations from the headers)
    and segments of one 2 s recording (one inside it, one past its end)."""
    whole = [Utterance(utt_id=f"a-good{k}", spk="a", recording=f"a-good{k}", path=wav(root / f"good{k}.wav", 0.6),
                       text="你好") for k in range(2)]
    wav(root / "full.wav", 2.0)
    full = (root / "full.wav").read_bytes()
    (root / "cut.wav").write_bytes(full[: len(full) // 3])  # a copy interrupted after a third
    sf.write(root / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    wav(root / "long.wav", 61.0)
    whole += [Utterance(utt_id=f"b-{name}", spk="b", recording=f"b-{name}", path=str(root / f"{file}.wav"), text="你好")
              for name, file in (("truncated", "cut"), ("empty", "empty"), ("long", "long"))]
    write_datadir(root / "whole", whole)
    segments = [
        Utterance(utt_id="a-segment", spk="a", recording="full", path=str(root / "full.wav"), start=0.5, end=1.5,
                  text="你好"),
        Utterance(utt_id="b-past-end", spk="b", recording="full", path=str(root / "full.wav"), start=5.0, end=6.0,
                  text="你好"),
    ]
    write_datadir(root / "segments", segments)
    return root / "whole", root / "segments"


def test_bad_audio_is_skipped_and_reported_by_id_and_reason(tiny_exp, tmp_path):
    whole, segments = bad_audio_data(tmp_path / "data")
    summary = run_decode(DecodeOptions(exp=tiny_exp, data=whole, stage=3, max_new_tokens=3))
    out = summary.decode_dir
    assert sorted(R.read_hyp(out / "hyp")) == ["a-good0", "a-good1"]
    skipped = R.read_skipped(out)
    assert sorted(skipped) == ["b-empty", "b-long", "b-truncated"]
    assert "too long for one utterance" in skipped["b-long"] and "xllm transcribe" in skipped["b-long"]
    assert "truncated" in skipped["b-truncated"] and "cut.wav" in skipped["b-truncated"]
    assert "0 s" in skipped["b-empty"]
    assert summary.skipped == 3
    log = " ".join((out / "decode.log").read_text(encoding="utf-8").split())
    assert f"WARNING 3 of 5 utterances not decoded, listed with the reason in {out / 'skipped'}" in log
    assert "Scored 5 sentences, 3 not present in hyp." in (out / "result.txt").read_text(encoding="utf-8")

    # a longer limit: the rerun decodes only what it now allows, the rest stays reported
    again = run_decode(DecodeOptions(exp=tiny_exp, data=whole, stage=3, max_new_tokens=3, max_duration=90))
    assert sorted(R.read_hyp(out / "hyp")) == ["a-good0", "a-good1", "b-long"]
    assert sorted(R.read_skipped(out)) == ["b-empty", "b-truncated"] and again.skipped == 2

    seg = run_decode(DecodeOptions(exp=tiny_exp, data=segments, stage=3, max_new_tokens=3))
    assert sorted(R.read_hyp(seg.decode_dir / "hyp")) == ["a-segment"]
    assert "past the end" in R.read_skipped(seg.decode_dir)["b-past-end"]


def test_strict_fails_on_bad_audio_before_loading_the_model(tmp_path, monkeypatch):
    data, _ = bad_audio_data(tmp_path / "data")
    loaded = []
    with pytest.raises(XllmError, match=r"^b-empty: .*0 s.* \(and 1 more\); --strict"):
        run_decode(DecodeOptions(exp=fake_exp(tmp_path), data=data, stage=3, strict=True),
                   decoder_factory=lambda o, s: loaded.append(1))
    assert loaded == []  # found by the screening, before any model loads


def test_max_duration_defaults_to_what_the_system_takes(tmp_path):
    assert job.max_duration(DecodeOptions(exp=tmp_path, data=tmp_path)) == 60.0
    # Whisper decodes long utterances window by window: no limit of its own
    assert job.max_duration(DecodeOptions(exp=tmp_path, data=tmp_path, whisper=tmp_path)) == float("inf")
    assert job.max_duration(DecodeOptions(exp=tmp_path, data=tmp_path, max_duration=5)) == 5
    with pytest.raises(XllmError, match="--max-duration"):
        DecodeOptions(exp=tmp_path, data=tmp_path, max_duration=0).validate()


# ----------------------------------------------------------------------------- 12.2: remote code


@pytest.mark.parametrize("command", ["decode", "transcribe"])
def test_trust_remote_code_is_the_command_lines_to_give(tmp_path, monkeypatch, command):
    from xllm_cli import trust
    from xllm_cli.decoding import decode as decode_module
    from xllm_cli.decoding import transcribe as transcribe_module
    from xllm_cli.main import app

    seen = []
    target = (decode_module, "run_decode") if command == "decode" else (transcribe_module, "run_transcribe")
    monkeypatch.setattr(*target, lambda *a, **k: seen.append(trust.remote_code_allowed()))
    args = ["--exp", str(tmp_path)] + (["--data", str(tmp_path)] if command == "decode" else [str(tmp_path / "a.wav")])
    try:
        for flag in ([], ["--trust-remote-code"]):
            res = CliRunner().invoke(app, [command, *args, *flag])
            assert res.exit_code == 0, res.output
    finally:
        trust.allow_remote_code(False)
    assert seen == [False, True]
