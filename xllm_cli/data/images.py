"""Image and video-frame transforms for the vision encoder.

A pretrained vision encoder (CLIP/EVA/SigLIP ...) comes with its own image
processor; we use it as is (``AutoImageProcessor``) so that resizing, cropping
and normalisation match what the encoder saw in pre-training. The tiny preset
(random weights, no processor on disk) resizes to ``image_size`` and maps pixels
to [-1, 1] (mean = std = 0.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from ..errors import XllmError

if TYPE_CHECKING:  # pragma: no cover
    from ..config.schema import VisionEncoderConfig

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


# A random-init vision tower's input size when neither vision_encoder.image_size nor
# vision_encoder.init.image_size is given (models/vision.py builds the tower the same way).
DEFAULT_TINY_IMAGE_SIZE = 64


def tiny_image_size(vision: "VisionEncoderConfig") -> int:
    """Input size of the random-init tower: ``image_size``, else ``init.image_size``, else 64."""
    return int(vision.image_size or vision.init.image_size or DEFAULT_TINY_IMAGE_SIZE)


def build_image_transform(vision: "VisionEncoderConfig") -> ImageTransform:
    """The transform for the vision encoder ``vision`` (the model's ``vision_encoder`` section).

    ``path`` set -> ``AutoImageProcessor.from_pretrained(path)``; no path (a random-init tower)
    -> :class:`TinyImageTransform` at the tower's input size (:func:`tiny_image_size`).
    """
    if vision.path:
        from transformers import AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(str(vision.path))
        except (OSError, ValueError) as e:
            raise XllmError(f"{vision.path}: cannot load an image processor ({str(e).splitlines()[0]})") from None
        return ProcessorImageTransform(processor)
    return TinyImageTransform(tiny_image_size(vision))


def load_image(path: str | Path, transform: ImageTransform) -> torch.Tensor:
    """Read an image file and transform it -> (3, H, W); a one-line error for unreadable files."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; a picture that large would
        # still cost gigabytes of memory in a DataLoader worker, so it is refused as well.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return transform(image)
    except FileNotFoundError:
        raise XllmError(f"{path}: image not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise XllmError(
            f"{path}: image too large ({' '.join(str(e).split())}); downscale it (PIL refuses more than "
            f"{Image.MAX_IMAGE_PIXELS} pixels)"
        ) from None
    except (UnidentifiedImageError, OSError) as e:
        raise XllmError(f"{path}: cannot read image ({e})") from None


def load_video(path: str | Path, num_frames: int, transform: ImageTransform) -> torch.Tensor:
    """``num_frames`` frames sampled uniformly over the clip, each transformed -> (N, 3, H, W)."""
    from .video import sample_frames

    # The tiny transform only resizes: let ffmpeg scale while decoding (less data through the pipe).
    size = transform.image_size if isinstance(transform, TinyImageTransform) else None
    frames = sample_frames(path, num_frames, size=size)
    return torch.stack([transform(frame) for frame in frames])
