"""What one training step does inside the LLM: layer runs and activations kept for backward.

Gradient checkpointing shows in both: each decoder layer runs twice (forward, then again in
backward) and the layers' activations are no longer saved in forward. The test of the
checkpointing fix and ``bench/grad_checkpointing.py`` read these counts from this one probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class StepProbe:
    loss: float
    layer_calls: int  # attention calls of the probed layers, forward + backward recomputation
    saved_bytes: int  # distinct non-weight storages autograd saved for backward during forward


def probe_step(model: nn.Module, layers: list[nn.Module], forward: Callable[[], torch.Tensor]) -> StepProbe:
    """Run ``forward()`` (returning the loss) and its backward, counting as :class:`StepProbe` says.

    Tensors sharing a storage with one of ``model``'s parameters are weights, not activations.
    Only the forward is watched for saved tensors: what checkpointing recomputes in backward is
    freed layer by layer and is not what it saves.
    """
    calls = 0

    def count(*_):
        nonlocal calls
        calls += 1

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in weights:
            saved[st.data_ptr()] = st.nbytes()
        return t

    hooks = [layer.self_attn.register_forward_pre_hook(count) for layer in layers]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = forward()
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
    return StepProbe(float(loss.detach()), calls, sum(saved.values()))
