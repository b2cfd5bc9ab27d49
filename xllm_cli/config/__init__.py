"""Recipes and experiment configs: YAML loading (``loader``) and typed sections (``schema``).

``load_recipe`` reads a recipe file with its ``include:`` chain and ``--set``
overrides into a plain dict; ``parse_recipe`` turns that dict into a typed
:class:`~xllm_cli.config.schema.Recipe`, refusing unknown keys and wrong types with
the key's dotted path. See docs/config.md for every key.
"""

from .loader import (
    RecipeLoader,
    apply_overrides,
    deep_merge,
    dump_config,
    get,
    load_recipe,
    parse_override,
    require,
    safe_load,
    save_config,
)

__all__ = [
    "RecipeLoader",
    "apply_overrides",
    "deep_merge",
    "dump_config",
    "get",
    "load_recipe",
    "parse_override",
    "require",
    "safe_load",
    "save_config",
]
