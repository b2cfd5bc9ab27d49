"""Checkpoint averaging: the K best checkpoints of a stage into ``EXP/stageN/averaged/``.

Checkpoints hold the trainable weights; the average is put into the stage's best
model (which carries everything else: frozen parts trained in earlier stages) and
saved as a ``save_model`` directory, so ``stage_model_dir`` and ``load_model`` pick
it up like ``best/``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from ..console import log
from ..errors import XllmError
from ..experiment import load_stage_recipe
from ..fsutil import apply_umask
from . import checkpoint as ck


def average_state_dicts(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating tensors (accumulated in float64); others from the newest file."""
    if not paths:
        raise XllmError("nothing to average")
    total: dict[str, torch.Tensor] = {}
    first_keys = None
    for p in paths:
        sd = ck.load_weights(Path(p) / ck.MODEL_FILE if Path(p).is_dir() else Path(p))
        if first_keys is None:
            first_keys = set(sd)
        elif set(sd) != first_keys:
            raise XllmError(f"{p}: its weights differ in names from {paths[0]}; cannot average")
        for k, v in sd.items():
            if v.is_floating_point():
                total[k] = total.get(k, torch.zeros(v.shape, dtype=torch.float64)) + v.double()
            else:
                total[k] = v  # counters and indices: not averaged
        last = sd
    n = len(paths)
    return {k: (v / n).to(last[k].dtype) if last[k].is_floating_point() else v for k, v in total.items()}




def average_stage(exp: str | Path, stage: int, num: int, modality: str = "speech") -> Path:
    """Average the ``num`` best checkpoints of a stage (by validation score); returns ``averaged/``."""
    if stage == 0:
        raise XllmError("stage 0 (the LM) is not averaged: average stages 1-3")
    sdir = ck.stage_dir(exp, stage, modality)
    if not sdir.is_dir():
        raise XllmError(f"{sdir}: no such stage directory (train it first)")
    ckpts = ck.best_checkpoints(sdir, num)
    if not ckpts:
        raise XllmError(f"{sdir / 'checkpoints'}: no validated checkpoints to average")
    if len(ckpts) < num:
        log.warning("%s: only %d validated checkpoints kept (asked for %d); raise keep_best in the recipe",
                    sdir, len(ckpts), num)
    best = sdir / "best"
    if not (best / ck.MODEL_FILE).is_file():
        raise XllmError(f"{best}: no best model (has the stage finished a validation?)")
    from ..plugins import load_plugins
    from .family import get_family

    load_plugins()  # a family outside xllm registers its model: section
    model_cfg = load_stage_recipe(exp, stage, modality, required=True).model
    family = get_family(model_cfg.type)
    avg = average_state_dicts(ckpts)
    model = family.load_model(best)
    ck.load_into(model, avg, f"average of {len(ckpts)} checkpoints")
    out = sdir / "averaged"
    tmp = Path(tempfile.mkdtemp(prefix=".averaged.", dir=sdir))
    try:
        family.save_model(model, model_cfg, tmp, exp)
        (tmp / "averaged_from.txt").write_text("".join(f"{p.name}\n" for p in ckpts), encoding="utf-8")
        apply_umask(tmp)  # mkdtemp made it 0700
        if out.exists():
            ck.remove_checkpoint(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("averaged %s into %s", ", ".join(p.name for p in ckpts), out)
    return out
