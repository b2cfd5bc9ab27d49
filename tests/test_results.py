"""``xllm results``: result.txt files under an experiment root -> one markdown table."""

from __future__ import annotations

from typer.testing import CliRunner

from xllm_cli.main import app
from xllm_cli.scoring import collect_results, parse_result_line, score_texts, write_decode_dir

runner = CliRunner()


def _make_exp(root):
    write_decode_dir(root / "tiny" / "decode_test_b", score_texts({"a-1": "你好"}, {"a-1": "你们"}, unit="char"))
    write_decode_dir(root / "tiny" / "decode_dev_a", score_texts({"a-1": "x y z"}, {"a-1": "x y"}, unit="word"))
    (root / "tiny" / "stage1").mkdir(parents=True)
    (root / "tiny" / "stage1" / "train.log").write_text("%CER in a log is not a result\n")


def test_parse_result_line():
    r = parse_result_line("%CER 4.52 [ 4737 / 104765, 116 ins, 198 del, 4423 sub ] exp/x/decode_test")
    assert (r.metric, r.value, r.errors, r.n, r.ins, r.dels, r.subs, r.decode_dir) == (
        "CER", 4.52, 4737, 104765, 116, 198, 4423, "exp/x/decode_test")
    s = parse_result_line("%SER 20.00 [ 2 / 10 ]")
    assert (s.metric, s.errors, s.n, s.ins) == ("SER", 2, 10, None)
    assert parse_result_line("Scored 10 sentences, 0 not present in hyp.") is None


def test_results_table_sorted(tmp_path):
    exp = tmp_path / "exp"
    _make_exp(exp)
    rows = collect_results(exp)
    assert [(r.decode_dir.rsplit("/", 1)[-1], r.metric) for r in rows] == [
        ("decode_dev_a", "WER"), ("decode_dev_a", "SER"), ("decode_test_b", "CER"), ("decode_test_b", "SER")]
    res = runner.invoke(app, ["results", str(exp)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert "| decode dir | metric | value | errors | N | ins | del | sub |" in lines
    assert f"| {exp}/tiny/decode_dev_a | WER | 33.33 | 1 | 3 | 0 | 1 | 0 |" in lines
    assert f"| {exp}/tiny/decode_test_b | CER | 50.00 | 1 | 2 | 0 | 0 | 1 |" in lines
    assert f"| {exp}/tiny/decode_test_b | SER | 100.00 | 1 | 1 | - | - | - |" in lines


def test_results_out_file_and_empty_root(tmp_path):
    exp = tmp_path / "exp"
    _make_exp(exp)
    out = tmp_path / "RESULTS.md"
    res = runner.invoke(app, ["results", str(exp), "--out", str(out)])
    assert res.exit_code == 0 and out.read_text().startswith("# Results")
    assert out.read_text().count("| WER |") == 1
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["results", str(tmp_path / "empty")])
    assert res.exit_code != 0
