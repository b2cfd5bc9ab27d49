"""The resumable decode loop: utterances through a decoding system into a directory's result files.

Each finished batch is appended to ``hyp.partial.jsonl``, so that a killed job
resumes where it stopped; ``nbest.jsonl``, ``hyp`` (last: the job is finished)
and ``timing.json`` are written at the end (``results.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from ..console import log, progress_bar
from ..data.tables import c_sort_key
from ..fsutil import atomic_write
from .results import (
    PARTIAL,
    NBest,
    fingerprint_matches,
    partial_record,
    read_partial,
    write_fingerprint,
    write_partial_records,
    write_results,
    write_timing,
)


class Decoder(Protocol):
    """What the decode loop needs from a system (``systems.py``) or a test's fake."""

    def batches(self, utts: list[Any]) -> Iterator[Any]:
        """Batches with ``.utt_ids`` and ``.durations`` in decoding order."""

    def decode(self, batch: Any) -> list[NBest]:
        """An n-best list per utterance of the batch, best first."""


@dataclass
class PartResult:
    out_dir: Path
    utterances: int
    decoded_now: int  # utterances decoded by this run (the rest came from a resumed partial file)
    decode_seconds: float
    audio_seconds: float


def _durations_of(batch: Any) -> list[float]:
    durations = getattr(batch, "durations", None)
    return [float(d or 0.0) for d in durations] if durations is not None else [0.0] * len(batch.utt_ids)


def decode_utterances(
    decoder_factory: Callable[[], Decoder],
    utts: list[Any],
    out_dir: Path,
    show_progress: bool = True,
    description: str = "decode",
    fingerprint: dict | None = None,
) -> PartResult:
    """Decode ``utts`` into ``out_dir`` (``hyp``, ``nbest.jsonl``, ``timing.json``), resuming a partial run.

    The decoder is built only when something is left to decode, so a rerun of a
    finished-but-unmerged job costs nothing. Partial results of another model or
    other options (``fingerprint``) are discarded.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    partial_path = out_dir / PARTIAL
    wanted = {u.utt_id for u in utts}
    if fingerprint is not None and not fingerprint_matches(out_dir, fingerprint):
        if partial_path.is_file():
            log.info(f"{partial_path}: from another model or other options: decoding from the start")
            partial_path.unlink()
        (out_dir / "hyp").unlink(missing_ok=True)  # never leave a stale "finished" marker
        write_fingerprint(out_dir, fingerprint)
    done = {k: v for k, v in read_partial(partial_path).items() if k in wanted}
    todo = [u for u in utts if u.utt_id not in done]
    if done:
        log.info(f"resuming: {len(done)} of {len(utts)} utterances already decoded ({partial_path})")
    # Rewrite the partial file with the records we keep (drops a torn last line).
    with atomic_write(partial_path) as f:
        write_partial_records(f, [done[utt] for utt in sorted(done, key=c_sort_key)], sync=False)

    decode_seconds = 0.0
    audio_seconds = 0.0
    decoded_now = 0
    if todo:
        decoder = decoder_factory()
        with open(partial_path, "a", encoding="utf-8") as f, progress_bar("utt") as bar:
            task = bar.add_task(description, total=len(utts), completed=len(done), visible=show_progress)
            started = time.perf_counter()
            for batch in decoder.batches(todo):
                results = decoder.decode(batch)
                if len(results) != len(batch.utt_ids):
                    raise RuntimeError(f"decoder returned {len(results)} results for {len(batch.utt_ids)} utterances")
                durations = _durations_of(batch)
                records = [partial_record(u, n, d) for u, n, d in zip(batch.utt_ids, results, durations)]
                write_partial_records(f, records)
                done.update((r["utt"], r) for r in records)
                audio_seconds += sum(durations)
                decoded_now += len(batch.utt_ids)
                bar.advance(task, len(batch.utt_ids))
                log.debug(f"batch of {len(batch.utt_ids)}: {batch.utt_ids[0]} ... done")
            decode_seconds = time.perf_counter() - started
    missing = wanted - set(done)
    if missing:
        raise RuntimeError(f"decoder skipped {len(missing)} utterances, e.g. {sorted(missing)[0]}")
    write_results(out_dir, {u: done[u]["nbest"] for u in wanted})
    write_timing(out_dir, len(utts), decoded_now, decode_seconds, audio_seconds)
    partial_path.unlink(missing_ok=True)
    return PartResult(out_dir, len(utts), decoded_now, decode_seconds, audio_seconds)
