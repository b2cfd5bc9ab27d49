"""Adapters: project an interface's output into the LLM's embedding space."""

from __future__ import annotations

import torch.nn as nn

from xllm_cli.config.schema import AdapterConfig
from xllm_cli.errors import XllmError


def build_adapter(cfg: AdapterConfig, in_dim: int, out_dim: int) -> nn.Module:
    """``linear`` (one Linear) or ``mlp`` (Linear-GELU-Linear, hidden size ``hidden`` or out_dim)."""
    if cfg.type == "linear":
        return nn.Linear(in_dim, out_dim)
    if cfg.type == "mlp":
        hidden = cfg.hidden or out_dim
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
    raise XllmError(f"adapter type {cfg.type!r} unknown (linear, mlp)")
