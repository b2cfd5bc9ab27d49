"""The X-LLM family: the stage table of the X-LLM model, in one place (docs/architecture.md).

=====  ============================================  ==========================================
stage  trains (default ``train_modules``)            starts from
=====  ============================================  ==========================================
0      the tiny LLM on text (``llm``)                a random LM (``model.llm_init``)
1      speech: ``cformer`` + ``cformer_head`` (+      nothing: fresh interfaces
       ``speech_encoder`` when random-init or
       ``finetune``); images: ``qformer`` + ``itc``
       (+ ``vision_encoder`` likewise)
2      one modality's interface + adapter            stage 1, or the modality aligned before
3      the adapters, on every modality               the last modality aligned in stage 2
=====  ============================================  ==========================================

Stage 0 runs in :mod:`xllm_cli.training.lm_stage`, stages 1-3 in
:mod:`xllm_cli.training.xllm_stages`; both take their rules from :data:`XLLM_FAMILY`.
"""

from __future__ import annotations

from pathlib import Path

from dataclasses import replace

from ..config.schema import ModelConfig, Recipe, TrainOptions
from ..errors import XllmError
from . import checkpoint as ck
from .distributed import DistInfo
from .family import ModelFamily, register_family
from .stage_data import STAGE2_MODALITIES, StageRequest
from .trainer import DecodeFn, TrainState

ALL_MODALITIES = ("speech", "image", "video")


class XLLMFamily(ModelFamily):
    """What each X-LLM stage builds, trains and freezes, where it starts from, how it is saved."""

    # ------------------------------------------------------------------ the stage table
    @staticmethod
    def stage_modality(stage: int, requested: str, has_image_data: bool) -> str:
        """The modality a stage trains on: stage 1 speech (+ images when listed), 2 the requested one, 3 all."""
        if stage == 1:
            return "all" if has_image_data else "speech"
        return requested if stage == 2 else "all"

    @staticmethod
    def stage_modalities(stage: int, modality: str) -> set[str]:
        """The modalities the model feeds in ``stage``: none in stage 0, all in stage 3."""
        if stage == 0:
            return set()
        return set(ALL_MODALITIES) if (modality == "all" or stage == 3) else {modality}

    def train_groups(self, model, stage: int, modalities: set[str]) -> list[str]:
        """The module groups a stage trains by default (everything else stays frozen)."""
        mods: list[str] = []
        sp, vc = model.cfg.speech_encoder, model.cfg.vision_encoder
        if stage == 0:
            return ["llm"]
        if stage == 1:
            if "speech" in modalities and model.cformer is not None:
                mods += ["cformer", "cformer_head"]
                if not model.speech_encoder.pretrained or sp.finetune:
                    mods.append("speech_encoder")
            if modalities & {"image", "video"} and model.qformer is not None:
                mods += ["qformer", "itc"]
                if not model.vision_encoder.pretrained or vc.finetune:
                    mods.append("vision_encoder")
            return mods
        if stage == 2:
            if "speech" in modalities:
                mods += ["cformer", "speech_adapter"]
            if "image" in modalities:
                mods += ["qformer", "image_adapter"]
            if "video" in modalities:
                mods += ["video_queries", "video_adapter"]
            return mods
        return ["speech_adapter", "image_adapter", "video_adapter"]

    def configure_stage(self, model, stage: int, modality: str = "speech",
                        train_modules: list[str] | None = None) -> None:
        """Set what trains in ``model`` for ``stage``; ``train_modules`` overrides :meth:`train_groups`.

        ``modality`` is speech, image, video or all (stage 1 with image data: speech and images).
        """
        if stage not in (0, 1, 2, 3):
            raise XllmError(f"stage must be 0-3, not {stage}")
        if modality not in ("speech", "image", "video", "all"):
            raise XllmError(f"modality must be speech, image, video or all, not {modality!r}")
        modalities = self.stage_modalities(stage, modality)
        groups = self.train_groups(model, stage, modalities) if train_modules is None else train_modules
        model.set_stage(stage, modalities, groups)

    def resolve_model_config(self, recipe: Recipe, exp: Path) -> ModelConfig:
        """The model section with ``llm.path: null`` pointing at the stage-0 LM of this experiment.

        The path is absolute so that the model loads from any working directory; every
        config.yaml that records it goes through :mod:`xllm_cli.config.saved` with ``exp``,
        which stores it relative (``../../stage0/llm``): a moved experiment keeps working.
        """
        model_cfg = recipe.model
        if not model_cfg.llm.path:
            llm = replace(model_cfg.llm, path=str(ck.stage_model_dir(exp, 0).resolve()))
            model_cfg = replace(model_cfg, llm=llm)
        return model_cfg

    def init_model_dir(self, exp: Path, stage: int, modality: str) -> Path | None:
        """The model a stage starts from (None for stage 0 and 1: fresh interfaces)."""
        if stage <= 1:
            return None
        if stage == 2:
            order = STAGE2_MODALITIES[: STAGE2_MODALITIES.index(modality)]
            # image/video alignment continues from the latest earlier modality's stage 2, else stage 1
            for m in reversed(order):
                d = ck.stage_model_dir(exp, 2, m)
                if (d / ck.MODEL_FILE).is_file():
                    return d
            return ck.stage_model_dir(exp, 1)
        for m in reversed(STAGE2_MODALITIES):  # stage 3: the last modality aligned in stage 2
            d = ck.stage_model_dir(exp, 2, m)
            if (d / ck.MODEL_FILE).is_file():
                return d
        return ck.stage_model_dir(exp, 2)

    # ------------------------------------------------------------------ building, saving
    @staticmethod
    def needs_llm(stage: int, train_modules: list[str] | None) -> bool:
        """Stage 1 uses only the LLM's vocabulary (C-Former classes, ITC text): no weights to load."""
        return stage != 1 or "llm" in (train_modules or [])

    def build_model(self, model_cfg: ModelConfig, init: Path | None, with_llm: bool = True):
        """A fresh model (pretrained parts from their paths), or the previous stage's in ``init``.

        Building from the recipe (not from ``init/config.yaml``) keeps options that only take
        effect at construction (prompts, position alignment) as the recipe says. ``with_llm``
        false (stage 1, see :meth:`needs_llm`) loads the LLM's tokenizer only.
        """
        from ..models.xllm import XLLM

        if init is None:
            return XLLM.from_config(model_cfg, with_llm=with_llm)
        model = XLLM.from_config(model_cfg, load_weights=False, with_llm=with_llm)
        weights = ck.load_weights(init / ck.MODEL_FILE)
        ck.load_into(model, weights, init / ck.MODEL_FILE)
        model.keep_saved_pretrained(weights)  # e.g. a fine-tuned encoder stays in the saved models
        return model

    def save_model(self, model, model_cfg: ModelConfig, out_dir: Path, exp: Path | None = None) -> None:
        from ..models.saved_model import save_model

        save_model(model, model_cfg, out_dir, exp)

    def load_model(self, model_dir: Path):
        from ..models.saved_model import load_model

        return load_model(model_dir)

    def decode_fn(self, recipe: Recipe, stage: int) -> DecodeFn:
        """Validation decoding: the C-Former's NAR output in stage 1, greedy LLM generation after."""
        if stage == 1:
            return lambda model, batch: model.nar_decode(batch)
        # The recipe's bound (every shipped recipe sets it; absent, the schema's default applies now
        # where older code fell back on the per-utterance bound from the fired speech tokens).
        max_new_tokens = recipe.model.max_new_tokens

        def generate(model, batch):
            nbest = model.generate(batch, max_new_tokens=max_new_tokens, num_beams=1)
            return [n[0][0] if n else "" for n in nbest]

        return generate

    # ------------------------------------------------------------------ running
    def run_stage(self, recipe: Recipe, req: StageRequest, dist: DistInfo, opts: TrainOptions) -> TrainState:
        if req.stage == 0:
            from .lm_stage import run_stage0

            return run_stage0(recipe, req, dist, opts)
        from .xllm_stages import run_xllm_stage

        return run_xllm_stage(self, recipe, req, dist, opts)


XLLM_FAMILY = XLLMFamily()
register_family("xllm", XLLM_FAMILY)
