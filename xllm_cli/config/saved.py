"""Saved ``config.yaml`` files: the one reader, and paths that survive moving an experiment.

Training writes two kinds of config into an experiment: the resolved recipe
(``EXP/stageN/config.yaml``) and each model directory's ``model:`` section
(``EXP/stageN/best/config.yaml``). Everything that reads them back (decode,
transcribe, average, export, the next stage) goes through :func:`read_config`,
so a broken file is always the same one-line error naming it.

Model paths (``llm.path``, ``speech_encoder.path``, ``vision_encoder.path``,
``qformer.blip2_path``) that point inside the experiment are stored relative to the
folder that holds the ``config.yaml`` (``../../stage0/llm``), so a copied or moved
experiment keeps working; other local paths are stored absolute (a recipe's relative
paths mean "from where you ran the command", which a later command cannot know);
hub ids are kept as written. Reading resolves a relative path against the folder
when it exists there, and leaves it alone otherwise (hub ids, older experiments).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

from ..errors import XllmError
from .loader import read_yaml_mapping

CONFIG = "config.yaml"

# (section, key) of every model path.
MODEL_PATHS = (("llm", "path"), ("speech_encoder", "path"), ("vision_encoder", "path"), ("qformer", "blip2_path"))


def read_config(path: str | Path) -> dict:
    """A saved ``config.yaml`` as a dict ({} when empty); one-line errors naming the file."""
    return read_yaml_mapping(path, what=None)


def _map_paths(model: Any, change: Callable[[str], str]) -> Any:
    """A copy of a model config with ``change`` applied to each model path that is set."""
    updates = {}
    for section_name, key in MODEL_PATHS:
        section = getattr(model, section_name, None)
        value = getattr(section, key, None) if section is not None else None
        if value:
            updates[section_name] = dataclasses.replace(section, **{key: change(str(value))})
    return dataclasses.replace(model, **updates) if updates else model


def portable_paths(model: Any, config_dir: str | Path, exp: str | Path | None) -> Any:
    """Model paths as they are saved in ``config_dir/config.yaml`` (see the module docstring)."""
    config_dir = Path(config_dir).resolve()
    root = Path(exp).resolve() if exp is not None else None

    def change(value: str) -> str:
        local = Path(value).expanduser()
        if root is not None and local.is_absolute() and local.resolve().is_relative_to(root):
            return os.path.relpath(local.resolve(), config_dir)  # inside the experiment, made yet or not
        if not local.exists():
            return value  # a hub id, or a path on another machine
        local = local.resolve()
        if root is not None and local.is_relative_to(root):
            return os.path.relpath(local, config_dir)
        return str(local)

    return _map_paths(model, change)


def resolved_paths(model: Any, config_dir: str | Path) -> Any:
    """Model paths of a saved config made usable from any working directory."""
    config_dir = Path(config_dir)

    def change(value: str) -> str:
        if Path(value).is_absolute():
            return value
        candidate = config_dir / value
        return str(candidate.resolve()) if candidate.exists() else value

    return _map_paths(model, change)


def load_model_config(directory: str | Path):
    """The typed ``model:`` section of a model directory's ``config.yaml``, paths resolved."""
    from .schema import parse_model

    path = Path(directory) / CONFIG
    data = read_config(path)
    section = data.get("model")
    if not isinstance(section, dict):
        raise XllmError(f"{path}: no 'model:' section")
    try:
        model = parse_model(section, "model")
    except XllmError as e:
        raise XllmError(f"{path}: {e}") from None
    return resolved_paths(model, path.parent)


def save_model_config(model: Any, directory: str | Path, exp: str | Path | None = None) -> None:
    """Write ``directory/config.yaml`` with ``model:`` (portable paths), atomically."""
    import yaml

    from ..fsutil import atomic_write_text
    from .typed import to_dict

    directory = Path(directory)
    portable = portable_paths(model, directory, exp)
    text = yaml.safe_dump({"model": to_dict(portable)}, allow_unicode=True, sort_keys=False)
    atomic_write_text(directory / CONFIG, text)


def load_saved_recipe(path: str | Path):
    """A typed recipe from a saved ``EXP/stageN/config.yaml``, model paths resolved."""
    from .schema import parse_recipe

    path = Path(path)
    recipe = parse_recipe(read_config(path), str(path))
    recipe.model = resolved_paths(recipe.model, path.parent)
    return recipe


def save_recipe(recipe: Any, path: str | Path, exp: str | Path | None = None) -> None:
    """Write a resolved recipe as ``EXP/stageN/config.yaml`` (portable model paths), atomically."""
    import yaml

    from ..fsutil import atomic_write_text
    from .typed import to_dict

    path = Path(path)
    portable = dataclasses.replace(recipe, model=portable_paths(recipe.model, path.parent, exp))
    text = yaml.safe_dump(to_dict(portable), allow_unicode=True, sort_keys=False, default_flow_style=False)
    atomic_write_text(path, text)
