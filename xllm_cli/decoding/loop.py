"""The resumable decode loop: utterances through a decoding system into a directory's result files.

Each finished batch is appended to ``hyp.partial.jsonl``, so that a killed job
resumes where it stopped; ``skipped``, ``nbest.jsonl``, ``hyp`` (last: decoding
finished) and ``timing.json`` are written at the end (``results.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from ..console import log, progress_bar
from ..data.tables import c_sort_key
from ..errors import XllmError
from ..fsutil import atomic_write
from .batches import screen
from .results import (
    NBEST,
    PARTIAL,
    RESULT,
    NBest,
    fingerprint_matches,
    partial_record,
    read_nbest,
    read_partial,
    write_fingerprint,
    write_partial_records,
    write_results,
    write_skipped,
    write_timing,
)


class Decoder(Protocol):
    """What the decode loop needs from a system (``systems.py``) or a test's fake."""

    def batches(self, utts: list[Any]) -> Iterator[Any]:
        """Batches with ``.utt_ids`` and ``.durations`` in decoding order.

        A batch may also carry ``.skipped`` (utt-id -> reason): utterances of its
        group whose audio could not be read (``batches.read_each``).
        """

    def decode(self, batch: Any) -> list[NBest]:
        """An n-best list per utterance of the batch, best first."""


@dataclass
class PartResult:
    out_dir: Path
    utterances: int
    decoded_now: int  # utterances decoded by this run (the rest came from a resumed partial file)
    decode_seconds: float
    audio_seconds: float
    skipped: dict[str, str] = field(default_factory=dict)  # utt-id -> why it was not decoded


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
    max_duration: float | None = None,
    strict: bool = False,
) -> PartResult:
    """Decode ``utts`` into ``out_dir`` (``hyp``, ``nbest.jsonl``, ``skipped``, ``timing.json``), resuming.

    Utterances decoded by an earlier run with the same ``fingerprint`` (a killed
    run's partial file, or a finished run's ``nbest.jsonl``) are kept; results of
    another model or other options are discarded. The rest are screened
    (``batches.screen``: unreadable, empty, outside their file, longer than
    ``max_duration``): those are listed in ``skipped``, or with ``strict`` the run
    fails naming the first. The decoder is built only when something is left to
    decode, so a rerun of a finished job costs nothing.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    partial_path = out_dir / PARTIAL
    wanted = {u.utt_id for u in utts}
    if fingerprint is not None and not fingerprint_matches(out_dir, fingerprint):
        if partial_path.is_file():
            log.info(f"{partial_path}: from another model or other options: decoding from the start")
            partial_path.unlink()
        for name in ("hyp", NBEST, RESULT):  # never leave a stale "finished" or "scored" marker
            (out_dir / name).unlink(missing_ok=True)
        write_fingerprint(out_dir, fingerprint)
    done = {k: v for k, v in {**_finished(out_dir), **read_partial(partial_path)}.items() if k in wanted}
    todo = [u for u in utts if u.utt_id not in done]
    if done and todo:
        log.info(f"resuming: {len(done)} of {len(utts)} utterances already decoded ({partial_path})")
    # Rewrite the partial file with the records we keep (drops a torn last line).
    with atomic_write(partial_path) as f:
        write_partial_records(f, [done[utt] for utt in sorted(done, key=c_sort_key)], sync=False)

    screened = screen(todo, max_duration)
    skipped = dict(screened.skipped)
    _refuse_if_strict(strict, skipped)
    decode_seconds = 0.0
    audio_seconds = 0.0
    decoded_now = 0
    if screened.kept:
        (out_dir / RESULT).unlink(missing_ok=True)  # the scores will change: not scored until finish() says so
        decoder = decoder_factory()
        with open(partial_path, "a", encoding="utf-8") as f, progress_bar("utt") as bar:
            task = bar.add_task(description, total=len(utts), completed=len(done) + len(skipped), visible=show_progress)
            started = time.perf_counter()
            for batch in decoder.batches(screened.kept):
                late = dict(getattr(batch, "skipped", None) or {})
                skipped.update(late)
                _refuse_if_strict(strict, late)
                if batch.utt_ids:
                    results = decoder.decode(batch)
                    if len(results) != len(batch.utt_ids):
                        raise RuntimeError(f"decoder returned {len(results)} results for {len(batch.utt_ids)} utterances")
                    durations = _durations_of(batch)
                    records = [partial_record(u, n, d) for u, n, d in zip(batch.utt_ids, results, durations)]
                    write_partial_records(f, records)
                    done.update((r["utt"], r) for r in records)
                    audio_seconds += sum(durations)
                    decoded_now += len(batch.utt_ids)
                    log.debug(f"batch of {len(batch.utt_ids)}: {batch.utt_ids[0]} ... done")
                bar.advance(task, len(batch.utt_ids) + len(late))
            decode_seconds = time.perf_counter() - started
    missing = wanted - set(done) - set(skipped)
    if missing:
        raise RuntimeError(f"decoder skipped {len(missing)} utterances, e.g. {sorted(missing)[0]}")
    write_skipped(out_dir, skipped)
    write_results(out_dir, {u: done[u]["nbest"] for u in done})  # hyp last: decoding finished
    write_timing(out_dir, len(utts), decoded_now, decode_seconds, audio_seconds)
    partial_path.unlink(missing_ok=True)
    return PartResult(out_dir, len(done), decoded_now, decode_seconds, audio_seconds, skipped)


def _finished(out_dir: Path) -> dict[str, dict]:
    """The records of a finished run (``nbest.jsonl`` beside its ``hyp``), as partial records."""
    if not ((out_dir / "hyp").is_file() and (out_dir / NBEST).is_file()):
        return {}
    try:
        return {u: partial_record(u, n, 0.0) for u, n in read_nbest(out_dir / NBEST).items()}
    except (OSError, ValueError, KeyError, TypeError):  # a damaged file: decode again
        return {}


def _refuse_if_strict(strict: bool, skipped: dict[str, str]) -> None:
    if strict and skipped:
        utt = min(skipped, key=c_sort_key)
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise XllmError(f"{utt}: {skipped[utt]}{more}; --strict stops at unusable audio (without it they are "
                        f"skipped and listed in the decode directory's 'skipped' file)")
