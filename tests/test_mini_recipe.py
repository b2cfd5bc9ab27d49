"""egs/mini/run.sh in fast mode, end to end: synthesize a small mini corpus, train
stages 0-3 briefly, decode with and without images, score and collect results.

This is the CI run of the README's main command (minutes, CPU only)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULT_LINE = re.compile(r"%CER (\d+\.\d+) \[ (\d+) / (\d+), (\d+) ins, (\d+) del, (\d+) sub \]")


@pytest.mark.slow
def test_mini_recipe_fast_mode_end_to_end(tmp_path):
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["XLLM_NO_BOOTSTRAP"] = "1"  # the test already runs inside the bootstrapped venv
    exp, data = tmp_path / "exp", tmp_path / "data"
    cmd = ["bash", str(REPO / "egs" / "mini" / "run.sh"), "--fast", "true", "--exp", str(exp), "--data", str(data)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for stage in range(4):
        assert (exp / f"stage{stage}").is_dir()
    decodes = {p.name: p for p in exp.glob("decode_*") if (p / "result.txt").exists()}
    names = " ".join(decodes)
    assert "decode_test_" in names and "decode_test_img_noisy_" in names
    assert any("noimage" in n for n in decodes), names
    for path in decodes.values():
        match = RESULT_LINE.search((path / "result.txt").read_text())
        assert match, path
        errors, total = int(match.group(2)), int(match.group(3))
        assert total > 0 and errors == sum(int(match.group(i)) for i in (4, 5, 6))
        hyp_lines = (path / "hyp").read_text(encoding="utf-8").splitlines()
        assert len(hyp_lines) == len((path / "ref").read_text(encoding="utf-8").splitlines())

    table = (exp / "RESULTS.md").read_text()
    assert table.count("CER") >= len(decodes)

    # Rerunning a finished recipe redoes nothing and still succeeds.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
