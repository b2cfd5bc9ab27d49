"""The recipe plumbing: option parsing, --stage/--stop-stage slicing, local/Slurm
execution. A fake `xllm` on PATH records each call, so these run in seconds."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EGS = REPO / "egs"


def fake_xllm(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in `xllm` that appends its arguments to calls.log and succeeds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    script = bin_dir / "xllm"
    script.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{calls}"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir, calls


def run_recipe(recipe: str, args: list[str], tmp_path: Path, extra_env: dict | None = None):
    bin_dir, calls = fake_xllm(tmp_path)
    env = dict(os.environ)
    env.update({"PATH": f"{bin_dir}:{env['PATH']}", "XLLM_NO_BOOTSTRAP": "1"})
    env.update(extra_env or {})
    proc = subprocess.run(
        ["bash", str(EGS / recipe / "run.sh"), "--exp", str(tmp_path / "exp"), *args],
        env=env, capture_output=True, text=True, timeout=60,
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return proc, lines


def test_mini_stage_slice_runs_only_those_stages(tmp_path):
    proc, calls = run_recipe("mini", ["--stage", "2", "--stop-stage", "3"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [c.split()[:3] for c in calls] == [["train", "--stage", "0"], ["train", "--stage", "1"]]


def test_mini_full_run_calls_every_step_in_order(tmp_path):
    proc, calls = run_recipe("mini", [], tmp_path)
    assert proc.returncode == 0, proc.stderr
    verbs = [c.split()[0] for c in calls]
    assert verbs[0] == "prep" and verbs[-1] == "results"
    train_stages = [c.split()[2] for c in calls if c.startswith("train")]
    assert train_stages == ["0", "1", "2", "3"]
    decodes = [c for c in calls if c.startswith("decode")]
    assert any("--no-image" in c for c in decodes) and any("test_img_noisy" in c for c in decodes)


def test_fast_mode_uses_fast_config_and_small_corpus(tmp_path):
    proc, calls = run_recipe("mini", ["--fast", "true", "--stop-stage", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--scale" in calls[0]
    assert any("tiny_fast.yaml" in c for c in calls if c.startswith("train"))


def test_unknown_option_is_an_error(tmp_path):
    proc, calls = run_recipe("mini", ["--no-such-option", "1"], tmp_path)
    assert proc.returncode != 0
    assert "unknown option --no-such-option" in proc.stderr
    assert calls == []


def test_help_lists_options(tmp_path):
    proc, _ = run_recipe("mini", ["--help"], tmp_path)
    assert proc.returncode == 0
    assert "--stop-stage" in proc.stdout and "Stages:" in proc.stdout


def test_failing_step_stops_the_recipe(tmp_path):
    bin_dir, calls = fake_xllm(tmp_path)
    (bin_dir / "xllm").write_text(f'#!/usr/bin/env bash\necho "$*" >> "{calls}"\n[[ "$1" != train ]]\n')
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", XLLM_NO_BOOTSTRAP="1")
    proc = subprocess.run(["bash", str(EGS / "mini" / "run.sh"), "--exp", str(tmp_path / "exp")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert not any(line.startswith("decode") for line in calls.read_text().splitlines())


def test_done_or_run_skips_finished_work(tmp_path):
    marker = tmp_path / "m" / ".done"
    script = f"""
        stage=0; stop_stage=9
        . {EGS}/utils/stage.sh
        done_or_run {marker} echo ran
        done_or_run {marker} echo ran
    """
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stdout.count("ran") == 1 and "skip" in proc.stderr


def test_slurm_backend_builds_srun_command(tmp_path):
    bin_dir = tmp_path / "sbin"
    bin_dir.mkdir()
    record = tmp_path / "srun.args"
    srun = bin_dir / "srun"
    srun.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "{record}"\n')
    srun.chmod(0o755)
    conf = tmp_path / "slurm.conf"
    conf.write_text("partition=gpu\naccount=asr\ngpus=4\nmem=64G\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", XLLM_SLURM_CONF=str(conf))
    proc = subprocess.run(
        ["bash", str(EGS / "utils" / "run_slurm.sh"), "--gpus", "8", str(tmp_path / "log" / "x.log"), "xllm", "train"],
        env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    args = record.read_text().split("\n")
    assert args[args.index("--partition") + 1] == "gpu"
    assert args[args.index("--gpus-per-node") + 1] == "8"  # the command line wins over the conf
    assert args[args.index("--mem") + 1] == "64G"
    assert args[-3:-1] == ["xllm", "train"]


def test_local_backend_logs_and_propagates_exit_code(tmp_path):
    log = tmp_path / "log" / "job.log"
    proc = subprocess.run(["bash", str(EGS / "utils" / "run_local.sh"), str(log), "bash", "-c", "echo hello; exit 3"],
                          capture_output=True, text=True)
    assert proc.returncode == 3
    text = log.read_text()
    assert "hello" in text and "exit code 3" in text


@pytest.mark.parametrize("recipe", ["mini", "aishell", "aishell2", "vsdial"])
def test_every_recipe_has_the_kaldi_files(recipe):
    root = EGS / recipe
    for name in ("run.sh", "cmd.sh", "path.sh", "RESULTS.md"):
        assert (root / name).is_file(), f"{recipe}/{name}"
    assert (root / "conf").is_dir()
    proc = subprocess.run(["bash", "-n", str(root / "run.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("recipe,prep", [("aishell", "aishell"), ("aishell2", "aishell2")])
def test_gpu_recipes_run_prep_training_average_decode(tmp_path, recipe, prep):
    # A private copy of the recipe, so that its data/ can be faked without touching the repository.
    import shutil

    egs = tmp_path / "egs"
    shutil.copytree(EGS / "utils", egs / "utils")
    shutil.copytree(EGS / recipe, egs / recipe, symlinks=True, ignore=shutil.ignore_patterns("data", "exp"))
    for s in ("dev", "test"):
        (egs / recipe / "data" / s).mkdir(parents=True)
    bin_dir, calls_log = fake_xllm(tmp_path)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", XLLM_NO_BOOTSTRAP="1")
    proc = subprocess.run(["bash", str(egs / recipe / "run.sh"), "--corpus", str(tmp_path / "corpus"), "--ngpu", "2"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = calls_log.read_text().splitlines()
    assert calls[0].startswith(f"prep {prep} ")
    assert [c.split()[2] for c in calls if c.startswith("train")] == ["1", "2", "3"]
    assert all("--ngpu 2" in c for c in calls if c.startswith("train"))
    assert any(c.startswith("average") for c in calls)
    decoded = [c for c in calls if c.startswith("decode")]
    assert any("data/test" in c and "--mode nar" not in c for c in decoded)
    assert calls[-1].startswith("results")
