#!/usr/bin/env python
"""Training throughput: dynamic (length-bucketed) batches vs fixed-size random batches.

Both strategies train the same model on the same utterances for one epoch with
the same average number of utterances per batch; the only difference is which
utterances share a batch. Printed per strategy: padding fraction (padded frames /
all frames), batches, mean batch size, utterances per second of forward +
backward + optimizer step, by wall clock and by process CPU time (steps of
the two strategies are interleaved so that a shared machine's changing load
hits both alike).

Features are computed once up front (outside the timed loop), so the figure
isolates what batching changes -- the padded compute -- from feature extraction,
which costs the same per utterance either way and runs in DataLoader workers in
real training.

Model: the real tiny X-LLM stage-1 model (recipes/model/tiny.yaml: Conformer
encoder + C-Former with CIF, CE + quantity + CTC losses) when ``xllm_cli.models``
imports; otherwise (or with ``--model conformer``) a tiny torchaudio Conformer
with a CTC head of the same size.

    python bench/train_throughput.py [DATA_DIR | --synthetic] [--max-utts 400] [--max-batch-seconds 60]

DATA_DIR defaults to .dev/mini_data/train, then egs/mini/data/train; when neither
exists (or with ``--synthetic``) a fake directory of tones with 1-12 s lengths
like read speech (AISHELL-1: 1-15 s) is synthesised.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xllm_cli.data.sampler import DynamicBatchSampler, padding_fraction  # noqa: E402
from xllm_cli.data.dataset import collate, load_utterances  # noqa: E402
from xllm_cli.data.features import FbankExtractor, compute_cmvn, load_wave  # noqa: E402

DEFAULT_DIRS = [ROOT / ".dev/mini_data/train", ROOT / "egs/mini/data/train"]


def synthesise(root: Path, n: int = 200, seed: int = 0) -> Path:
    """A data dir of noisy tone sequences, 1-12 s (gamma-shaped like read speech), fake Mandarin text."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    chars = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经"
    rows = {"wav.scp": [], "utt2spk": [], "text": [], "utt2dur": []}
    for i in range(n):
        dur = float(np.clip(rng.gamma(4.0, 1.2), 1.0, 12.0))
        t = np.arange(int(dur * 16000)) / 16000
        wave = 0.2 * np.sin(2 * math.pi * (150 + 20 * (i % 17)) * t * (1 + 0.1 * np.sin(3 * t))) + 0.01 * rng.standard_normal(t.size)
        utt = f"spk{i % 10:02d}-utt{i:04d}"
        path = root / f"{utt}.wav"
        sf.write(path, wave.astype("float32"), 16000)
        text = "".join(rng.choice(list(chars), size=max(1, int(dur * 3))))
        rows["wav.scp"].append(f"{utt} {path}")
        rows["utt2spk"].append(f"{utt} {utt.split('-')[0]}")
        rows["text"].append(f"{utt} {text}")
        rows["utt2dur"].append(f"{utt} {dur:.4f}")
    for name, lines in rows.items():
        (root / name).write_text("".join(sorted(line + "\n" for line in lines)), encoding="utf-8")
    return root


# ------------------------------------------------------------------- models
class TinyConformerCTC(torch.nn.Module):
    """Fallback model: conv subsampling x4 + torchaudio Conformer + CTC over characters."""

    def __init__(self, vocab: int, dim: int = 144, layers: int = 4):
        super().__init__()
        from torchaudio.models import Conformer

        self.sub = torch.nn.Sequential(
            torch.nn.Conv2d(1, dim, 3, 2), torch.nn.ReLU(), torch.nn.Conv2d(dim, dim, 3, 2), torch.nn.ReLU()
        )
        self.proj = torch.nn.Linear(dim * 19, dim)
        self.encoder = Conformer(dim, 4, dim * 4, layers, 15, dropout=0.1)
        self.head = torch.nn.Linear(dim, vocab + 1)
        self.vocab: dict[str, int] = {}

    def forward(self, batch):
        x = self.sub(batch.feats.unsqueeze(1))  # (B, C, T', F')
        x = self.proj(x.permute(0, 2, 1, 3).flatten(2))
        lens = ((batch.feat_lens - 1) // 2 - 1) // 2
        lens = lens.clamp(min=1, max=x.shape[1])
        h, lens = self.encoder(x, lens)
        logp = self.head(h).log_softmax(-1).transpose(0, 1)
        targets = [torch.tensor([self.vocab.get(c, 1) for c in t] or [1]) for t in batch.texts]
        tl = torch.tensor([t.numel() for t in targets])
        return torch.nn.functional.ctc_loss(logp, torch.cat(targets), lens, tl, zero_infinity=True)


def build_model(kind: str, texts: list[str], workdir: Path):
    """(name, model, loss_fn(batch) -> scalar)."""
    if kind in ("auto", "xllm"):
        try:
            from dataclasses import replace

            from xllm_cli.config.saved import read_config
            from xllm_cli.config.schema import parse_model
            from xllm_cli.models.tiny_llm import create_tiny_llm
            from xllm_cli.models.xllm import XLLM
            from xllm_cli.training.xllm_family import XLLM_FAMILY

            cfg = parse_model(read_config(ROOT / "recipes/model/tiny.yaml")["model"])
            create_tiny_llm(cfg.llm_init, texts, workdir / "llm")
            cfg = replace(cfg, llm=replace(cfg.llm, path=str(workdir / "llm")))
            model = XLLM.from_config(cfg)
            XLLM_FAMILY.configure_stage(model, 1, "speech")
            model.train()
            return "tiny X-LLM stage 1 (Conformer + C-Former/CIF)", model, lambda b: model(b, 1).loss
        except Exception as e:  # the models package is optional for this benchmark
            if kind == "xllm":
                raise
            print(f"(tiny X-LLM unavailable: {type(e).__name__}: {e}; using the torchaudio Conformer)", file=sys.stderr)
    vocab = sorted({c for t in texts for c in t})
    model = TinyConformerCTC(len(vocab) + 1)
    model.vocab = {c: i + 1 for i, c in enumerate(vocab)}
    model.train()
    return "tiny Conformer + CTC (torchaudio)", model, model


# -------------------------------------------------------------------- bench
def train_step(model, loss_fn, opt, batch) -> None:
    loss = loss_fn(batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def run_interleaved(model, loss_fn, strategies: list[list[list[int]]], items: list[dict]) -> list[tuple[float, float, int]]:
    """One epoch of every strategy, steps interleaved (A1 B1 B2 A2 A3 B3 ...).

    On a shared machine the load changes from minute to minute; interleaving
    exposes every strategy to the same conditions. Returns per strategy
    (wall seconds, process CPU seconds, utterances).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    totals = [[0.0, 0.0, 0] for _ in strategies]
    steps = max(len(s) for s in strategies)
    for i in range(steps):
        order = range(len(strategies)) if i % 2 == 0 else reversed(range(len(strategies)))
        for k in order:
            if i >= len(strategies[k]):
                continue
            b = strategies[k][i]
            batch = collate([items[j] for j in b])
            w, c = time.perf_counter(), time.process_time()
            train_step(model, loss_fn, opt, batch)
            totals[k][0] += time.perf_counter() - w
            totals[k][1] += time.process_time() - c
            totals[k][2] += len(b)
    return [tuple(t) for t in totals]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", help="training data dir (default: the mini corpus, else synthesised)")
    ap.add_argument("--synthetic", action="store_true", help="use a synthesised length-varied dir (1-12 s)")
    ap.add_argument("--max-utts", type=int, default=400, help="utterances used (evenly spread; 0 = all)")
    ap.add_argument("--max-batch-seconds", type=float, default=60.0)
    ap.add_argument("--pool-size", type=int, default=2000)
    ap.add_argument("--model", choices=["auto", "xllm", "conformer"], default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is then a stable measure)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (synthesised data, tiny LLM)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="xllm_bench_"))
    try:
        return bench(args, tmp)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def bench(args, tmp: Path) -> int:
    data = Path(args.data) if args.data else next((d for d in DEFAULT_DIRS if (d / "wav.scp").is_file()), None)
    if data is None or args.synthetic:
        data = synthesise(tmp / "fake_train")
        print(f"synthesised {data}", file=sys.stderr)
    utts = load_utterances(data)
    if args.max_utts and len(utts) > args.max_utts:
        step = len(utts) / args.max_utts
        utts = [utts[int(i * step)] for i in range(args.max_utts)]
    durs = np.array([u.duration for u in utts])

    extractor = FbankExtractor()
    compute_cmvn(utts, extractor, tmp / "cmvn.json", max_utts=200)
    extractor.load_cmvn(tmp / "cmvn.json")
    t0 = time.perf_counter()
    items = []
    for u in utts:
        wave = load_wave(u)
        items.append({"utt_id": u.utt_id, "feats": extractor(wave), "text": u.text or "", "prompt": u.prompt,
                      "duration": wave.numel() / 16000})
    feat_rate = len(items) / (time.perf_counter() - t0)
    frames = np.array([it["feats"].shape[0] for it in items], dtype=np.float64)

    dynamic = DynamicBatchSampler(frames, args.max_batch_seconds * 100, seed=args.seed, pool_size=args.pool_size).batches()
    size = max(1, int(round(len(items) / len(dynamic))))
    perm = np.random.default_rng(args.seed).permutation(len(items))
    random_batches = [perm[i : i + size].tolist() for i in range(0, len(items), size)]

    name, model, loss_fn = build_model(args.model, [it["text"] for it in items], tmp)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for b in random_batches[:2]:  # warm-up (allocator, kernels)
        train_step(model, loss_fn, opt, collate([items[j] for j in b]))
    labels = ("dynamic (bucketed by length)", "random, fixed size")
    strategies = (dynamic, random_batches)
    results = run_interleaved(model, loss_fn, list(strategies), items)
    rows = []
    for label, batches, (wall, cpu, n) in zip(labels, strategies, results):
        rows.append((label, padding_fraction(batches, frames), len(batches), n / len(batches), n / wall, n / cpu))

    print(f"data: {data} ({len(items)} utts, {durs.sum() / 3600:.2f} h, {durs.min():.1f}-{durs.max():.1f} s, mean {durs.mean():.1f} s)")
    print(f"model: {name}; torch threads {args.threads}; max_batch_seconds {args.max_batch_seconds:g}; "
          f"features (fbank+CMVN, untimed) {feat_rate:.1f} utt/s")
    print(f"| {'batching':30s} | {'padding':>8s} | {'batches':>7s} | {'utt/batch':>9s} | {'utt/s (wall)':>12s} | {'utt/s (CPU)':>11s} |")
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 9}|{'-' * 11}|{'-' * 14}|{'-' * 13}|")
    for label, pad, nb, avg, wall_rate, cpu_rate in rows:
        print(f"| {label:30s} | {pad:8.1%} | {nb:7d} | {avg:9.1f} | {wall_rate:12.2f} | {cpu_rate:11.2f} |")
    print(f"speed-up dynamic / random: {rows[0][4] / rows[1][4]:.2f}x (wall), {rows[0][5] / rows[1][5]:.2f}x (CPU time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
