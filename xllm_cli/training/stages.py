"""``run_stage``: one training stage of a recipe, whatever the model (docs/experiment.md).

This is what ``xllm train`` calls (once per DDP process). It checks the request, keeps
the stage's bookkeeping in ``EXP/stageN`` (the resolved config.yaml, train.log, DONE,
``--no-resume`` clean-up) and hands the training itself to the model family that the
recipe's ``model.type`` names (:mod:`xllm_cli.training.family`; by default X-LLM's,
:mod:`xllm_cli.training.xllm_family`). Recipe keys: :mod:`xllm_cli.training.stage_data`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import get, save_config
from ..console import log
from ..errors import XllmError
from . import checkpoint as ck
from .distributed import DistInfo, barrier
from .family import get_family
from .stage_data import STAGE2_MODALITIES, StageRequest, train_options

__all__ = ["StageRequest", "run_stage", "is_done", "mark_done", "clear_stage"]


def is_done(sdir: Path) -> bool:
    return (sdir / ck.DONE_FILE).is_file()


def mark_done(sdir: Path, state) -> None:
    from ..fsutil import atomic_write_text

    summary = {"step": state.step, "best": state.best[:5], "valid": state.valid}
    atomic_write_text(sdir / ck.DONE_FILE, json.dumps(summary, indent=1) + "\n")


def clear_stage(sdir: Path) -> None:
    """--no-resume: remove what a previous run of this stage left (keeps train.log)."""
    for name in ("checkpoints", "best", "averaged", "tensorboard", "llm", ck.DONE_FILE):
        p = sdir / name
        if p.is_dir():
            ck.remove_checkpoint(p)
        elif p.exists():
            p.unlink()


def run_stage(cfg: dict, req: StageRequest, dist: DistInfo) -> bool:
    """Train one stage; False when it was already done. Rank 0 writes config, logs and outputs."""
    from ..console import setup_logging

    if req.stage not in (0, 1, 2, 3):
        raise XllmError(f"--stage {req.stage}: stages are 0 (LM), 1 (interfaces), 2 (align), 3 (joint)")
    if req.modality not in STAGE2_MODALITIES:
        raise XllmError(f"--modality {req.modality}: choose speech, image or video")
    if req.modality != "speech" and req.stage != 2:
        raise XllmError(f"--modality {req.modality} applies to stage 2 only")
    sdir = ck.stage_dir(req.exp, req.stage, req.modality)
    if dist.is_main:
        sdir.mkdir(parents=True, exist_ok=True)
        setup_logging(sdir / "train.log")
    if is_done(sdir) and req.resume:
        if dist.is_main:
            log.info("stage %d is already done (%s); rerun with --no-resume to train it again", req.stage,
                     sdir / ck.DONE_FILE)
        return False
    opts = train_options(cfg, req)
    family = get_family(get(cfg, "model.type"))
    if dist.is_main:
        if not req.resume:
            clear_stage(sdir)
        resolved = dict(cfg)
        resolved["model"] = family.resolve_model_config(cfg, req.exp)
        save_config(resolved, sdir / "config.yaml")
    barrier(dist)
    state = family.run_stage(cfg, req, dist, opts)
    if dist.is_main:
        mark_done(sdir, state)
        log.info("stage %d done: %s", req.stage, sdir)
    barrier(dist)
    return True
