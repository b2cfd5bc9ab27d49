"""A toy model and data set that exercise the trainer without speech or an LLM.

Selected by ``model: {type: toy}`` in a recipe. Tests (resume, DDP, CLI) and quick
checks of the training machinery use it: it trains in seconds on a CPU, has dropout
(so RNG restoring matters) and a buffer (so buffers are checkpointed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.batch import Batch
from .sources import ListSource, ShardedBatches


@dataclass
class ToyOutput:
    loss: torch.Tensor
    logs: dict = field(default_factory=dict)


class ToyModel(nn.Module):
    """Regresses a target from the mean of a feature sequence; decodes to digits for a CER."""

    def __init__(self, dim: int = 8, hidden: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        self.register_buffer("seen", torch.zeros(()))  # counts training utterances

    @staticmethod
    def pooled(batch: Batch) -> torch.Tensor:
        """Mean over the valid frames (padding must not change the result)."""
        mask = (torch.arange(batch.feats.shape[1], device=batch.feats.device)[None] < batch.feat_lens[:, None])
        return (batch.feats * mask[..., None]).sum(1) / batch.feat_lens[:, None].to(batch.feats.dtype)

    def forward(self, batch: Batch, stage: int) -> ToyOutput:
        pred = self.net(self.pooled(batch)).squeeze(-1)
        target = torch.tensor(batch.durations, dtype=pred.dtype, device=pred.device)
        loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        if self.training:
            self.seen += len(batch)
        return ToyOutput(loss, {"mae": float((pred - target).detach().abs().mean())})

    @torch.no_grad()
    def decode(self, batch: Batch) -> list[str]:
        pred = self.net(self.pooled(batch)).squeeze(-1)
        return [str(int(round(float(p)))) for p in pred]


def toy_items(num: int, dim: int, seed: int = 1234) -> list[tuple[str, np.ndarray, float]]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim)
    items = []
    for i in range(num):
        x = rng.normal(size=(int(rng.integers(3, 7)), dim)).astype(np.float32)
        items.append((f"utt{i:05d}", x, float(x.mean(0) @ w * 3.0)))
    return items


def toy_collate(items: list) -> Batch:
    t = max(x.shape[0] for _, x, _ in items)
    feats = torch.zeros(len(items), t, items[0][1].shape[1])
    for i, (_, x, _) in enumerate(items):
        feats[i, : x.shape[0]] = torch.from_numpy(x)
    return Batch(
        utt_ids=[u for u, _, _ in items],
        feats=feats,
        feat_lens=torch.tensor([x.shape[0] for _, x, _ in items]),
        texts=[str(int(round(y))) for _, _, y in items],
        durations=[y for _, _, y in items],
    )


def build_toy(model_cfg: dict, data_cfg: dict, batch_size: int, seed: int, cer_utts: int, rank: int,
              world_size: int) -> tuple[ToyModel, ListSource]:
    dim = int(model_cfg.get("dim", 8))
    model = ToyModel(dim, int(model_cfg.get("hidden", 32)), float(model_cfg.get("dropout", 0.1)))
    items = toy_items(int(data_cfg.get("toy_utts", 64)) + int(data_cfg.get("toy_dev_utts", 16)), dim)
    n_train = int(data_cfg.get("toy_utts", 64))
    train = ShardedBatches(items[:n_train], batch_size, toy_collate, seed, rank, world_size)
    return model, ListSource(train, items[n_train:], toy_collate, batch_size, cer_utts, rank, world_size)


def save_toy(model: ToyModel, model_cfg: dict, out_dir: Path) -> None:
    """The toy's ``save_model``: weights + config, the same shape as the real one."""
    from ..config import save_config
    from .checkpoint import save_weights

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model.state_dict(), out_dir / "model.safetensors")
    save_config({"model": model_cfg}, out_dir / "config.yaml")


def load_toy(model_dir: Path) -> ToyModel:
    import yaml

    from .checkpoint import load_weights

    cfg = yaml.safe_load((Path(model_dir) / "config.yaml").read_text())["model"]
    model = ToyModel(int(cfg.get("dim", 8)), int(cfg.get("hidden", 32)), float(cfg.get("dropout", 0.1)))
    model.load_state_dict(load_weights(Path(model_dir) / "model.safetensors"))
    return model
