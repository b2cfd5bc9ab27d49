"""xllm decode: decode directory layout, result lines, resume, batching, user errors,
and (with the real tiny model) greedy batch 1 == batch 32."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from xllm_cli.data.datadir import DataDir, Utterance, write_datadir
from xllm_cli.decoding import bundle as bundle_module
from xllm_cli.decoding import job
from xllm_cli.decoding import results as R
from xllm_cli.decoding.batches import make_batches
from xllm_cli.decoding.bundle import load_for_decoding
from xllm_cli.decoding.decode import run_decode
from xllm_cli.decoding.options import DecodeOptions
from xllm_cli.errors import XllmError
from tiny_exp import build_tiny_exp

REPO = Path(__file__).resolve().parents[1]
RESULT_LINE = re.compile(r"^%(CER|WER|MER) (\d+\.\d\d) \[ (\d+) / (\d+), (\d+) ins, (\d+) del, (\d+) sub \] (\S+)$")


def make_data(root: Path, texts: dict[str, str], name: str = "test", with_text: bool = True) -> Path:
    """A data dir whose utterance k lasts 0.2 * (k + 1) s (silence: the fakes never listen)."""
    utts = []
    for k, (utt, text) in enumerate(sorted(texts.items())):
        wav = root / "wav" / f"{utt}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, np.zeros(int(3200 * (k + 1)), dtype=np.float32), 16000)
        utts.append(Utterance(utt_id=utt, spk=utt.split("-")[0], recording=utt, path=str(wav),
                              text=text if with_text else None, duration=0.2 * (k + 1)))
    write_datadir(root / name, utts)
    return root / name


def make_exp(root: Path, stages=(1, 3)) -> Path:
    exp = root / "exp"
    for s in stages:
        (exp / f"stage{s}" / "best").mkdir(parents=True, exist_ok=True)
        (exp / f"stage{s}" / "best" / "config.yaml").write_text("model: {}\n")  # what marks a trained stage
    (exp / "stage2").mkdir(exist_ok=True)  # a stage that never finished is not picked
    return exp


class FakeDecoder:
    """Answers from a table; records the batches it saw."""

    def __init__(self, answers: dict[str, str], batch_size: int = 2):
        self.answers, self.batch_size, self.seen = answers, batch_size, []

    def batches(self, utts):
        for group in make_batches(utts, self.batch_size, None, lambda u: u.duration):
            yield SimpleNamespace(utt_ids=[u.utt_id for u in group], durations=[u.duration for u in group])

    def decode(self, batch):
        self.seen.append(list(batch.utt_ids))
        return [[(self.answers[u], -0.5), (self.answers[u] + "x", -2.0)] for u in batch.utt_ids]


ZH = {"spk1-a": "今天天气很好", "spk1-b": "我们去公园", "spk2-c": "识别该语音", "spk2-d": "你好"}


def test_decode_dir_contents_and_cer_result_line(tmp_path, capsys):
    data = make_data(tmp_path / "data", ZH)
    exp = make_exp(tmp_path)
    answers = dict(ZH, **{"spk2-d": "你"})  # one deletion
    fake = FakeDecoder(answers)
    summary = run_decode(DecodeOptions(exp=exp, data=data, stage=3, wer=True), decoder_factory=lambda o, s: fake)
    out = exp / "decode_test_stage3_llm_beam1"
    assert summary.decode_dir == out
    for name in ("hyp", "ref", "hyp.trn", "ref.trn", "per_utt", "result.txt", "decode.log", "nbest.jsonl"):
        assert (out / name).is_file(), name
    assert not (out / R.PARTIAL).exists()
    assert (out / "hyp").read_text(encoding="utf-8").splitlines()[0] == "spk1-a 今天天气很好"
    assert "spk2-d 你" in (out / "hyp").read_text(encoding="utf-8").splitlines()
    assert (out / "ref").read_text(encoding="utf-8").splitlines()[-1] == "spk2-d 你好"
    m = RESULT_LINE.match(summary.result_lines[0])
    assert m, summary.result_lines[0]
    assert m.group(1) == "CER" and (m.group(3), m.group(4), m.group(6)) == ("1", "18", "1")
    assert m.group(8) == str(out)
    assert summary.result_lines[0] in (out / "result.txt").read_text(encoding="utf-8")
    assert summary.result_lines[0] in capsys.readouterr().out  # --wer prints it
    nbest = [json.loads(l) for l in (out / "nbest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert nbest[0]["utt"] == "spk1-a" and len(nbest[0]["nbest"]) == 2
    # batches went longest first
    assert fake.seen[0] == ["spk2-d", "spk2-c"]
    assert "RTF" in (out / "decode.log").read_text(encoding="utf-8")


def test_english_is_scored_as_wer(tmp_path):
    en = {"a-1": "hello world", "a-2": "good morning to you"}
    data = make_data(tmp_path / "data", en)
    exp = make_exp(tmp_path)
    fake = FakeDecoder({"a-1": "hello word", "a-2": "good morning to you"})
    summary = run_decode(DecodeOptions(exp=exp, data=data, stage=3), decoder_factory=lambda o, s: fake)
    m = RESULT_LINE.match(summary.result_lines[0])
    assert m and m.group(1) == "WER" and (m.group(3), m.group(4)) == ("1", "6")


def test_data_without_text_writes_hyp_only(tmp_path):
    data = make_data(tmp_path / "data", ZH, with_text=False)
    exp = make_exp(tmp_path)
    run_decode(DecodeOptions(exp=exp, data=data, stage=3), decoder_factory=lambda o, s: FakeDecoder(ZH))
    out = exp / "decode_test_stage3_llm_beam1"
    assert len((out / "hyp").read_text(encoding="utf-8").splitlines()) == 4
    assert not (out / "result.txt").exists()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(stage=3), "decode_test_stage3_llm_beam1"),
        (dict(stage=2, beam=4, nbest=2), "decode_test_stage2_llm_beam4"),
        (dict(stage=3, use_image=False), "decode_test_stage3_llm_beam1_noimage"),
        (dict(mode="nar"), "decode_test_stage1_nar"),
        (dict(stage=3, tag="mine"), "decode_test_mine"),
        (dict(), "decode_test_stage3_llm_beam1"),  # latest trained stage (stage2/ has no model)
    ],
)
def test_decode_dir_names(tmp_path, kwargs, name):
    exp = make_exp(tmp_path)
    opts = DecodeOptions(exp=exp, data=tmp_path / "data" / "test", **kwargs)
    assert job.decode_dir_for(opts, job.resolve_stage(opts)) == exp / name


def test_default_stage_is_the_latest_with_a_model(tmp_path):
    exp = make_exp(tmp_path, stages=(1, 2))
    (exp / "stage3" / "checkpoints").mkdir(parents=True)  # stage 3 still training: no model yet
    assert job.resolve_stage(DecodeOptions(exp=exp, data=tmp_path)) == 2
    with pytest.raises(XllmError, match="no trained stage 2 or 3"):
        job.resolve_stage(DecodeOptions(exp=make_exp(tmp_path / "other", stages=(1,)), data=tmp_path))


def test_killed_job_resumes_from_partial_results(tmp_path):
    data = make_data(tmp_path / "data", ZH)
    exp = make_exp(tmp_path)
    out = exp / "decode_test_stage3_llm_beam1"
    out.mkdir(parents=True)
    # a run killed after its first batch, mid-way through writing the second
    opts = DecodeOptions(exp=exp, data=data, stage=3)
    (out / R.FINGERPRINT).write_text(json.dumps(job.decode_fingerprint(opts, 3)), encoding="utf-8")
    first = json.dumps({"utt": "spk2-d", "nbest": [["你好", -0.1]], "dur": 0.8}, ensure_ascii=False)
    (out / R.PARTIAL).write_text(first + "\n" + '{"utt": "spk2-c", "nb', encoding="utf-8")
    fake = FakeDecoder(ZH)
    run_decode(opts, decoder_factory=lambda o, s: fake)
    assert sorted(u for b in fake.seen for u in b) == ["spk1-a", "spk1-b", "spk2-c"]
    assert (out / "hyp").read_text(encoding="utf-8").count("\n") == 4
    assert "resuming: 1 of 4" in (out / "decode.log").read_text(encoding="utf-8")


def test_rerun_reuses_results_only_of_the_same_model(tmp_path):
    data = make_data(tmp_path / "data", ZH)
    exp = make_exp(tmp_path)
    model_file = exp / "stage3" / "best" / "model.safetensors"
    model_file.write_bytes(b"v1")
    opts = DecodeOptions(exp=exp, data=data, stage=3)
    first = FakeDecoder(ZH)
    run_decode(opts, decoder_factory=lambda o, s: first)
    out = exp / "decode_test_stage3_llm_beam1"
    mtime = (out / R.NBEST).stat().st_mtime_ns

    again = FakeDecoder(ZH)  # same model, same options: scored again, not decoded
    run_decode(opts, decoder_factory=lambda o, s: again)
    assert again.seen == [] and (out / R.NBEST).stat().st_mtime_ns == mtime
    assert "already decoded" in (out / "decode.log").read_text(encoding="utf-8")

    model_file.write_bytes(b"v2 retrained")  # a new model: decoded again, a stale partial file is dropped
    (out / R.PARTIAL).write_text('{"utt": "spk1-a", "nbest": [["stale", 0.0]], "dur": 1.0}\n', encoding="utf-8")
    third = FakeDecoder(ZH)
    run_decode(opts, decoder_factory=lambda o, s: third)
    assert sorted(u for b in third.seen for u in b) == sorted(ZH)
    assert "stale" not in (out / "hyp").read_text(encoding="utf-8")


def test_batches_sorted_longest_first_and_bounded_by_seconds():
    utts = [SimpleNamespace(utt_id=f"u{i}", duration=d) for i, d in enumerate([1.0, 5.0, 2.0, 4.0, 3.0, 0.5])]
    groups = make_batches(utts, 4, None, lambda u: u.duration)
    assert [[u.utt_id for u in g] for g in groups] == [["u1", "u3", "u4", "u2"], ["u0", "u5"]]
    groups = make_batches(utts, None, 9.0, lambda u: u.duration)
    assert all(len(g) * g[0].duration <= 9.0 or len(g) == 1 for g in groups)
    assert sorted(u.utt_id for g in groups for u in g) == sorted(u.utt_id for u in utts)


@pytest.mark.parametrize(
    "kwargs",
    [dict(beam=0), dict(nbest=3, beam=2), dict(mode="ctc"), dict(batch_size=4, max_batch_seconds=10.0),
     dict(rescore="ct2", beam=1), dict(device="tpu")],
)
def test_bad_options_are_user_errors(tmp_path, kwargs):
    with pytest.raises(XllmError):
        DecodeOptions(exp=tmp_path, data=tmp_path, **kwargs).validate()


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "xllm_cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_cli_missing_exp_is_one_line_error(tmp_path):
    data = make_data(tmp_path / "data", ZH)
    proc = run_cli("decode", "--exp", tmp_path / "nope", "--data", data)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("xllm: error:") and "nope" in lines[0]


def test_cli_wer_without_text_is_one_line_error(tmp_path):
    data = make_data(tmp_path / "data", ZH, with_text=False)
    exp = make_exp(tmp_path)
    proc = run_cli("decode", "--exp", exp, "--data", data, "--stage", "3", "--wer")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and str(data / "text") in lines[0] and "--wer" in lines[0]


def test_cli_help_ends_with_example():
    proc = run_cli("decode", "--help")
    assert proc.returncode == 0 and "Example: xllm decode" in proc.stdout


# ----------------------------------------------------------------------------- the real tiny model


def make_noise_data(root: Path, n: int, texts) -> Path:
    rng = np.random.default_rng(1)
    utts = []
    for k in range(n):
        utt = f"spk{k % 3}-{k:03d}"
        wav = root / "wav" / f"{utt}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        samples = int(16000 * rng.uniform(0.3, 1.2))
        sf.write(wav, (0.1 * rng.standard_normal(samples)).astype(np.float32), 16000)
        utts.append(Utterance(utt_id=utt, spk=f"spk{k % 3}", recording=utt, path=str(wav), text=texts[k % len(texts)],
                              duration=samples / 16000))
    write_datadir(root / "test", utts)
    return root / "test"


TINY_TEXTS = ["今天天气很好", "我们去公园", "你好世界"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny")
    exp = build_tiny_exp(root, TINY_TEXTS)
    data = make_noise_data(root / "data", 35, TINY_TEXTS)
    return SimpleNamespace(exp=exp, data=data)


def test_greedy_batch1_equals_batch32(tiny):
    """Left padding, the KV cache and per-utterance length bounds: the batch must not change the result."""
    one = run_decode(DecodeOptions(exp=tiny.exp, data=tiny.data, stage=3, batch_size=1, tag="b1"))
    many = run_decode(DecodeOptions(exp=tiny.exp, data=tiny.data, stage=3, batch_size=32, tag="b32"))
    hyp1 = R.read_hyp(one.decode_dir / "hyp")
    hyp32 = R.read_hyp(many.decode_dir / "hyp")
    assert len(hyp1) == 35
    assert len(set(hyp1.values())) >= 6  # the random model's outputs differ per utterance
    assert hyp1 == hyp32
    assert RESULT_LINE.match(one.result_lines[0]).group(1) == "CER"
    assert one.rtf is not None and one.rtf > 0


def test_nar_and_beam_search_with_the_tiny_model(tiny):
    nar = run_decode(DecodeOptions(exp=tiny.exp, data=tiny.data, stage=3, mode="nar", tag="nar"))
    assert len(R.read_hyp(nar.decode_dir / "hyp")) == 35
    beam = run_decode(DecodeOptions(exp=tiny.exp, data=tiny.data, stage=3, beam=3, nbest=3, batch_size=8,
                                        max_new_tokens=6))
    assert beam.decode_dir.name == "decode_test_stage3_llm_beam3"
    nbest = R.read_nbest(beam.decode_dir / R.NBEST)
    assert all(len(n) == 3 for n in nbest.values())
    assert all(len(t) <= 6 for n in nbest.values() for t, _ in n)  # --max-new-tokens holds (a token = a char here)
    scores = [s for _, s in nbest["spk0-000"]]
    assert scores == sorted(scores, reverse=True)
    hyp = R.read_hyp(beam.decode_dir / "hyp")
    assert all(hyp[u] == " ".join(n[0][0].split()) for u, n in nbest.items())


def test_ct2_rescoring_reranks_the_nbest(tiny):
    from xllm_cli.decoding.ct2 import export_llm_ct2

    export_llm_ct2(tiny.exp / "stage0" / "llm", tiny.exp / "ct2_llm")
    opts = DecodeOptions(exp=tiny.exp, data=tiny.data, stage=3, beam=3, nbest=3, batch_size=16, max_new_tokens=5,
                           rescore="ct2", lm_weight=1.0)
    summary = run_decode(opts)
    out = summary.decode_dir
    assert out.name == "decode_test_stage3_llm_beam3_ct2rescore_lm1"
    nbest = R.read_nbest(out / R.NBEST)
    first = R.read_hyp(out / "hyp.first_pass")
    hyp = R.read_hyp(out / "hyp")
    assert set(hyp) == set(nbest) == set(first)
    assert all(hyp[u] in {" ".join(t.split()) for t, _ in nbest[u]} for u in hyp)
    assert "rescored 35 n-best lists" in (out / "decode.log").read_text(encoding="utf-8")
    assert RESULT_LINE.match(summary.result_lines[0])


def test_rescore_without_export_is_a_user_error(tiny, tmp_path):
    exp = tmp_path / "exp2"
    (exp / "stage3").mkdir(parents=True)
    (exp / "stage3" / "best").symlink_to(tiny.exp / "stage3" / "best")
    opts = DecodeOptions(exp=exp, data=tiny.data, stage=3, beam=2, nbest=2, rescore="ct2", max_new_tokens=2)
    with pytest.raises(XllmError, match="xllm export ct2"):
        run_decode(opts)


def test_whisper_baseline_writes_the_same_decode_dir(tmp_path):
    try:
        from test_whisper_ct2 import build_tiny_whisper  # the scoring helper's offline tiny Whisper
    except ImportError:
        pytest.skip("tests/test_whisper_ct2.py:build_tiny_whisper not importable")
    from xllm_cli.decoding.ct2 import convert_to_ct2

    whisper = convert_to_ct2(build_tiny_whisper(tmp_path / "hf", favour_char="a"), tmp_path / "whisper_ct2")
    data = make_data(tmp_path / "data", {"a-1": "aaaa", "a-2": "aa aa", "a-3": "b"})
    exp = tmp_path / "exp"
    exp.mkdir()
    summary = run_decode(DecodeOptions(exp=exp, data=data, whisper=whisper, batch_size=2, wer=True,
                                             max_new_tokens=20, language="en"))
    out = exp / "decode_test_whisper_beam1_en"
    assert summary.decode_dir == out
    for name in ("hyp", "ref", "hyp.trn", "ref.trn", "per_utt", "result.txt", "decode.log"):
        assert (out / name).is_file(), name
    hyp = R.read_hyp(out / "hyp")
    assert set(hyp) == {"a-1", "a-2", "a-3"} and all(set(t) <= {"a", " "} and t for t in hyp.values())
    assert RESULT_LINE.match(summary.result_lines[0]).group(1) == "WER"
    assert (out / "result.txt").read_text(encoding="utf-8").splitlines()[-1] == (
        "Normalisation: unit auto, case folded, punctuation removed")


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_decode_on_gpu_in_bf16(tiny):
    summary = run_decode(DecodeOptions(exp=tiny.exp, data=tiny.data, stage=3, device="cuda", batch_size=16,
                                           tag="gpu"))
    assert len(R.read_hyp(summary.decode_dir / "hyp")) == 35
    assert "LLM in bf16" in (summary.decode_dir / "decode.log").read_text(encoding="utf-8")



def test_a_loader_thread_prepares_batches_where_a_core_is_free(tiny, monkeypatch):
    """On CPU with torch on every core, batches are prepared in turn (a loader thread slowed decoding)."""
    import torch

    calls = []
    monkeypatch.setattr(bundle_module, "prefetch", lambda items, depth=2: calls.append(depth) or iter(items))
    bundle = load_for_decoding(tiny.exp, 3, "cpu")
    groups = make_batches(DataDir.load(tiny.data).utterances(), 16, None, bundle.duration)
    monkeypatch.setattr(bundle_module, "available_cores", lambda: torch.get_num_threads())
    on_cpu = list(bundle.iter_batches(groups))
    assert calls == [] and sum(len(b.utt_ids) for b in on_cpu) == 35
    monkeypatch.setattr(bundle_module, "available_cores", lambda: torch.get_num_threads() + 1)
    spare_core = list(bundle.iter_batches(groups))
    assert calls == [2] and [b.utt_ids for b in spare_core] == [b.utt_ids for b in on_cpu]
    monkeypatch.setattr(bundle_module, "available_cores", lambda: torch.get_num_threads())
    bundle.device = "cuda"  # iter_batches only prepares CPU tensors: no GPU needed to check the policy
    list(bundle.iter_batches(groups))
    assert calls == [2, 2]


# ----------------------------------------------------------------------------- systems registry, experiment configs


def test_the_systems_registry_selects_by_mode_and_by_whisper(tmp_path):
    from xllm_cli.decoding.systems import SYSTEMS, LlmSystem, NarSystem, WhisperSystem, mode_names, system_for

    assert mode_names() == ("llm", "nar") and set(SYSTEMS) == {"llm", "nar", "whisper"}
    assert system_for(DecodeOptions(exp=tmp_path, data=tmp_path)) is LlmSystem
    assert system_for(DecodeOptions(exp=tmp_path, data=tmp_path, mode="nar")) is NarSystem
    assert system_for(DecodeOptions(exp=tmp_path, data=tmp_path, whisper=tmp_path)) is WhisperSystem
    with pytest.raises(XllmError, match="--mode must be one of llm, nar"):
        DecodeOptions(exp=tmp_path, data=tmp_path, mode="whisper").validate()
    opts = DecodeOptions(exp=tmp_path, data=tmp_path / "data" / "dev", whisper=tmp_path / "w", use_image=False)
    assert job.resolve_stage(opts) is None and job.decode_dir_for(opts, None) == tmp_path / "decode_dev_whisper_beam1"


def test_score_unit_counts_cjk_as_scoring_does():
    from xllm_cli.decoding.language import score_unit

    assert score_unit({"a": "今天 天气", "b": "ok"}) == "char"
    assert score_unit({"a": "hello world 你好"}) == "word"
    assert score_unit({"a": "〇〇 ab"}) == "char"  # 〇 is CJK for scoring (normalize.is_cjk), as for decode now


def test_experiment_config_is_read_once_with_one_line_errors(tmp_path):
    from xllm_cli import experiment as E

    exp = make_exp(tmp_path, stages=(1, 3))
    assert E.resolve_stage(exp) == 3 and E.resolve_stage(exp, 2) == 2 and E.resolve_stage(exp, among=(1,)) == 1
    with pytest.raises(XllmError, match="no trained stage 2 model"):
        E.resolve_stage(exp, among=(2,))
    (exp / "stage3" / "config.yaml").write_text(
        "features: {num_mel_bins: 80}\nmodel: {dtype: float16}\nstage3: {batch: {num_frames: 4}}\n")
    (exp / "stage3" / "best" / "config.yaml").write_text("model: {llm: {path: /some/llm}}\n")
    recipe = E.load_experiment_config(exp, 3)
    assert recipe.features.num_mel_bins == 80
    assert recipe.model.llm.path == "/some/llm" and recipe.model.dtype is None  # the saved model's own config wins
    assert E.num_frames(recipe, 3) == 4  # the stage's batch.num_frames, as training used it
    assert E.num_frames(E.load_experiment_config(exp, 1), 1) == 8  # no recipe saved: the schema's default
    with pytest.raises(XllmError, match="no trained model for stage 2"):
        E.load_experiment_config(exp, 2)
    bad = exp / "stage3" / "config.yaml"
    bad.write_text("features: [unclosed\n")
    with pytest.raises(XllmError, match=rf"^{re.escape(str(bad))}:\d+: invalid YAML: "):
        E.load_experiment_config(exp, 3)
    with pytest.raises(XllmError, match=rf"^{re.escape(str(exp / 'stage2' / 'config.yaml'))}: not found"):
        E.load_stage_recipe(exp, 2, required=True)
