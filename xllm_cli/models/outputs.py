"""Small result types that models, the stage-0 objective and the trainer share.

They live apart from :mod:`xllm_cli.models.xllm` so that modules the X-LLM model uses
(``models.stage0``) can return them without importing the model class back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StepOutput:
    """One training step's scalar loss and float logs (for the trainer's log/tensorboard)."""

    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class LLMInputs:
    """A batch's left-padded LLM inputs for generation: soft prompts and prompt text, assembled."""

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    speech_tokens: list[int] | None  # CIF tokens fired per utterance (bounds generation by default)

    def __len__(self) -> int:
        return self.embeds.shape[0]
