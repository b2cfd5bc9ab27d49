"""The batch that the data pipeline hands to the model.

The pipeline stays tokenizer-agnostic: it carries text, and the model tokenizes
with its LLM's tokenizer. Utterances without an image or video get zeros and a
False in the matching mask.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch


@dataclass
class Batch:
    utt_ids: list[str]
    feats: Optional[torch.Tensor] = None  # (B, T, D) speech features, zero-padded
    feat_lens: Optional[torch.Tensor] = None  # (B,) valid frames
    texts: Optional[list[str]] = None  # target transcripts / captions
    prompts: Optional[list[Optional[str]]] = None  # per-utterance instruction, None = default
    images: Optional[torch.Tensor] = None  # (B, 3, H, W)
    image_mask: Optional[torch.Tensor] = None  # (B,) bool: utterance has an image
    videos: Optional[torch.Tensor] = None  # (B, N, 3, H, W) uniformly sampled frames
    video_mask: Optional[torch.Tensor] = None  # (B,) bool: utterance has a video
    durations: Optional[list[float]] = None  # seconds of speech per utterance

    def __len__(self) -> int:
        return len(self.utt_ids)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Batch":
        """Move tensors to ``device``; floating tensors are cast to ``dtype`` when given."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device)
                if dtype is not None and value.is_floating_point():
                    value = value.to(dtype)
            moved[f.name] = value
        return Batch(**moved)
