"""Training hardening: resume under a changed recipe, one run per stage, broken files, modes, remote code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import toy_family  # noqa: F401  (registers model type toy)
from toy_family import toy_env
from xllm_cli.errors import XllmError
from xllm_cli.main import run
from xllm_cli.training import checkpoint as ck

TOY = "model: {type: toy, dim: 4, toy_utts: 8, toy_dev_utts: 4}\nstage1: {epochs: 1, lr: 0.003, log_interval: 100, batch: {batch_size: 4}}\n"


def _train(tmp_path: Path, *args: str) -> None:
    run(["train", "--stage", "1", "--config", str(tmp_path / "toy.yaml"), "--exp", str(tmp_path / "exp"),
         "--device", "cpu", *args])


def _fails(capsys, fn, *args) -> str:
    with pytest.raises(SystemExit) as e:
        fn(*args)
    assert e.value.code != 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("xllm: error")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def toy_exp(tmp_path):
    (tmp_path / "toy.yaml").write_text(TOY)
    _train(tmp_path)
    assert (tmp_path / "exp" / "stage1" / "DONE").is_file()
    return tmp_path


def test_resume_under_a_changed_recipe_is_refused(toy_exp, capsys):
    err = _fails(capsys, _train, toy_exp, "--set", "stage1.lr=0.001", "--set", "stage1.batch.batch_size=2")
    assert "config.yaml: the recipe changed since this stage started" in err
    assert "stage1.lr: 0.003 -> 0.001" in err and "stage1.batch.batch_size: 4 -> 2" in err
    assert "--no-resume" in err and "--exp" in err
    _train(toy_exp, "--set", "stage1.lr=0.001", "--no-resume")  # starting over is allowed ...
    _train(toy_exp, "--set", "stage1.lr=0.001")  # ... and then that recipe resumes (already done)
    # A key that does not shape the stage (another stage's section) is no reason to refuse.
    _train(toy_exp, "--set", "stage1.lr=0.001", "--set", "stage2.lr=0.5")


def test_one_run_per_stage(tmp_path, capsys):
    (tmp_path / "toy.yaml").write_text(TOY)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from xllm_cli.locks import exclusive\n"
         "with exclusive(sys.argv[1], 'stage 1'):\n    print('held', flush=True); time.sleep(60)",
         str(tmp_path / "exp" / "stage1")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        err = _fails(capsys, _train, tmp_path)
        assert "stage 1 is in use by pid" in err and not (tmp_path / "exp" / "stage1" / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    _train(tmp_path)  # the lock dies with its holder
    assert (tmp_path / "exp" / "stage1" / "DONE").is_file()


def test_ddp_launcher_holds_the_lock_and_passes_the_flags(tmp_path, monkeypatch):
    from xllm_cli import trust
    from xllm_cli.locks import exclusive
    from xllm_cli.training import distributed

    monkeypatch.setattr(trust, "_allowed", False)  # the command sets it; restored after the test

    (tmp_path / "toy.yaml").write_text(TOY)
    seen = {}

    def fake_relaunch(argv, nproc):
        seen["argv"], seen["env"] = argv, os.environ.get("XLLM_STAGE_LOCKED")
        with pytest.raises(XllmError, match="in use"):
            with exclusive(tmp_path / "exp" / "stage1"):
                pass
        return 0

    monkeypatch.setattr(distributed, "relaunch_under_torchrun", fake_relaunch)
    _train(tmp_path, "--ngpu", "2", "--trust-remote-code")
    assert "--trust-remote-code" in seen["argv"] and seen["env"] == "1"


def test_umask_applies_to_checkpoint_and_model_folders(tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / "toy.yaml").write_text(TOY)
        _train(tmp_path)
    finally:
        os.umask(old)
    sdir = tmp_path / "exp" / "stage1"
    for folder in (*ck.list_checkpoints(sdir), sdir / "best"):
        assert (folder.stat().st_mode & 0o777) == 0o755, folder


def test_truncated_weights_are_one_line(toy_exp, capsys):
    from xllm_cli.models.saved_model import load_model

    ckpt = ck.latest_checkpoint(toy_exp / "exp" / "stage1")
    weights = ckpt / ck.MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(XllmError, match=r"model\.safetensors: truncated or not a safetensors file$"):
        ck.load_checkpoint(ckpt)
    best = toy_exp / "exp" / "stage1" / "best"
    (best / "config.yaml").write_text("model: {llm: {path: /nonexistent}}\n")
    (best / ck.MODEL_FILE).write_bytes(b"\x00" * 10)
    with pytest.raises(XllmError, match=r"best/model\.safetensors: truncated or not a safetensors file$"):
        load_model(best)


def test_bad_trainer_state_is_one_line(toy_exp, capsys):
    ckpt = ck.latest_checkpoint(toy_exp / "exp" / "stage1")
    state = ckpt / ck.STATE_FILE
    good = json.loads(state.read_text())
    state.write_text("{\"step\": 3,")
    with pytest.raises(XllmError, match=r"trainer_state\.json:1: invalid JSON"):
        ck.read_trainer_state(ckpt)
    state.write_text(json.dumps({**good, "step": "three"}))
    with pytest.raises(XllmError, match=r"trainer_state\.json: step has a wrong type \('three'\)"):
        ck.read_trainer_state(ckpt)
    state.write_text(json.dumps({**good, "best": [[0.5]]}))
    (toy_exp / "exp" / "stage1" / "DONE").unlink()  # resume from the broken checkpoint
    err = _fails(capsys, _train, toy_exp)
    assert "trainer_state.json: best: expected [score, step] pairs" in err


def test_refused_pickle_names_the_file(toy_exp, capsys):
    ckpt = ck.latest_checkpoint(toy_exp / "exp" / "stage1")
    torch.save({"state": {}, "param_groups": [], "x": ck.TrainState()}, ckpt / ck.OPTIM_FILE)  # a Python object
    (toy_exp / "exp" / "stage1" / "DONE").unlink()
    err = _fails(capsys, _train, toy_exp)
    assert f"{ckpt / ck.OPTIM_FILE}: " in err and "refused" in err and "weights_only" not in err


def test_saved_trust_remote_code_needs_the_flag(tmp_path, monkeypatch):
    import transformers

    from xllm_cli import trust
    from xllm_cli.models.saved_model import load_model

    model_dir, llm_dir = tmp_path / "m", tmp_path / "llm"
    model_dir.mkdir()
    llm_dir.mkdir()
    (model_dir / "config.yaml").write_text(f"model:\n  llm: {{path: {llm_dir}, trust_remote_code: true}}\n")
    from safetensors.torch import save_file

    save_file({}, str(model_dir / "model.safetensors"))
    monkeypatch.setattr(trust, "_allowed", False)
    with pytest.raises(XllmError, match=r"llm: the config sets trust_remote_code.*--trust-remote-code"):
        load_model(model_dir)
    seen = {}

    class Stop(Exception):
        pass

    def spy(path, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    trust.allow_remote_code(True)
    with pytest.raises(Stop):
        load_model(model_dir)
    assert seen.get("trust_remote_code") is True


@pytest.mark.parametrize("verb", [["train"], ["average"], ["export", "ct2"]])
def test_trust_remote_code_flag_exists(verb):
    from typer.testing import CliRunner

    from xllm_cli.main import app

    result = CliRunner().invoke(app, [*verb, "--help"])
    assert result.exit_code == 0 and "--trust-remote-code" in result.output
