"""``xllm score``: Kaldi lines on stdout, decode-dir files, and agreement with NIST sclite."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from xllm_cli.main import app
from xllm_cli.scoring import read_text, score_texts
from xllm_cli.scoring.sclite import find_sclite, run_sclite

runner = CliRunner()

REF = {
    "s1-u1": "今天天气很好",      # hyp: one substitution, one insertion
    "s1-u2": "我们去公园吧",      # hyp: two deletions
    "s2-u3": "明天会下雨",        # hyp: correct
    "s2-u4": "他说了什么",        # hyp missing entirely: five deletions
    "s3-u5": "请打开窗户",        # hyp: one deletion, one insertion
}
HYP = {
    "s1-u1": "今天天汽很好啊",
    "s1-u2": "我们公园",
    "s2-u3": "明天会下雨。",
    "s3-u5": "请开窗户呀",
}


def _write(path, table):
    path.write_text("".join(f"{k} {v}\n" for k, v in table.items()), encoding="utf-8")
    return path


def test_score_prints_kaldi_lines_and_writes_files(tmp_path):
    ref, hyp = _write(tmp_path / "ref", REF), _write(tmp_path / "hyp", HYP)
    out = tmp_path / "decode"
    res = runner.invoke(app, ["score", str(ref), str(hyp), "--unit", "char", "--out", str(out), "--per-spk"])
    assert res.exit_code == 0, res.output
    expected = score_texts(read_text(ref), read_text(hyp), unit="char").totals
    assert (expected.ins, expected.dels, expected.subs) == (2, 8, 1)
    lines = [line for line in res.stdout.splitlines() if line.startswith("%")]
    assert lines[0] == f"%CER 40.74 [ 11 / 27, 2 ins, 8 del, 1 sub ] {out}"
    assert lines[1] == f"%SER 80.00 [ 4 / 5 ] {out}"
    for name in ("hyp", "ref", "hyp.trn", "ref.trn", "per_utt", "per_spk", "result.txt"):
        assert (out / name).is_file(), name
    assert (out / "result.txt").read_text(encoding="utf-8").splitlines()[:2] == lines


def test_score_options_change_counts(tmp_path):
    ref = _write(tmp_path / "ref", {"a-1": "Hello, World"})
    hyp = _write(tmp_path / "hyp", {"a-1": "hello world!"})
    res = runner.invoke(app, ["score", str(ref), str(hyp), "--unit", "word", "--keep-case"])
    assert res.stdout.startswith("%WER 100.00 [ 2 / 2, 0 ins, 0 del, 2 sub ]")
    res = runner.invoke(app, ["score", str(ref), str(hyp), "--unit", "word"])  # case folded by default
    assert res.stdout.startswith("%WER 0.00 [ 0 / 2, 0 ins, 0 del, 0 sub ]")
    res = runner.invoke(app, ["score", str(ref), str(hyp), "--unit", "word", "--lower", "--keep-punct"])
    assert res.stdout.startswith("%WER 100.00 [ 2 / 2, 0 ins, 0 del, 2 sub ]")


def test_score_defaults_are_decode_s_auto_unit_case_folded(tmp_path):
    """English is scored as WER by default (was: %CER, no WER line), case-folded and without punctuation,
    through the same options and rule as xllm decode; result.txt names the normalisation."""
    ref = _write(tmp_path / "ref", {"a-1": "The cat sat on the mat", "a-2": "Hello world"})
    hyp = _write(tmp_path / "hyp", {"a-1": "the cat sat on a mat.", "a-2": "hello, World!"})
    out = tmp_path / "dir"
    res = runner.invoke(app, ["score", str(ref), str(hyp), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("%WER 12.50 [ 1 / 8, 0 ins, 0 del, 1 sub ]")
    assert (out / "result.txt").read_text().splitlines()[-1] == (
        "Normalisation: unit auto, case folded, punctuation removed")
    res = runner.invoke(app, ["score", str(ref), str(hyp), "--keep-case", "--keep-punct", "--out", str(out)])
    assert res.stdout.startswith("%WER 62.50 [ 5 / 8,")  # The/the, a, mat./mat, hello,/Hello, World!/world
    assert (out / "result.txt").read_text().splitlines()[-1] == "Normalisation: unit auto, case kept, punctuation kept"
    chinese = _write(tmp_path / "zh", {"a-1": "今天天气很好"})
    res = runner.invoke(app, ["score", str(chinese), str(_write(tmp_path / "zh_hyp", {"a-1": "今天天汽很好"}))])
    assert res.stdout.startswith("%CER 16.67 [ 1 / 6,")  # Chinese: CER, as decode


def test_decode_takes_score_s_options_with_the_same_defaults():
    """One definition: decode's scoring options are score's (same names, same defaults)."""
    import inspect

    from xllm_cli.commands.decode import decode
    from xllm_cli.commands.score import score_cmd
    from xllm_cli.decoding.options import DecodeOptions
    from xllm_cli.scoring.normalize import scoring_defaults

    def options(name):
        function = {"score": score_cmd, "decode": decode}[name]
        return {k: (v.default.default, v.default.param_decls) for k, v in inspect.signature(function).parameters.items()
                if hasattr(v.default, "param_decls")}

    shared = ("unit", "remove_punct", "nfkc", "lower", "keep_spaces")
    assert {k: options("score")[k] for k in shared} == {k: options("decode")[k] for k in shared}
    assert options("decode")["unit"][0] == "auto" and options("decode")["lower"][0] is True
    assert DecodeOptions(exp=None, data=None).normalize == scoring_defaults()


def test_score_rejects_bad_unit(tmp_path):
    ref = _write(tmp_path / "ref", {"a-1": "x"})
    res = runner.invoke(app, ["score", str(ref), str(ref), "--unit", "phone"])
    assert res.exit_code != 0 and "--unit" in str(res.exception)


def test_score_out_that_is_a_file_fails_before_printing(tmp_path):
    ref = _write(tmp_path / "ref", {"a-1": "x"})
    res = runner.invoke(app, ["score", str(ref), str(ref), "--out", str(ref)])
    assert res.exit_code != 0 and "exists and is not a directory" in str(res.exception)
    assert "%CER" not in res.stdout and ref.read_text() == "a-1 x\n"


def test_score_utt2spk_line_without_speaker_names_the_line(tmp_path):
    ref = _write(tmp_path / "ref", {"a-1": "x", "a-2": "y"})
    (tmp_path / "utt2spk").write_text("a-1 a\na-2\n")
    res = runner.invoke(app, ["score", str(ref), str(ref), "--utt2spk", str(tmp_path / "utt2spk")])
    assert res.exit_code != 0 and str(res.exception) == f"{tmp_path / 'utt2spk'}:2: key 'a-2' has no value"


def test_score_empty_reference_file(tmp_path):
    (tmp_path / "ref").write_text("")
    res = runner.invoke(app, ["score", str(tmp_path / "ref"), str(tmp_path / "ref")])
    assert res.exit_code != 0 and str(res.exception) == f"{tmp_path / 'ref'}: no utterances"


def test_help_ends_with_example():
    for command in (["score"], ["results"], ["export", "ct2"], ["export", "whisper"]):
        res = runner.invoke(app, [*command, "--help"])
        after_options = " ".join(res.stdout.rsplit("╯", 1)[-1].split())  # the example may wrap
        assert res.exit_code == 0 and after_options.startswith(f"Example: xllm {' '.join(command)} "), res.stdout


@pytest.mark.skipif(find_sclite() is None, reason="sclite (SCTK) not installed")
def test_sclite_agrees_with_our_counts(tmp_path):
    ref, hyp = _write(tmp_path / "ref", REF), _write(tmp_path / "hyp", HYP)
    out = tmp_path / "decode"
    res = runner.invoke(app, ["score", str(ref), str(hyp), "--out", str(out), "--sclite"])
    assert res.exit_code == 0, res.output
    assert "SYSTEM SUMMARY" in res.stdout
    ours = score_texts(read_text(ref), read_text(hyp), unit="char").totals
    sc = run_sclite(out / "ref.trn", out / "hyp.trn", tmp_path / "sc")
    assert (sc.n, sc.errors, sc.ins, sc.dels, sc.subs, sc.correct) == (
        ours.n, ours.errors, ours.ins, ours.dels, ours.subs, ours.correct)
    assert (sc.sentences, sc.sentence_errors) == (ours.sentences, ours.sentence_errors)
    assert sc.ins > 0 and sc.dels > 0 and sc.subs > 0


def test_score_out_holding_the_hyp_never_rewrites_it(tmp_path):
    """Issue 12: ``xllm score REF DIR/hyp --out DIR`` rewrote DIR/hyp with only REF's utterances."""
    out = tmp_path / "decode"
    out.mkdir()
    extra = {**HYP, "s9-u9": "没有参考的句子"}
    ref, hyp = _write(tmp_path / "ref_in", REF), _write(out / "hyp", extra)
    before = hyp.read_bytes()
    res = runner.invoke(app, ["score", str(ref), str(hyp), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert hyp.read_bytes() == before
    assert (out / "result.txt").is_file() and (out / "hyp.trn").is_file() and (out / "ref").is_file()
    # the same for the reference living in --out
    res = runner.invoke(app, ["score", str(out / "ref"), str(hyp), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert hyp.read_bytes() == before
