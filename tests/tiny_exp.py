"""A random-weight tiny experiment for the decoding tests: the tiny preset saved as EXP/stage3/best."""

from __future__ import annotations

import dataclasses
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_tiny_exp(root: Path, texts, vision: bool = False, sharp: bool = True, recipe: str | None = None) -> Path:
    """EXP = ``root/exp``: the tiny preset (recipes/model/tiny.yaml) with a char tokenizer from ``texts``.

    ``sharp`` draws the LLM's weights with a large std, so that its (meaningless) output
    changes with every input frame and position: a padding, batching or merge bug shows.
    ``vision`` keeps the image/video interfaces. ``recipe`` (YAML text) is saved as the
    stage's training recipe, ``EXP/stage3/config.yaml``, as ``xllm train`` would.
    """
    import torch
    import yaml

    from xllm_cli.config.schema import parse_model
    from xllm_cli.models.tiny_llm import create_tiny_llm
    from xllm_cli.models.saved_model import save_model
    from xllm_cli.models.xllm import XLLM

    section = yaml.safe_load((REPO / "recipes" / "model" / "tiny.yaml").read_text(encoding="utf-8"))["model"]
    cfg = parse_model(section)
    llm_dir = root / "exp" / "stage0" / "llm"
    llm, _ = create_tiny_llm(cfg.llm_init, texts, llm_dir)
    if sharp:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in llm.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, 0.3, generator=gen)
        llm.save_pretrained(str(llm_dir))
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, path=str(llm_dir)),
                              vision_encoder=cfg.vision_encoder if vision else None)
    torch.manual_seed(0)
    save_model(XLLM.from_config(cfg), cfg, root / "exp" / "stage3" / "best", exp=root / "exp")
    if recipe is not None:
        (root / "exp" / "stage3" / "config.yaml").write_text(recipe, encoding="utf-8")
    return root / "exp"
