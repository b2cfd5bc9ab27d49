"""``xllm train``: one training stage of a recipe into an experiment directory."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._options import trust_remote_code_option

# Set by the process that launches torchrun, which holds the stage lock for its workers.
STAGE_LOCKED_ENV = "XLLM_STAGE_LOCKED"


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    stage: int = typer.Option(..., "--stage", help="0: LM on text, 1: C-Former/Q-Former, 2: align with the LLM, 3: joint."),
    config: Path = typer.Option(..., "--config", "-c", help="Recipe YAML (e.g. recipes/tiny.yaml)."),
    exp: Path = typer.Option(..., "--exp", help="Experiment directory (EXP/stageN/ is written)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a recipe key: --set stage1.lr=3e-4 (repeatable)."),
    modality: str = typer.Option("speech", "--modality", help="Stage 2: which interface to align (speech, image, video)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the latest checkpoint (default) or start the stage over."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto (cuda when available)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: the recipe's stageN.seed or seed, else 0)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
    ngpu: int = typer.Option(1, "--ngpu", help="Processes (GPUs) per node; > 1 re-launches under torchrun (DDP)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    trust_remote_code: bool = trust_remote_code_option(),
) -> None:
    """Train one stage of a recipe; resumes after a kill, does nothing when the stage is done.

    Writes EXP/stageN/{config.yaml, train.log, tensorboard/, checkpoints/, best/} (stage 0
    also EXP/stage0/llm). Under torchrun (or with --ngpu N) every process trains its share
    of each batch (DDP; NCCL on GPU, gloo on CPU); rank 0 logs and writes checkpoints.
    Multi-node: XLLM_NNODES=2 XLLM_RDZV=host:29400 xllm train ... --ngpu 8 on each node.
    One run per stage at a time (EXP/stageN/.lock); resuming under a changed recipe is
    refused (--no-resume starts the stage again).

    Example: xllm train --stage 1 --config recipes/tiny.yaml --exp exp/tiny --set stage1.epochs=2
    """
    import os

    from ..config import load_recipe
    from ..config.schema import parse_recipe
    from ..locks import exclusive
    from ..training.checkpoint import stage_dir
    from ..training.distributed import relaunch_under_torchrun, under_torchrun
    from ..training.stage_data import StageRequest
    from ..training.stages import check_request
    from ..trust import allow_remote_code

    allow_remote_code(trust_remote_code)
    # Parsed (unknown keys, wrong types) before any work or any process starts.
    recipe = parse_recipe(load_recipe(config, overrides or []), source=str(config))
    req = StageRequest(stage, exp, modality, resume, seed, max_steps)
    check_request(recipe, req)
    sdir = stage_dir(exp, stage, modality)
    if ngpu > 1 and not under_torchrun():
        argv = ["train", "--stage", str(stage), "--config", str(config), "--exp", str(exp),
                "--modality", modality, "--resume" if resume else "--no-resume", "--device", device]
        for o in overrides or []:
            argv += ["--set", o]
        for name, value in (("--seed", seed), ("--max-steps", max_steps), ("--threads", threads)):
            if value is not None:
                argv += [name, str(value)]
        if trust_remote_code:
            argv.append("--trust-remote-code")
        with exclusive(sdir, f"stage {stage}"):  # held for the workers, which skip it
            os.environ[STAGE_LOCKED_ENV] = "1"
            try:
                code = relaunch_under_torchrun(argv, ngpu)
            finally:
                os.environ.pop(STAGE_LOCKED_ENV, None)
        if code != 0:
            raise typer.Exit(code)
        return

    from contextlib import nullcontext

    import torch

    from ..training.distributed import cleanup, init_distributed
    from ..training.stages import run_stage

    if threads:
        torch.set_num_threads(threads)
    # Single process: this one locks. Under torchrun: the launcher did, or (torchrun started
    # by hand) rank 0 does; other ranks never take it, so they cannot block each other.
    rank0 = os.environ.get("RANK", "0") == "0"
    lock = exclusive(sdir, f"stage {stage}") if rank0 and not os.environ.get(STAGE_LOCKED_ENV) else nullcontext()
    with lock:
        dist = init_distributed(device)
        try:
            run_stage(recipe, req, dist)
        finally:
            cleanup()
