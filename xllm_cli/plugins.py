"""Extensions that live outside xllm: modules named in ``XLLM_PLUGINS`` are imported first.

Every registry (model families, ``model:`` config dataclasses, speech encoders,
decoding systems) is filled when a module is imported. A module of your own
registers its entries at import time; listing it in ``XLLM_PLUGINS``
(comma-separated module names, importable from ``PYTHONPATH``) makes every
``xllm`` command, and the torchrun workers and ``--nj`` jobs they start, import it
before it parses a recipe or a saved config (docs/extending.md). The variable is
set by the person running xllm, never read from data.
"""

from __future__ import annotations

import importlib
import os

from .errors import XllmError

PLUGINS_ENV = "XLLM_PLUGINS"


def load_plugins() -> None:
    """Import the modules named in ``XLLM_PLUGINS`` (a no-op when it is unset)."""
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise XllmError(f"{PLUGINS_ENV}: cannot import {module} ({e})") from None
