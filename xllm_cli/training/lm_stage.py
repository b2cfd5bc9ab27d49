"""X-LLM stage 0: a tiny causal LM trained on text, written to ``EXP/stage0/llm``.

The LM gets a character tokenizer over the stage's train and dev text, a random init from
``model.llm_init`` and the stage-0 objective of :mod:`xllm_cli.models.stage0` (plain LM
plus the copy formats the frozen LM needs in stages 2/3). The best checkpoint is exported
as an ordinary HF directory (model + tokenizer) that later stages load by path.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from ..config.schema import Recipe, TrainOptions
from ..console import log
from ..errors import XllmError
from ..fsutil import apply_umask
from . import checkpoint as ck
from .distributed import DistInfo
from .stage_data import StageRequest, batch_options, data_list, stage_data
from .trainer import Trainer, TrainState


def _read_texts(dirs: list[Path]) -> list[tuple[str, str]]:
    from ..data.tables import read_table

    items = []
    for d in dirs:
        path = d / "text"
        if not path.is_file():
            raise XllmError(f"{path}: text file not found (stage 0 trains on the text of each data dir)")
        items += sorted(read_table(path).items())
    return items


def _export_hf(model, out_dir: Path) -> None:
    """The stage-0 model directory: the bare LM and its tokenizer (no objective wrapper)."""
    model.llm.save_pretrained(str(out_dir))
    model.tokenizer.save_pretrained(str(out_dir))


def _copy_dir_atomic(src: Path, dst: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    apply_umask(tmp)  # copytree copied best/'s mode (mkdtemp's 0700 in older runs): the umask's mode
    if dst.exists():
        ck.remove_checkpoint(dst)
    tmp.rename(dst)


def run_stage0(recipe: Recipe, req: StageRequest, dist: DistInfo, opts: TrainOptions) -> TrainState:
    """Train the LM; rank 0 copies the best export to ``EXP/stage0/llm``."""
    from transformers import AutoModelForCausalLM

    from ..models.stage0 import Stage0Objective
    from ..models.tiny_llm import tiny_llm_config
    from ..models.tokenizer import build_char_tokenizer
    from .sources import ListSource, ShardedBatches

    init_cfg = recipe.model.llm_init
    if init_cfg is None:
        raise XllmError("recipe: stage 0 trains a tiny LM and needs model.llm_init (sizes); "
                        "with a pretrained LLM (model.llm.path) skip stage 0")
    data = stage_data(recipe, req)
    train_items = _read_texts(data_list(recipe, data.train))
    dev_items = _read_texts(data_list(recipe, data.dev))
    if not train_items:
        raise XllmError("recipe: stage0.data.train has no text")
    tok = build_char_tokenizer([t for _, t in train_items] + [t for _, t in dev_items])
    torch.manual_seed(opts.seed)
    llm = AutoModelForCausalLM.from_config(tiny_llm_config(init_cfg, tok))
    llm.generation_config.pad_token_id = tok.pad_token_id
    llm.generation_config.eos_token_id = tok.eos_token_id
    llm.generation_config.bos_token_id = tok.bos_token_id
    model = Stage0Objective(llm, tok, recipe.model)

    def collate(items):
        from ..data.batch import Batch

        return Batch(utt_ids=[u for u, _ in items], texts=[t for _, t in items])

    bs = batch_options(recipe, 0).batch_size
    train = ShardedBatches(train_items, bs, collate, opts.seed, dist.rank, dist.world_size)
    source = ListSource(train, dev_items, collate, bs, 0, dist.rank, dist.world_size)
    sdir = ck.stage_dir(req.exp, 0)
    state = Trainer(model, source, opts, sdir, 0, dist, export_fn=_export_hf, resume=req.resume).fit()
    if dist.is_main:
        _copy_dir_atomic(sdir / "best", sdir / "llm")
        log.info("stage 0: language model + tokenizer in %s", sdir / "llm")
    return state
