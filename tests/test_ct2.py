"""CTranslate2 export of the frozen LLM and n-best rescoring with it (tiny random Qwen2)."""

from __future__ import annotations

import math
import shutil
import stat

import pytest
import yaml
from typer.testing import CliRunner

from xllm_cli import fsutil
from xllm_cli.errors import XllmError
from xllm_cli.main import app

runner = CliRunner()
TEXTS = ["今天天气很好", "我们去公园吧", "明天会下雨"]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from xllm_cli.models.tokenizer import build_char_tokenizer

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("exp") / "stage0" / "llm"
    tok = build_char_tokenizer(TEXTS, out)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.save_pretrained(str(out))
    return out, model, tok


def _torch_log_prob(model, tok, prompt, text):
    import torch

    prefix = [tok.bos_token_id] + tok.encode(prompt, add_special_tokens=False)
    ids = prefix + tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    return sum(lp[k - 1, ids[k]].item() for k in range(len(prefix), len(ids)))


def test_export_cli_finds_llm_from_stage_config(tiny_llm, tmp_path):
    llm_dir, _, _ = tiny_llm
    exp = tmp_path / "exp"
    (exp / "stage3" / "best").mkdir(parents=True)
    (exp / "stage3" / "best" / "config.yaml").write_text(yaml.safe_dump({"model": {"llm": {"path": str(llm_dir)}}}))
    res = runner.invoke(app, ["export", "ct2", str(exp), "--stage", "3"])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE((exp / "ct2_llm").stat().st_mode) == 0o777 & ~fsutil.current_umask()  # not mkdtemp's 0700
    assert (exp / "ct2_llm" / "model.bin").is_file() and (exp / "ct2_llm" / "tokenizer.json").is_file()
    res = runner.invoke(app, ["export", "ct2", str(exp), "--stage", "3"])
    assert res.exit_code == 0 and "up to date" in res.stdout
    res = runner.invoke(app, ["export", "ct2", str(exp), "--stage", "3", "-q", "float32"])
    assert res.exit_code != 0 and "--force" in str(res.exception)
    res = runner.invoke(app, ["export", "ct2", str(tmp_path / "nothing")])
    assert res.exit_code != 0


def test_find_llm_dir_layouts(tiny_llm, tmp_path):
    from xllm_cli.decoding.ct2 import find_llm_dir

    llm_dir, _, _ = tiny_llm
    assert find_llm_dir(llm_dir.parent.parent) == llm_dir  # EXP/stage0/llm fallback
    exp = tmp_path / "e"
    (exp / "stage2" / "averaged").mkdir(parents=True)
    (exp / "stage2" / "averaged" / "config.yaml").write_text(yaml.safe_dump({"model": {"llm": {"path": str(llm_dir)}}}))
    assert find_llm_dir(exp) == llm_dir and find_llm_dir(exp, 2) == llm_dir
    # a path relative to the config's folder (as training saves one inside the experiment), from any cwd
    moved = tmp_path / "moved"
    shutil.copytree(llm_dir, moved / "stage0" / "llm")
    (moved / "stage3" / "best").mkdir(parents=True)
    (moved / "stage3" / "best" / "config.yaml").write_text(yaml.safe_dump({"model": {"llm": {"path": "../../stage0/llm"}}}))
    assert find_llm_dir(moved, 3).resolve() == (moved / "stage0" / "llm").resolve()
    (moved / "stage3" / "best" / "config.yaml").write_text("model: {llm: [unclosed\n")
    with pytest.raises(XllmError, match=r"stage3/best/config.yaml:\d+: invalid YAML"):
        find_llm_dir(moved, 3)


def test_scores_match_pytorch_and_rescoring_follows_lm(tiny_llm, tmp_path):
    from xllm_cli.decoding.ct2 import export_llm_ct2, lm_log_probs, rescore_nbest, score_nbest

    llm_dir, model, tok = tiny_llm
    ct2_dir = export_llm_ct2(llm_dir, tmp_path / "ct2_f32", quantization="float32")
    prompts, texts = ["请忠实地识别该语音", ""], ["今天天气", "明天会下雨"]
    ours = lm_log_probs(ct2_dir, tok, prompts, texts)
    ref = [_torch_log_prob(model, tok, p, t) for p, t in zip(prompts, texts)]
    assert ours == pytest.approx(ref, rel=3e-4)

    int8_dir = export_llm_ct2(llm_dir, tmp_path / "ct2_int8")  # default int8, as used on CPU
    cands = ["今天", "天气很好", "我们去", "会下雨吧"]
    lm = lm_log_probs(int8_dir, None, ["请"] * len(cands), cands)  # tokenizer copied into the ct2 dir
    assert all(math.isfinite(x) and x < 0 for x in lm)
    # equal first-pass scores: the LM decides, in the order of its scores
    ranked = score_nbest(int8_dir, tok, ["请"], [[(c, -1.0) for c in cands]], lm_weight=1.0)[0]
    assert [h[0] for h in ranked] == [c for _, c in sorted(zip(lm, cands), key=lambda x: -x[0])]
    best_lm = max(zip(lm, cands))[1]
    worst_lm = min(zip(lm, cands))[1]
    nbest = [[(worst_lm, 0.0), (best_lm, 0.0)], [(worst_lm, 0.0), (best_lm, -1000.0)]]
    best = rescore_nbest(int8_dir, tok, ["请", "请"], nbest, lm_weight=0.5)
    assert best[0][0] == best_lm  # LM breaks the tie
    assert best[1][0] == worst_lm  # a large first-pass margin wins
    assert best[0][1] == pytest.approx(0.5 * max(lm), abs=1e-4)
    # no LM weight: first-pass order kept; empty n-best list -> empty text
    assert rescore_nbest(int8_dir, tok, ["", ""], [[(worst_lm, 0.0), (best_lm, 0.0)], []], lm_weight=0.0) == [
        (worst_lm, 0.0), ("", -math.inf)]


def test_broken_stage_config_is_a_one_line_error(tmp_path):
    from xllm_cli.decoding.ct2 import find_llm_dir
    from xllm_cli.errors import XllmError

    cfg = tmp_path / "e" / "stage3" / "best" / "config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("model:\n  llm: [unclosed\n")
    with pytest.raises(XllmError, match=rf"^{cfg}:3: invalid YAML: "):
        find_llm_dir(tmp_path / "e")
    cfg.write_bytes(b"model: \xff\n")
    with pytest.raises(XllmError, match=rf"^{cfg}: not valid UTF-8"):
        find_llm_dir(tmp_path / "e")
