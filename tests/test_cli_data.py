"""``xllm data ...``: exit codes, one-line errors, and each sub-command end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from xllm_cli.commands.data import data_app, register
from xllm_cli.data.datadir import DataDir, Utterance, write_datadir

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _app() -> typer.Typer:
    """Only this module's commands, so that other verbs cannot break these tests."""
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test app"""

    register(app)
    return app


APP = _app()


def invoke(*args: str):
    return runner.invoke(APP, ["data", *map(str, args)])


def xllm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xllm_cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=120,
    )


@pytest.fixture
def good(tmp_path) -> Path:
    utts = []
    for spk, n in (("spkA", 2), ("spkB", 2)):
        for j in range(n):
            path = tmp_path / "wav" / f"{spk}-{j}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, np.zeros(1600 * (j + 1), dtype=np.int16), 16000)
            utts.append(Utterance(f"{spk}-{j}", spk, f"{spk}-{j}", str(path), text=f"hi {j}", duration=0.1 * (j + 1)))
    write_datadir(tmp_path / "good", utts)
    return tmp_path / "good"


def test_validate_ok(good):
    result = invoke("validate", good, "--check-audio")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{good}: OK (4 utterances)"


def test_validate_bad_dir_prints_problems_and_fails(good):
    (good / "text").write_text("spkA-0 hi 0\nspkA-1\nspkB-0 hi 0\nspkB-1 hi 1\n")
    (good / "wav.scp").write_text((good / "wav.scp").read_text() + "zzz cat /etc/passwd |\n")
    proc = xllm("data", "validate", good)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert f"{good / 'text'}:2: utterance 'spkA-1' has an empty transcript" in err
    assert any(line.startswith(f"{good / 'wav.scp'}:5: recording 'zzz': command pipes") for line in err)
    assert err[-1].startswith("xllm: error: ") and "2 error(s)" in err[-1]
    assert proc.stdout == ""


def test_validate_warnings_and_no_warn(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(1600, dtype=np.int16), 16000)
    write_datadir(tmp_path / "d", [Utterance("u1", "zed", "u1", str(path), text="x")])
    result = invoke("validate", tmp_path / "d")
    assert result.exit_code == 0 and "warning: speaker id 'zed' is not a prefix" in result.stderr
    result = invoke("validate", tmp_path / "d", "--no-warn")
    assert result.exit_code == 0 and "warning" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (("data", "validate", "{tmp}/missing"), "data directory not found"),
        (("data", "info", "{tmp}/missing"), "data directory not found"),
        (("data", "split", "{good}", "9"), "cannot split 4 utterances into 9 parts"),
        (("data", "subset", "{good}", "{tmp}/o", "--first", "1", "--last", "1"), "exactly one of"),
        (("data", "subset", "{good}", "{good}/text", "--first", "1"), "text: exists and is not a directory"),
        (("data", "combine", "{good}/text", "{good}"), "text: exists and is not a directory"),
        (("data", "sort", "{tmp}"), "wav.scp: file not found (a data directory needs wav.scp and utt2spk)"),
        (("data", "fix", "{tmp}"), "wav.scp: file not found (a data directory needs wav.scp and utt2spk)"),
    ],
)
def test_user_errors_are_one_line(good, tmp_path, args, message):
    proc = xllm(*(a.format(tmp=tmp_path, good=good) for a in args))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xllm: error: ") and message in lines[0], proc.stderr


def test_fix_and_sort(good):
    (good / "utt2spk").write_text("spkB-1 spkB\nspkA-0 spkA\nspkA-1 spkA\nspkB-0 spkB\nghost spkA\n")
    result = invoke("sort", good)
    assert result.exit_code == 0 and "utt2spk" in result.stdout
    assert (good / "utt2spk").read_text().splitlines()[0] == "ghost spkA"
    assert invoke("validate", good).exception is not None  # ghost has no audio
    result = invoke("fix", good)
    assert result.exit_code == 0, result.output
    assert "dropped utterance 'ghost'" in result.stderr and "4 utterances kept" in result.stdout
    assert (good / ".backup.1" / "utt2spk").read_text().startswith("ghost spkA\n")
    assert f"originals in {good / '.backup.1'}" in result.stdout
    assert invoke("validate", good).exit_code == 0


def test_split_subset_combine_info(good, tmp_path):
    result = invoke("split", good, "2", "--per-spk")
    assert result.exit_code == 0, result.output
    assert DataDir.load(good / "split2" / "1").utt_ids() == ["spkA-0", "spkA-1"]
    assert DataDir.load(good / "split2" / "2").utt_ids() == ["spkB-0", "spkB-1"]

    (tmp_path / "spks").write_text("spkB\n")
    result = invoke("subset", good, tmp_path / "b", "--spk-list", tmp_path / "spks")
    assert result.exit_code == 0 and result.stdout.strip() == f"{tmp_path / 'b'}: 2 utterances"
    result = invoke("subset", good, tmp_path / "a", "--first", "2")
    assert result.exit_code == 0 and DataDir.load(tmp_path / "a").utt_ids() == ["spkA-0", "spkA-1"]

    result = invoke("combine", tmp_path / "ab", tmp_path / "a", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ab" / "text").read_text() == (good / "text").read_text()
    result = invoke("combine", tmp_path / "dup", tmp_path / "a", good)
    assert "duplicate utterance id 'spkA-0'" in str(result.exception)

    result = invoke("info", good, "--json")
    info = json.loads(result.stdout)
    assert (info["utterances"], info["speakers"], info["recordings"]) == (4, 2, 4)
    assert info["total_hours"] == pytest.approx(0.6 / 3600)
    result = invoke("info", good)
    assert result.exit_code == 0 and "utterances" in result.stdout and "speakers" in result.stdout


@pytest.mark.parametrize("command", ["validate", "fix", "sort", "split", "subset", "combine", "info"])
def test_help_ends_with_example(command):
    command_obj = next(c for c in data_app.registered_commands if c.name == command)
    doc = command_obj.callback.__doc__.strip()
    assert doc.splitlines()[-1].strip().startswith(f"Example: xllm data {command} ")
    result = invoke(command, "--help")
    assert result.exit_code == 0
    last = [line.strip() for line in result.stdout.splitlines() if line.strip()][-1]
    assert last.startswith(f"Example: xllm data {command} ")  # below the options, not above them
