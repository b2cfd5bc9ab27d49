"""Recipe loading: includes relative to the including file, deep merge, --set overrides, one-line errors."""

from __future__ import annotations

import pytest
import yaml

from xllm_cli.config import apply_overrides, get, load_recipe, save_config
from xllm_cli.errors import XllmError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_include_is_relative_to_the_including_file_and_the_includer_wins(tmp_path):
    write(tmp_path / "recipes/model/base.yaml", "model:\n  llm: {path: null, dim: 8}\n  layers: [1, 2, 3]\nseed: 1\n")
    write(tmp_path / "recipes/model/tiny.yaml", "include: base.yaml\nmodel:\n  llm: {dim: 16}\n")
    recipe = write(tmp_path / "recipes/tiny.yaml",
                   "include: [model/tiny.yaml]\nmodel:\n  layers: [7]\nstage1: {lr: 0.001}\n")
    cfg = load_recipe(recipe)
    assert cfg["model"]["llm"] == {"path": None, "dim": 16}  # nested dicts merge
    assert cfg["model"]["layers"] == [7]  # lists are replaced, not concatenated
    assert cfg["seed"] == 1 and cfg["stage1"]["lr"] == 0.001
    assert "include" not in cfg


def test_set_overrides_are_typed_and_create_sections(tmp_path):
    recipe = write(tmp_path / "r.yaml", "stage1: {lr: 0.1, epochs: 2}\ndata: {dir: data}\n")
    cfg = load_recipe(recipe, ["stage1.lr=3e-4", "stage1.epochs=5", "data.dir=data_fast",
                               "stage2.data.train=[a, b]", "model.llm.path=null", "stage1.amp=none"])
    assert cfg["stage1"]["lr"] == pytest.approx(3e-4) and isinstance(cfg["stage1"]["lr"], float)
    assert cfg["stage1"]["epochs"] == 5
    assert cfg["data"]["dir"] == "data_fast"
    assert cfg["stage2"]["data"]["train"] == ["a", "b"]
    assert cfg["model"]["llm"]["path"] is None
    assert get(cfg, "stage1.amp") == "none"
    assert get(cfg, "stage9.lr", "dflt") == "dflt"


def test_bad_override_errors_name_the_key():
    with pytest.raises(XllmError, match="KEY=VALUE"):
        apply_overrides({}, ["stage1.lr"])
    with pytest.raises(XllmError, match=r"stage1\.lr is a float, not a section"):
        apply_overrides({"stage1": {"lr": 0.1}}, ["stage1.lr.x=1"])


def test_bad_yaml_error_names_file_and_line(tmp_path):
    recipe = write(tmp_path / "bad.yaml", "stage1:\n  lr: 0.1\n  epochs: [1, 2\nseed: 3\n")
    with pytest.raises(XllmError) as e:
        load_recipe(recipe)
    msg = str(e.value)
    assert msg.startswith(f"{recipe}:") and "invalid YAML" in msg and "\n" not in msg
    line = int(msg.split(":")[1])
    assert 3 <= line <= 4


def test_missing_include_cycle_and_non_mapping_are_one_line_errors(tmp_path):
    r1 = write(tmp_path / "a.yaml", "include: [nope.yaml]\n")
    with pytest.raises(XllmError, match=r"a\.yaml: include: nope\.yaml: no such file"):
        load_recipe(r1)
    write(tmp_path / "b.yaml", "include: c.yaml\n")
    write(tmp_path / "c.yaml", "include: b.yaml\n")
    with pytest.raises(XllmError, match="include cycle"):
        load_recipe(tmp_path / "b.yaml")
    with pytest.raises(XllmError, match="must be a YAML mapping"):
        load_recipe(write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(XllmError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_saved_config_reads_back_identically(tmp_path):
    cfg = {"model": {"llm": {"path": None}, "name": "识别"}, "stage1": {"lr": 3e-4, "betas": [0.9, 0.98]}}
    save_config(cfg, tmp_path / "exp/stage1/config.yaml")
    assert yaml.safe_load((tmp_path / "exp/stage1/config.yaml").read_text(encoding="utf-8")) == cfg


def test_shipped_recipes_load(tmp_path):
    from pathlib import Path

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    found = sorted(p for p in recipes.glob("*.yaml"))
    for path in found:
        cfg = load_recipe(path)
        assert "model" in cfg, path
        assert any(f"stage{n}" in cfg for n in range(4)), path
