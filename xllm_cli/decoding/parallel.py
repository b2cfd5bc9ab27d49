"""``--nj N``: split the data, decode the parts in parallel processes, merge.

Kaldi's layout: the data directory is split into ``DATA/split{N}/{1..N}``
(``split_datadir``; when DATA is read-only the split goes under the decode
directory instead). Part k is decoded by a process rerunning the parent's own
``xllm decode`` arguments (``DecodeOptions.argv``) without ``--nj`` and with
``--part k/N --threads T --device D`` of its own (an argument list, never a shell
string; ``cores / N`` torch threads, the parts spread over the GPUs); it writes
``DECODE/split{N}/k/{hyp,nbest.jsonl,timing.json,decode.log}``.

A part is finished when its ``hyp`` exists and covers exactly the part's
utterances (``hyp`` is written atomically at the end; a killed part resumes
from its ``hyp.partial.jsonl``). A rerun skips finished parts and says so in
``decode.log``; a part with skipped utterances is rerun (it decodes only those
that can now be decoded). The merge concatenates the parts' ``hyp``,
``nbest.jsonl`` and ``skipped`` into the decode directory, atomically, and writes
its ``timing.json``. Workers never outlive the parent (``subprocess_launcher``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..console import log, progress_bar
from ..errors import XllmError
from ..procutil import die_with_parent
from .loop import PartResult
from .options import DecodeOptions
from .prefetch import available_cores
from .results import (
    NBEST,
    PARTIAL,
    TIMING,
    read_nbest,
    read_skipped,
    read_timing,
    results_complete,
    write_fingerprint,
    write_results,
    write_skipped,
    write_timing,
)

# A launcher starts the part processes and waits for them: (opts, parts, utterances in them) -> None.
Launcher = Callable[[DecodeOptions, Sequence[int], int], None]


def part_data_dir(data: Path, decode_dir: Path, k: int, n: int) -> Path:
    """Where part k of N of DATA lives: DATA/split{N}/k, or the decode dir's copy for a read-only DATA."""
    own = Path(data) / f"split{n}" / str(k)
    if own.is_dir():
        return own
    fallback = Path(decode_dir) / f"data_split{n}" / str(k)
    if fallback.is_dir():
        return fallback
    raise XllmError(f"{own}: split data not found (the parent `xllm decode --nj {n}` writes it)")


def part_out_dir(decode_dir: Path, k: int, n: int) -> Path:
    return Path(decode_dir) / f"split{n}" / str(k)


def split_data(data, data_path: Path, decode_dir: Path, n: int) -> list[Path]:
    """Write the N parts (unless identical parts are already there); returns their directories.

    Existing parts are rewritten only when they differ from DATA's, so that a rerun
    keeps the split (and its mtimes) it can reuse.
    """
    parts = data.split(n)
    for base in (Path(data_path) / f"split{n}", Path(decode_dir) / f"data_split{n}"):
        try:
            dirs = []
            for k, part in enumerate(parts, start=1):
                target = base / str(k)
                if not _same_part(target, part):
                    part.save(target)
                dirs.append(target)
            return dirs
        except OSError as e:  # read-only corpus directory
            log.info(f"{base.parent} is not writable ({e.strerror}): writing the split under the decode directory")
            continue
    raise XllmError(f"cannot write the split data for --nj {n}")


_COMPARED = ("wav", "utt2spk", "text", "segments", "image", "video", "prompt")


def _same_part(target: Path, part) -> bool:
    """``target`` holds the same tables as ``part`` (durations aside: they only order the batches)."""
    from ..data.datadir import DataDir

    if not (target / "utt2spk").is_file():
        return False
    try:
        have = DataDir.load(target)
    except XllmError:
        return False
    return all(getattr(have, name) == getattr(part, name) for name in _COMPARED)


def part_finished(out: Path, utt_ids: Sequence[str], fingerprint: dict | None = None) -> bool:
    """A part is finished when its ``hyp`` exists, has exactly the part's utterances and the same model/options."""
    return results_complete(out, utt_ids, fingerprint)


# Options each worker sets for itself; the rest of the parent's arguments are rerun as given.
PER_PART_OPTIONS = ("--nj", "--part", "--threads", "--device")


def worker_command(opts: DecodeOptions, k: int, n: int, threads: int) -> list[str]:
    """The argument list of part k's process: the parent's own arguments, with --part k/N, --threads, --device.

    ``opts.argv`` holds the options as the CLI layer received them, each option
    with a value as one ``--name=value`` item (so a value is never taken for an
    option name). --rescore and --wer travel along (--rescore is part of the decode
    directory's name); a worker only decodes its part: the parent rescores and
    scores after the merge.
    """
    if opts.argv is None:
        raise XllmError("--nj: the worker processes rerun the `xllm decode` arguments, "
                        "but none were given (DecodeOptions.argv)")
    kept = [a for a in opts.argv if a.split("=", 1)[0] not in PER_PART_OPTIONS]
    return [sys.executable, "-m", "xllm_cli", "decode", *kept,
            "--part", f"{k}/{n}", "--threads", str(threads), "--device", _part_device(opts.device, k)]


def _part_device(device: str, k: int) -> str:
    """Spread parts over the GPUs when there are several (cuda -> cuda:i)."""
    if device != "cuda":
        return device
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch without CUDA
        count = 0
    return f"cuda:{(k - 1) % count}" if count > 1 else device


def threads_per_job(n: int) -> int:
    return max(1, available_cores() // n)


def subprocess_launcher(decode_dir: Path) -> Launcher:
    """Run the parts as child processes (stdout/stderr to ``split{N}/k/job.log``) and wait for all.

    The children never outlive the parent: each asks the kernel for SIGKILL when
    the parent dies (``procutil.die_with_parent``, even on ``kill -9``), and a
    SIGTERM/SIGINT of the parent stops them before it exits (non-zero).
    """

    def launch(opts: DecodeOptions, parts: Sequence[int], total: int) -> None:
        n = opts.nj
        threads = threads_per_job(n)
        env = dict(os.environ)
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
        procs = []
        try:
            with _stopped_by_sigterm():
                for k in parts:
                    out = part_out_dir(decode_dir, k, n)
                    out.mkdir(parents=True, exist_ok=True)
                    job_log = open(out / "job.log", "w", encoding="utf-8")
                    proc = subprocess.Popen(worker_command(opts, k, n, threads), stdout=job_log,
                                            stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent)
                    procs.append((k, proc, job_log))
                _watch(decode_dir, n, parts, total, [p for _, p, _ in procs])
        finally:
            _stop([p for _, p, _ in procs])  # interrupted (or failed): stop our own children
            for _, _, job_log in procs:
                job_log.close()
        failed = [(k, proc.returncode) for k, proc, _ in procs if proc.returncode != 0]
        if failed:
            k, code = failed[0]
            job_log = part_out_dir(decode_dir, k, n) / "job.log"
            last = _last_line(job_log)
            raise XllmError(f"{job_log}: part {k}/{n} failed (exit {code}): {last}")

    return launch


class _Terminated(Exception):
    pass


@contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """Turn a SIGTERM into an exception, so that the launcher's ``finally`` stops the workers.

    (SIGINT already is one: KeyboardInterrupt.) Python's default SIGTERM ends the
    process without running ``finally`` blocks.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def on_sigterm(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except _Terminated:
        raise XllmError("stopped by SIGTERM; the decode workers were stopped too (rerun to resume)") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(procs: Sequence[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM to the children still running, SIGKILL to those still there after ``grace`` seconds."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.terminate()
    deadline = time.monotonic() + grace
    for p in running:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _last_line(path: Path) -> str:
    try:
        lines = [l.strip() for l in path.read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def _count_done(decode_dir: Path, n: int, parts: Sequence[int]) -> int:
    done = 0
    for k in parts:
        out = part_out_dir(decode_dir, k, n)
        target = out / PARTIAL if not (out / "hyp").is_file() else out / "hyp"
        try:
            with open(target, "rb") as f:
                done += sum(1 for _ in f)
        except OSError:
            pass
    return done


def _watch(decode_dir: Path, n: int, parts: Sequence[int], total: int, procs) -> None:
    """Wait for the children; the progress bar counts the lines of their partial results."""
    with progress_bar("utt") as bar:
        task = bar.add_task(f"decode ({len(parts)} jobs)", total=total)
        while any(p.poll() is None for p in procs):
            bar.update(task, completed=min(total, _count_done(decode_dir, n, parts)))
            time.sleep(0.5)
        bar.update(task, completed=min(total, _count_done(decode_dir, n, parts)))


def decode_parallel(opts: DecodeOptions, data, decode_dir: Path, fingerprint: dict | None = None,
                    launcher: Launcher | None = None) -> PartResult:
    """Split, decode the unfinished parts in parallel, merge; returns the merged result."""
    from ..data.datadir import DataDir

    n = opts.nj
    if n > len(data):
        raise XllmError(f"--nj {n} is more than the {len(data)} utterances of {opts.data}")
    dirs = split_data(data, Path(opts.data), decode_dir, n)
    part_utts = {k: DataDir.load(d).utt_ids() for k, d in enumerate(dirs, start=1)}
    todo = []
    for k in range(1, n + 1):
        if part_finished(part_out_dir(decode_dir, k, n), part_utts[k], fingerprint):
            log.info(f"part {k}/{n} already decoded ({part_out_dir(decode_dir, k, n) / 'hyp'}): skipping")
        else:
            todo.append(k)
    started = time.perf_counter()
    if todo:
        log.info(f"decoding parts {', '.join(map(str, todo))} of {n} with {threads_per_job(n)} threads each")
        total = sum(len(part_utts[k]) for k in todo)
        (launcher or subprocess_launcher(decode_dir))(opts, todo, total)
    wall = time.perf_counter() - started
    return merge_parts(decode_dir, n, part_utts, wall if todo else 0.0, todo, fingerprint)


def merge_parts(decode_dir: Path, n: int, part_utts: dict[int, list[str]], wall_seconds: float, ran: Sequence[int],
                fingerprint: dict | None = None) -> PartResult:
    """Concatenate the parts' n-best lists, hypotheses and skipped utterances into the decode directory."""
    nbests, skipped = {}, {}
    audio = 0.0
    decoded_now = 0
    for k in range(1, n + 1):
        out = part_out_dir(decode_dir, k, n)
        if not results_complete(out, part_utts[k], fingerprint, skipped_ok=True):
            raise XllmError(f"{out / 'hyp'}: part {k}/{n} did not finish; see {out / 'decode.log'}")
        nbests.update(read_nbest(out / NBEST))
        skipped.update(read_skipped(out))
        if k in ran:
            timing = read_timing(out / TIMING)
            audio += float(timing.get("audio_seconds", 0.0))
            decoded_now += int(timing.get("decoded_now", 0))
    if fingerprint is not None:
        write_fingerprint(decode_dir, fingerprint)
    write_skipped(decode_dir, skipped)
    write_results(decode_dir, nbests)
    decode_seconds = wall_seconds if audio > 0 else 0.0
    write_timing(decode_dir, len(nbests), decoded_now, decode_seconds, audio)
    log.info(f"merged {n} parts: {len(nbests)} utterances -> {decode_dir / 'hyp'}")
    return PartResult(decode_dir, len(nbests), decoded_now, decode_seconds, audio, skipped)
