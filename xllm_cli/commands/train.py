"""``xllm train``: one training stage of a recipe into an experiment directory."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


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
) -> None:
    """Train one stage of a recipe; resumes after a kill, does nothing when the stage is done.

    Writes EXP/stageN/{config.yaml, train.log, tensorboard/, checkpoints/, best/} (stage 0
    also EXP/stage0/llm). Under torchrun (or with --ngpu N) every process trains its share
    of each batch (DDP; NCCL on GPU, gloo on CPU); rank 0 logs and writes checkpoints.
    Multi-node: XLLM_NNODES=2 XLLM_RDZV=host:29400 xllm train ... --ngpu 8 on each node.

    Example: xllm train --stage 1 --config recipes/tiny.yaml --exp exp/tiny --set stage1.epochs=2
    """
    from ..config import load_recipe
    from ..training.distributed import relaunch_under_torchrun, under_torchrun

    cfg = load_recipe(config, overrides or [])  # errors show before any process starts
    if ngpu > 1 and not under_torchrun():
        argv = ["train", "--stage", str(stage), "--config", str(config), "--exp", str(exp),
                "--modality", modality, "--resume" if resume else "--no-resume", "--device", device]
        for o in overrides or []:
            argv += ["--set", o]
        for name, value in (("--seed", seed), ("--max-steps", max_steps), ("--threads", threads)):
            if value is not None:
                argv += [name, str(value)]
        code = relaunch_under_torchrun(argv, ngpu)
        if code != 0:
            raise typer.Exit(code)
        return

    import torch

    from ..training.distributed import cleanup, init_distributed
    from ..training.stage_data import StageRequest
    from ..training.stages import run_stage

    if threads:
        torch.set_num_threads(threads)
    dist = init_distributed(device)
    try:
        run_stage(cfg, StageRequest(stage, exp, modality, resume, seed, max_steps), dist)
    finally:
        cleanup()

