"""What each training stage builds: model, data, decoder for validation, exports.

``run_stage(cfg, stage, exp, ...)`` is what ``xllm train`` calls (once per DDP
process). Stage 0 trains a tiny causal LM on text and writes ``EXP/stage0/llm``;
stages 1-3 build the X-LLM model, start from the previous stage's final model,
mark what trains (``configure_stage``) and run the shared :class:`Trainer`.

Recipe keys used here (besides the trainer options of ``stageN:``)::

    data:
      dir: data                  # data directory names below are relative to this
      batch: {...}               # data-pipeline options shared by all stages
    stageN:
      data:
        train: [train, lm_text]  # data dirs mixed for training (names or paths)
        dev: dev                 # dev set(s) for the validation loss / CER
        image_train: [train_img] # stage 1 only: image data for the Q-Former
        image: {train: [...], dev: ...}   # stage 2 only: per-modality data
      batch: {...}               # per-stage data-pipeline overrides
      train_modules: [...]       # stage 3: which modules train (default: adapters)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import deep_merge, get, save_config
from ..console import log
from ..errors import XllmError
from . import checkpoint as ck
from .distributed import DistInfo, barrier
from .trainer import TrainOptions, Trainer

# Keys of a ``stageN:`` section that are not trainer options.
STAGE_KEYS = ("data", "batch", "train_modules", "modalities")
STAGE2_MODALITIES = ("speech", "image", "video")


@dataclass
class StageRequest:
    """What the user asked for on the command line."""

    stage: int
    exp: Path
    modality: str = "speech"
    resume: bool = True
    seed: int | None = None
    max_steps: int | None = None


# ---------------------------------------------------------------- config helpers

def stage_section(cfg: dict, stage: int) -> dict:
    section = cfg.get(f"stage{stage}")
    if section is None:
        raise XllmError(f"recipe: no stage{stage}: section (needed for xllm train --stage {stage})")
    if not isinstance(section, dict):
        raise XllmError(f"recipe: stage{stage}: must be a mapping of options")
    return section


def train_options(cfg: dict, req: StageRequest) -> TrainOptions:
    section = {k: v for k, v in stage_section(cfg, req.stage).items() if k not in STAGE_KEYS}
    section.setdefault("seed", cfg.get("seed", 0))
    if req.seed is not None:
        section["seed"] = req.seed
    if req.max_steps is not None:
        section["max_steps"] = req.max_steps
    return TrainOptions.from_dict(section, f"recipe: stage{req.stage}")


def data_path(cfg: dict, name: str) -> Path:
    """A data directory named in a stage section: relative names start at ``data.dir``."""
    p = Path(name)
    if p.is_absolute():
        return p
    base = get(cfg, "data.dir")
    return Path(base) / p if base else p


def data_list(cfg: dict, value, what: str) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise XllmError(f"recipe: {what}: expected a data directory name or a list of them")
    return [data_path(cfg, v) for v in value]


def stage_data(cfg: dict, req: StageRequest) -> dict:
    """The stage's ``data:`` section, with stage 2's per-modality part merged in."""
    data = dict(stage_section(cfg, req.stage).get("data") or {})
    if req.stage == 2:
        per_mod = data.pop(req.modality, None)
        for m in STAGE2_MODALITIES:
            data.pop(m, None)
        if per_mod:
            data.update(per_mod)
        elif req.modality != "speech":
            raise XllmError(f"recipe: stage2.data.{req.modality}: no data for --modality {req.modality}")
    return data


def batch_options(cfg: dict, stage: int) -> dict:
    return deep_merge(get(cfg, "data.batch", {}) or {}, stage_section(cfg, stage).get("batch") or {})


def resolve_model_config(cfg: dict, exp: Path) -> dict:
    """The model section with ``llm.path: null`` pointing at the stage-0 LM of this experiment."""
    model_cfg = dict(cfg.get("model") or {})
    llm = dict(model_cfg.get("llm") or {})
    if model_cfg.get("type", "xllm") != "toy" and not llm.get("path"):
        llm["path"] = str(ck.stage_model_dir(exp, 0).resolve())
        model_cfg["llm"] = llm
    return model_cfg


def init_model_dir(exp: Path, stage: int, modality: str) -> Path | None:
    """The model a stage starts from (None for stage 0 and 1: fresh interfaces)."""
    if stage <= 1:
        return None
    if stage == 2:
        order = STAGE2_MODALITIES[: STAGE2_MODALITIES.index(modality)]
        # image/video alignment continues from the latest earlier modality's stage 2, else stage 1
        for m in reversed(order):
            d = ck.stage_model_dir(exp, 2, m)
            if (d / ck.MODEL_FILE).is_file():
                return d
        return ck.stage_model_dir(exp, 1)
    for m in reversed(STAGE2_MODALITIES):  # stage 3: the last modality aligned in stage 2
        d = ck.stage_model_dir(exp, 2, m)
        if (d / ck.MODEL_FILE).is_file():
            return d
    return ck.stage_model_dir(exp, 2)


# ---------------------------------------------------------------- stage bookkeeping

def is_done(sdir: Path) -> bool:
    return (sdir / ck.DONE_FILE).is_file()


def mark_done(sdir: Path, state) -> None:
    from ..fsutil import atomic_write_text

    summary = {"step": state.step, "best": state.best[:5], "valid": state.valid}
    atomic_write_text(sdir / ck.DONE_FILE, json.dumps(summary, indent=1) + "\n")


def clear_stage(sdir: Path) -> None:
    """--no-resume: remove what a previous run of this stage left (keeps train.log)."""
    for name in ("checkpoints", "best", "averaged", "tensorboard", "llm", ck.DONE_FILE):
        p = sdir / name
        if p.is_dir():
            ck.remove_checkpoint(p)
        elif p.exists():
            p.unlink()


# ---------------------------------------------------------------- stage 0: the LM

class CausalLMObjective(torch.nn.Module):
    """Wraps an HF causal LM so that ``forward(batch, stage)`` gives the next-char loss on ``batch.texts``."""

    def __init__(self, llm, tokenizer) -> None:
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer

    def gradient_checkpointing_enable(self, **kwargs):
        return self.llm.gradient_checkpointing_enable(**kwargs)

    def forward(self, batch, stage: int = 0):
        tok = self.tokenizer
        seqs = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                for t in batch.texts]
        n = max(len(s) for s in seqs)
        device = next(self.llm.parameters()).device
        ids = torch.full((len(seqs), n), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):  # right padding: positions stay 0..len-1
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        ids, mask = ids.to(device), mask.to(device)
        labels = ids.masked_fill(mask == 0, -100)
        out = self.llm(input_ids=ids, attention_mask=mask, labels=labels)
        return _Out(out.loss, {"ppl": float(torch.exp(out.loss.detach().float().clamp(max=20)))})


@dataclass
class _Out:
    loss: torch.Tensor
    logs: dict


def _read_texts(dirs: list[Path]) -> list[tuple[str, str]]:
    from ..data.tables import read_table

    items = []
    for d in dirs:
        path = d / "text"
        if not path.is_file():
            raise XllmError(f"{path}: text file not found (stage 0 trains on the text of each data dir)")
        items += sorted(read_table(path).items())
    return items


def _export_hf(model: CausalLMObjective, out_dir: Path) -> None:
    model.llm.save_pretrained(str(out_dir))
    model.tokenizer.save_pretrained(str(out_dir))


def _copy_dir_atomic(src: Path, dst: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    if dst.exists():
        ck.remove_checkpoint(dst)
    tmp.rename(dst)


def run_stage0(cfg: dict, req: StageRequest, dist: DistInfo, opts: TrainOptions) -> object:
    from transformers import AutoModelForCausalLM

    from ..models.tiny_llm import tiny_llm_config
    from ..models.tokenizer import build_char_tokenizer
    from .sources import ListSource, ShardedBatches

    init_cfg = get(cfg, "model.llm_init")
    if not init_cfg:
        raise XllmError("recipe: stage 0 trains a tiny LM and needs model.llm_init (sizes); "
                        "with a pretrained LLM (model.llm.path) skip stage 0")
    data = stage_data(cfg, req)
    train_items = _read_texts(data_list(cfg, data.get("train"), "stage0.data.train"))
    dev_items = _read_texts(data_list(cfg, data.get("dev"), "stage0.data.dev"))
    if not train_items:
        raise XllmError("recipe: stage0.data.train has no text")
    tok = build_char_tokenizer([t for _, t in train_items] + [t for _, t in dev_items])
    torch.manual_seed(opts.seed)
    llm = AutoModelForCausalLM.from_config(tiny_llm_config(init_cfg, tok))
    llm.generation_config.pad_token_id = tok.pad_token_id
    llm.generation_config.eos_token_id = tok.eos_token_id
    llm.generation_config.bos_token_id = tok.bos_token_id
    try:  # the models' stage-0 objective also teaches the frozen LM to copy a slot (needed in stages 2/3)
        from ..models.stage0 import Stage0Objective

        model = Stage0Objective(llm, tok, cfg.get("model") or {})
    except ImportError:
        model = CausalLMObjective(llm, tok)

    def collate(items):
        from ..data.batch import Batch

        return Batch(utt_ids=[u for u, _ in items], texts=[t for _, t in items])

    bs = int(batch_options(cfg, 0).get("batch_size", 32))
    train = ShardedBatches(train_items, bs, collate, opts.seed, dist.rank, dist.world_size)
    source = ListSource(train, dev_items, collate, bs, 0, dist.rank, dist.world_size)
    sdir = ck.stage_dir(req.exp, 0)
    state = Trainer(model, source, opts, sdir, 0, dist, export_fn=_export_hf, resume=req.resume).fit()
    if dist.is_main:
        _copy_dir_atomic(sdir / "best", sdir / "llm")
        log.info("stage 0: language model + tokenizer in %s", sdir / "llm")
    return state


# ---------------------------------------------------------------- toy (tests of the machinery)

def run_toy(cfg: dict, req: StageRequest, dist: DistInfo, opts: TrainOptions) -> object:
    from .toy import build_toy, save_toy

    model_cfg = cfg["model"]
    bs = int(batch_options(cfg, req.stage).get("batch_size", 4))
    torch.manual_seed(opts.seed)
    model, source = build_toy(model_cfg, cfg.get("data") or {}, bs, opts.seed, opts.cer_utts, dist.rank,
                              dist.world_size)
    init = init_model_dir(req.exp, req.stage, req.modality) if req.stage >= 2 else None
    if init is not None and (init / ck.MODEL_FILE).is_file():
        ck.load_into(model, ck.load_weights(init / ck.MODEL_FILE), init / ck.MODEL_FILE)
    sdir = ck.stage_dir(req.exp, req.stage, req.modality)
    return Trainer(model, source, opts, sdir, req.stage, dist,
                   decode_fn=lambda m, b: m.decode(b),
                   export_fn=lambda m, d: save_toy(m, model_cfg, d), resume=req.resume).fit()


# ---------------------------------------------------------------- entry point

def run_stage(cfg: dict, req: StageRequest, dist: DistInfo) -> bool:
    """Train one stage; False when it was already done. Rank 0 writes config, logs and outputs."""
    from ..console import setup_logging

    if req.stage not in (0, 1, 2, 3):
        raise XllmError(f"--stage {req.stage}: stages are 0 (LM), 1 (interfaces), 2 (align), 3 (joint)")
    if req.modality not in STAGE2_MODALITIES:
        raise XllmError(f"--modality {req.modality}: choose speech, image or video")
    if req.modality != "speech" and req.stage != 2:
        raise XllmError(f"--modality {req.modality} applies to stage 2 only")
    sdir = ck.stage_dir(req.exp, req.stage, req.modality)
    if dist.is_main:
        sdir.mkdir(parents=True, exist_ok=True)
        setup_logging(sdir / "train.log")
    if is_done(sdir) and req.resume:
        if dist.is_main:
            log.info("stage %d is already done (%s); rerun with --no-resume to train it again", req.stage,
                     sdir / ck.DONE_FILE)
        return False
    opts = train_options(cfg, req)
    if dist.is_main:
        if not req.resume:
            clear_stage(sdir)
        resolved = dict(cfg)
        resolved["model"] = resolve_model_config(cfg, req.exp)
        save_config(resolved, sdir / "config.yaml")
    barrier(dist)
    model_type = get(cfg, "model.type", "xllm")
    if model_type == "toy":
        state = run_toy(cfg, req, dist, opts)
    elif req.stage == 0:
        state = run_stage0(cfg, req, dist, opts)
    else:
        from .xllm_stages import run_xllm_stage

        state = run_xllm_stage(cfg, req, dist, opts)
    if dist.is_main:
        mark_done(sdir, state)
        log.info("stage %d done: %s", req.stage, sdir)
    barrier(dist)
    return True
