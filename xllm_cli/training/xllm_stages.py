"""X-LLM stages 1-3: data from the pipeline, model from the previous stage.

Stage 1 trains the C-Former with its encoder (and the image Q-Former when the
recipe lists ``stage1.data.image_train``); stage 2 aligns one modality's interface
with the frozen LLM; stage 3 trains the adapters on a mixture of data dirs. What
trains and where each stage starts from are the family's rules
(:mod:`xllm_cli.training.xllm_family`); this module wires them to the data: the
global CMVN is computed once for fbank encoders (``EXP/cmvn.json``), and validation
uses the loss and a greedy CER (NAR for stage 1, LLM generation for 2-3).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config.schema import BatchConfig, ModelConfig, Recipe, TrainOptions
from ..console import log
from ..errors import XllmError
from . import checkpoint as ck
from .distributed import DistInfo, barrier
from .stage_data import StageRequest, batch_options, data_list, stage_data
from .trainer import Trainer, TrainState


class LoaderSource:
    """The data pipeline's loaders behind the trainer's DataSource interface."""

    def __init__(self, train_dirs, dev_dirs, extractor, transform, batch: BatchConfig, seed: int, cer_utts: int,
                 dist: DistInfo) -> None:
        from ..data.batching import build_dataloader
        from ..data.dataset import load_utterances

        r, w = dist.rank, dist.world_size
        bcfg = batch
        self.train = build_dataloader(train_dirs, extractor, transform, bcfg, train=True, seed=seed, rank=r,
                                      world_size=w)
        self.valid = build_dataloader(dev_dirs, extractor, transform, bcfg, train=False, rank=r, world_size=w)
        self.cer = None
        if cer_utts > 0:
            dev = load_utterances(dev_dirs)
            step = max(len(dev) // cer_utts, 1)
            subset = dev[::step][:cer_utts]  # spread over the set (speakers, lengths)
            self.cer = build_dataloader(subset, extractor, transform, bcfg, train=False, rank=r, world_size=w)

    def num_batches(self, epoch: int) -> int:
        return self.train.num_batches(epoch)

    def train_batches(self, epoch: int, start: int):
        return self.train.iterate(epoch, start)

    def valid_batches(self):
        return self.valid.iterate(0, 0)

    def cer_batches(self):
        return self.cer.iterate(0, 0) if self.cer is not None else iter(())


def _feature_extractor(recipe: Recipe, model_cfg: ModelConfig, req: StageRequest, dist: DistInfo,
                       train_dirs: list[Path]):
    from ..data.features import build_feature_extractor, compute_cmvn

    if model_cfg.speech_encoder is None:
        return None
    enc, features = model_cfg.speech_encoder, recipe.features
    extractor = build_feature_extractor(enc, features)
    if getattr(extractor, "kind", None) != "fbank":
        return extractor
    cmvn = Path(req.exp) / "cmvn.json"
    if not cmvn.is_file():
        if req.stage != 1:
            raise XllmError(f"{cmvn}: global CMVN not found (stage 1 computes it; run xllm train --stage 1 first)")
        if dist.is_main:
            speech_dirs = [d for d in train_dirs if (d / "wav.scp").is_file()] or train_dirs
            log.info("computing global CMVN over %s into %s", ", ".join(map(str, speech_dirs)), cmvn)
            compute_cmvn(speech_dirs if len(speech_dirs) > 1 else speech_dirs[0], extractor, cmvn,
                         max_utts=recipe.features.cmvn_max_utts or None)
        barrier(dist)
    return build_feature_extractor(enc, features, cmvn_path=cmvn)


def run_xllm_stage(family, recipe: Recipe, req: StageRequest, dist: DistInfo, opts: TrainOptions) -> TrainState:
    """Train X-LLM stage 1, 2 or 3 with ``family``'s rules (an :class:`~.xllm_family.XLLMFamily`)."""
    stage = req.stage
    model_cfg = family.resolve_model_config(recipe, req.exp)
    if not recipe.model.llm.path and not Path(model_cfg.llm.path).is_dir():
        raise XllmError(f"{model_cfg.llm.path}: no stage-0 LM (model.llm.path is null): "
                        "run xllm train --stage 0 first")
    data = stage_data(recipe, req)
    train_dirs = data_list(recipe, data.train)
    image_dirs = data_list(recipe, recipe.stage(1).data.image_train) if stage == 1 else []
    dev_dirs = data_list(recipe, data.dev)
    if not train_dirs and not image_dirs:
        raise XllmError(f"recipe: stage{stage}.data.train: no training data listed")
    if not dev_dirs:
        raise XllmError(f"recipe: stage{stage}.data.dev: no dev data listed (validation picks the best model)")
    for d in [*train_dirs, *image_dirs, *dev_dirs]:
        if not d.is_dir():
            raise XllmError(f"{d}: data directory not found (data.dir is {recipe.data.dir!r}; "
                            "relative paths start in the current directory)")

    torch.manual_seed(opts.seed)
    init = family.init_model_dir(req.exp, stage, req.modality)
    if init is not None and not (init / ck.MODEL_FILE).is_file():
        raise XllmError(f"{init}: the previous stage's model is missing (train stage {stage - 1} first)")
    model = family.build_model(model_cfg, init, with_llm=family.needs_llm(stage, recipe.stage(stage).train_modules))
    if init is None and hasattr(model, "fit_cformer_vocab"):
        from ..data.dataset import load_utterances

        n = model.fit_cformer_vocab(u.text or "" for u in load_utterances(train_dirs + image_dirs))
        if n is not None and dist.is_main:
            log.info("cformer.vocab train_text: %d token ids of the training text (+1 for any other)", n)
    if init is not None and dist.is_main:
        log.info("stage %d starts from %s", stage, init)
    modality = family.stage_modality(stage, req.modality, bool(image_dirs))
    family.configure_stage(model, stage, modality, recipe.stage(stage).train_modules)
    if dist.is_main:
        log.info("stage %d (%s): training %s", stage, modality, ", ".join(getattr(model, "trainable_groups", [])))

    extractor = _feature_extractor(recipe, model_cfg, req, dist, train_dirs)
    uses_images = bool(image_dirs) or stage == 3 or (stage == 2 and req.modality != "speech")
    transform = None
    if uses_images and model_cfg.vision_encoder is not None:
        from ..data.features import build_image_transform

        transform = build_image_transform(model_cfg.vision_encoder)
    source = LoaderSource(train_dirs + image_dirs, dev_dirs, extractor, transform, batch_options(recipe, stage),
                          opts.seed, opts.cer_utts, dist)
    return Trainer(model, source, opts, ck.stage_dir(req.exp, stage, req.modality), stage, dist,
                   decode_fn=family.decode_fn(recipe, stage),
                   export_fn=lambda m, d: family.save_model(m, model_cfg, d, req.exp), resume=req.resume).fit()
