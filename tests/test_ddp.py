"""DDP on CPU (gloo): two processes under torchrun train the toy model in step.

Every rank must end with the same weights (gradients were all-reduced), each rank
must have seen different batches (the sampler splits the data), and only rank 0
writes checkpoints and logs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

from xllm_cli.training import checkpoint as ck
from toy_family import toy_env

WORKER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from safetensors.torch import save_file
    from xllm_cli.training.distributed import init_distributed, cleanup
    from toy_family import ToyModelConfig, build_toy
    from xllm_cli.training.trainer import TrainOptions, Trainer

    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    dist = init_distributed("cpu")
    torch.manual_seed(dist.rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model, source = build_toy(ToyModelConfig(dim=6, toy_utts=32, toy_dev_utts=8), 4, 0, 0, dist.rank, dist.world_size)
    seen = [u for b in source.train_batches(0, 0) for u in b.utt_ids]
    opts = TrainOptions(epochs=2, lr=0.02, valid_interval=3, log_interval=2)
    state = Trainer(model, source, opts, out / "stage1", 1, dist).fit()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{dist.rank}.safetensors"))
    (out / f"rank{dist.rank}.utts").write_text("\\n".join(seen))
    (out / f"rank{dist.rank}.steps").write_text(str(state.step))
    cleanup()
    """
)


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = toy_env()
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args],
        capture_output=True, text=True, env=env, timeout=180, cwd=cwd,
    )


def test_two_gloo_ranks_end_identical_and_rank0_writes(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    proc = torchrun([str(tmp_path / "worker.py"), str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = load_file(str(tmp_path / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "rank1.safetensors"))
    for k in r0:
        if k != "seen":  # the buffer counts each rank's own utterances
            assert torch.equal(r0[k], r1[k]), k
    u0 = (tmp_path / "rank0.utts").read_text().split()
    u1 = (tmp_path / "rank1.utts").read_text().split()
    assert u0 and u1 and not set(u0) & set(u1)  # each rank its own share
    assert (tmp_path / "rank0.steps").read_text() == (tmp_path / "rank1.steps").read_text() == "8"
    ckpt = ck.latest_checkpoint(tmp_path / "stage1")
    assert ckpt is not None and ckpt.name == "step_8"
    # rank 0 wrote it, with both ranks' RNG states, and it holds the shared weights
    saved = load_file(str(ckpt / "model.safetensors"))
    assert torch.equal(saved["net.0.weight"], r0["net.0.weight"])
    _, _, _, rng1 = ck.load_checkpoint(ckpt, rank=1)
    assert rng1 is not None


def test_cli_ngpu_relaunches_under_torchrun(tmp_path):
    (tmp_path / "toy.yaml").write_text(
        "model: {type: toy, dim: 4, toy_utts: 16, toy_dev_utts: 4}\n"
        "stage1: {epochs: 1, lr: 0.01, log_interval: 1, batch: {batch_size: 2}}\n"
    )
    env = toy_env()
    proc = subprocess.run(
        [sys.executable, "-m", "xllm_cli", "train", "--stage", "1", "--config", "toy.yaml", "--exp", "exp",
         "--device", "cpu", "--ngpu", "2"],
        capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sdir = tmp_path / "exp" / "stage1"
    assert ck.latest_checkpoint(sdir).name == "step_4"  # 16 utts / 2 per batch / 2 ranks
    assert (sdir / "DONE").is_file() and (sdir / "best" / "model.safetensors").is_file()
    log = (sdir / "train.log").read_text()
    assert "x2" in log  # rank 0 logged the world size
