"""Recipe loading: YAML files with ``include:`` and command-line ``--set`` overrides.

A recipe is a YAML mapping (``model:``, ``features:``, ``data:``, ``stage0:`` ...
``stage3:``). ``include: [model/tiny.yaml]`` pulls in presets, with paths relative
to the including file; included files are merged in order and the including file
wins (dicts merge key by key, anything else is replaced). ``--set a.b.c=value``
overrides are applied last, each value parsed as YAML (``3e-4`` is a float,
``[a, b]`` a list, ``null`` None). Every error is one line naming the file (and the
line or key) so a user can fix it without reading a traceback.

Relative data and model paths inside a recipe are left as written: like Kaldi
recipes, they are resolved against the directory the command runs in.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..errors import XllmError, at
from ..fsutil import atomic_write_text

_MISSING = object()


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``3e-4`` as a float (YAML 1.2) rather than a string."""


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"""),
    list("-+0123456789"),
)


def safe_load(text: str):
    """``yaml.safe_load`` with YAML 1.2 exponent floats."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def deep_merge(base: dict, over: dict) -> dict:
    """A new dict: ``over`` merged into ``base``; nested dicts merge, other values are replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml_mapping(path: str | Path, what: str | None = "recipe") -> dict:
    """A YAML file that must hold a mapping ({} when empty); every problem is one line naming the file.

    The one reader of xllm's YAML: recipes here, saved ``config.yaml`` files in
    :mod:`xllm_cli.config.saved`. ``what`` names the kind of file in the messages.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise XllmError(f"{path}: {what + ' ' if what else ''}not found") from None
    except UnicodeDecodeError as e:
        raise at(path, None, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise at(path, None, f"cannot read ({e.strerror or type(e).__name__})") from None
    try:
        data = safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = " ".join(str(getattr(e, "problem", None) or str(e).splitlines()[0]).split())
        raise at(path, mark.line + 1 if mark is not None else None, f"invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise at(path, 1, f"a {what or 'config'} must be a YAML mapping (key: value), not a {type(data).__name__}")
    return data


def _load(path: Path, stack: tuple[Path, ...]) -> dict:
    path = Path(path)
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise at(path, None, f"include cycle: {chain}")
    data = read_yaml_mapping(path)
    includes = data.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise at(path, None, "include: must be a file name or a list of file names")
    merged: dict = {}
    for name in includes:
        child = path.parent / name
        if not child.is_file():
            raise at(path, None, f"include: {name}: no such file ({child})")
        merged = deep_merge(merged, _load(child, (*stack, resolved)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=3e-4"`` -> (["a", "b", "c"], 0.0003); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise XllmError(f"--set {text}: expected KEY=VALUE with a dotted key, e.g. stage1.lr=3e-4")
    try:
        value = safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # an unparsable value is taken as the plain string the user typed
    return key.split("."), value


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """A copy of ``cfg`` with each ``a.b.c=value`` set, creating missing sections."""
    cfg = copy.deepcopy(cfg)
    for text in overrides:
        keys, value = parse_override(text)
        node = cfg
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                where = ".".join(keys[: i + 1])
                raise XllmError(f"--set {text}: {where} is a {type(child).__name__}, not a section")
            node = child
        node[keys[-1]] = value
    return cfg


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """Read a recipe with its includes and ``--set`` overrides into one plain dict."""
    return apply_overrides(_load(Path(path), ()), overrides)


def get(cfg: dict, dotted: str, default: Any = None) -> Any:
    """``get(cfg, "model.llm.path")``: a nested value, or ``default`` when any part is missing."""
    node: Any = cfg
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def require(cfg: dict, dotted: str, source: str | Path = "recipe") -> Any:
    """A nested value that must be present; otherwise a one-line error naming the key."""
    value = get(cfg, dotted, _MISSING)
    if value is _MISSING or value is None:
        raise XllmError(f"{source}: missing required key {dotted}")
    return value


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, default_flow_style=False)


def save_config(cfg: dict, path: str | Path) -> None:
    """Write the resolved config (includes and overrides applied) atomically."""
    atomic_write_text(path, dump_config(cfg))
