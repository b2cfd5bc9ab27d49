"""An experiment directory as the decoders read it: its trained stages and saved configs.

The layout (docs/experiment.md) is written by training (``training/checkpoint.py``
owns the stage-directory helpers; they are re-exported here)::

    EXP/stageN/config.yaml              the resolved recipe the stage was trained with
    EXP/stageN/{averaged,best}/         the stage's model (``averaged/`` when present)
                           config.yaml  the model's config (``model:`` section)

Saved configs are read by ``config/saved.py`` (one-line errors naming the file,
model paths made portable) and typed by ``config/schema.py`` (docs/config.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .config.saved import CONFIG, load_model_config, load_saved_recipe, read_config
from .config.schema import Recipe, with_model
from .errors import XllmError

__all__ = ["CONFIG", "read_config", "load_model_config", "stage_dir", "model_dir", "has_model", "resolve_stage",
           "load_stage_recipe", "load_experiment_config", "num_frames"]


# ----------------------------------------------------------------------------- layout


def stage_dir(exp: str | Path, stage: int, modality: str = "speech") -> Path:
    """``EXP/stageN`` (``EXP/stage2_<modality>`` for a stage 2 of another modality)."""
    from .training.checkpoint import stage_dir as _stage_dir

    return _stage_dir(exp, stage, modality)


def model_dir(exp: str | Path, stage: int, modality: str = "speech") -> Path:
    """The model of a stage to decode with: ``averaged/`` when present, else ``best/``."""
    from .training.checkpoint import stage_model_dir

    return stage_model_dir(exp, stage, modality)


def has_model(exp: str | Path, stage: int) -> bool:
    """The stage finished training: its model directory has a ``config.yaml``."""
    return (model_dir(exp, stage) / CONFIG).is_file()


def resolve_stage(exp: str | Path, stage: int | None = None, among: Sequence[int] = (3, 2),
                  hint: str = "train one, or give --stage") -> int:
    """``stage`` as given, else the highest stage of ``among`` that has a trained model."""
    if stage is not None:
        return stage
    for candidate in sorted(among, reverse=True):
        if has_model(exp, candidate):
            return candidate
    names = " or ".join(str(s) for s in sorted(among))
    raise XllmError(f"{exp}: no trained stage {names} model to decode with ({hint})")


# ----------------------------------------------------------------------------- saved configs


def load_stage_recipe(exp: str | Path, stage: int, modality: str = "speech", required: bool = False) -> Recipe | None:
    """The typed recipe a stage was trained with (``EXP/stageN/config.yaml``); None when absent and not ``required``."""
    path = stage_dir(exp, stage, modality) / CONFIG
    if not required and not path.is_file():
        return None
    return load_saved_recipe(path)


def load_experiment_config(exp: str | Path, stage: int) -> Recipe:
    """What decoding needs to rebuild a stage's model and inputs, read once.

    The stage's recipe (``features:``, ``data:``, ``stageN:`` ...; defaults when the
    file is absent) with its ``model:`` section replaced by the saved model's own
    config (``model_dir(exp, stage)/config.yaml``), the authority on the model.
    """
    mdir = model_dir(exp, stage)
    if not (mdir / CONFIG).is_file():
        raise XllmError(f"{mdir}: no trained model for stage {stage} (train it: xllm train --stage {stage} ...)")
    recipe = load_stage_recipe(exp, stage) or Recipe()
    return with_model(recipe, load_model_config(mdir))


def num_frames(recipe: Recipe, stage: int) -> int:
    """Video frames per clip: the stage's ``batch.num_frames``, the value training used.

    Decode and transcribe ask this one function, so they sample as many frames as
    the Q-Former's frame embeddings were trained on.
    """
    return recipe.batch(stage).num_frames
