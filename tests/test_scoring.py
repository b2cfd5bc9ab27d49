"""Scoring library: edit-distance totals, normalisation, tokenisation, writers."""

from __future__ import annotations

import logging
import random
import re

import pytest

from xllm_cli.scoring import (
    NormalizeOptions,
    default_speaker,
    normalize_text,
    result_lines,
    score_texts,
    tokenize,
    write_decode_dir,
)
from xllm_cli.scoring.normalize import metric_name


def levenshtein(a: list[str], b: list[str]) -> int:
    """Plain dynamic-programming edit distance with unit costs."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def _random_text(rng: random.Random, alphabet: str, max_len: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))


@pytest.mark.parametrize("unit,alphabet", [("char", "abc你好"), ("word", "ab c  d"), ("auto", "ab 你好 c")])
def test_totals_equal_minimum_edit_distance(unit, alphabet):
    rng = random.Random(1234 + len(unit))
    opts = NormalizeOptions(remove_punct=False)
    for trial in range(200):
        n = rng.randint(1, 8)
        refs = {f"s{i % 3}-u{trial}_{i}": _random_text(rng, alphabet, 12) for i in range(n)}
        hyps = {k: _random_text(rng, alphabet, 12) for k in refs}
        result = score_texts(refs, hyps, unit=unit, normalize=opts)
        expected = 0
        n_ref = 0
        for u in result.utts:
            r, h = tokenize(refs[u.utt], unit, opts), tokenize(hyps[u.utt], unit, opts)
            assert (u.ref_tokens, u.hyp_tokens) == (r, h)
            d = levenshtein(r, h)
            assert u.counts.errors == d, (refs[u.utt], hyps[u.utt], u.ops)
            # the alignment reproduces both sequences and the counts
            assert [x for _, x, _ in u.ops if x is not None] == r
            assert [y for _, _, y in u.ops if y is not None] == h
            assert u.counts.correct + u.counts.subs + u.counts.dels == len(r)
            assert u.counts.sentence_errors == int(d > 0)
            expected += d
            n_ref += len(r)
        t = result.totals
        assert t.errors == expected and t.n == n_ref
        assert t.correct + t.subs + t.dels == t.n
        assert t.sentences == n


def test_known_counts_and_result_lines():
    refs = {"a-1": "a b c d", "a-2": "x y", "b-3": "p q r"}
    hyps = {"a-1": "a c d e", "a-2": "x y", "b-3": "p z r"}
    result = score_texts(refs, hyps, unit="word")
    t = result.totals
    assert (t.n, t.errors, t.ins, t.dels, t.subs, t.correct) == (9, 3, 1, 1, 1, 7)
    assert (t.sentence_errors, t.sentences) == (2, 3)
    lines = result_lines(result, "exp/x/decode_test")
    assert lines[0] == "%WER 33.33 [ 3 / 9, 1 ins, 1 del, 1 sub ] exp/x/decode_test"
    assert lines[1] == "%SER 66.67 [ 2 / 3 ] exp/x/decode_test"
    assert set(result.per_speaker) == {"a", "b"}
    assert result.per_speaker["a"].errors == 2 and result.per_speaker["b"].subs == 1


def test_missing_and_extra_hypotheses():
    records = []

    class Catch(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Catch(level=logging.WARNING)
    logging.getLogger("xllm").addHandler(handler)
    try:
        result = score_texts({"u1": "你好", "u2": "世界"}, {"u1": "你好", "zz": "多余"}, unit="char")
    finally:
        logging.getLogger("xllm").removeHandler(handler)
    assert result.missing == ["u2"] and result.extra == ["zz"]
    assert result.totals.dels == 2 and result.totals.errors == 2 and result.totals.n == 4
    assert any("no hypothesis" in m for m in records) and any("no reference" in m for m in records)
    assert [u.utt for u in result.utts] == ["u1", "u2"]


def test_normalisation_options():
    assert normalize_text("你好，世界！“测试”。", NormalizeOptions()) == "你好 世界 测试"
    assert normalize_text("Hello, world! don't", NormalizeOptions()) == "Hello world don't"
    assert normalize_text("ＡＢＣ１２３", NormalizeOptions(nfkc=True)) == "ABC123"
    assert normalize_text("ＡＢＣ", NormalizeOptions(nfkc=False)) == "ＡＢＣ"
    assert normalize_text("Hello", NormalizeOptions(lower=True)) == "hello"
    assert normalize_text("a,b", NormalizeOptions(remove_punct=False)) == "a,b"
    # full-width punctuation goes even without NFKC
    assert normalize_text("好～吧＋", NormalizeOptions()) == "好 吧"
    r = score_texts({"u": "ＨＥＬＬＯ，世界"}, {"u": "hello 世界"}, unit="auto",
                    normalize=NormalizeOptions(nfkc=True, lower=True))
    assert r.totals.errors == 0
    r = score_texts({"u": "你好。"}, {"u": "你好"}, unit="char", normalize=NormalizeOptions(remove_punct=False))
    assert r.totals.ins == 0 and r.totals.dels == 1


def test_tokenisation_units():
    assert tokenize("你好 world 3点", "auto") == ["你", "好", "world", "3", "点"]
    assert tokenize("ab cd", "char") == ["a", "b", "c", "d"]
    assert tokenize("ab cd", "char", NormalizeOptions(remove_spaces=False)) == ["a", "b", "<space>", "c", "d"]
    assert tokenize("ab cd", "word") == ["ab", "cd"]
    assert metric_name("auto", [["你"], ["x"]]) == "MER"
    assert metric_name("auto", [["你"]]) == "CER"
    assert metric_name("auto", [["word"]]) == "WER"
    with pytest.raises(ValueError):
        tokenize("x", "phone")


def test_speakers_default_and_utt2spk():
    assert default_speaker("S0002-W0122") == "S0002"
    assert default_speaker("spk_1-x") == "spk"
    assert default_speaker("BAC009S0002W0122") == "BAC009S0002W0122"
    refs = {"x1": "a", "x2": "b", "y1": "c"}
    r = score_texts(refs, {"x1": "a", "x2": "c", "y1": "c"}, unit="char", utt2spk={"x1": "X", "x2": "X", "y1": "Y"})
    assert r.per_speaker["X"].errors == 1 and r.per_speaker["Y"].errors == 0


def test_write_decode_dir(tmp_path):
    refs = {"s1-u1": "你好世界", "s1-u2": "今天", "s2-u3": "天气好"}
    hyps = {"s1-u1": "你们世界啊", "s2-u3": "天好"}
    result = score_texts(refs, hyps, unit="char")
    out = tmp_path / "decode_test"
    write_decode_dir(out, result)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["hyp", "hyp.trn", "per_spk", "per_utt", "ref", "ref.trn", "result.txt"]
    assert (out / "ref").read_text(encoding="utf-8").splitlines()[0] == "s1-u1 你好世界"
    assert (out / "hyp").read_text(encoding="utf-8").splitlines() == ["s1-u1 你们世界啊", "s2-u3 天好"]
    assert (out / "ref.trn").read_text(encoding="utf-8").splitlines()[0] == "你 好 世 界 (s1-s1-u1)"
    assert (out / "hyp.trn").read_text(encoding="utf-8").splitlines()[1] == " (s1-s1-u2)"
    lines = (out / "result.txt").read_text(encoding="utf-8").splitlines()
    t = result.totals
    assert (t.n, t.ins, t.dels, t.subs) == (9, 1, 3, 1)
    assert lines[0] == f"%CER 55.56 [ 5 / 9, 1 ins, 3 del, 1 sub ] {out}"
    assert re.fullmatch(r"%SER 100\.00 \[ 3 / 3 \] .*", lines[1])
    assert lines[2] == "Scored 3 sentences, 1 not present in hyp."
    per_utt = (out / "per_utt").read_text(encoding="utf-8").splitlines()
    assert per_utt[0].split() == ["s1-u1", "ref", "你", "好", "世", "界", "*"]
    assert per_utt[1].split() == ["s1-u1", "hyp", "你", "们", "世", "界", "啊"]
    assert per_utt[2].split() == ["s1-u1", "op", "C", "S", "C", "C", "I"]
    assert per_utt[3] == "s1-u1 #csid 3 1 1 0"
    assert per_utt[7] == "s1-u2 #csid 0 0 0 2"
    per_spk = [line.split() for line in (out / "per_spk").read_text(encoding="utf-8").splitlines()]
    assert per_spk[0][:4] == ["SPEAKER", "id", "#SENT", "#WORD"]
    assert ["s1", "raw", "2", "6", "3", "1", "1", "2", "4", "2"] in per_spk
    assert per_spk[-1][:2] == ["SUM", "sys"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
