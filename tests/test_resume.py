"""Exact resume: a run killed mid-way and resumed ends with the same weights as an uninterrupted one.

The run is a real `python -m xllm_cli train` subprocess on the tests' toy family; it dies
abruptly (os._exit, like a kill: no cleanup, no final checkpoint) after a step that
is not a checkpoint step, so the resumed run must replay steps from the checkpoint
with the same data order, dropout masks, optimizer moments and learning rates.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from xllm_cli.training import checkpoint as ck
from toy_family import toy_env

RECIPE = """
model: {type: toy, dim: 8, dropout: 0.2, toy_utts: 40, toy_dev_utts: 8}
stage1:
  epochs: 3
  lr: 0.01
  warmup_steps: 3
  accum_grad: 2
  valid_interval: 4
  log_interval: 100
  keep_best: 1
  keep_last: 2
  batch: {batch_size: 2}
"""


def train(tmp_path: Path, exp: str, extra_env: dict | None = None, *args: str) -> subprocess.CompletedProcess:
    env = toy_env(**(extra_env or {}))
    return subprocess.run(
        [sys.executable, "-m", "xllm_cli", "train", "--stage", "1", "--config", str(tmp_path / "toy.yaml"),
         "--exp", str(tmp_path / exp), "--device", "cpu", "--threads", "1", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )


def final_weights(tmp_path: Path, exp: str) -> dict:
    ckpt = ck.latest_checkpoint(tmp_path / exp / "stage1")
    return load_file(str(ckpt / "model.safetensors")), ck.read_trainer_state(ckpt)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    (tmp_path / "toy.yaml").write_text(RECIPE)
    # 40 utts / batch 2 = 20 batches = 10 steps per epoch; 30 steps in all
    full = train(tmp_path, "full")
    assert full.returncode == 0, full.stderr

    killed = train(tmp_path, "killed", {"XLLM_TEST_EXIT_AFTER_STEP": "14"})
    assert killed.returncode == 3, killed.stderr
    sdir = tmp_path / "killed" / "stage1"
    assert ck.latest_checkpoint(sdir).name == "step_12"  # mid-epoch 2: data position (1, 4)
    state = ck.read_trainer_state(ck.latest_checkpoint(sdir))
    assert (state["epoch"], state["batch"]) == (1, 4)
    assert not (sdir / "DONE").exists()
    # a half-written checkpoint (no trainer_state.json) from the kill must be ignored
    (sdir / "checkpoints" / "step_13").mkdir()
    (sdir / "checkpoints" / "step_13" / "model.safetensors").write_bytes(b"partial")

    resumed = train(tmp_path, "killed")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and "step_12" in resumed.stderr

    a, sa = final_weights(tmp_path, "full")
    b, sb = final_weights(tmp_path, "killed")
    assert sa["step"] == sb["step"] == 30
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert sa["best"][0] == sb["best"][0]

    # a finished stage is not trained again
    again = train(tmp_path, "killed")
    assert again.returncode == 0 and "already done" in again.stderr
    c, _ = final_weights(tmp_path, "killed")
    assert all(torch.equal(b[k], c[k]) for k in b)


def test_no_resume_starts_over(tmp_path):
    (tmp_path / "toy.yaml").write_text(RECIPE)
    first = train(tmp_path, "exp", None, "--max-steps", "4")
    assert first.returncode == 0, first.stderr
    again = train(tmp_path, "exp", None, "--max-steps", "2", "--no-resume")
    assert again.returncode == 0, again.stderr
    assert "resumed" not in again.stderr
    assert [p.name for p in ck.list_checkpoints(tmp_path / "exp" / "stage1")] == ["step_2"]
