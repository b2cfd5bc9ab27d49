"""A random-init tiny causal LM (Qwen2 or Llama architecture) for the tiny preset.

``model.llm_init`` of the recipe gives the sizes; stage 0 trains it on text and saves it
(model + tokenizer) as an ordinary HF directory that later stages load by path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from xllm_cli.errors import XllmError


def tiny_llm_config(init_cfg: dict, tokenizer):
    """transformers config (Qwen2Config/LlamaConfig) from the small ``llm_init`` dict."""
    from transformers import LlamaConfig, Qwen2Config

    kind = init_cfg.get("model_type", "qwen2")
    classes = {"qwen2": Qwen2Config, "llama": LlamaConfig}
    if kind not in classes:
        raise XllmError(f"llm_init.model_type must be qwen2 or llama, not {kind!r}")
    hidden = int(init_cfg.get("hidden_size", 160))
    heads = int(init_cfg.get("num_heads", 4))
    return classes[kind](
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=int(init_cfg.get("intermediate_size", 3 * hidden)),
        num_hidden_layers=int(init_cfg.get("num_layers", 3)),
        num_attention_heads=heads,
        num_key_value_heads=int(init_cfg.get("num_kv_heads", heads)),
        max_position_embeddings=int(init_cfg.get("max_position_embeddings", 512)),
        tie_word_embeddings=bool(init_cfg.get("tie_word_embeddings", True)),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_dropout=float(init_cfg.get("attention_dropout", 0.0)),
    )


def create_tiny_llm(init_cfg: dict, texts: Iterable[str], out_dir: str | Path, seed: int = 0):
    """Build char tokenizer from ``texts`` + random tiny causal LM, save both to ``out_dir``; returns (model, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    from xllm_cli.models.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer(texts)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_llm_config(init_cfg, tok))
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.bos_token_id = tok.bos_token_id
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    return model, tok
