"""Adapters: project an interface's output into the LLM's embedding space."""

from __future__ import annotations

import torch.nn as nn

from xllm_cli.errors import XllmError


def build_adapter(cfg: dict | None, in_dim: int, out_dim: int) -> nn.Module:
    """``linear`` (one Linear) or ``mlp`` (Linear-GELU-Linear, hidden size ``hidden`` or out_dim)."""
    cfg = cfg or {}
    kind = cfg.get("type", "linear")
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        hidden = int(cfg.get("hidden") or out_dim)
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
    raise XllmError(f"adapter type {kind!r} unknown (linear, mlp)")
