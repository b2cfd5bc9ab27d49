"""An experiment directory as the decoders read it: its trained stages and saved configs.

The layout (docs/experiment.md) is written by training (``training/checkpoint.py``
owns the stage-directory helpers; they are re-exported here)::

    EXP/stageN/config.yaml              the resolved recipe the stage was trained with
    EXP/stageN/{averaged,best}/         the stage's model (``averaged/`` when present)
                           config.yaml  the model's config (``model:`` section)

This module is the one reader of those saved ``config.yaml`` files: every error is
one line naming the file (and the line, for bad YAML). Configs are plain dicts for
now (docs/config.md describes their keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .errors import XllmError, at

CONFIG = "config.yaml"  # the resolved recipe in EXP/stageN/, the model config in a model directory
DEFAULT_NUM_FRAMES = 8  # video frames per clip when the recipe gives none


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


def read_config(path: str | Path) -> dict:
    """A saved ``config.yaml`` as a dict ({} when empty or not a mapping); one-line errors naming the file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise XllmError(f"{path}: not found") from None
    except UnicodeDecodeError as e:
        raise at(path, None, f"not valid UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise at(path, None, f"cannot read ({e.strerror or type(e).__name__})") from None
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise at(path, mark.line + 1 if mark is not None else None, f"invalid YAML: {problem}") from None
    return cfg if isinstance(cfg, dict) else {}


def model_section(cfg: dict) -> dict:
    """The ``model:`` section of a config (a model directory's config may also be the bare section)."""
    section = cfg.get("model", cfg) if isinstance(cfg, dict) else None
    return section if isinstance(section, dict) else {}


def read_model_config(directory: str | Path) -> dict:
    """The ``model:`` section of a model directory's ``config.yaml``."""
    return model_section(read_config(Path(directory) / CONFIG))


def load_recipe(exp: str | Path, stage: int, modality: str = "speech", required: bool = False) -> dict:
    """The resolved recipe of a stage (``EXP/stageN/config.yaml``); {} when absent and not ``required``."""
    path = stage_dir(exp, stage, modality) / CONFIG
    if not required and not path.is_file():
        return {}
    return read_config(path)


def load_experiment_config(exp: str | Path, stage: int) -> dict:
    """What decoding needs to rebuild a stage's model and inputs, read once.

    The stage's resolved recipe (``features:``, ``data:``, ``stageN:`` ...; {} when
    absent) with its ``model:`` section replaced by the saved model's own config
    (``model_dir(exp, stage)/config.yaml``), the authority on the model.
    """
    mdir = model_dir(exp, stage)
    if not (mdir / CONFIG).is_file():
        raise XllmError(f"{mdir}: no trained model for stage {stage} (train it: xllm train --stage {stage} ...)")
    cfg = dict(load_recipe(exp, stage))
    cfg["model"] = read_model_config(mdir)
    return cfg


def llm_path(model_cfg: dict) -> str | None:
    """``llm.path`` of a model section (the frozen LLM's Hugging Face directory), or None."""
    llm = model_cfg.get("llm") if isinstance(model_cfg, dict) else None
    path = llm.get("path") if isinstance(llm, dict) else None
    return str(path) if path else None


def num_frames(cfg: dict, stage: int) -> int:
    """Video frames per clip at decoding: the stage's ``data.num_frames``, else the recipe's, else 8.

    NOTE: training reads ``data.batch.num_frames``; decoding keeps reading
    ``stageN.data.num_frames`` / ``data.num_frames`` for now (another issue unifies them).
    Every decoder asks this one function.
    """
    for section in (cfg.get(f"stage{stage}") or {}, cfg):
        data: Any = section.get("data") if isinstance(section, dict) else None
        if isinstance(data, dict) and data.get("num_frames"):
            return int(data["num_frames"])
    return DEFAULT_NUM_FRAMES
