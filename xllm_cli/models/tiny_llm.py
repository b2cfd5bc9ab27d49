"""A random-init tiny causal LM (Qwen2 or Llama architecture) for the tiny preset.

``model.llm_init`` of the recipe gives the sizes; stage 0 trains it on text and saves it
(model + tokenizer) as an ordinary HF directory that later stages load by path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from xllm_cli.config.schema import LLMInitConfig
from xllm_cli.errors import XllmError


def tiny_llm_config(init_cfg: LLMInitConfig | dict, tokenizer):
    """transformers config (Qwen2Config/LlamaConfig) from ``model.llm_init`` (a mapping is checked first)."""
    from transformers import LlamaConfig, Qwen2Config

    from xllm_cli.config.typed import parse

    init_cfg = parse(LLMInitConfig, init_cfg, "model.llm_init")

    classes = {"qwen2": Qwen2Config, "llama": LlamaConfig}
    if init_cfg.model_type not in classes:
        raise XllmError(f"llm_init.model_type must be qwen2 or llama, not {init_cfg.model_type!r}")
    hidden = init_cfg.hidden_size
    return classes[init_cfg.model_type](
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=init_cfg.intermediate_size or 3 * hidden,
        num_hidden_layers=init_cfg.num_layers,
        num_attention_heads=init_cfg.num_heads,
        num_key_value_heads=init_cfg.num_kv_heads or init_cfg.num_heads,
        max_position_embeddings=init_cfg.max_position_embeddings,
        tie_word_embeddings=init_cfg.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_dropout=init_cfg.attention_dropout,
    )


def create_tiny_llm(init_cfg: LLMInitConfig | dict, texts: Iterable[str], out_dir: str | Path, seed: int = 0):
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
