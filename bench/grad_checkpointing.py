#!/usr/bin/env python
"""Peak activation memory of one stage-2 step (frozen LLM) with and without gradient checkpointing.

The model is the tiny preset's X-LLM with a larger random LLM (``--hidden 512 --layers 8``
by default) so that the LLM's activations dominate; stage 2 on speech (frozen Conformer and
LLM; trained: C-Former + speech adapter), ``--batch`` utterances whose answers are
``--chars`` characters long. Both settings run the same step (same weights, same batch) in
one process, each ``--repeat`` times, interleaved.

Measured per setting, on CPU:

- peak: the highest total of CPU allocations during forward + backward, above what was
  allocated before the step, from torch.profiler's memory events (``profile_memory=True``;
  every allocation and free of torch's CPU allocator, in time order). This is the reliable
  figure: it counts everything, including the layer inputs that checkpointing keeps and the
  activations it recomputes one layer at a time in backward.
- saved: bytes of the tensors autograd saves for backward outside checkpointed regions
  (``torch.autograd.graph.saved_tensors_hooks``, unique storages); a cross-check of where
  the drop comes from, not a total.
- layer fwd: forward calls of the LLM's decoder layers per step (layers x 2 when checkpointing).

Times are not printed: under the profiler (and on a shared 2-core machine) they mean little.

    python bench/grad_checkpointing.py [--hidden 512] [--layers 8] [--batch 4] [--chars 200]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import os
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xllm_cli.config.schema import LLMInitConfig, parse_model  # noqa: E402
from xllm_cli.data.batch import Batch  # noqa: E402
from xllm_cli.models.step_probe import probe_step  # noqa: E402
from xllm_cli.models.tiny_llm import create_tiny_llm  # noqa: E402
from xllm_cli.models.xllm import XLLM  # noqa: E402
from xllm_cli.training.xllm_family import XLLM_FAMILY  # noqa: E402

CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面"


def build(llm_dir: Path, checkpointing: bool) -> XLLM:
    section = yaml.safe_load((ROOT / "recipes/model/tiny.yaml").read_text(encoding="utf-8"))["model"]
    section.update(gradient_checkpointing=checkpointing, vision_encoder=None)
    section["llm"]["path"] = str(llm_dir)
    torch.manual_seed(0)
    model = XLLM.from_config(parse_model(section))
    XLLM_FAMILY.configure_stage(model, 2, "speech")
    return model.train()


def peak_bytes(prof) -> int:
    """Highest running total of the profiler's [memory] events (allocations +, frees -), in time order."""
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    return max(itertools.accumulate(b for _, b in events), default=0)


def step(model: XLLM, batch: Batch) -> dict:
    from torch.profiler import ProfilerActivity, profile

    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout masks in the trained C-Former for both settings
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        # transformers checkpoints a layer's forward (inside its hooks): the probe counts attention calls
        p = probe_step(model, list(model.llm.base_model.layers), lambda: model(batch, 2).loss)
    return {"peak": peak_bytes(prof), "saved": p.saved_bytes, "calls": p.layer_calls, "loss": p.loss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--chars", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    texts = ["".join(CHARS[int(i)] for i in torch.randint(len(CHARS), (args.chars,), generator=g))
             for _ in range(args.batch)]
    frames = args.chars * 4 * 4  # ~4 encoder frames per token after x4 subsampling
    batch = Batch(utt_ids=[f"u{i}" for i in range(args.batch)], feats=torch.randn(args.batch, frames, 80, generator=g),
                  feat_lens=torch.full((args.batch,), frames), texts=texts)
    with tempfile.TemporaryDirectory() as tmp:
        init = LLMInitConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=8, num_kv_heads=2,
                             intermediate_size=3 * args.hidden, max_position_embeddings=4096)
        create_tiny_llm(init, [CHARS], Path(tmp) / "llm")
        models = {False: build(Path(tmp) / "llm", False), True: build(Path(tmp) / "llm", True)}
        results: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.repeat):
            for on in (False, True):
                results[on].append(step(models[on], batch))
    print(f"load {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}; "
          f"LLM hidden {args.hidden} x {args.layers} layers; "
          f"batch {args.batch} x {args.chars} answer chars")
    print(f"{'checkpointing':>13} {'peak MiB':>9} {'saved MiB':>10} {'layer fwd':>9} {'loss':>10}")
    for on in (False, True):
        r = results[on]
        print(f"{'on' if on else 'off':>13} {min(x['peak'] for x in r) / 2**20:9.1f} {r[0]['saved'] / 2**20:10.1f} "
              f"{r[0]['calls']:9d} {r[0]['loss']:10.6f}")
    off, on = (min(x["peak"] for x in results[k]) for k in (False, True))
    print(f"peak ratio on/off: {on / off:.2f}")


if __name__ == "__main__":
    main()
