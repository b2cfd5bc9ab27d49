"""`xllm train` reads the recipe once, typed: bad keys and values fail at once, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

import toy_family  # noqa: F401  (registers model type toy)
from xllm_cli.main import run

REPO = Path(__file__).resolve().parents[1]


def _train(tmp_path: Path, *args: str, config: str | None = None) -> None:
    run(["train", "--stage", "1", "--config", config or str(REPO / "recipes" / "tiny.yaml"),
         "--exp", str(tmp_path / "exp"), "--device", "cpu", *args])


@pytest.mark.parametrize("override, message", [
    ("stag1.lr=1", "stag1: unknown key (did you mean stage1?)"),
    ("model.speech_encoder.d_modle=3", "model.speech_encoder.d_modle: unknown key (did you mean d_model?)"),
    ("data.batch.max_batch_secs=3", "data.batch.max_batch_secs: unknown key (did you mean max_batch_seconds?)"),
    ("stage1.epochs=one", "stage1.epochs: expected an integer, got 'one'"),
    ("stage1.betas=0.9", "stage1.betas: expected a list of 2 values, got 0.9"),
    ("stage1.batch.max_batch_secs=3", "stage1.batch.max_batch_secs: unknown key"),
])
def test_bad_overrides_fail_before_any_work(tmp_path, capsys, override, message):
    with pytest.raises(SystemExit) as e:
        _train(tmp_path, "--set", override)
    assert e.value.code != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "tiny.yaml: " in err[0] and message in err[0], err
    assert not (tmp_path / "exp").exists()


def test_bad_values_in_the_recipe_file_name_the_key(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("model: {type: toy}\nstage1: {epochs: one}\n")
    with pytest.raises(SystemExit) as e:
        _train(tmp_path, config=str(tmp_path / "r.yaml"))
    assert e.value.code != 0
    assert "r.yaml: stage1.epochs: expected an integer, got 'one'" in capsys.readouterr().err


def test_toy_model_section_is_typed_by_its_family(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("model: {type: toy, toy_utt: 3}\nstage1: {epochs: 1}\n")
    with pytest.raises(SystemExit):
        _train(tmp_path, config=str(tmp_path / "r.yaml"))
    assert "model.toy_utt: unknown key (did you mean toy_utts?)" in capsys.readouterr().err
