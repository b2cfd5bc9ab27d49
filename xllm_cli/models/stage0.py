"""Stage 0: train the tiny LLM on text, in the formats it will see in stages 2/3.

This is the only stage-0 objective: ``xllm train --stage 0`` wraps the bare LM in
:class:`Stage0Objective`, and ``XLLM(batch, stage=0)`` calls :func:`stage0_loss` too.

A text-only LM never learns to *copy*, yet with a frozen LLM in stages 2/3 the whole
job of the LLM is to read the transcript off the speech slot (and fix what it can). An
instruct LLM brings that ability; the tiny one learns it here. Besides plain LM sequences
(``lm``), stage 0 mixes in the final instruction format with the speech slot filled by
the LLM's own embeddings of the transcript (``asr``), and the same with an image slot that
holds the transcript's characters in random order (``image_asr``).

Proportions: ``model.llm_init.stage0_tasks`` (default lm 0.2, asr 0.6, image_asr 0.2);
substitution rate in the copied slot: ``model.llm_init.stage0_noise`` (default 0: noise
slows the emergence of copying a lot). With ``model.llm.align_speech_positions`` (tiny
preset) the slot shares position ids with the answer, as in stages 2/3 and decoding.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from xllm_cli.config.schema import LLMInitConfig, ModelConfig
from xllm_cli.errors import XllmError
from xllm_cli.models.config import DEFAULT_PROMPTS
from xllm_cli.models.llm import Layout, PromptFormatter, assemble
from xllm_cli.models.outputs import StepOutput


def _corrupt(ids: list[int], pool: list[int], rate: float, substitute_only: bool = False) -> list[int]:
    """Random substitutions (or substitutions/deletions/insertions, ``rate``/3 each), never empty."""
    if rate <= 0:
        return list(ids)
    r = torch.rand(len(ids), 2).tolist()
    if substitute_only:
        return [pool[int(b * len(pool)) % len(pool)] if a < rate else t for t, (a, b) in zip(ids, r)]
    out: list[int] = []
    for t, (a, b) in zip(ids, r):
        if a < rate / 3:
            continue  # deletion
        out.append(pool[int(b * len(pool)) % len(pool)] if a < 2 * rate / 3 else t)  # substitution
        if a > 1 - rate / 3:
            out.append(pool[int(b * len(pool)) % len(pool)])  # insertion
    return out or list(ids)


def stage0_loss(llm, tokenizer, formatter: PromptFormatter, prompts: dict, align_slot: str | None,
                init_cfg: LLMInitConfig, texts: list[str]):
    """Next-token CE over a mix of plain-LM and copy-format sequences built from ``texts``.

    ``init_cfg`` is ``model.llm_init`` (its ``stage0_tasks`` and ``stage0_noise``).
    """
    tasks = init_cfg.stage0_tasks or LLMInitConfig().stage0_tasks  # {} = the defaults, as before
    noise = init_cfg.stage0_noise
    names = [k for k in ("lm", "asr", "image_asr") if tasks.get(k, 0) > 0]
    if not names:
        raise XllmError("llm_init.stage0_tasks: no task has a positive weight")
    probs = torch.tensor([tasks[k] for k in names])
    embed = llm.get_input_embeddings()
    device = embed.weight.device
    bos = (tokenizer.bos_token_id,) if tokenizer.bos_token_id is not None else ()
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    pool = [t for i in ids for t in i] or [tokenizer.unk_token_id or 0]
    layouts, slots, targets = [], [], []
    for i in ids:
        task = names[int(torch.multinomial(probs, 1))] if len(names) > 1 else names[0]
        targets.append(i + [tokenizer.eos_token_id])
        if task == "lm" or not i:
            layouts.append(Layout((bos,) if bos else ()))
            slots.append({})
            continue
        # with aligned positions, insertions/deletions would teach misaligned copying: substitute only
        noisy = _corrupt(i, pool, noise, substitute_only=align_slot is not None)
        slot = {"speech": embed(torch.tensor(noisy, dtype=torch.long, device=device))}
        mods: tuple[str, ...] = ("speech",)
        if task == "image_asr":
            perm = torch.randperm(len(i)).tolist()
            slot["image"] = embed(torch.tensor([i[p] for p in perm], dtype=torch.long, device=device))
            mods = ("image", "speech")
        layouts.append(formatter.layout(prompts["image_asr" if task == "image_asr" else "asr"], mods))
        slots.append(slot)
    emb, mask, labels, pos = assemble(embed, layouts, slots, targets, False, device, embed.weight.dtype, align_slot)
    out = llm(inputs_embeds=emb, attention_mask=mask, position_ids=pos, labels=labels)
    loss = out.loss
    return StepOutput(loss, {"lm_loss": float(loss.detach()), "loss": float(loss.detach()),
                             "ppl": float(torch.exp(loss.detach().float().clamp(max=20)))})


class Stage0Objective(nn.Module):
    """Stage-0 model for the trainer: ``forward(batch, stage=0)`` -> StepOutput, on a bare HF causal LM.

    Drop-in for a plain LM objective; ``model_cfg`` is the ``model:`` section (llm_init, llm, prompts).
    """

    def __init__(self, llm, tokenizer, model_cfg: ModelConfig):
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer
        llm_cfg = model_cfg.llm
        self.init_cfg = model_cfg.llm_init or LLMInitConfig()
        self.prompts = {**DEFAULT_PROMPTS, **model_cfg.prompts}
        self.align_slot = "speech" if llm_cfg.align_speech_positions else None
        self.formatter = PromptFormatter(tokenizer, llm_cfg.chat_template, llm_cfg.system_prompt)

    def gradient_checkpointing_enable(self, **kwargs):
        """Forwarded to the LLM."""
        return self.llm.gradient_checkpointing_enable(**kwargs)

    def forward(self, batch, stage: int = 0):
        """Loss on ``batch.texts`` (stage is ignored: this object is stage 0)."""
        if not batch.texts:
            raise XllmError("stage 0 batches need texts")
        return stage0_loss(self.llm, self.tokenizer, self.formatter, self.prompts, self.align_slot,
                           self.init_cfg, batch.texts)
