"""Finding pretrained checkpoints and reading parts of them.

A pretrained reference is a local directory or a hub id. Local directories never touch
the network; hub ids go through huggingface_hub's cache (and need a network the first
time). Sub-module weights (Whisper's encoder, BLIP-2's Q-Former) are read tensor by
tensor from safetensors files, so the rest of a big checkpoint is never loaded.

Every read of a weights file goes through :func:`safe_load_file`, :func:`open_safetensors`
or :func:`torch_load_weights`, so a truncated or foreign file is one line naming it.
Pickles are read with ``weights_only=True`` only: a file that needs more (arbitrary
Python objects) is refused, never retried unsafely.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from xllm_cli.errors import XllmError


def resolve_pretrained(path_or_id: str, allow_patterns: list[str] | None = None) -> Path:
    """Local directory for ``path_or_id``: the path itself, or a hub snapshot download."""
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        return p
    if p.exists() or str(path_or_id).startswith((".", "/", "~")) or str(path_or_id).count("/") != 1:
        raise XllmError(f"{path_or_id}: pretrained model directory not found")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(path_or_id), allow_patterns=allow_patterns))
    except Exception as e:  # offline, unknown repo, ...
        raise XllmError(
            f"{path_or_id}: not a local directory and the hub download failed ({type(e).__name__}); "
            "download it on a machine with network and give the local path"
        ) from None


def safetensors_error(path: str | Path) -> XllmError:
    return XllmError(f"{path}: truncated or not a safetensors file")


def safe_load_file(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a broken file is a one-line error naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise XllmError(f"{path}: not found") from None
    except Exception:  # safetensors raises its own errors (header too large, incomplete ...)
        raise safetensors_error(path) from None


def open_safetensors(path: str | Path):
    """``safe_open`` (read tensors one by one); a broken file is a one-line error naming it."""
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt")
    except FileNotFoundError:
        raise XllmError(f"{path}: not found") from None
    except Exception:
        raise safetensors_error(path) from None


def torch_load_weights(path: str | Path, map_location="cpu"):
    """``torch.load(weights_only=True)``; what it refuses (or cannot read) is a one-line error."""
    import pickle

    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise XllmError(f"{path}: not found") from None
    except pickle.UnpicklingError:
        raise XllmError(f"{path}: holds Python objects besides tensors and numbers; refused "
                        "(only plain weights are loaded)") from None
    except (EOFError, RuntimeError, ValueError, OSError):
        raise XllmError(f"{path}: truncated or not a PyTorch weights file") from None


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / n for n in names]
    files = sorted(model_dir.glob("*.safetensors"))
    if files:
        return files
    files = sorted(model_dir.glob("pytorch_model*.bin"))
    if files:
        return files
    raise XllmError(f"{model_dir}: no *.safetensors or pytorch_model*.bin weights")


def load_prefixed_state_dict(model_dir: str | Path, prefixes: list[str]) -> dict[str, torch.Tensor]:
    """Tensors whose names start with one of ``prefixes``, with the prefix removed.

    The first prefix that matches any tensor wins (e.g. ["model.encoder.", "encoder."]).
    """
    model_dir = Path(model_dir)
    found: dict[str, dict[str, torch.Tensor]] = {p: {} for p in prefixes}
    for f in _weight_files(model_dir):
        if f.suffix == ".safetensors":
            with open_safetensors(f) as sf:
                for name in sf.keys():
                    for p in prefixes:
                        if name.startswith(p):
                            found[p][name[len(p):]] = sf.get_tensor(name)
                            break
        else:
            sd = torch_load_weights(f)
            for name, t in sd.items():
                for p in prefixes:
                    if name.startswith(p):
                        found[p][name[len(p):]] = t
                        break
    for p in prefixes:
        if found[p]:
            return found[p]
    return {}


def load_tensor(model_dir: str | Path, names: list[str]) -> torch.Tensor | None:
    """The first tensor of ``names`` found in the checkpoint, or None."""
    for f in _weight_files(Path(model_dir)):
        if f.suffix != ".safetensors":
            sd = torch_load_weights(f)
            for n in names:
                if n in sd:
                    return sd[n]
            continue
        with open_safetensors(f) as sf:
            keys = set(sf.keys())
            for n in names:
                if n in keys:
                    return sf.get_tensor(n)
    return None
