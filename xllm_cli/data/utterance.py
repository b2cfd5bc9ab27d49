"""One utterance of a data directory, as the rest of the toolkit sees it.

A module of its own so that readers of audio, images and video can name the
type without importing the data-directory machinery (no import loops).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Utterance:
    """One utterance with everything the data directory says about it."""

    utt_id: str
    spk: str
    recording: str
    path: str  # audio (or video) file of the recording; absolute once loaded
    start: float | None = None  # from segments (seconds in the recording)
    end: float | None = None
    text: str | None = None
    duration: float | None = None  # seconds of speech (utt2dur, else end - start)
    image: str | None = None
    video: str | None = None
    prompt: str | None = None
