"""Generation helpers: the greedy loop over the KV cache; beam search through transformers, with per-utterance limits.

``transformers``' ``generate`` serves every strategy, and pays for it on each call
(configuration copies, processors, stopping criteria) and on each step. A
transcript needs far less: the argmax, EOS, and a token limit per utterance.
This loop also helps batches in two ways:

- a row that has ended (EOS or its own limit) leaves the batch, so a batch stops
  paying for utterances that already finished;
- the KV cache grows in buffers of doubling capacity, with no ``torch.cat`` of the
  whole cache on every step.

A row's tokens never depend on the other rows, so greedy hypotheses are the same
at batch size 1 and 32 (tests/test_generation.py and tests/test_models.py check this).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch


@dataclass
class GreedyResult:
    tokens: list[list[int]]  # per row, without the final EOS
    scores: list[float]  # per row, mean log-probability of the chosen tokens (EOS included when emitted)


def _growing_cache(config):
    """A KV cache whose layers write into preallocated buffers, for models whose layers all attend fully.

    Sliding-window layers, or a transformers without per-layer caches (< 4.56), get the
    library's own ``DynamicCache``.
    """
    from transformers import DynamicCache

    try:
        from transformers.cache_utils import Cache
        layer_class = _growing_layer_class()
    except ImportError:
        return DynamicCache()
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    if layer_types != {"full_attention"}:
        return DynamicCache(config=config)
    return Cache(layer_class_to_replicate=layer_class)


@functools.cache
def _growing_layer_class():
    """Defined on first use: transformers is imported lazily."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """``keys``/``values`` are views of buffers that double when full."""

        def lazy_initialization(self, key_states, value_states) -> None:
            super().lazy_initialization(key_states, value_states)
            self._kbuf = self._vbuf = None
            self._len = 0

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start, end = self._len, self._len + key_states.shape[-2]
            if self._kbuf is None or end > self._kbuf.shape[-2]:
                self._kbuf = self._grow(self._kbuf, key_states, start, end)
                self._vbuf = self._grow(self._vbuf, value_states, start, end)
            self._kbuf[..., start:end, :] = key_states
            self._vbuf[..., start:end, :] = value_states
            self._len = end
            self.keys, self.values = self._kbuf[..., :end, :], self._vbuf[..., :end, :]
            return self.keys, self.values

        @staticmethod
        def _grow(old, new, used: int, needed: int):
            b, h, _, d = new.shape
            buf = new.new_empty(b, h, max(2 * needed, 64), d)
            if used:
                buf[..., :used, :] = old[..., :used, :]
            return buf

        def batch_select_indices(self, indices) -> None:
            if self.is_initialized and self._len:
                self._kbuf, self._vbuf = self._kbuf[indices], self._vbuf[indices]
                self.keys, self.values = self._kbuf[..., : self._len, :], self._vbuf[..., : self._len, :]

    return GrowingLayer


def _forward_kwargs(llm, cache) -> tuple[dict, dict]:
    """Keyword arguments for the prefill and for each step, as this model's ``forward`` names them.

    transformers 5 calls the cache ``cache`` (4.x: ``past_key_values``); ``logits_to_keep=1``
    (where supported) spares the LM head over the whole prompt.
    """
    params = inspect.signature(llm.forward).parameters
    step = {"cache" if "cache" in params else "past_key_values": cache, "use_cache": True}
    prefill = dict(step, logits_to_keep=1) if "logits_to_keep" in params else step
    return prefill, step


@torch.inference_mode()
def greedy_generate(
    llm,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    limits: list[int],
    eos_ids: list[int],
) -> GreedyResult:
    """Greedy continuation of left-padded ``inputs_embeds``; row ``b`` stops at EOS or after ``limits[b]`` tokens.

    ``position_ids`` are those of the prompt; generated tokens continue from each row's
    last prompt position (this keeps ``align_speech_positions`` layouts intact).
    """
    batch = inputs_embeds.shape[0]
    device = inputs_embeds.device
    tokens: list[list[int]] = [[] for _ in range(batch)]
    logprob_sums = [0.0] * batch
    counts = [0] * batch
    if batch == 0:
        return GreedyResult(tokens, [])
    cache = _growing_cache(llm.config)
    prefill_kwargs, step_kwargs = _forward_kwargs(llm, cache)
    eos = torch.tensor(sorted(set(eos_ids)), device=device)
    rows = torch.arange(batch, device=device)  # original index of each row still generating
    left = torch.tensor(limits, device=device)  # tokens each active row may still emit
    mask = attention_mask.long()
    next_pos = position_ids[:, -1:] + 1
    out = llm(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids, **prefill_kwargs)
    logits = out.logits[:, -1]
    while rows.numel():
        logp = torch.log_softmax(logits.float(), dim=-1)
        best = logp.argmax(-1)
        at_limit = left <= 0
        ended = at_limit | torch.isin(best, eos)
        picked = logp.gather(1, best[:, None])[:, 0]
        for r, tok, lp, limit_hit, stop in zip(rows.tolist(), best.tolist(), picked.tolist(),
                                               at_limit.tolist(), ended.tolist()):
            if limit_hit:  # cut at the limit: no token, no score
                continue
            logprob_sums[r] += lp
            counts[r] += 1
            if not stop:
                tokens[r].append(tok)
        if bool(ended.any()):
            keep = (~ended).nonzero()[:, 0]
            if keep.numel() == 0:
                break
            rows, left, best, mask, next_pos = rows[keep], left[keep], best[keep], mask[keep], next_pos[keep]
            cache.batch_select_indices(keep)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = llm(input_ids=best[:, None], attention_mask=mask, position_ids=next_pos, **step_kwargs)
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
        left = left - 1
    return GreedyResult(tokens, [s / max(1, n) for s, n in zip(logprob_sums, counts)])


class EndAtLimit:
    """A logits processor for ``generate``: EOS for the rows (beams) whose utterance reached its limit.

    ``max_new_tokens`` there is one number for the whole batch. With soft prompts
    (``inputs_embeds``) ``input_ids`` holds only the generated tokens, so its length is
    the number generated so far.
    """

    def __init__(self, limits: list[int], num_beams: int, eos_id: int) -> None:
        self.per_row = torch.tensor(limits, dtype=torch.long).repeat_interleave(max(1, num_beams))
        self.eos_id = eos_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        done = self.per_row.to(scores.device) <= input_ids.shape[1]
        if bool(done.any()):
            scores = scores.clone()
            scores[done] = float("-inf")
            scores[done, self.eos_id] = 0.0
        return scores


def hf_generate(llm, tokenizer, inputs, limits: list[int], eos_ids: list[int], num_beams: int,
                num_return_sequences: int, repetition_penalty: float, length_penalty: float,
                aligned: bool = False) -> list[list[tuple[str, float]]]:
    """Beam search (or a repetition penalty) through ``transformers``' ``generate``: n-best (text, score).

    ``inputs`` are the left-padded soft prompts (``models.outputs.LLMInputs``); ``aligned``
    passes their position ids on (``llm.align_speech_positions``). Decoding is deterministic
    (the sampling settings instruct models ship are overridden). The score is beam search's
    ``sequences_scores``, or for one beam the mean token log-probability up to the first EOS.
    """
    emb, mask, pos = inputs.embeds, inputs.attention_mask, inputs.position_ids
    eos = tokenizer.eos_token_id
    num_return_sequences = max(1, min(num_return_sequences, num_beams))
    extra = {"position_ids": pos} if aligned else {}
    if len(set(limits)) > 1 and eos is not None:
        from transformers import LogitsProcessorList

        extra["logits_processor"] = LogitsProcessorList([EndAtLimit(limits, num_beams, eos)])
    out = llm.generate(
        inputs_embeds=emb,
        attention_mask=mask,
        max_new_tokens=max(limits),
        num_beams=num_beams,
        num_return_sequences=num_return_sequences,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids,
        repetition_penalty=repetition_penalty,
        length_penalty=length_penalty,
        temperature=None,
        top_p=None,
        top_k=None,
        **extra,
    )
    seqs = out.sequences
    if num_beams > 1:
        scores = out.sequences_scores.float().tolist()
    else:
        trans = llm.compute_transition_scores(seqs, out.scores, normalize_logits=True).float()
        valid = torch.ones_like(seqs, dtype=torch.bool)[:, : trans.shape[1]]
        # tokens after the first EOS are padding
        is_eos = torch.isin(seqs[:, : trans.shape[1]], torch.tensor(eos_ids, device=seqs.device))
        after = (is_eos.long().cumsum(1) - is_eos.long()) > 0
        valid = valid & ~after
        trans = trans.masked_fill(~valid | ~torch.isfinite(trans), 0.0)
        scores = (trans.sum(1) / valid.sum(1).clamp(min=1)).tolist()
    texts = tokenizer.batch_decode(seqs, skip_special_tokens=True)
    n = num_return_sequences
    return [[(texts[b * n + i].strip(), float(scores[b * n + i])) for i in range(n)] for b in range(len(inputs))]
