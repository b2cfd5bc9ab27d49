"""The inference bundle: a stage's model with the feature pipeline it was trained with.

Shared by ``xllm decode`` (batches from data directories) and ``xllm transcribe``
(batches from audio in memory): ``load_for_decoding`` reads the experiment's saved
configs once (``xllm_cli.experiment``), builds the feature extractor and image
transform, loads the model in eval mode (the LLM in bf16 on GPU) and returns a
``DecodeBundle`` that makes batches and runs the model on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..console import log
from ..errors import XllmError
from .batches import SkippedBatch, read_each, utt_duration
from .prefetch import available_cores, prefetch

TOKENS_PER_SECOND = 25.0  # generous: fast English read char by char is ~15 characters/s


def token_limits(batch: Any, requested: int | None) -> list[int]:
    """Each utterance's max_new_tokens: ``--max-new-tokens``, else bounded by its own duration.

    The bound is per utterance, not per batch, so that a hypothesis that never
    ends (an untrained or confused model) is cut at the same length whatever the
    batch it was decoded in: greedy results do not depend on the batch size.
    """
    if requested is not None:
        return [int(requested)] * len(batch.utt_ids)
    durations = batch.durations or [0.0] * len(batch.utt_ids)
    return [int(math.ceil(float(d) * TOKENS_PER_SECOND)) + 10 for d in durations]


@dataclass
class DecodeBundle:
    """A loaded model with the feature pipeline it was trained with (the data pipeline's dataset + collate)."""

    model: Any
    extractor: Any  # FeatureExtractor: wave (samples,) -> (frames, dim)
    image_transform: Any  # PIL image -> (3, H, W), or None without an image interface
    num_frames: int  # video frames per clip
    device: str
    llm_dtype: Any = None  # torch.bfloat16 on GPU
    sample_rate: int = 16000

    def duration(self, u: Any) -> float:
        return utt_duration(u)

    @property
    def has_vision(self) -> bool:
        return self.image_transform is not None and getattr(self.model, "qformer", None) is not None

    # -- running the model
    def generate(self, batch: Any, beam: int = 1, nbest: int = 1, max_new_tokens: int | None = None,
                 use_image: bool = True, use_video: bool = True) -> list[list[tuple[str, float]]]:
        """LLM generation from the soft prompts: an n-best list per utterance, best first."""
        import torch

        batch = batch.to(self.device)
        # inference_mode: no autograd bookkeeping at all (a few % faster than no_grad)
        with torch.inference_mode():
            return self.model.generate(
                batch,
                max_new_tokens=token_limits(batch, max_new_tokens),
                num_beams=beam,
                num_return_sequences=nbest,
                use_image=use_image,
                use_video=use_video,
            )

    def nar_decode(self, batch: Any) -> list[str]:
        """The C-Former's non-autoregressive classifier: a text per utterance."""
        import torch

        batch = batch.to(self.device)
        with torch.inference_mode():
            return self.model.nar_decode(batch)

    # -- batches from data directories
    def iter_batches(self, groups: list[list[Any]], use_image: bool = True, use_video: bool = True) -> Iterator[Any]:
        """Batches in the order of ``groups``, the next one prepared in a background thread where that pays.

        It pays on a GPU, and on CPU when torch leaves a core free (``--threads``). When
        torch's threads take every core, a loader thread beside them slows decoding down
        (their OpenMP workers wait for a descheduled peer; bench/RESULTS.md, decode_throughput).
        """
        from ..data.dataset import DatasetOptions, SpeechDataset, collate

        utts = [u for g in groups for u in g]
        dataset = SpeechDataset(
            utts, self.extractor, self.image_transform if self.has_vision else None, train=False,
            options=DatasetOptions(use_images=use_image, use_video=use_video, num_frames=self.num_frames),
        )
        position = {id(u): i for i, u in enumerate(utts)}

        def batch_of(group: list[Any]) -> Any:
            # an utterance whose audio cannot be read is reported (batches.py), not decoded
            items, skipped = read_each(group, lambda u: dataset[position[id(u)]])
            if not items:
                return SkippedBatch(skipped)
            batch = collate(items)
            batch.skipped = skipped
            return batch

        batches = (batch_of(g) for g in groups)
        return prefetch(batches) if self._spare_cpu() else batches

    def _spare_cpu(self) -> bool:
        import torch

        return self.device != "cpu" or torch.get_num_threads() < available_cores()

    # -- batches from audio in memory (transcribe)
    def batch_from_waves(self, waves: list[Any], ids: list[str], image: Any = None, video: Any = None) -> Any:
        """Collate in-memory waves, each with the same image (3, H, W) / video (N, 3, H, W) when given."""
        import torch
        from ..data.dataset import collate

        items = []
        for utt_id, wave in zip(ids, waves):
            item = {"utt_id": utt_id, "text": None, "prompt": None, "duration": len(wave) / self.sample_rate,
                    "feats": self.extractor(torch.as_tensor(wave, dtype=torch.float32))}
            if image is not None:
                item["image"] = image
            if video is not None:
                item["video"] = video
            items.append(item)
        return collate(items)

    def load_image(self, path: Path) -> Any:
        from ..data.images import load_image

        return load_image(path, self.image_transform) if self.has_vision else None

    def load_video(self, path: Path) -> Any:
        """(N, 3, H, W) frames over the whole file, or None for audio-only files / models without vision."""
        if not self.has_vision:
            return None
        from ..data.images import load_video

        try:
            return load_video(path, self.num_frames, self.image_transform)
        except XllmError:  # no video stream
            return None


def load_for_decoding(exp: Path, stage: int, device: str = "cpu") -> DecodeBundle:
    """Load the stage's model (eval mode) and its feature pipeline.

    On GPU the LLM runs in bf16; the trained interfaces keep fp32 weights.
    """
    import torch
    from ..data.features import build_feature_extractor, build_image_transform
    from ..experiment import load_experiment_config, model_dir, num_frames
    from ..models.saved_model import load_model

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise XllmError("--device cuda: no CUDA device is available (use --device cpu)")
    recipe = load_experiment_config(exp, stage)
    model_cfg = recipe.model
    cmvn = Path(exp) / "cmvn.json"
    extractor = build_feature_extractor(model_cfg.speech_encoder, recipe.features,
                                        cmvn_path=cmvn if cmvn.is_file() else None)
    vision_cfg = model_cfg.vision_encoder
    image_transform = build_image_transform(vision_cfg) if vision_cfg is not None else None

    try:  # transformers' weight-loading bars would clutter decode.log and the progress display
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    mdir = model_dir(exp, stage)
    model = load_model(mdir, device=device)
    model.eval()
    llm_dtype = None
    if device.startswith("cuda"):
        # The LLM is most of the compute and memory: bf16. The interfaces (C-Former with
        # its CIF integration, adapters) stay fp32 as in training; encoders keep the
        # dtype the model config gives them (``model.dtype`` for pretrained ones).
        llm_dtype = torch.bfloat16
        model.llm.to(llm_dtype)
    log.info(f"model {mdir} on {device}{' (LLM in bf16)' if llm_dtype is not None else ''}")
    return DecodeBundle(model=model, extractor=extractor, image_transform=image_transform,
                        num_frames=num_frames(recipe, stage), device=device, llm_dtype=llm_dtype)
