"""The training loop shared by every stage.

It knows nothing about speech: it takes a model whose ``forward(batch, stage)``
returns an object with ``.loss`` (scalar tensor) and ``.logs`` (dict of floats), a
:class:`DataSource` that yields batches by (epoch, position), and the stage's
:class:`~xllm_cli.config.schema.TrainOptions` (typed and checked by the schema). It does
AdamW with warmup + cosine/Noam decay, gradient accumulation and clipping, bf16
autocast on GPU, DDP, periodic validation (loss and, given a decoder, greedy
CER), N-best checkpoint keeping, and exact resume: model, optimizer, schedule,
data position and RNG states are all in a checkpoint, so a run killed at any
moment and resumed ends with the same weights as one that was never stopped.
Checkpoint files and the resume state live in :mod:`.checkpoint`; the loop itself
(about 450 lines) stays in one class because its parts share the step state.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import torch

from ..config.schema import TrainOptions
from ..console import log, progress_bar
from ..errors import XllmError
from ..fsutil import apply_umask
from . import checkpoint as ck
from .checkpoint import TrainState
from .distributed import DistInfo, all_ranks_true, all_reduce_sum, barrier, gather_objects
from .schedule import Schedule

# Test hook: exit abruptly (no cleanup, like a kill) right after this optimizer step.
EXIT_AFTER_STEP_ENV = "XLLM_TEST_EXIT_AFTER_STEP"


class DataSource(Protocol):
    """Where the trainer gets its batches; positions make resuming exact."""

    def num_batches(self, epoch: int) -> int | None:
        """This rank's batches in ``epoch`` (None when unknown)."""

    def train_batches(self, epoch: int, start: int) -> Iterable:
        """This rank's batches of ``epoch``, skipping the first ``start`` (already trained)."""

    def valid_batches(self) -> Iterable:
        """This rank's share of the dev set (for the validation loss)."""

    def cer_batches(self) -> Iterable:
        """This rank's share of the dev subset to decode for CER (may be empty)."""


DecodeFn = Callable[[torch.nn.Module, object], list[str]]
ExportFn = Callable[[torch.nn.Module, Path], None]


def char_errors(refs: list[str], hyps: list[str]) -> tuple[int, int]:
    """(character errors, reference characters) over utterance pairs, spaces ignored (CER).

    The counting is ``xllm score``'s (:func:`xllm_cli.scoring.score_texts`, unit char) with
    nothing normalised but the spaces, so that the validation CER is the raw greedy output's.
    """
    from ..scoring import NormalizeOptions, score_texts

    ids = [str(i) for i in range(len(refs))]
    totals = score_texts(dict(zip(ids, refs)), dict(zip(ids, hyps)), unit="char",
                         normalize=NormalizeOptions(remove_punct=False)).totals
    return totals.errors, totals.n


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def enable_gradient_checkpointing(model: torch.nn.Module) -> bool:
    """Ask the model (or its LLM) to recompute activations in backward; True when it could."""
    from ..models.llm import enable_checkpointing

    for target in (model, getattr(model, "llm", None)):
        if target is not None and (hasattr(target, "activation_checkpointing_enable")
                                   or hasattr(target, "gradient_checkpointing_enable")):
            enable_checkpointing(target)
            model.train(model.training)  # re-applies XLLM's frozen-layer flags
            return True
    return False


class Trainer:
    """Runs one stage: ``Trainer(...).fit()``; rank 0 writes logs and checkpoints."""

    def __init__(
        self,
        model: torch.nn.Module,
        source: DataSource,
        opts: TrainOptions,
        stage_dir: Path,
        stage: int,
        dist_info: DistInfo | None = None,
        decode_fn: DecodeFn | None = None,
        export_fn: ExportFn | None = None,
        resume: bool = True,
    ) -> None:
        self.opts = opts
        self.source = source
        self.sdir = Path(stage_dir)
        self.stage = stage
        self.dist = dist_info or DistInfo()
        self.device = self.dist.device
        self.decode_fn = decode_fn
        self.export_fn = export_fn
        self.resume = resume
        self.model = model.to(self.device)
        if opts.grad_checkpointing and not enable_gradient_checkpointing(self.model):
            log.warning("grad_checkpointing: the model has no gradient_checkpointing_enable(); ignored")
        self.params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not self.params:
            raise XllmError(f"stage {stage}: the model has no trainable parameters (check train_modules)")
        decay = [p for n, p in self.params if p.ndim >= 2]
        no_decay = [p for n, p in self.params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": opts.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(groups, lr=opts.lr, betas=opts.betas, eps=opts.eps,
                                           **({"fused": True} if fused else {}))
        self.ddp = self.model
        if self.dist.enabled:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=opts.find_unused_parameters,
            )
        amp = opts.amp
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if amp == "bf16" else nullcontext
        )
        self.state = TrainState()
        self.writer = None

    # ------------------------------------------------------------ helpers

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def _total_steps(self) -> int:
        o = self.opts
        per_epoch = self.source.num_batches(0)
        if per_epoch is None:
            if not o.max_steps:
                log.warning("unknown batches per epoch and no max_steps: the schedule decays over 10000 steps")
                return 10000
            return o.max_steps
        per_epoch = all_reduce_sum([float(per_epoch)], self.dist)[0] / self.dist.world_size
        total = o.epochs * max(math.ceil(per_epoch / o.accum_grad), 1)
        return min(total, o.max_steps) if o.max_steps else total

    def _schedule(self) -> Schedule:
        o = self.opts
        return Schedule(o.scheduler, o.lr, o.warmup_steps, self.state.total_steps, o.min_lr_ratio)

    def _finished(self) -> bool:
        s, o = self.state, self.opts
        return s.epoch >= o.epochs or (bool(o.max_steps) and s.step >= o.max_steps)

    def _seed_fresh(self) -> None:
        import random

        import numpy as np

        seed = self.opts.seed + self.dist.rank
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _tb(self, tag: str, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, self.state.step)

    # ------------------------------------------------------------ resume

    def _try_resume(self) -> bool:
        ckpt = ck.latest_checkpoint(self.sdir) if self.resume else None
        if ckpt is None:
            return False
        model_state, optim_state, tstate, rng = ck.load_checkpoint(ckpt, self.dist.rank, map_location=self.device)
        ck.load_into(self.model, model_state, ckpt / ck.MODEL_FILE)
        try:
            self.optimizer.load_state_dict(optim_state)
        except (ValueError, KeyError) as e:
            raise XllmError(f"{ckpt / ck.OPTIM_FILE}: optimizer state does not fit this model ({e})") from None
        self.state = ck.train_state(tstate)
        if rng is not None:
            ck.restore_rng(rng)
        else:
            log.warning("%s: no RNG state for rank %d; resuming with a fresh seed", ckpt, self.dist.rank)
            self._seed_fresh()
        if self.is_main:
            log.info("resumed from %s (step %d, epoch %d, batch %d)", ckpt, self.state.step, self.state.epoch,
                     self.state.batch)
        return True

    # ------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> dict:
        model = _unwrap(self.ddp)
        was_training = model.training
        model.eval()
        loss_sum = utts = 0.0
        for batch in self.source.valid_batches():
            batch = batch.to(self.device) if hasattr(batch, "to") else batch
            with self.autocast():
                out = model(batch, self.stage)
            n = len(batch)
            loss_sum += float(out.loss) * n
            utts += n
        errs = chars = decoded = 0.0
        if self.decode_fn is not None and self.opts.cer_utts > 0:
            for batch in self.source.cer_batches():
                batch = batch.to(self.device) if hasattr(batch, "to") else batch
                with self.autocast():
                    hyps = self.decode_fn(model, batch)
                pairs = list(zip(batch.texts, hyps))
                e, c = char_errors([r for r, _ in pairs], [h for _, h in pairs])
                errs += e
                chars += c
                decoded += len(pairs)
        loss_sum, utts, errs, chars, decoded = all_reduce_sum([loss_sum, utts, errs, chars, decoded], self.dist)
        if was_training:
            model.train()
        result = {"loss": loss_sum / max(utts, 1.0), "utts": int(utts)}
        if chars:
            result["cer"] = 100.0 * errs / chars
            result["cer_utts"] = int(decoded)
        return result

    # ------------------------------------------------------------ checkpoints

    def _save(self, score: float | None) -> None:
        """Checkpoint the current step (every rank sends its RNG state; rank 0 writes)."""
        s = self.state
        s.score = score
        rng_states = gather_objects(ck.capture_rng(), self.dist)
        if self.is_main:
            if score is not None:
                s.best = sorted([b for b in s.best if b[1] != s.step] + [[score, s.step]],
                                key=lambda b: (b[0], -b[1]))
            state = dict(s.__dict__)
            ck.save_checkpoint(self.sdir, s.step, ck.trainable_state_dict(self.model),
                               self.optimizer.state_dict(), state, rng_states)
            if score is not None and s.best and s.best[0][1] == s.step and self.export_fn is not None:
                self._export_best()
            self._prune()
        barrier(self.dist)

    def _export_best(self) -> None:
        best = self.sdir / "best"
        tmp = Path(tempfile.mkdtemp(prefix=".best.", dir=self.sdir))
        try:
            self.export_fn(self.model, tmp)
            apply_umask(tmp)  # mkdtemp made it 0700
            if best.exists():
                ck.remove_checkpoint(best)
            tmp.rename(best)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _prune(self) -> None:
        keep = {b[1] for b in self.state.best[: max(self.opts.keep_best, 0)]}
        ckpts = ck.list_checkpoints(self.sdir)
        keep |= {int(p.name[5:]) for p in ckpts[-max(self.opts.keep_last, 1):]}
        for p in ckpts:
            if int(p.name[5:]) not in keep:
                ck.remove_checkpoint(p)

    def _validate_and_save(self) -> dict:
        t0 = time.time()
        result = self.validate()
        score = result.get("cer") if self.opts.metric == "cer" else result["loss"]
        if score is None:  # CER asked but nothing decoded: fall back on the loss
            score = result["loss"]
        self.state.valid = result
        if self.is_main:
            cer = f", CER {result['cer']:.2f}% on {result['cer_utts']} utts" if "cer" in result else ""
            where = (f"end of epoch {self.state.epoch}" if self.state.batch == 0
                     else f"epoch {self.state.epoch + 1}")
            log.info("validation at step %d (%s): loss %.4f on %d utts%s (%.1fs)", self.state.step, where,
                     result["loss"], result["utts"], cer, time.time() - t0)
            self._tb("valid/loss", result["loss"])
            if "cer" in result:
                self._tb("valid/cer", result["cer"])
        self._save(score)
        return result

    # ------------------------------------------------------------ training

    def _lookahead(self, it: Iterator) -> Iterator:
        """Yield (batch, is_last): the last batch of the epoch must sync DDP gradients.

        The epoch ends for everyone as soon as any rank runs out of batches, so a
        rank with one batch more never waits forever in an all-reduce.
        """
        nxt = self._next(it)
        have = all_ranks_true(nxt is not None, self.dist)
        while have:
            cur = nxt
            nxt = self._next(it)
            have = all_ranks_true(nxt is not None, self.dist)
            yield cur, not have

    @staticmethod
    def _next(it: Iterator):
        """The next batch, without touching the global RNG the model's dropout draws from.

        A DataLoader draws its workers' base seed from the global generator when it
        starts, and the lookahead fetches one batch early; either would shift the
        model's random stream between a resumed and an uninterrupted run. (The data
        pipeline seeds its own augmentation per utterance and epoch.)
        """
        with torch.random.fork_rng(devices=[]):
            return next(it, None)

    def _update(self, sched: Schedule) -> tuple[float, float]:
        if self.opts.grad_clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_([p for _, p in self.params], self.opts.grad_clip))
        else:
            norm = float("nan")
        lr = sched.apply(self.optimizer, self.state.step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        return lr, norm

    def fit(self) -> TrainState:
        """Train to the end of the stage (or ``max_steps``), resuming when a checkpoint exists."""
        o = self.opts
        if not self._try_resume():
            self._seed_fresh()
            self.state.total_steps = self._total_steps()
        sched = self._schedule()
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.sdir / "tensorboard"), purge_step=self.state.step or None)
            ntrain = sum(p.numel() for _, p in self.params)
            nall = sum(p.numel() for p in self.model.parameters())
            log.info("stage %d: %s trainable of %s parameters, %d steps planned, device %s x%d", self.stage,
                     f"{ntrain:,}", f"{nall:,}", self.state.total_steps, self.device, self.dist.world_size)
        exit_after = int(os.environ.get(EXIT_AFTER_STEP_ENV, "0") or 0)
        accum = o.accum_grad
        self.ddp.train()
        t_start = time.time() - self.state.elapsed
        window = {"loss": 0.0, "n": 0, "utts": 0, "t": time.time(), "logs": {}}
        validated_at = self.state.step if self.state.score is not None else -1
        with progress_bar("step") as progress:
            task = progress.add_task(f"stage {self.stage}", total=self.state.total_steps,
                                     completed=self.state.step, visible=self.is_main)
            while not self._finished():
                epoch = self.state.epoch
                micro = 0
                for batch, is_last in self._lookahead(iter(self.source.train_batches(epoch, self.state.batch))):
                    batch = batch.to(self.device) if hasattr(batch, "to") else batch
                    micro += 1
                    sync = micro == accum or is_last
                    ctx = self.ddp.no_sync() if (self.dist.enabled and not sync) else nullcontext()
                    with ctx:
                        with self.autocast():
                            out = self.ddp(batch, self.stage)
                        loss = out.loss
                        if not torch.isfinite(loss.detach()):
                            raise XllmError(f"stage {self.stage}: loss is {float(loss.detach())} at step "
                                            f"{self.state.step} (lower lr, raise warmup_steps or check the data)")
                        # A short accumulation at the end of an epoch keeps the 1/accum scale.
                        (loss / accum).backward()
                    self.state.batch += 1
                    window["loss"] += float(loss.detach())
                    window["n"] += 1
                    window["utts"] += len(batch)
                    for k, v in (getattr(out, "logs", None) or {}).items():
                        window["logs"][k] = window["logs"].get(k, 0.0) + float(v)
                    if not sync:
                        continue
                    micro = 0
                    lr, norm = self._update(sched)
                    if is_last:  # the epoch is over: the position moves to the next one
                        self.state.epoch += 1
                        self.state.batch = 0
                    self.state.elapsed = time.time() - t_start
                    step = self.state.step
                    if self.is_main:
                        rate = window["utts"] / max(time.time() - window["t"], 1e-9)
                        progress.update(task, completed=step,
                                        description=f"stage {self.stage} ep {epoch + 1} loss "
                                        f"{window['loss'] / window['n']:.3f} lr {lr:.2e} {rate:.1f} utt/s")
                    if step % max(o.log_interval, 1) == 0 or step == 1:
                        self._log_window(window, lr, norm, epoch)
                    end_of_epoch = is_last and not o.valid_interval
                    if (o.valid_interval and step % o.valid_interval == 0) or end_of_epoch:
                        self._validate_and_save()
                        validated_at = step
                        self.ddp.train()
                    if exit_after and step >= exit_after:
                        log.warning("%s=%d: exiting abruptly after step %d (test hook)", EXIT_AFTER_STEP_ENV,
                                    exit_after, step)
                        os._exit(3)
                    if self._finished():
                        break
                else:
                    if self.state.epoch == epoch:  # a source with no batches at all
                        if self.state.batch == 0:
                            raise XllmError(f"stage {self.stage}: no training batches in epoch {epoch + 1} "
                                            "(empty data, or every utterance filtered out)")
                        self.state.epoch += 1
                        self.state.batch = 0
        if validated_at != self.state.step:
            self._validate_and_save()
        if self.writer is not None:
            self.writer.close()
        if self.is_main:
            best = self.state.best[0] if self.state.best else None
            if best:
                log.info("stage %d finished at step %d; best score %.4f at step %d", self.stage, self.state.step,
                         best[0], best[1])
        return self.state

    def _log_window(self, window: dict, lr: float, norm: float, epoch: int) -> None:
        n = max(window["n"], 1)
        loss, utts = all_reduce_sum([window["loss"] / n, float(window["utts"])], self.dist)
        loss /= self.dist.world_size
        elapsed = max(time.time() - window["t"], 1e-9)
        rate = utts / elapsed
        if self.is_main:
            s = self.state
            remaining = max(s.total_steps - s.step, 0) * (s.elapsed / max(s.step, 1))
            extras = " ".join(f"{k} {v / n:.3f}" for k, v in sorted(window["logs"].items()))
            log.info("step %d/%d epoch %d loss %.4f %s lr %.3e grad_norm %.3f %.1f utt/s ETA %s", s.step,
                     s.total_steps, epoch + 1, loss, extras, lr, norm, rate, _fmt_time(remaining))
            self._tb("train/loss", loss)
            self._tb("train/lr", lr)
            self._tb("train/utts_per_sec", rate)
            if not math.isnan(norm):
                self._tb("train/grad_norm", norm)
            for k, v in window["logs"].items():
                self._tb(f"train/{k}", v / n)
        window.update(loss=0.0, n=0, utts=0, t=time.time(), logs={})


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


__all__ = ["TrainOptions", "Trainer", "TrainState", "DataSource", "char_errors"]
