"""The lean greedy loop (models/generation.py) against transformers' own greedy ``generate``."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LogitsProcessorList

from xllm_cli.models.generation import EndAtLimit, greedy_generate
from xllm_cli.config.schema import LLMInitConfig
from xllm_cli.models.tiny_llm import create_tiny_llm

torch.set_num_threads(1)

TEXTS = ["你好世界", "今天天气很好", "我爱北京天安门", "猫在桌子上", "红色的苹果"]


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    """A tiny Qwen2 whose random weights are sharp enough that greedy output varies by prompt."""
    out = tmp_path_factory.mktemp("llm")
    create_tiny_llm(LLMInitConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128),
                    TEXTS, out)
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for w in model.parameters():
            if w.ndim > 1:
                w.normal_(0, 0.3)
    return model


def left_padded_prompts(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(3, 12, (n,), generator=g)
    width = int(lens.max())
    emb = torch.randn(n, width, 64, generator=g)
    mask = (torch.arange(width)[None, :] >= width - lens[:, None]).long()
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return emb * mask[..., None], mask, pos


def hf_greedy(llm, emb, mask, pos, limits, eos):
    """transformers' greedy generate with the same per-row limits (EOS forced at each row's limit)."""
    out = llm.generate(inputs_embeds=emb, attention_mask=mask, position_ids=pos, max_new_tokens=max(limits),
                       do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=llm.config.pad_token_id,
                       logits_processor=LogitsProcessorList([EndAtLimit(limits, 1, eos)]))
    rows = []
    for seq in out.tolist():
        row = []
        for tok in seq:
            if tok == eos:
                break
            row.append(tok)
        rows.append(row)
    return rows


def test_greedy_matches_transformers_generate(llm):
    eos = llm.config.eos_token_id
    emb, mask, pos = left_padded_prompts(12)
    limits = [3, 9, 5, 12, 1, 7, 12, 0, 4, 10, 6, 8]
    ours = greedy_generate(llm, emb, mask, pos, limits, [eos])
    assert ours.tokens == hf_greedy(llm, emb, mask, pos, limits, eos)
    assert [len(t) <= n for t, n in zip(ours.tokens, limits)] == [True] * len(limits)
    assert ours.tokens[7] == [] and len(ours.tokens[4]) <= 1
    assert len({tuple(t) for t in ours.tokens}) > 3  # outputs vary: the comparison means something
    assert all(s <= 0.0 for s in ours.scores)


def test_greedy_rows_do_not_depend_on_the_batch(llm):
    """Rows leave the batch when they end; the others' tokens and scores stay as if decoded alone."""
    eos = llm.config.eos_token_id
    emb, mask, pos = left_padded_prompts(10, seed=1)
    limits = [2 + 2 * i for i in range(10)]
    batched = greedy_generate(llm, emb, mask, pos, limits, [eos])
    for i in range(10):
        real = int(mask[i].sum())
        alone = greedy_generate(llm, emb[i : i + 1, -real:], mask[i : i + 1, -real:], pos[i : i + 1, -real:],
                                limits[i : i + 1], [eos])
        assert alone.tokens[0] == batched.tokens[i], i
        assert alone.scores[0] == pytest.approx(batched.scores[i], abs=1e-4)


def test_greedy_stops_at_eos_and_scores_it(llm):
    """A row whose argmax is EOS ends there; its score is the log-probability of that EOS."""
    eos = llm.config.eos_token_id
    emb, mask, pos = left_padded_prompts(4, seed=2)
    with torch.no_grad():
        first = llm(inputs_embeds=emb, attention_mask=mask, position_ids=pos).logits[:, -1].log_softmax(-1)
    forced = int(first[0].argmax())  # treat row 0's first choice as the EOS id
    result = greedy_generate(llm, emb, mask, pos, [10] * 4, [forced])
    assert result.tokens[0] == []
    assert result.scores[0] == pytest.approx(float(first[0, forced]), abs=1e-5)


def test_cache_grows_past_its_first_buffer(llm):
    """Generating beyond the first KV buffer (64 positions) still matches transformers."""
    emb, mask, pos = left_padded_prompts(3, seed=4)
    limits = [80, 40, 70]
    never_eos = [len(llm.get_input_embeddings().weight) + 5]  # an id no argmax can pick: rows run to their limit
    ours = greedy_generate(llm, emb, mask, pos, limits, never_eos)
    assert [len(t) for t in ours.tokens] == limits
    theirs = llm.generate(inputs_embeds=emb, attention_mask=mask, position_ids=pos, max_new_tokens=80,
                          min_new_tokens=80, do_sample=False, eos_token_id=never_eos[0], pad_token_id=0)
    for ours_row, theirs_row, n in zip(ours.tokens, theirs.tolist(), limits):
        assert ours_row == theirs_row[:n]


def test_end_at_limit_bounds_each_utterance_in_beam_search(llm):
    """transformers' beam search with EndAtLimit: every beam of utterance b ends within limits[b] tokens."""
    eos = llm.config.eos_token_id
    emb, mask, pos = left_padded_prompts(3, seed=5)
    limits = [2, 9, 5]
    out = llm.generate(inputs_embeds=emb, attention_mask=mask, position_ids=pos, max_new_tokens=max(limits),
                       num_beams=3, num_return_sequences=3, do_sample=False, eos_token_id=eos,
                       pad_token_id=llm.config.pad_token_id,
                       logits_processor=LogitsProcessorList([EndAtLimit(limits, 3, eos)]))
    lengths = []
    for k, seq in enumerate(out.tolist()):
        n = seq.index(eos) if eos in seq else len(seq)
        assert n <= limits[k // 3], (k, seq)
        lengths.append(n)
    assert max(lengths) > 2  # the longer limits were not cut to the shortest


def test_sliding_window_models_keep_the_library_cache(llm):
    from transformers import DynamicCache, Qwen2Config

    from xllm_cli.models.generation import _growing_cache

    sliding = Qwen2Config(num_hidden_layers=2, use_sliding_window=True, sliding_window=8, max_window_layers=0)
    assert "sliding_attention" in sliding.layer_types
    assert type(_growing_cache(sliding)) is DynamicCache
    assert type(_growing_cache(llm.config)) is not DynamicCache
