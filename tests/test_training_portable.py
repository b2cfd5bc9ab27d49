"""A trained experiment keeps working after it is moved: saved configs hold relative paths."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from test_train_cli import REPO, SHRUNK_TINY, _synthetic_corpus
from xllm_cli.main import run
from xllm_cli.training import checkpoint as ck

SMALL = [*SHRUNK_TINY, "stage1.cer_utts=0", "stage1.data.image_train=[]", "stage1.keep_best=2"]


@pytest.mark.slow
def test_moved_experiment_still_loads_and_averages(tmp_path, monkeypatch):
    from xllm_cli.models.saved_model import load_model

    _synthetic_corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    sets = [a for s in SMALL for a in ("--set", s)]
    for stage in (0, 1):
        run(["train", "--stage", str(stage), "--config", str(REPO / "recipes" / "tiny.yaml"), "--exp", "exp",
             "--device", "cpu", "--max-steps", "2", *sets])
    for saved in ("exp/stage1/config.yaml", "exp/stage1/best/config.yaml"):
        assert yaml.safe_load(Path(saved).read_text())["model"]["llm"]["path"] in ("../stage0/llm",
                                                                                 "../../stage0/llm"), saved
    moved = tmp_path / "elsewhere" / "exp2"
    moved.parent.mkdir()
    shutil.move(str(tmp_path / "exp"), str(moved))
    assert not (tmp_path / "exp").exists()
    monkeypatch.chdir(tmp_path / "elsewhere")  # and from another working directory
    model = load_model(ck.stage_model_dir(moved, 1))
    assert Path(model.cfg.llm.path) == (moved / "stage0" / "llm").resolve()
    run(["average", "--exp", str(moved), "--stage", "1", "--num", "1"])
    averaged = load_model(ck.stage_model_dir(moved, 1))
    assert ck.stage_model_dir(moved, 1).name == "averaged" and averaged.tokenizer is not None
