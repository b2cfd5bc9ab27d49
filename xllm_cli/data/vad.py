"""Voice activity detection: cut long recordings into speech chunks for decoding.

webrtcvad classifies 30 ms frames of 16 kHz 16-bit PCM as speech or not. On top
of that a small state machine, fed block by block, forms chunks:

* a chunk opens at the first speech frame (with ``pad`` seconds of lead-in) and
  stays open across silences shorter than ``max_gap``; a chunk that is still
  shorter than ``min_chunk`` bridges silences up to ``short_gap`` (short
  neighbouring segments are merged rather than decoded alone);
* when the silence gets longer the chunk closes ``pad`` seconds after its last
  speech frame;
* a chunk that reaches ``max_chunk`` seconds is split at the lowest-energy frame
  of its second half (a pause between words), or cut hard at ``max_chunk`` when
  the second half has no clear pause;
* chunks with less than ``min_speech`` seconds of speech are dropped (clicks).

Memory stays bounded whatever the length of the recording: the chunker only
holds the frames of the chunk being formed (at most ``max_chunk`` seconds) or a
``pad``-long lead-in while in silence. ``max_samples_held`` records the peak so
tests can check it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from ..errors import XllmError

FRAME_MS = 30  # webrtcvad accepts 10, 20 or 30 ms
VAD_SAMPLE_RATE = 16000  # the rate we decode at; webrtcvad accepts it
# Frames quieter than this (RMS, -66 dBFS) are never speech: webrtcvad flags the
# first frames of digital silence as speech while its noise estimate settles.
SILENCE_RMS = 5e-4
# A long chunk is split at its quietest frame only when that frame is at most
# this fraction of the median energy of the search window (a real pause).
SPLIT_QUIET_RATIO = 0.5


@dataclass
class VadOptions:
    aggressiveness: int = 2  # webrtcvad mode 0 (least) .. 3 (most aggressive filtering of non-speech)
    max_chunk: float = 25.0  # seconds; longer speech is split
    max_gap: float = 0.5  # silences shorter than this stay inside a chunk
    min_chunk: float = 1.0  # a chunk shorter than this ...
    short_gap: float = 1.5  # ... bridges silences up to this long to reach the next segment
    pad: float = 0.2  # seconds of context kept before and after speech
    min_speech: float = 0.15  # chunks with less speech are dropped
    sample_rate: int = VAD_SAMPLE_RATE

    def validate(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise XllmError(f"--vad-aggressiveness must be 0, 1, 2 or 3, not {self.aggressiveness}")
        if self.sample_rate != VAD_SAMPLE_RATE:
            raise XllmError(f"VAD runs at {VAD_SAMPLE_RATE} Hz, not {self.sample_rate}")
        if not self.max_chunk >= 1.0:
            raise XllmError(f"--max-chunk must be at least 1 second, not {self.max_chunk}")
        if min(self.max_gap, self.min_chunk, self.short_gap, self.pad, self.min_speech) < 0:
            raise XllmError("VAD options must not be negative")


@dataclass
class SpeechChunk:
    """A stretch of audio to decode; times are seconds from the start of the recording."""

    start: float
    end: float
    samples: np.ndarray  # float32 mono at 16 kHz

    @property
    def duration(self) -> float:
        return self.end - self.start


class VadChunker:
    """Incremental VAD chunker: ``feed`` blocks of samples, collect finished chunks."""

    def __init__(self, options: VadOptions | None = None) -> None:
        import webrtcvad  # the webrtcvad-wheels distribution (see docs/architecture.md)

        self.opt = options or VadOptions()
        self.opt.validate()
        self._vad = webrtcvad.Vad(self.opt.aggressiveness)
        sr = self.opt.sample_rate
        self.frame_len = sr * FRAME_MS // 1000
        self.frame_sec = self.frame_len / sr

        def frames(seconds: float) -> int:
            return int(round(seconds / self.frame_sec))

        self._max_frames = max(1, int(self.opt.max_chunk / self.frame_sec))
        self._gap_frames = frames(self.opt.max_gap)
        self._short_gap_frames = frames(self.opt.short_gap)
        self._min_chunk_frames = frames(self.opt.min_chunk)
        self._pad_frames = frames(self.opt.pad)
        self._min_speech_frames = max(1, frames(self.opt.min_speech))

        self._rest = np.zeros(0, dtype=np.float32)  # samples short of a whole frame
        self._frames: list[np.ndarray] = []  # held frames, the first is frame number _first
        self._speech: list[bool] = []
        self._energy: list[float] = []
        self._first = 0  # frame number of _frames[0]
        self._next = 0  # frame number of the next frame to arrive
        self._open = False  # a chunk is being formed, starting at _first
        self._last_speech = -1  # frame number of the last speech frame in the open chunk
        self.max_samples_held = 0

    # -- public -------------------------------------------------------------

    def feed(self, samples: np.ndarray) -> list[SpeechChunk]:
        """Add samples (float32 mono, 16 kHz); return the chunks completed by them."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        out: list[SpeechChunk] = []
        pos = 0
        if len(self._rest):
            need = self.frame_len - len(self._rest)
            head = samples[:need]
            self._rest = np.concatenate([self._rest, head])
            pos = len(head)
            if len(self._rest) < self.frame_len:
                self._note_held()
                return out
            self._add_frame(self._rest, out)
            self._rest = np.zeros(0, dtype=np.float32)
        while pos + self.frame_len <= len(samples):
            self._add_frame(samples[pos : pos + self.frame_len].copy(), out)
            pos += self.frame_len
        self._rest = samples[pos:].copy()
        self._note_held()
        return out

    def flush(self) -> list[SpeechChunk]:
        """End of the recording: close the open chunk (a tail shorter than a frame is dropped)."""
        out: list[SpeechChunk] = []
        if self._open:
            self._close(min(self._last_speech + 1 + self._pad_frames, self._next), out)
        self._frames, self._speech, self._energy = [], [], []
        self._first = self._next
        self._rest = np.zeros(0, dtype=np.float32)
        self._open = False
        return out

    # -- internals ----------------------------------------------------------

    def _note_held(self) -> None:
        held = len(self._frames) * self.frame_len + len(self._rest)
        if held > self.max_samples_held:
            self.max_samples_held = held

    def _add_frame(self, frame: np.ndarray, out: list[SpeechChunk]) -> None:
        energy = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2)))
        pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        speech = energy >= SILENCE_RMS and self._vad.is_speech(pcm, self.opt.sample_rate)
        number = self._next
        self._next += 1
        self._frames.append(frame)
        self._speech.append(speech)
        self._energy.append(energy)
        self._note_held()

        if not self._open:
            if speech:
                self._open = True  # the held lead-in (<= pad frames) starts the chunk
                self._last_speech = number
            else:
                self._drop_before(self._next - self._pad_frames)
            return

        if speech:
            self._last_speech = number
        silence = number - self._last_speech
        length = self._next - self._first
        allowed = self._short_gap_frames if self._last_speech + 1 - self._first < self._min_chunk_frames else self._gap_frames
        if silence > allowed:
            self._close(self._last_speech + 1 + self._pad_frames, out)
        elif length >= self._max_frames:
            self._split(out)

    def _drop_before(self, number: int) -> None:
        """Forget held frames numbered below ``number``."""
        k = number - self._first
        if k > 0:
            del self._frames[:k], self._speech[:k], self._energy[:k]
            self._first = number

    def _emit(self, end: int, out: list[SpeechChunk]) -> None:
        """Turn held frames [_first, end) into a chunk (unless it is mostly silence) and forget them."""
        k = end - self._first
        if sum(self._speech[:k]) >= self._min_speech_frames:
            out.append(
                SpeechChunk(
                    start=self._first * self.frame_sec,
                    end=end * self.frame_sec,
                    samples=np.concatenate(self._frames[:k]),
                )
            )
        self._drop_before(end)

    def _close(self, end: int, out: list[SpeechChunk]) -> None:
        end = min(end, self._next)
        self._emit(end, out)
        self._open = False
        self._drop_before(self._next - self._pad_frames)  # keep a lead-in for the next chunk

    def _split(self, out: list[SpeechChunk]) -> None:
        """The open chunk is max_chunk long: cut at the quietest frame of its second half."""
        lo = self._max_frames // 2
        window = np.asarray(self._energy[lo : self._max_frames])
        cut = self._first + self._max_frames  # hard cut, unless there is a pause
        if len(window):
            quietest = int(np.argmin(window))
            # A pause is clearly quieter than the speech around it; in a steady
            # signal the minimum means nothing and a cut at max_chunk is as good.
            if window[quietest] < SPLIT_QUIET_RATIO * float(np.median(window)) and lo + quietest > 0:
                cut = self._first + lo + quietest
        self._emit(cut, out)
        # The remainder starts the next chunk; find its last speech frame.
        speech_left = [i for i, s in enumerate(self._speech) if s]
        if speech_left:
            self._last_speech = self._first + speech_left[-1]
        else:
            self._last_speech = self._first - 1


def iter_speech_chunks(blocks: Iterable[np.ndarray], options: VadOptions | None = None,
                       chunker: VadChunker | None = None) -> Iterator[SpeechChunk]:
    """Chunks of a recording given as a stream of sample blocks (e.g. ``iter_audio_blocks``)."""
    chunker = chunker or VadChunker(options)
    for block in blocks:
        yield from chunker.feed(block)
    yield from chunker.flush()


def split_speech(wave: np.ndarray, options: VadOptions | None = None) -> list[SpeechChunk]:
    """Chunks of an in-memory recording (convenience for short files and tests)."""
    return list(iter_speech_chunks([wave], options))
