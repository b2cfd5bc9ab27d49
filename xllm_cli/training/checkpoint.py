"""Experiment layout, training checkpoints and exact-resume state.

Layout (docs/experiment.md)::

    EXP/stageN/config.yaml        resolved recipe
              train.log, tensorboard/
              checkpoints/step_<k>/ model.safetensors   trainable params + buffers
                                    optimizer.pt        torch.save of the optimizer state (tensors, numbers)
                                    rng.pt              RNG states of every rank (python, numpy, torch, cuda)
                                    trainer_state.json  step, data position (epoch, batch), schedule, metrics
              best/                 save_model() dir of the best checkpoint (load_model() reads it)
              averaged/             save_model() dir of the average of the K best (xllm average)
              DONE                  written when the stage finished
    EXP/stage0/llm/                 HF directory of the stage-0 LM + tokenizer

A checkpoint is written into a hidden temporary folder and renamed into place, so
a killed job leaves either a whole checkpoint or none. ``trainer_state.json`` is
the last file written inside it; only folders that have it are considered.
Everything is read back with safetensors, JSON or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..errors import XllmError
from ..fsutil import apply_umask

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"
STATE_FILE = "trainer_state.json"
DONE_FILE = "DONE"


# ---------------------------------------------------------------- layout

def stage_dir(exp: str | Path, stage: int, modality: str = "speech") -> Path:
    """``EXP/stageN``; stage 2 for a modality other than speech trains in ``EXP/stage2_<modality>``."""
    name = f"stage{stage}" if stage != 2 or modality == "speech" else f"stage2_{modality}"
    return Path(exp) / name


def stage_model_dir(exp: str | Path, stage: int, modality: str = "speech") -> Path:
    """The final model of a stage: ``averaged/`` when present, else ``best/``.

    Stage 0 is the language model: ``EXP/stage0/llm`` (an HF directory).
    The result is a ``save_model`` directory that ``load_model`` reads.
    """
    if stage == 0:
        return Path(exp) / "stage0" / "llm"
    sdir = stage_dir(exp, stage, modality)
    averaged = sdir / "averaged"
    if (averaged / MODEL_FILE).is_file():
        return averaged
    return sdir / "best"


def checkpoints_dir(sdir: Path) -> Path:
    return Path(sdir) / "checkpoints"


def list_checkpoints(sdir: Path) -> list[Path]:
    """Complete checkpoints of a stage, oldest first."""
    cdir = checkpoints_dir(sdir)
    if not cdir.is_dir():
        return []
    found = []
    for p in cdir.iterdir():
        if p.is_dir() and p.name.startswith("step_") and (p / STATE_FILE).is_file():
            try:
                found.append((int(p.name[5:]), p))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


def latest_checkpoint(sdir: Path) -> Path | None:
    ckpts = list_checkpoints(sdir)
    return ckpts[-1] if ckpts else None


# ---------------------------------------------------------------- model weights

def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint must hold to restore training: trainable params and persistent buffers.

    Frozen parameters come from the pretrained parts and the previous stage, which
    are rebuilt the same way on resume; buffers (e.g. BatchNorm statistics) may
    change during training, so they are kept. Tied weights appear once.
    """
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[name] = p.detach()
    non_persistent = set()
    for mod_name, mod in model.named_modules():
        for b in getattr(mod, "_non_persistent_buffers_set", ()):
            non_persistent.add(f"{mod_name}.{b}" if mod_name else b)
    for name, b in model.named_buffers():
        if name not in non_persistent:
            out[name] = b.detach()
    return out


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}, str(path))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A weights file; a truncated or foreign one is a one-line error naming it."""
    from ..models.loading import safe_load_file

    return safe_load_file(path)


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """Copy ``state`` into ``model`` (a subset of its keys); unknown keys or shapes are errors."""
    adopt = getattr(model, "adopt_saved_shapes", None)
    if adopt is not None:  # parts sized by the data they were trained on (XLLM: cformer.vocab train_text)
        adopt(state)
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise XllmError(f"{source}: {len(unknown)} weights do not fit this model (first: {unknown[0]}); "
                        "was it trained with another model config?")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise XllmError(f"{source}: weight {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=False)


# ---------------------------------------------------------------- RNG

def capture_rng() -> dict:
    """This process's RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        # only this process's device: touching every GPU would open a context on each of them
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npn = state["numpy"]
    np.random.set_state((npn[0], npn[1].numpy().astype(np.uint32), npn[2], npn[3], npn[4]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])  # the current device (set from LOCAL_RANK)


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(
    sdir: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict,
    trainer_state: dict,
    rng_states: list[dict],
) -> Path:
    """Write ``checkpoints/step_<step>/`` atomically (temporary folder, then rename)."""
    cdir = checkpoints_dir(sdir)
    cdir.mkdir(parents=True, exist_ok=True)
    final = cdir / f"step_{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step}.", dir=cdir))
    try:
        save_weights(model_state, tmp / MODEL_FILE)
        torch.save(optimizer_state, tmp / OPTIM_FILE)
        torch.save({"ranks": rng_states}, tmp / RNG_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=1, sort_keys=True), encoding="utf-8")
        apply_umask(tmp)  # mkdtemp made it 0700; a checkpoint gets the mode of any other folder
        if final.exists():  # same step saved before (e.g. a rerun): replace it whole
            trash = Path(tempfile.mkdtemp(prefix=".trash.", dir=cdir))
            final.rename(trash / final.name)
            shutil.rmtree(trash, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@dataclass
class TrainState:
    """Everything besides tensors that resuming needs (``trainer_state.json``)."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # current epoch
    batch: int = 0  # batches of `epoch` already trained (data position)
    score: float | None = None  # validation score at this step (lower is better)
    valid: dict = field(default_factory=dict)
    best: list = field(default_factory=list)  # [[score, step], ...] best first
    total_steps: int = 0
    scheduler: dict = field(default_factory=dict)
    elapsed: float = 0.0


_NUMBER = (int, float)
# The JSON type each field of trainer_state.json must have (bool is not a number here).
_STATE_TYPES = {"step": int, "epoch": int, "batch": int, "total_steps": int, "elapsed": _NUMBER,
                "score": (*_NUMBER, type(None)), "valid": dict, "best": list, "scheduler": dict}


def _check_state(data, path: Path) -> dict:
    """``trainer_state.json`` content checked field by field: one line naming the file and key."""
    if not isinstance(data, dict):
        raise XllmError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key, types in _STATE_TYPES.items():
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], types)):
            raise XllmError(f"{path}: {key} has a wrong type ({data[key]!r})")
    for entry in data.get("best", []):
        if not (isinstance(entry, list) and len(entry) == 2
                and all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in entry)):
            raise XllmError(f"{path}: best: expected [score, step] pairs, got {entry!r}")
    return data


def read_trainer_state(ckpt: Path) -> dict:
    """A checkpoint's ``trainer_state.json``; unreadable JSON or wrong types are one line naming it."""
    path = Path(ckpt) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise XllmError(f"{path}: cannot read ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    except json.JSONDecodeError as e:
        raise XllmError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    return _check_state(data, path)


def train_state(data: dict) -> TrainState:
    """A :class:`TrainState` from checked ``trainer_state.json`` content (unknown keys ignored)."""
    known = {f.name for f in fields(TrainState)}
    return TrainState(**{k: v for k, v in data.items() if k in known})


def load_checkpoint(ckpt: Path, rank: int = 0, map_location="cpu") -> tuple[dict, dict, dict, dict | None]:
    """(model weights, optimizer state, trainer state, this rank's RNG state or None)."""
    from ..models.loading import torch_load_weights

    ckpt = Path(ckpt)
    state = read_trainer_state(ckpt)
    model_state = load_weights(ckpt / MODEL_FILE)
    optim = torch_load_weights(ckpt / OPTIM_FILE, map_location=map_location)
    rng_file = torch_load_weights(ckpt / RNG_FILE)
    rng = rng_file.get("ranks") if isinstance(rng_file, dict) else None
    if not isinstance(rng, list):
        raise XllmError(f"{ckpt / RNG_FILE}: not an xllm RNG state (no list of ranks)")
    rank_rng = rng[rank] if rank < len(rng) else None
    return model_state, optim, state, rank_rng


def remove_checkpoint(ckpt: Path) -> None:
    """Delete a checkpoint folder; rename first so a kill never leaves a half-deleted one."""
    ckpt = Path(ckpt)
    if not ckpt.exists():
        return
    trash = ckpt.with_name(f".del.{ckpt.name}")
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    ckpt.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def best_checkpoints(sdir: Path, num: int | None = None) -> list[Path]:
    """Checkpoints ranked by their validation score (lower is better), best first."""
    scored = []
    for ckpt in list_checkpoints(sdir):
        state = read_trainer_state(ckpt)
        score = state.get("score")
        if score is not None:
            scored.append((float(score), state.get("step", 0), ckpt))
    scored.sort(key=lambda t: (t[0], -t[1]))
    out = [c for _, _, c in scored]
    return out if num is None else out[:num]
