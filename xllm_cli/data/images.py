"""Image and video-frame transforms for the vision encoder.

A pretrained vision encoder (CLIP/EVA/SigLIP ...) comes with its own image
processor; we use it as is (``AutoImageProcessor``) so that resizing, cropping
and normalisation match what the encoder saw in pre-training. The tiny preset
(random weights, no processor on disk) resizes to ``image_size`` and maps pixels
to [-1, 1] (mean = std = 0.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..errors import XllmError

ImageTransform = Callable[["object"], torch.Tensor]  # PIL.Image -> (3, H, W)


class TinyImageTransform:
    """Resize to ``image_size`` x ``image_size`` (bicubic), scale to [0, 1], normalise with mean/std."""

    def __init__(self, image_size: int = 224, mean: float = 0.5, std: float = 0.5):
        self.image_size = int(image_size)
        self.mean = float(mean)
        self.std = float(std)

    def __call__(self, image) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        image = image.convert("RGB").resize((self.image_size, self.image_size), Image.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        return (pixels - self.mean) / self.std


class ProcessorImageTransform:
    """A pretrained encoder's ``AutoImageProcessor``: PIL image -> its ``pixel_values`` (3, H, W)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image) -> torch.Tensor:
        out = self.processor(images=image.convert("RGB"), return_tensors="pt")
        return out["pixel_values"][0]


def build_image_transform(vision_cfg: dict | None) -> ImageTransform:
    """The transform for the vision encoder described by ``vision_cfg`` (the model's ``vision_encoder`` section).

    ``path`` set -> ``AutoImageProcessor.from_pretrained(path)``; ``type: tiny_clip`` or no path ->
    :class:`TinyImageTransform` with ``image_size`` (default 224).
    """
    vision_cfg = dict(vision_cfg or {})
    path = vision_cfg.get("path")
    if path and str(vision_cfg.get("type", "")).lower() != "tiny_clip":
        from transformers import AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise XllmError(f"{path}: cannot load an image processor ({str(e).splitlines()[0]})") from None
        return ProcessorImageTransform(processor)
    return TinyImageTransform(int(vision_cfg.get("image_size", 224)))


def load_image(path: str | Path, transform: ImageTransform) -> torch.Tensor:
    """Read an image file and transform it -> (3, H, W); a one-line error for unreadable files."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return transform(image)
    except FileNotFoundError:
        raise XllmError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise XllmError(f"{path}: cannot read image ({e})") from None


def load_video(path: str | Path, num_frames: int, transform: ImageTransform) -> torch.Tensor:
    """``num_frames`` frames sampled uniformly over the clip, each transformed -> (N, 3, H, W)."""
    from .video import sample_frames

    # The tiny transform only resizes: let ffmpeg scale while decoding (less data through the pipe).
    size = transform.image_size if isinstance(transform, TinyImageTransform) else None
    frames = sample_frames(path, num_frames, size=size)
    return torch.stack([transform(frame) for frame in frames])
