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
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import XllmError

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
    try:
        return load_file(str(path))
    except Exception as e:  # a truncated or foreign file
        raise XllmError(f"{path}: cannot read safetensors ({e})") from None


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """Copy ``state`` into ``model`` (a subset of its keys); unknown keys or shapes are errors."""
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
        if final.exists():  # same step saved before (e.g. a rerun): replace it whole
            trash = Path(tempfile.mkdtemp(prefix=".trash.", dir=cdir))
            final.rename(trash / final.name)
            shutil.rmtree(trash, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_trainer_state(ckpt: Path) -> dict:
    try:
        return json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise XllmError(f"{ckpt / STATE_FILE}: unreadable checkpoint state ({e})") from None


def load_checkpoint(ckpt: Path, rank: int = 0, map_location="cpu") -> tuple[dict, dict, dict, dict | None]:
    """(model weights, optimizer state, trainer state, this rank's RNG state or None)."""
    ckpt = Path(ckpt)
    model_state = load_weights(ckpt / MODEL_FILE)
    try:
        optim = torch.load(ckpt / OPTIM_FILE, map_location=map_location, weights_only=True)
        rng = torch.load(ckpt / RNG_FILE, map_location="cpu", weights_only=True)["ranks"]
    except Exception as e:
        raise XllmError(f"{ckpt}: cannot read the optimizer/RNG state ({e})") from None
    rank_rng = rng[rank] if rank < len(rng) else None
    return model_state, optim, read_trainer_state(ckpt), rank_rng


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
