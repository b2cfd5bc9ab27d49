"""A toy model family for the tests of the training machinery (trainer, resume, DDP, CLI, average).

It trains in seconds on a CPU, has dropout (so RNG restoring matters) and a buffer (so
buffers are checkpointed), and it is NOT part of the library: importing this module
registers it as ``model: {type: toy}`` through the public extension point
(:func:`xllm_cli.training.family.register_family`), as a user's own family would.
Subprocesses (``python -m xllm_cli train``, torchrun workers) get it from
:func:`toy_env`, which names this module in ``XLLM_PLUGINS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xllm_cli.config.saved import load_model_config, save_model_config
from xllm_cli.config.schema import register_model_config
from xllm_cli.data.batch import Batch
from xllm_cli.models.outputs import StepOutput
from xllm_cli.plugins import PLUGINS_ENV
from xllm_cli.training.family import ModelFamily, register_family
from xllm_cli.training.sources import ListSource, ShardedBatches
from xllm_cli.training.stage_data import batch_options

TESTS_DIR = Path(__file__).resolve().parent


@dataclass
class ToyModelConfig:
    """``model:`` of ``type: toy`` (a family's own section, registered like a user's would be)."""

    type: str = "toy"
    dim: int = 8
    hidden: int = 32
    dropout: float = 0.1
    toy_utts: int = 64  # generated training utterances
    toy_dev_utts: int = 16  # generated dev utterances


register_model_config("toy", ToyModelConfig)


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

    def forward(self, batch: Batch, stage: int) -> StepOutput:
        pred = self.net(self.pooled(batch)).squeeze(-1)
        target = torch.tensor(batch.durations, dtype=pred.dtype, device=pred.device)
        loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        if self.training:
            self.seen += len(batch)
        return StepOutput(loss, {"mae": float((pred - target).detach().abs().mean())})

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


def build_toy(cfg: ToyModelConfig, batch_size: int, seed: int, cer_utts: int, rank: int,
              world_size: int) -> tuple[ToyModel, ListSource]:
    model = ToyModel(cfg.dim, cfg.hidden, cfg.dropout)
    items = toy_items(cfg.toy_utts + cfg.toy_dev_utts, cfg.dim)
    train = ShardedBatches(items[: cfg.toy_utts], batch_size, toy_collate, seed, rank, world_size)
    return model, ListSource(train, items[cfg.toy_utts:], toy_collate, batch_size, cer_utts, rank, world_size)


def save_toy(model: ToyModel, model_cfg: ToyModelConfig, out_dir: Path, exp: Path | None = None) -> None:
    """The toy's model directory: weights + config, the same shape as the X-LLM one."""
    from xllm_cli.training.checkpoint import save_weights

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model.state_dict(), out_dir / "model.safetensors")
    save_model_config(model_cfg, out_dir, exp)


def load_toy(model_dir: Path) -> ToyModel:
    from xllm_cli.training.checkpoint import load_weights

    cfg = load_model_config(model_dir)
    model = ToyModel(cfg.dim, cfg.hidden, cfg.dropout)
    model.load_state_dict(load_weights(Path(model_dir) / "model.safetensors"))
    return model


class ToyFamily(ModelFamily):
    """Every stage trains the same toy model on generated data (``model.toy_utts``, ``toy_dev_utts``)."""

    def build(self, recipe, req, dist, opts):
        bs = batch_options(recipe, req.stage).batch_size
        return build_toy(recipe.model, bs, opts.seed, opts.cer_utts, dist.rank, dist.world_size)

    def decode_fn(self, recipe, stage):
        return lambda model, batch: model.decode(batch)

    def save_model(self, model, model_cfg, out_dir, exp=None):
        save_toy(model, model_cfg, out_dir, exp)

    def load_model(self, model_dir):
        return load_toy(model_dir)


register_family("toy", ToyFamily())


def toy_env(**extra: str) -> dict:
    """The environment of a subprocess that must know the toy family (``xllm train``, torchrun)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env[PLUGINS_ENV] = ",".join(filter(None, [env.get(PLUGINS_ENV), "toy_family"]))
    return env
