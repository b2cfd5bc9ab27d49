"""The frozen causal LLM: loading, and laying out the input sequence.

Input per utterance: ``[<image> … </image>] [<video> … </video>] [<speech> … </speech>] prompt``
then the target and EOS. The marker strings are plain text (no new vocabulary). When the
tokenizer has a chat template, the user turn is rendered with placeholder strings where the
modality embeddings go; the rendered text is split at the placeholders and each piece is
tokenized, so the model sees exactly the format it was instruction-tuned with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

MODALITY_ORDER = ("image", "video", "speech")
_PLACEHOLDER = {m: f"<|xllm-{m}-slot|>" for m in MODALITY_ORDER}
_SPLIT = re.compile("(" + "|".join(re.escape(p) for p in _PLACEHOLDER.values()) + ")")
_SLOT_OF = {v: k for k, v in _PLACEHOLDER.items()}

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(name: str | None) -> torch.dtype | None:
    """``"bf16"``/``"bfloat16"``/... -> torch dtype; ``"auto"``/None -> None."""
    if name in (None, "auto"):
        return None
    return DTYPES[str(name)]


def load_llm(path: str, dtype: str | None = None, gradient_checkpointing: bool = False, trust_remote_code: bool = False):
    """AutoModelForCausalLM + tokenizer from a local dir or hub id; returns (model, tokenizer).

    ``trust_remote_code`` is what the config asks (``model.llm.trust_remote_code``); only
    ``--trust-remote-code`` on the command line lets it through (:mod:`xllm_cli.trust`).
    """
    from transformers import AutoModelForCausalLM

    model_dir, trust = _llm_dir(path, trust_remote_code)
    kwargs = {"trust_remote_code": True} if trust else {}
    if resolve_dtype(dtype) is not None:
        kwargs["dtype"] = resolve_dtype(dtype)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    tok = _llm_tokenizer(model_dir, trust_remote_code)
    if gradient_checkpointing:
        enable_checkpointing(model)
    return model, tok


def load_llm_vocabulary(path: str, trust_remote_code: bool = False):
    """What stage 1 needs of the LLM without its weights: (tokenizer, embedding width)."""
    from transformers import AutoConfig

    model_dir, trust = _llm_dir(path, trust_remote_code, _NO_WEIGHTS)
    config = AutoConfig.from_pretrained(str(model_dir), **({"trust_remote_code": True} if trust else {}))
    tok = _llm_tokenizer(model_dir, trust_remote_code)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return tok, int(text.hidden_size)


# a hub id's files besides the weights (config, tokenizer, remote code)
_NO_WEIGHTS = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.py"]


def _llm_dir(path: str, trust_remote_code: bool, allow_patterns: list[str] | None = None):
    """(local directory, whether remote code may run) for ``model.llm.path``."""
    from xllm_cli.models.loading import resolve_pretrained
    from xllm_cli.trust import trust_remote_code_for

    model_dir = resolve_pretrained(str(path), allow_patterns)
    return model_dir, trust_remote_code_for(str(model_dir), trust_remote_code)


def _llm_tokenizer(model_dir, trust_remote_code: bool):
    """The LLM's tokenizer, left-padding, with a pad token (EOS when it has none)."""
    from xllm_cli.models.tokenizer import load_tokenizer

    tok = load_tokenizer(model_dir, trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def enable_checkpointing(model) -> bool:
    """Recompute ``model``'s layer activations in backward (transformers' switch); True when it has one.

    Non-reentrant checkpointing: it works when only the inputs (not the frozen weights) need
    gradients. transformers only checkpoints layers in training mode; ``XLLM.train`` keeps
    the layers of a frozen LLM in that mode with their sub-modules (dropout) in eval.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name warns)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        return False
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False
    return True


def mark_checkpointed_layers_training(module, mode: bool) -> None:
    """Set ``training`` on the checkpointed transformer layers of ``module`` only, not on their children.

    transformers checkpoints a layer only while ``layer.training`` is true, so a frozen LLM in
    eval mode (no dropout, as at inference) would keep every activation. The layer object itself
    reads ``training`` for nothing else; its attention and MLP keep their own (eval) flag.
    """
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # older transformers: no per-layer switch to keep on
        return
    for m in module.modules():
        if isinstance(m, GradientCheckpointingLayer) and getattr(m, "gradient_checkpointing", False):
            m.training = mode


@dataclass(frozen=True)
class Layout:
    """Token-id pieces and modality slots, in order: each item is a list of ids or a modality name."""

    items: tuple


class PromptFormatter:
    """Builds (and caches) the token layout for a prompt and a set of modalities."""

    def __init__(self, tokenizer, use_chat_template: bool | None = None, system_prompt: str | None = None):
        self.tok = tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        self.use_chat_template = has_template if use_chat_template is None else (use_chat_template and has_template)
        self.system_prompt = system_prompt
        self._cache: dict[tuple, Layout] = {}

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] if text else []

    def layout(self, prompt: str, modalities: tuple[str, ...]) -> Layout:
        """Layout of ``[<m> slot </m>]… prompt`` (chat-templated when available), cached."""
        key = (prompt, modalities)
        if key in self._cache:
            return self._cache[key]
        content = "".join(f"<{m}>{_PLACEHOLDER[m]}</{m}>" for m in MODALITY_ORDER if m in modalities) + prompt
        if self.use_chat_template:
            messages = [{"role": "user", "content": content}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            prefix: list[int] = []
        else:
            text = content
            bos = self.tok.bos_token_id
            prefix = [bos] if bos is not None else []
        items: list = [prefix] if prefix else []
        for piece in _SPLIT.split(text):
            if piece in _SLOT_OF:
                items.append(_SLOT_OF[piece])
            elif piece:
                items.append(self._ids(piece))
        lay = Layout(tuple(tuple(i) if isinstance(i, list) else i for i in items))
        self._cache[key] = lay
        return lay

    def target_ids(self, text: str) -> list[int]:
        """Target token ids followed by EOS."""
        return self._ids(text) + [self.tok.eos_token_id]


def assemble(
    embed_fn,
    layouts: list[Layout],
    modality_embeds: list[dict[str, torch.Tensor]],
    targets: list[list[int]] | None,
    pad_left: bool,
    device,
    dtype,
    align_slot: str | None = None,
):
    """Concatenate per-utterance pieces into padded (inputs_embeds, attention_mask, labels, position_ids).

    ``modality_embeds[b][m]`` is a (n_b, H) tensor for slot m of utterance b; labels are -100
    everywhere except on the target tokens (training only).

    Positions count up over the sequence, except for the slot named ``align_slot``: its k-th
    vector gets the position of the k-th answer token (the prompt's positions close the gap),
    so that "copy the slot" is a fixed relative offset for the LLM (see ``llm.align_speech_positions``).
    Generation continues the positions from the last prompt token, which keeps the alignment.
    """
    seqs, labs, poss = [], [], []
    for b, lay in enumerate(layouts):
        parts, lab, pos, aligned = [], [], [], []
        for item in lay.items:
            if isinstance(item, str):
                e = modality_embeds[b][item]
                parts.append(e.to(dtype))
                lab += [-100] * e.shape[0]
                if item == align_slot:
                    aligned.append((len(pos), e.shape[0]))
                    pos += [None] * e.shape[0]
                else:
                    pos += list(range(_next(pos), _next(pos) + e.shape[0]))
            elif item:
                ids = torch.tensor(item, dtype=torch.long, device=device)
                parts.append(embed_fn(ids).to(dtype))
                lab += [-100] * len(item)
                pos += list(range(_next(pos), _next(pos) + len(item)))
        answer_start = _next(pos)
        for start, n in aligned:
            pos[start : start + n] = range(answer_start, answer_start + n)
        if targets is not None:
            ids = torch.tensor(targets[b], dtype=torch.long, device=device)
            parts.append(embed_fn(ids).to(dtype))
            lab += list(targets[b])
            pos += list(range(answer_start, answer_start + len(targets[b])))
        seqs.append(torch.cat(parts, dim=0))
        labs.append(lab)
        poss.append(pos)
    L = max(s.shape[0] for s in seqs)
    H = seqs[0].shape[1]
    B = len(seqs)
    emb = torch.zeros(B, L, H, device=device, dtype=dtype)
    mask = torch.zeros(B, L, dtype=torch.long, device=device)
    labels = torch.full((B, L), -100, dtype=torch.long, device=device)
    position_ids = torch.zeros((B, L), dtype=torch.long, device=device)
    for b, s in enumerate(seqs):
        n = s.shape[0]
        sl = slice(L - n, L) if pad_left else slice(0, n)
        emb[b, sl] = s
        mask[b, sl] = 1
        labels[b, sl] = torch.tensor(labs[b], dtype=torch.long, device=device)
        position_ids[b, sl] = torch.tensor(poss[b], dtype=torch.long, device=device)
    return emb, mask, labels, position_ids


def _next(pos: list) -> int:
    """Next position after the last assigned one (aligned slots hold None until the end)."""
    for p in reversed(pos):
        if p is not None:
            return p + 1
    return 0
