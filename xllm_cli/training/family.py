"""Model families: what ``xllm train`` builds, trains, freezes and saves for each ``model.type``.

The generic stage runner (:func:`xllm_cli.training.stages.run_stage`) knows nothing about
a model: it reads the recipe, keeps the stage's bookkeeping (config.yaml, DONE, resume)
and hands the stage to the family registered under the recipe's ``model.type``. The
X-LLM family (:mod:`xllm_cli.training.xllm_family`, ``type: xllm``, the default) is the
only one the library ships. Another family registers itself the same way the tests'
toy family does (tests/toy_family.py; docs/extending.md)::

    from xllm_cli.training.family import ModelFamily, register_family

    @dataclass
    class MyModelConfig:                  # the ``model:`` section of type mine, typed
        type: str = "mine"
        width: int = 64                   # a comment here is the key's line in docs/config.md

    register_model_config("mine", MyModelConfig)   # xllm_cli.config.schema

    class MyFamily(ModelFamily):
        def build(self, recipe, req, dist, opts): return MyModel(recipe.model), MyDataSource(...)
        def save_model(self, model, model_cfg, out_dir, exp=None): ...  # save_model_config(model_cfg, out_dir, exp)
        def load_model(self, model_dir): ...

    register_family("mine", MyFamily())   # recipes select it with model: {type: mine}

Every ``xllm`` command (and the torchrun workers) imports the modules listed in the
``XLLM_PLUGINS`` environment variable (:mod:`xllm_cli.plugins`) before parsing a recipe,
so a family outside this package needs no change here.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
import os
from pathlib import Path

import torch

from ..errors import XllmError
from ..plugins import PLUGINS_ENV, load_plugins
from . import checkpoint as ck
from .distributed import DistInfo
from .stage_data import StageRequest
from ..config.schema import Recipe, TrainOptions
from .trainer import DataSource, DecodeFn, Trainer, TrainState

DEFAULT_FAMILY = "xllm"
# Families of this package, imported on first use (they pull in torch/transformers models).
_BUILTIN = {"xllm": "xllm_cli.training.xllm_family"}
_FAMILIES: dict[str, "ModelFamily"] = {}


class ModelFamily(ABC):
    """One kind of model's stages. Override :meth:`run_stage`, or the pieces it calls.

    The default :meth:`run_stage` seeds, builds the model and its data (:meth:`build`),
    starts from :meth:`init_model_dir`'s weights when there are some, and trains with the
    shared :class:`~xllm_cli.training.trainer.Trainer`, exporting the best model with
    :meth:`save_model`. ``xllm average`` reads a stage's model with :meth:`load_model`.
    """

    def resolve_model_config(self, recipe: Recipe, exp: Path):
        """The typed ``model:`` section the stage builds from (and its config.yaml records)."""
        return recipe.model

    def init_model_dir(self, exp: Path, stage: int, modality: str) -> Path | None:
        """The model a stage starts from: by default the previous stage's (none for stages 0 and 1)."""
        return ck.stage_model_dir(exp, stage - 1) if stage >= 2 else None

    def build(self, recipe: Recipe, req: StageRequest, dist: DistInfo,
              opts: TrainOptions) -> tuple[torch.nn.Module, DataSource]:
        """The stage's model (``forward(batch, stage)`` -> ``.loss``, ``.logs``) and its data.

        Needed by the default :meth:`run_stage` only: a family that overrides
        ``run_stage`` (as X-LLM's does, stage by stage) may leave it out.
        """
        raise TypeError(f"{type(self).__name__} must define build() or override run_stage()")

    def decode_fn(self, recipe: Recipe, stage: int) -> DecodeFn | None:
        """Greedy decoding of a batch for the validation CER (None: loss only)."""
        return None

    @abstractmethod
    def save_model(self, model: torch.nn.Module, model_cfg, out_dir: Path, exp: Path | None = None) -> None:
        """Write a model directory (``best/``, ``averaged/``); paths inside ``exp`` are saved relative."""

    @abstractmethod
    def load_model(self, model_dir: Path) -> torch.nn.Module:
        """Read back what :meth:`save_model` wrote."""

    def run_stage(self, recipe: Recipe, req: StageRequest, dist: DistInfo, opts: TrainOptions) -> TrainState:
        """Train one stage in ``EXP/stageN`` and return the trainer's final state."""
        torch.manual_seed(opts.seed)
        model, source = self.build(recipe, req, dist, opts)
        init = self.init_model_dir(req.exp, req.stage, req.modality)
        if init is not None and (init / ck.MODEL_FILE).is_file():
            ck.load_into(model, ck.load_weights(init / ck.MODEL_FILE), init / ck.MODEL_FILE)
        model_cfg = self.resolve_model_config(recipe, req.exp)
        return Trainer(model, source, opts, ck.stage_dir(req.exp, req.stage, req.modality), req.stage, dist,
                       decode_fn=self.decode_fn(recipe, req.stage),
                       export_fn=lambda m, d: self.save_model(m, model_cfg, d, req.exp), resume=req.resume).fit()


def register_family(name: str, family: ModelFamily) -> None:
    """Make ``family`` the one recipes with ``model: {type: <name>}`` train (replaces an earlier one)."""
    _FAMILIES[name] = family


def get_family(model_type: str | None) -> ModelFamily:
    """The family registered as ``model_type`` (None: the X-LLM family)."""
    name = model_type or DEFAULT_FAMILY
    if name not in _FAMILIES and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _FAMILIES:
        load_plugins()
    if name not in _FAMILIES:
        known = ", ".join(sorted(set(_FAMILIES) | set(_BUILTIN)))
        raise XllmError(f"model.type {name!r}: no such model family (known: {known}; a family outside xllm "
                        f"registers itself in a module named in {PLUGINS_ENV})")
    return _FAMILIES[name]
