"""Learning-rate schedules as pure functions of the optimizer step.

Because the rate depends only on the step count, resuming needs nothing but the
step (saved in ``trainer_state.json``): no scheduler object with hidden state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import XllmError

SCHEDULES = ("cosine", "noam", "linear", "constant")


@dataclass
class Schedule:
    """``lr(step)`` for ``step`` = optimizer updates done so far (0 before the first)."""

    name: str = "cosine"
    lr: float = 1e-3  # peak rate, reached at the end of warmup
    warmup_steps: int = 0
    total_steps: int = 1  # cosine/linear decay to ``min_lr_ratio * lr`` by this step
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise XllmError(f"scheduler: unknown schedule {self.name!r} (choose from {', '.join(SCHEDULES)})")
        self.total_steps = max(int(self.total_steps), 1)
        self.warmup_steps = max(int(self.warmup_steps), 0)

    def factor(self, step: int) -> float:
        """Multiplier of the peak rate for the update number ``step + 1``."""
        s = step + 1
        warm = self.warmup_steps
        if self.name == "noam":
            # Vaswani et al.: linear warmup then inverse square root, peak = lr at `warm`.
            warm = max(warm, 1)
            return min(s / warm, (warm / s) ** 0.5)
        if warm and s <= warm:
            return s / warm
        if self.name == "constant":
            return 1.0
        span = max(self.total_steps - warm, 1)
        progress = min(max(s - warm, 0) / span, 1.0)
        if self.name == "linear":
            decay = 1.0 - progress
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay

    def lr_at(self, step: int) -> float:
        return self.lr * self.factor(step)

    def apply(self, optimizer, step: int) -> float:
        """Set every param group's rate for the next update; returns it."""
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr
