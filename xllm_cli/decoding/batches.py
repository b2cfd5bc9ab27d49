"""Decoding batches: utterances sorted by duration (longest first), grouped by count or padded seconds.

Longest first, so that a batch that does not fit in memory fails at once and
padding stays small. (The training batchers live in ``xllm_cli/data/``; they are
to be unified into one sampler there, which will then serve decoding too.)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..data.tables import c_sort_key

DEFAULT_BATCH_SIZE = 16


def make_batches(
    utts: Sequence[Any], batch_size: int | None, max_batch_seconds: float | None, duration: Callable[[Any], float]
) -> list[list[Any]]:
    """Groups of utterances sorted by duration, longest first.

    ``max_batch_seconds`` bounds the padded size (batch length x longest
    utterance), which is what memory follows; a single longer utterance still
    gets a batch of its own.
    """
    ordered = sorted(utts, key=lambda u: (-duration(u), c_sort_key(u.utt_id)))
    if max_batch_seconds is None:
        size = batch_size or DEFAULT_BATCH_SIZE
        return [list(ordered[i : i + size]) for i in range(0, len(ordered), size)]
    batches: list[list[Any]] = []
    current: list[Any] = []
    for u in ordered:
        longest = duration(current[0]) if current else duration(u)
        if current and (len(current) + 1) * longest > max_batch_seconds:
            batches.append(current)
            current = []
        current.append(u)
    if current:
        batches.append(current)
    return batches


def utt_duration(u: Any) -> float:
    """Seconds of an utterance: utt2dur/segments, else the audio file's header."""
    if u.duration is not None:
        return float(u.duration)
    if u.start is not None and u.end is not None:
        return float(u.end - u.start)
    from ..data.audio import audio_duration

    try:
        u.duration = float(audio_duration(u.path))
    except Exception:
        u.duration = 0.0
    return u.duration
