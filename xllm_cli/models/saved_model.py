"""A saved X-LLM model directory: ``model.safetensors`` + ``config.yaml`` (docs/experiment.md).

``model.safetensors`` holds every tensor NOT loaded from a pretrained path (interfaces,
adapters, random-init parts) plus any pretrained part that was ever made trainable (stage-0
LLM, a fine-tuned encoder); pretrained frozen parts are referenced by path in config.yaml.
Stage ``best/`` and ``averaged/`` directories and what ``xllm decode`` reads are in this form.
"""

from __future__ import annotations

from pathlib import Path

import torch

from xllm_cli.config.schema import ModelConfig, parse_model
from xllm_cli.errors import XllmError
from xllm_cli.models.xllm import PRETRAINED_PREFIX, XLLM


def _saved_key_filter(model: XLLM):
    skip = [
        prefix for group, prefix in PRETRAINED_PREFIX.items()
        if getattr(model, group, None) is not None and model.is_pretrained(group) and group not in model.trained_pretrained
    ]
    return lambda k: not any(k.startswith(p) for p in skip)


def model_state_to_save(model: XLLM) -> dict[str, torch.Tensor]:
    """Tensors that save_model writes: all but the untouched pretrained parts."""
    keep = _saved_key_filter(model)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items() if keep(k)}


def save_model(model: XLLM, model_cfg: ModelConfig | dict | None, out_dir: str | Path,
               exp: str | Path | None = None) -> None:
    """Write ``out_dir/model.safetensors`` (non-pretrained + trained tensors) and ``out_dir/config.yaml``.

    ``model_cfg`` defaults to the model's own; model paths inside the experiment ``exp``
    are saved relative (:func:`xllm_cli.config.saved.save_model_config`), so a moved
    experiment keeps working.
    """
    import safetensors.torch

    from xllm_cli.config.saved import save_model_config
    from xllm_cli.fsutil import atomic_save

    if model_cfg is None:
        model_cfg = model.cfg
    elif isinstance(model_cfg, dict):
        model_cfg = parse_model(model_cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = model_state_to_save(model)
    meta = {"format": "xllm", "trained_pretrained": ",".join(sorted(model.trained_pretrained))}
    atomic_save(out_dir / "model.safetensors", lambda tmp: safetensors.torch.save_file(sd, tmp, metadata=meta))
    save_model_config(model_cfg, out_dir, exp)


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> XLLM:
    """Rebuild from ``config.yaml`` (pretrained parts from their paths) and load ``model.safetensors``; eval mode."""
    from xllm_cli.config.saved import load_model_config
    from xllm_cli.errors import require_dir, require_file
    from xllm_cli.models.loading import safe_load_file

    model_dir = require_dir(model_dir, "model directory")
    require_file(model_dir / "config.yaml", "model config")
    cfg = load_model_config(model_dir)
    weights = require_file(model_dir / "model.safetensors", "model weights")
    sd = safe_load_file(weights)  # before building: a broken file fails fast
    model = XLLM.from_config(cfg, load_weights=False)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected:
        raise XllmError(f"{weights}: tensors that the config does not have: {unexpected[:3]}")
    model.keep_saved_pretrained(sd)
    keep = _saved_key_filter(model)
    lost = [k for k in missing if keep(k)]
    if lost:
        raise XllmError(f"{weights}: tensors missing: {lost[:3]}")
    return model.to(device).eval()
