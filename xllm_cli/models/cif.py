"""Continuous integrate-and-fire (CIF), vectorised over batch and time.

CIF turns a sequence of encoder frames into one vector per output token: each frame
gets a weight alpha_t in (0, 1); the weights are integrated over time and a token
"fires" every time the running sum crosses the threshold (1.0). The frame that
crosses the threshold is split between the token that fires and the next one.

Instead of the usual per-frame Python loop we use the closed form: with
c_t = cumsum(alpha) (and c_0 = 0), the share of frame t in token k (0-based) is the
overlap of the interval [c_{t-1}, c_t] with [k*thr, (k+1)*thr]. That gives a
(B, T, K) weight matrix W and the tokens are W^T h — one batched matmul.

Precision: the running sum must be exact to well below one token, so the predictor and
the integration always run in float32 with autocast off (as FunASR does): under bf16
autocast the sum has 8 mantissa bits and per-token weight sums drift to 1.6 by frame 400.
float32 keeps the CPU fp32 numerics unchanged and is accurate to ~1e-5 token over 30 s.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class CifOutput:
    """Result of integrate-and-fire over a batch."""

    tokens: torch.Tensor  # (B, K, H) integrated token vectors, zero beyond token_lens
    token_lens: torch.Tensor  # (B,) number of fired tokens
    alphas: torch.Tensor  # (B, T) weights actually integrated (scaled in training), 0 on padding
    alpha_sum: torch.Tensor  # (B,) UNSCALED sum of weights (for the quantity loss)
    weights: torch.Tensor  # (B, T, K) share of each frame in each token


def lengths_to_mask(lens: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True on valid positions."""
    max_len = int(lens.max().item()) if max_len is None else max_len
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


@contextmanager
def full_precision(device: torch.device):
    """Autocast off on ``device``: what runs inside must be given float32 (or float64) tensors."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def _wide(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> float32; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def cif_weights(
    alphas: torch.Tensor,
    num_tokens: torch.Tensor,
    threshold: float = 1.0,
    normalize_tail: bool = True,
) -> torch.Tensor:
    """Weight matrix W (B, T, K) of frame t in token k, for ``num_tokens[b]`` tokens per row.

    Token k collects the part of [c_{t-1}, c_t] inside [k*thr, (k+1)*thr]. A last token
    whose interval is only partly covered (the inference tail) is rescaled so its weights
    sum to ``threshold`` like every full token, when ``normalize_tail``.
    """
    B, T = alphas.shape
    K = max(int(num_tokens.max().item()) if B else 0, 1)
    c = torch.cumsum(alphas, dim=1)  # (B, T)
    c_prev = c - alphas
    k = torch.arange(K, device=alphas.device, dtype=alphas.dtype)
    lower = (k * threshold)[None, None, :]
    upper = ((k + 1) * threshold)[None, None, :]
    w = torch.minimum(c[..., None], upper) - torch.maximum(c_prev[..., None], lower)
    w = w.clamp(min=0.0)
    token_mask = (torch.arange(K, device=alphas.device)[None, :] < num_tokens[:, None]).to(w.dtype)
    w = w * token_mask[:, None, :]
    if normalize_tail:
        total = w.sum(dim=1, keepdim=True)  # (B, 1, K)
        # only partial tokens (total clearly below threshold) are rescaled; full tokens are left
        # alone so that training (where the scaled sum equals the target length) stays exact.
        partial = (total > 0) & (total < threshold * 0.999)
        scale = torch.where(partial, threshold / total.clamp(min=1e-8), torch.ones_like(total))
        w = w * scale
    return w


def cif(
    hidden: torch.Tensor,
    alphas: torch.Tensor,
    lens: torch.Tensor,
    target_lens: torch.Tensor | None = None,
    threshold: float = 1.0,
    tail_threshold: float = 0.5,
) -> CifOutput:
    """Integrate-and-fire ``hidden`` (B, T, H) with weights ``alphas`` (B, T).

    Training (``target_lens`` given): alphas are scaled by target_len / sum(alpha) so exactly
    target_len tokens fire. Inference: floor(sum / thr) tokens fire, plus one from the tail
    residue when it exceeds ``tail_threshold * thr``. Runs in float32 with autocast off
    (see the module docstring).
    """
    with full_precision(hidden.device):
        return _cif(_wide(hidden), _wide(alphas), lens, target_lens, threshold, tail_threshold)


def _cif(hidden, alphas, lens, target_lens, threshold, tail_threshold) -> CifOutput:
    mask = lengths_to_mask(lens, hidden.shape[1]).to(alphas.dtype)
    alphas = alphas * mask
    alpha_sum = alphas.sum(dim=1)
    if target_lens is not None:
        target = target_lens.to(alphas.dtype)
        scaled = alphas * (target * threshold / alpha_sum.clamp(min=1e-6))[:, None]
        num = target_lens.long()
    else:
        scaled = alphas
        units = alpha_sum / threshold
        full = torch.floor(units)
        residue = units - full
        num = (full + (residue > tail_threshold).to(full.dtype)).long()
    w = cif_weights(scaled, num, threshold)
    tokens = torch.bmm(w.transpose(1, 2), hidden)  # (B, K, H)
    return CifOutput(tokens=tokens, token_lens=num, alphas=scaled, alpha_sum=alpha_sum, weights=w)


class CifPredictor(nn.Module):
    """alpha_t = sigmoid(Linear(ReLU(Conv1d(h)))) per frame, as in Paraformer's predictor."""

    def __init__(self, dim: int, kernel_size: int = 3, dropout: float = 0.1):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, 1)

    def forward(self, hidden: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """(B, T, H), (B,) -> alphas (B, T), zero on padding; float32 or wider, autocast off (module docstring)."""
        mask = lengths_to_mask(lens, hidden.shape[1])
        with full_precision(hidden.device):
            x = _wide(hidden).masked_fill(~mask[..., None], 0.0)  # padding must not leak through the conv
            x = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
            alphas = torch.sigmoid(self.proj(self.dropout(x))).squeeze(-1)
            return alphas * mask.to(alphas.dtype)


def quantity_loss(alpha_sum: torch.Tensor, target_lens: torch.Tensor) -> torch.Tensor:
    """L1 between the UNSCALED sum of weights and the target length, averaged over the batch."""
    return (alpha_sum - target_lens.to(alpha_sum.dtype)).abs().mean()
