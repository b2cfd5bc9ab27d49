"""The causal-LM loss of stages 2-3, with the LM head applied at the labelled positions only.

``llm(..., labels=...)`` projects every position onto the whole vocabulary: for Qwen
(152k entries) and a 300-position batch that is a (B, 300, 152k) float tensor, kept for
backward, although only the answer tokens (a tenth of the positions) have labels. Here the
LLM body runs for the hidden states and the head runs on the gathered positions whose next
label is not -100. The loss is the same token-mean cross-entropy transformers computes
(logits in float32, labels shifted by one), equal to float tolerance.

Models whose head does more than a projection (logit soft-capping, logit scaling) or that do
not expose their body and head go through the full computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# config attributes that change the logits after the head (Gemma 2, Cohere, ...)
_HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


@dataclass
class LMLoss:
    loss: torch.Tensor  # mean CE over the labelled tokens
    correct: int  # next-token argmax hits at the labelled positions
    count: int  # labelled positions


def _split_head(llm):
    """(body, head) when the logits are ``head(body(...).last_hidden_state)``; else None."""
    body = getattr(llm, "base_model", None)
    head = llm.get_output_embeddings() if hasattr(llm, "get_output_embeddings") else None
    if body is None or body is llm or head is None:
        return None
    if any(getattr(llm.config, k, None) not in (None, 1, 1.0) for k in _HEAD_EXTRAS):
        return None
    return body, head


def labelled_lm_loss(llm, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                     labels: torch.Tensor) -> LMLoss:
    """Next-token CE of ``llm`` on ``labels`` (-100 = no label), computing logits only where needed."""
    target = labels[:, 1:]
    where = target != -100
    split = _split_head(llm)
    if split is None:
        out = llm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        logits = out.logits[:, :-1][where]
    else:
        body, head = split
        hidden = body(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False).last_hidden_state
        logits = head(hidden[:, :-1][where])
    gold = target[where]
    if gold.numel() == 0:  # nothing labelled: a zero that keeps the graph (as the full path's NaN would not)
        loss = logits.sum() * 0.0
    else:
        loss = F.cross_entropy(logits.float(), gold)
    with torch.no_grad():
        correct = int((logits.argmax(-1) == gold).sum())
    return LMLoss(loss, correct, int(gold.numel()))
