"""Issue 12: ``xllm export ... --force`` with --out equal to (or containing) its input."""

from __future__ import annotations

import pytest

from xllm_cli import main


@pytest.mark.parametrize("verb", ["ct2", "whisper"])
@pytest.mark.parametrize("where", ["same", "parent"])
def test_out_that_is_or_holds_the_input_is_refused(tmp_path, capsys, verb, where):
    model = tmp_path / "models" / "llm"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    out = model if where == "same" else tmp_path / "models"
    args = ["export", verb, "--force", "--out", str(out)]
    args += ["--llm", str(model)] if verb == "ct2" else [str(model)]
    with pytest.raises(SystemExit) as exit_info:
        main.run(args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out is or contains the input model" in err
    assert (model / "config.json").read_text() == "{}"  # the input is untouched
