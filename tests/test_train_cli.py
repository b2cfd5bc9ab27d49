"""`xllm train` / `xllm average` from the command line: errors, stage 0, layout, averaging."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from xllm_cli.main import app
from xllm_cli.training import checkpoint as ck
from toy_family import toy_env

REPO = Path(__file__).resolve().parents[1]


def xllm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = toy_env()  # recipes with model: {type: toy} need the tests' toy family
    return subprocess.run([sys.executable, "-m", "xllm_cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=180)


def test_help_texts_end_with_an_example():
    runner = CliRunner()
    for verb in ("train", "average"):
        result = runner.invoke(app, [verb, "--help"])
        assert result.exit_code == 0
        assert f"Example: xllm {verb}" in result.output


def test_recipe_errors_are_one_line_with_file_and_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("stage1:\n  lr: [0.1\n")
    proc = xllm("train", "--stage", "1", "--config", "bad.yaml", "--exp", "exp", cwd=tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("xllm: error: bad.yaml:") and "invalid YAML" in lines[0]

    (tmp_path / "toy.yaml").write_text("model: {type: toy}\nstage1: {lrr: 0.1}\n")
    proc = xllm("train", "--stage", "1", "--config", "toy.yaml", "--exp", "exp", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode != 0 and "stage1.lrr: unknown key" in proc.stderr
    (tmp_path / "toy.yaml").write_text("model: {type: toy}\nstage1: {lr: 0.1}\n")
    proc = xllm("train", "--stage", "2", "--config", "toy.yaml", "--exp", "exp", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode != 0 and "no stage2: section" in proc.stderr
    assert not (tmp_path / "exp").exists()  # refused before anything is written


def test_stage1_without_stage0_lm_says_what_to_run(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    proc = xllm("train", "--stage", "1", "--config", str(REPO / "recipes" / "tiny.yaml"), "--exp", "exp",
                "--device", "cpu", cwd=tmp_path)
    assert proc.returncode != 0 and "run xllm train --stage 0 first" in proc.stderr


def test_stage0_trains_a_char_lm_into_an_hf_directory(tmp_path):
    for name, lines in (("train", ["u1 今天天气很好", "u2 我们去公园"]), ("lm_text", ["l1 明天下雨"]),
                        ("dev", ["d1 今天下雨"])):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "text").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "lm.yaml").write_text(
        f"include: [{REPO / 'recipes' / 'model' / 'tiny.yaml'}]\n"
        "model:\n  llm_init: {hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, intermediate_size: 64}\n"
        "data: {dir: data}\n"
        "stage0: {data: {train: [train, lm_text], dev: [dev]}, batch: {batch_size: 2}, epochs: 3, lr: 0.01}\n",
        encoding="utf-8",
    )
    proc = xllm("train", "--stage", "0", "--config", "lm.yaml", "--exp", "exp", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    llm_dir = ck.stage_model_dir(tmp_path / "exp", 0)
    assert llm_dir == tmp_path / "exp" / "stage0" / "llm"
    from transformers import AutoModelForCausalLM

    from xllm_cli.models.tokenizer import load_tokenizer

    tok = load_tokenizer(llm_dir)
    lm = AutoModelForCausalLM.from_pretrained(str(llm_dir))
    assert lm.config.hidden_size == 32
    ids = tok("明天", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2 and tok.unk_token_id not in ids  # lm_text characters are in the vocabulary
    best = load_file(str(tmp_path / "exp/stage0/best/model.safetensors"))
    saved = load_file(str(llm_dir / "model.safetensors"))
    assert all(torch.equal(best[k], saved[k]) for k in saved)
    resolved = yaml.safe_load((tmp_path / "exp/stage0/config.yaml").read_text(encoding="utf-8"))
    assert resolved["model"]["llm"]["path"] == "llm"  # what later stages load, relative: the experiment can move
    from xllm_cli.experiment import load_stage_recipe

    assert load_stage_recipe(tmp_path / "exp", 0).model.llm.path == str(llm_dir.resolve())
    assert (tmp_path / "exp/stage0/train.log").read_text().count("validation at step") == 3
    assert list((tmp_path / "exp/stage0/tensorboard").iterdir())

    again = xllm("train", "--stage", "0", "--config", "lm.yaml", "--exp", "exp", "--device", "cpu", cwd=tmp_path)
    assert again.returncode == 0 and "already done" in again.stderr


def test_average_cli_averages_the_best_checkpoints(tmp_path):
    (tmp_path / "toy.yaml").write_text(
        "model: {type: toy, dim: 4, toy_utts: 16, toy_dev_utts: 4}\n"
        "stage1: {epochs: 4, lr: 0.05, keep_best: 3, log_interval: 100, batch: {batch_size: 4}}\n"
    )
    proc = xllm("train", "--stage", "1", "--config", "toy.yaml", "--exp", "exp", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sdir = tmp_path / "exp" / "stage1"
    best3 = ck.best_checkpoints(sdir, 3)
    assert len(best3) == 3
    assert ck.stage_model_dir(tmp_path / "exp", 1) == sdir / "best"
    proc = xllm("average", "--exp", "exp", "--stage", "1", "--num", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ck.stage_model_dir(tmp_path / "exp", 1) == sdir / "averaged"
    avg = load_file(str(sdir / "averaged" / "model.safetensors"))
    parts = [load_file(str(p / "model.safetensors")) for p in best3]
    expected = sum(p["net.0.weight"].double() for p in parts) / 3
    assert torch.allclose(avg["net.0.weight"].double(), expected, atol=1e-6)
    assert not torch.equal(avg["net.0.weight"], parts[0]["net.0.weight"])
    proc = xllm("average", "--exp", "exp", "--stage", "2", cwd=tmp_path)
    assert proc.returncode != 0 and "no such stage directory" in proc.stderr


# The tiny preset shrunk to the smallest model that still trains every part (``--set`` values).
SHRUNK_TINY = ["model.llm_init.hidden_size=32", "model.llm_init.num_layers=1", "model.llm_init.num_heads=2",
               "model.llm_init.num_kv_heads=1", "model.llm_init.intermediate_size=64",
               "model.speech_encoder.d_model=32", "model.speech_encoder.num_layers=1",
               "model.speech_encoder.num_heads=2", "model.speech_encoder.ffn_dim=64",
               "model.cformer.d_model=32", "model.cformer.num_layers=1", "model.cformer.num_heads=2",
               "model.cformer.ffn_dim=64"]


def _random_chars(i: int, rng) -> str:
    return "".join(rng.choice(list("今天天气很好我们去公园"), 3))


def _synthetic_corpus(root: Path, text_of=_random_chars, sizes=(8, 4, 3), samples: int = 8000,
                      lm_text: bool = True) -> None:
    """Noise 'speech' with short transcripts in ``root/data/{train,train_img,dev}``; images for train_img.

    ``text_of(i, rng)`` makes utterance i's transcript; ``sizes`` are the three sets' sizes.
    """
    import numpy as np
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(0)
    for (name, with_img), n in zip((("train", False), ("train_img", True), ("dev", False)), sizes):
        d = root / "data" / name
        d.mkdir(parents=True)
        tables: dict[str, list[str]] = {"wav.scp": [], "text": [], "utt2spk": [], "spk2utt": [], "image.scp": []}
        for i in range(n):
            utt = f"s1-{name}{i:02d}"
            wav = root / "wav" / f"{utt}.wav"
            wav.parent.mkdir(exist_ok=True)
            sf.write(wav, (rng.normal(size=samples) * 0.1).astype("float32"), 16000)
            tables["wav.scp"].append(f"{utt} {wav}")
            tables["text"].append(f"{utt} {text_of(i, rng)}")
            tables["utt2spk"].append(f"{utt} s1")
            if with_img:
                img = root / "img" / f"{utt}.png"
                img.parent.mkdir(exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(img)
                tables["image.scp"].append(f"{utt} {img}")
        tables["spk2utt"] = ["s1 " + " ".join(line.split()[0] for line in tables["utt2spk"])]
        for fname, lines in tables.items():
            if lines:
                (d / fname).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if lm_text:
        (root / "data" / "lm_text").mkdir()
        (root / "data" / "lm_text" / "text").write_text("l1 我们今天去\n", encoding="utf-8")


@pytest.mark.slow
def test_stages_0_to_3_run_end_to_end(tmp_path, monkeypatch):
    """Every stage of the tiny recipe (shrunk) on a synthetic corpus, in process, then averaging."""
    from xllm_cli.main import run

    _synthetic_corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    small = [*SHRUNK_TINY, "stage3.data.train=[train, train_img]",
             "stage0.epochs=1", "stage1.epochs=2", "stage2.epochs=1", "stage3.epochs=2",
             "stage1.cer_utts=2", "stage2.cer_utts=2", "stage3.cer_utts=2"]
    sets = [arg for s in small for arg in ("--set", s)]
    for stage in (0, 1, 2, 3):
        run(["train", "--stage", str(stage), "--config", str(REPO / "recipes" / "tiny.yaml"), "--exp", "exp",
             "--device", "cpu", *sets])
        assert (tmp_path / "exp" / f"stage{stage}" / "DONE").is_file()
    assert (tmp_path / "exp" / "cmvn.json").is_file()
    for stage in (1, 2, 3):
        assert (ck.stage_model_dir("exp", stage) / "model.safetensors").is_file()
    log = (tmp_path / "exp" / "stage2" / "train.log").read_text(encoding="utf-8")
    assert "starts from exp/stage1/best" in log and "CER" in log
    run(["average", "--exp", "exp", "--stage", "3", "--num", "2"])
    from xllm_cli.models.saved_model import load_model

    model = load_model(ck.stage_model_dir("exp", 3))
    assert ck.stage_model_dir("exp", 3).name == "averaged" and model.tokenizer is not None
