"""``run_stage``: one training stage of a recipe, whatever the model (docs/experiment.md).

This is what ``xllm train`` calls (once per DDP process) with the typed recipe. It checks
the request, keeps the stage's bookkeeping in ``EXP/stageN`` (the resolved config.yaml,
train.log, DONE, ``--no-resume`` clean-up, refusing to resume under a changed recipe) and
hands the training itself to the model family that the recipe's ``model.type`` names
(:mod:`xllm_cli.training.family`; by default X-LLM's, :mod:`xllm_cli.training.xllm_family`).
Recipe keys: :mod:`xllm_cli.training.stage_data`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..config.saved import CONFIG, load_saved_recipe, portable_paths, resolved_paths, save_recipe
from ..config.schema import Recipe
from ..config.typed import to_dict
from ..console import log
from ..errors import XllmError
from . import checkpoint as ck
from .distributed import DistInfo, barrier
from .family import get_family
from .stage_data import STAGE2_MODALITIES, StageRequest, stage_data, stage_seed, train_options

__all__ = ["StageRequest", "run_stage", "is_done", "mark_done", "clear_stage", "stage_changes"]


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


# ---------------------------------------------------------------- what a resumed stage must keep


def _flat(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value
    return out


def _stage_view(recipe: Recipe, req: StageRequest) -> dict:
    """The recipe keys that shape stage ``req.stage``'s training, flattened (``stage1.lr``: 0.003)."""
    n = req.stage
    section = to_dict(recipe.stage(n))
    section.pop("batch")
    section["seed"] = stage_seed(recipe, n)
    section["data"] = to_dict(stage_data(recipe, req))  # stage 2: only the --modality part
    view = {f"stage{n}": section, f"stage{n}.batch": to_dict(recipe.batch(n)), "model": to_dict(recipe.model),
            "features": to_dict(recipe.features), "data.dir": recipe.data.dir}
    return {k[1:]: v for k, v in _flat("", view, {}).items()}


def stage_changes(saved: Path, recipe: Recipe, req: StageRequest) -> list[str]:
    """``key: old -> new`` for each key of :func:`_stage_view` that differs from ``saved`` (a config.yaml)."""
    old = _stage_view(load_saved_recipe(saved), req)
    new = _stage_view(recipe, req)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _as_saved(recipe: Recipe, model_cfg, sdir: Path, exp: Path) -> Recipe:
    """The recipe as the stage's config.yaml holds it once read back (model paths resolved)."""
    return replace(recipe, model=resolved_paths(portable_paths(model_cfg, sdir, exp), sdir))


def _check_unchanged(sdir: Path, recipe: Recipe, req: StageRequest) -> None:
    """Resuming continues the saved run: refuse when the recipe changed what the stage trains."""
    saved = sdir / CONFIG
    if not saved.is_file() or not (is_done(sdir) or ck.list_checkpoints(sdir)):
        return
    changed = stage_changes(saved, recipe, req)
    if changed:
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise XllmError(f"{saved}: the recipe changed since this stage started: {'; '.join(changed[:3])}{more}; "
                        "rerun with --no-resume to train the stage again from scratch, or use a new --exp")


def check_request(recipe: Recipe, req: StageRequest) -> None:
    """The command line's stage and modality make sense for this recipe (before anything is written)."""
    if req.stage not in (0, 1, 2, 3):
        raise XllmError(f"--stage {req.stage}: stages are 0 (LM), 1 (interfaces), 2 (align), 3 (joint)")
    if req.modality not in STAGE2_MODALITIES:
        raise XllmError(f"--modality {req.modality}: choose speech, image or video")
    if req.modality != "speech" and req.stage != 2:
        raise XllmError(f"--modality {req.modality} applies to stage 2 only")
    recipe.stage(req.stage)  # the section must exist


def run_stage(recipe: Recipe, req: StageRequest, dist: DistInfo) -> bool:
    """Train one stage; False when it was already done. Rank 0 writes config, logs and outputs."""
    from ..console import setup_logging

    check_request(recipe, req)
    sdir = ck.stage_dir(req.exp, req.stage, req.modality)
    family = get_family(recipe.model.type)
    resolved = _as_saved(recipe, family.resolve_model_config(recipe, req.exp), sdir, req.exp)
    if req.resume:
        _check_unchanged(sdir, resolved, req)  # every rank: all of them stop alike
    if dist.is_main:
        sdir.mkdir(parents=True, exist_ok=True)
        setup_logging(sdir / "train.log")
    if is_done(sdir) and req.resume:
        if dist.is_main:
            log.info("stage %d is already done (%s); rerun with --no-resume to train it again", req.stage,
                     sdir / ck.DONE_FILE)
        return False
    opts = train_options(recipe, req)
    if dist.is_main:
        if not req.resume:
            clear_stage(sdir)
        save_recipe(resolved, sdir / CONFIG, req.exp)
    barrier(dist)
    state = family.run_stage(recipe, req, dist, opts)
    if dist.is_main:
        mark_done(sdir, state)
        log.info("stage %d done: %s", req.stage, sdir)
    barrier(dist)
    return True
