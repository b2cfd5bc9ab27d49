"""Distributed data-parallel set-up: torchrun environment, process group, helpers.

``xllm train --ngpu N`` re-launches itself under ``torch.distributed.run`` (torchrun)
with N processes per node; each process reads RANK/WORLD_SIZE/LOCAL_RANK from the
environment torchrun sets. CUDA uses NCCL, CPU uses gloo. Multi-node training goes
through torchrun's c10d rendezvous; run the same command on every node with

    XLLM_NNODES=2 XLLM_RDZV=node0.example:29400 XLLM_RDZV_ID=job42 \\
        xllm train --stage 2 --config conf/train.yaml --exp exp/x --ngpu 8 --device cuda

(or call torchrun yourself: ``torchrun --nnodes 2 --nproc-per-node 8
--rdzv-backend c10d --rdzv-endpoint node0:29400 --rdzv-id job42 -m xllm_cli train ...``).
Checkpoints are written by rank 0; every rank reads them on resume, so the
experiment directory must be on a file system all nodes share.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..console import log
from ..errors import XllmError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init_distributed(device: str = "auto") -> DistInfo:
    """Pick the device and, under torchrun with WORLD_SIZE > 1, join the process group."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise XllmError(f"--device {device}: choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise XllmError("--device cuda: no CUDA device is visible (check CUDA_VISIBLE_DEVICES or use --device cpu)")
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        dev = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device("cpu")
        return DistInfo(device=dev)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        dev = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few floats over ranks (validation totals, stop flags)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_ranks_true(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` holds on every rank (e.g. every rank still has a batch)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` on rank 0 (a list ordered by rank); ``[]`` elsewhere."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out if info.is_main else []


def torchrun_command(argv: list[str], nproc: int) -> list[str]:
    """The argument list that re-runs ``xllm`` ``argv`` under torchrun with ``nproc`` per node.

    Multi-node: XLLM_NNODES, XLLM_RDZV (host:port of the rendezvous), XLLM_RDZV_ID.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    nnodes = os.environ.get("XLLM_NNODES", "1")
    if nnodes != "1":
        endpoint = os.environ.get("XLLM_RDZV")
        if not endpoint:
            raise XllmError("XLLM_NNODES > 1 needs XLLM_RDZV=host:port of the rendezvous (the first node)")
        cmd += ["--nnodes", nnodes, "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                "--rdzv-id", os.environ.get("XLLM_RDZV_ID", "xllm")]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", "xllm_cli", *argv]


def relaunch_under_torchrun(argv: list[str], nproc: int) -> int:
    """Run ``xllm argv`` as ``nproc`` DDP processes; returns torchrun's exit code."""
    import subprocess

    cmd = torchrun_command(argv, nproc)
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.call(cmd, env=env)
