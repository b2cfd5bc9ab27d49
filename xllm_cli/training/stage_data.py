"""Reading one stage of a typed recipe: the request, the trainer options, the data directories.

Shared by the generic stage runner (:mod:`xllm_cli.training.stages`) and the families'
stage code, which is why it lives apart from both. The recipe is parsed once by
:func:`xllm_cli.config.schema.parse_recipe` (docs/config.md); this module only reads it::

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

from ..config.schema import BatchConfig, Recipe, SplitData, TrainOptions
from ..errors import XllmError

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


def stage_seed(recipe: Recipe, stage: int) -> int:
    """``stageN.seed``, else the recipe's top-level ``seed``."""
    seed = recipe.stage(stage).seed
    return recipe.seed if seed is None else seed


def train_options(recipe: Recipe, req: StageRequest) -> TrainOptions:
    """Trainer options of the stage; ``--seed``/``--max-steps`` win over the recipe."""
    opts = recipe.stage(req.stage).train_options()
    opts.seed = req.seed if req.seed is not None else stage_seed(recipe, req.stage)
    if req.max_steps is not None:
        opts.max_steps = req.max_steps
    return opts


def data_path(recipe: Recipe, name: str) -> Path:
    """A data directory named in a stage section: relative names start at ``data.dir``."""
    p = Path(name)
    if p.is_absolute():
        return p
    base = recipe.data.dir
    return Path(base) / p if base else p


def data_list(recipe: Recipe, names: list[str] | None) -> list[Path]:
    """Data directory names (as the schema parsed them) as paths."""
    return [data_path(recipe, v) for v in names or []]


def stage_data(recipe: Recipe, req: StageRequest) -> SplitData:
    """The stage's train/dev names; stage 2 reads its ``--modality`` part, else the stage's own lists."""
    data = recipe.stage(req.stage).data
    if req.stage == 2:
        per_mod = getattr(data, req.modality)
        if per_mod is not None:
            return per_mod
        if req.modality != "speech":
            raise XllmError(f"recipe: stage2.data.{req.modality}: no data for --modality {req.modality}")
    return SplitData(train=list(data.train), dev=list(data.dev))


def batch_options(recipe: Recipe, stage: int) -> BatchConfig:
    """``data.batch`` with the stage's ``batch:`` overrides merged in."""
    return recipe.batch(stage)

