"""Reading one stage of a recipe: the request, the trainer options, the data directories.

Shared by the generic stage runner (:mod:`xllm_cli.training.stages`) and the families'
stage code, which is why it lives apart from both. Recipe keys (docs/config.md)::

    data:
      dir: data                  # data directory names below are relative to this
      batch: {...}               # data-pipeline options shared by all stages
    stageN:
      data:
        train: [train, lm_text]  # data dirs mixed for training (names or paths)
        dev: dev                 # dev set(s) for the validation loss / CER
        image_train: [train_img] # stage 1 only: image data for the Q-Former
        image: {train: [...], dev: ...}   # stage 2 only: per-modality data
      batch: {...}               # per-stage data-pipeline overrides
      train_modules: [...]       # which module groups train (default: the family's rule)
      ...                        # everything else: trainer options (TrainOptions)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import deep_merge, get
from ..errors import XllmError
from .trainer import TrainOptions

# Keys of a ``stageN:`` section that are not trainer options.
STAGE_KEYS = ("data", "batch", "train_modules", "modalities")
STAGE2_MODALITIES = ("speech", "image", "video")


@dataclass
class StageRequest:
    """What the user asked for on the command line."""

    stage: int
    exp: Path
    modality: str = "speech"
    resume: bool = True
    seed: int | None = None
    max_steps: int | None = None


def stage_section(cfg: dict, stage: int) -> dict:
    """The recipe's ``stageN:`` mapping (an error names the missing section)."""
    section = cfg.get(f"stage{stage}")
    if section is None:
        raise XllmError(f"recipe: no stage{stage}: section (needed for xllm train --stage {stage})")
    if not isinstance(section, dict):
        raise XllmError(f"recipe: stage{stage}: must be a mapping of options")
    return section


def train_options(cfg: dict, req: StageRequest) -> TrainOptions:
    """Trainer options of the stage; ``--seed``/``--max-steps`` win over the recipe."""
    section = {k: v for k, v in stage_section(cfg, req.stage).items() if k not in STAGE_KEYS}
    section.setdefault("seed", cfg.get("seed", 0))
    if req.seed is not None:
        section["seed"] = req.seed
    if req.max_steps is not None:
        section["max_steps"] = req.max_steps
    return TrainOptions.from_dict(section, f"recipe: stage{req.stage}")


def data_path(cfg: dict, name: str) -> Path:
    """A data directory named in a stage section: relative names start at ``data.dir``."""
    p = Path(name)
    if p.is_absolute():
        return p
    base = get(cfg, "data.dir")
    return Path(base) / p if base else p


def data_list(cfg: dict, value, what: str) -> list[Path]:
    """One name or a list of names (``what`` is the recipe key, for errors) as paths."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise XllmError(f"recipe: {what}: expected a data directory name or a list of them")
    return [data_path(cfg, v) for v in value]


def stage_data(cfg: dict, req: StageRequest) -> dict:
    """The stage's ``data:`` section, with stage 2's per-modality part merged in."""
    data = dict(stage_section(cfg, req.stage).get("data") or {})
    if req.stage == 2:
        per_mod = data.pop(req.modality, None)
        for m in STAGE2_MODALITIES:
            data.pop(m, None)
        if per_mod:
            data.update(per_mod)
        elif req.modality != "speech":
            raise XllmError(f"recipe: stage2.data.{req.modality}: no data for --modality {req.modality}")
    return data


def batch_options(cfg: dict, stage: int) -> dict:
    """``data.batch`` with the stage's ``batch:`` overrides merged in."""
    return deep_merge(get(cfg, "data.batch", {}) or {}, stage_section(cfg, stage).get("batch") or {})
