"""Decoding batches, and the utterances that cannot be decoded at all.

Batches are the one sampler's (``data.sampler.longest_first_batches``): sorted by
duration, longest first, so that a batch that does not fit in memory fails at once
and padding stays small; ``--batch-size`` (default 16) or ``--max-batch-seconds``.

A model given an empty wave, a segment past the end of its file or half an hour
of audio as one input still "decodes" it: it invents a few characters and the
run exits 0, which hides the broken input inside a plausible error rate. Such an
utterance is set aside with its reason instead: the decode directory's
``skipped`` file lists them (``<utt-id> <reason>``) and a warning counts them,
or ``--strict`` fails the run. Two places find them:

- :func:`screen`, before the model loads: each utterance's duration (utt2dur,
  segments, else the audio header) must be readable, above 0 and at most
  ``--max-duration`` (what the model takes as one input);
- :func:`read_each`, when a batch builder (``bundle.py``, ``systems.py``) reads
  the audio: the data layer's reading errors (truncated or empty file, segment
  past the end) skip the utterance, reported through the batch's ``skipped``
  attribute or a :class:`SkippedBatch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..data.durations import utterance_duration
from ..data.sampler import longest_first_batches
from ..errors import XllmError

DEFAULT_BATCH_SIZE = 16
TOO_LONG_HINT = "segment it (xllm transcribe does VAD chunking)"

Skips = dict[str, str]  # utt-id -> reason, one line


def make_batches(
    utts: Sequence[Any], batch_size: int | None, max_batch_seconds: float | None, duration: Callable[[Any], float]
) -> list[list[Any]]:
    """Groups of utterances, longest first: ``--max-batch-seconds`` (padded) or ``--batch-size`` (default 16)."""
    return longest_first_batches(utts, batch_size or DEFAULT_BATCH_SIZE, max_batch_seconds, duration)


def utt_duration(u: Any) -> float:
    """Seconds of an utterance (``data.durations.utterance_duration``), kept in ``u.duration``.

    A file whose header cannot be read is an XllmError naming it; :func:`screen`
    has already set such utterances aside.
    """
    if u.duration is None:
        u.duration = float(utterance_duration(u))
    return float(u.duration)


def reason_of(e: XllmError) -> str:
    """One line saying why an utterance cannot be decoded (the data layer's reason when it gives one)."""
    return " ".join(str(getattr(e, "reason", None) or e).split())


# ----------------------------------------------------------------------------- screening


@dataclass
class Screened:
    kept: list[Any]
    skipped: Skips = field(default_factory=dict)


def screen(utts: Sequence[Any], max_duration: float | None) -> Screened:
    """Split ``utts`` into those that can be decoded and the rest, each with its reason (see the module docstring)."""
    out = Screened([])
    for u in utts:
        reason = _problem(u, max_duration)
        if reason is None:
            out.kept.append(u)
        else:
            out.skipped[u.utt_id] = reason
    return out


def _problem(u: Any, max_duration: float | None) -> str | None:
    try:
        seconds = utt_duration(u)
    except XllmError as e:
        return reason_of(e)
    if seconds <= 0:
        return f"{u.path}: no audio (0 s)"
    if max_duration is not None and seconds > max_duration:
        return f"{seconds:.1f} s is too long for one utterance (--max-duration {max_duration:g}): {TOO_LONG_HINT}"
    return None


@dataclass
class SkippedBatch:
    """What a batch builder yields when none of a group's utterances could be read."""

    skipped: Skips
    utt_ids: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)


def read_each(group: Sequence[Any], read: Callable[[Any], Any]) -> tuple[list, Skips]:
    """``read(u)`` for each utterance of a batch; one whose audio cannot be used is set aside, not decoded.

    The data layer raises an XllmError (``data.audio.AudioProblem``, with the
    reason) for a missing, unreadable, truncated or empty file and for a segment
    past the end of its recording.
    """
    values, skipped = [], {}
    for u in group:
        try:
            values.append(read(u))
        except XllmError as e:
            skipped[u.utt_id] = reason_of(e)
    return values, skipped
