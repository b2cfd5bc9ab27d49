"""Whisper's long-form decoding: seek through the audio in 30 s windows, as faster-whisper does.

Each window is decoded with timestamp tokens. Two timestamps in a row close a
segment; the next window starts at the last closed segment's end (or after the
whole window when the output ends on a single timestamp, i.e. the speech ran
to the window's end). The text of the previous windows is given as
``<|startofprev|>`` context (reset after a window that needed a temperature
above 0.5, which is usually a sign of hallucination). A window judged silent
(no-speech probability > 0.6 and mean log-prob < -1) gives no segment.

Audio arrives as an iterable of blocks (``iter_audio_blocks`` for a file, one
array for a decode utterance), and only the samples from the current window to
30 s past it are held: an hour-long file needs no more memory than a minute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

import numpy as np

from .whisper_features import HOP, INPUT_STRIDE, N_FRAMES, N_SAMPLES, SAMPLE_RATE

if TYPE_CHECKING:
    from .whisper_ct2 import Attempt, WhisperCT2

SECONDS_PER_TOKEN = INPUT_STRIDE * HOP / SAMPLE_RATE  # 0.02 s per timestamp step
PROMPT_RESET_TEMPERATURE = 0.5


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float = 0.0


@dataclass
class WhisperSegment:
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)  # text and timestamp tokens (the next window's context)
    words: Optional[list[Word]] = None


class _Window:
    """The audio not yet decoded: samples from ``offset`` on, filled from the block stream as needed."""

    def __init__(self, blocks: Iterable[np.ndarray]) -> None:
        self.blocks = iter(blocks)
        self.buffer = np.zeros(0, dtype=np.float32)
        self.offset = 0  # samples of the stream before the buffer
        self.ended = False

    def fill(self) -> np.ndarray:
        """Up to 30 s of samples from the current position."""
        pieces = [self.buffer]
        have = self.buffer.size
        while have < N_SAMPLES and not self.ended:
            block = next(self.blocks, None)
            if block is None:
                self.ended = True
                break
            block = np.asarray(block, dtype=np.float32).reshape(-1)
            pieces.append(block)
            have += block.size
        if len(pieces) > 1:
            self.buffer = np.concatenate(pieces)
        return self.buffer[:N_SAMPLES]

    def advance(self, samples: int) -> None:
        samples = min(samples, self.buffer.size)
        self.buffer = self.buffer[samples:].copy() if samples < self.buffer.size else np.zeros(0, np.float32)
        self.offset += samples


def split_segments(model: "WhisperCT2", tokens: list[int], offset: float, content_frames: int
                   ) -> tuple[list[WhisperSegment], int]:
    """Segments of one window's tokens, and how many mel frames to seek forward (OpenAI's rule)."""
    tb = model.timestamp_begin
    is_ts = [t >= tb for t in tokens]
    single_ending = len(tokens) >= 2 and not is_ts[-2] and is_ts[-1]
    cuts = [i for i in range(1, len(tokens)) if is_ts[i] and is_ts[i - 1]]
    segments: list[WhisperSegment] = []
    if cuts:
        if single_ending:
            cuts.append(len(tokens))
        last = 0
        for cut in cuts:
            piece = tokens[last:cut]
            start = offset + (piece[0] - tb) * SECONDS_PER_TOKEN if piece[0] >= tb else offset
            end = offset + (piece[-1] - tb) * SECONDS_PER_TOKEN if piece[-1] >= tb else start
            segments.append(WhisperSegment(start, end, model.text(piece), list(piece)))
            last = cut
        if single_ending:
            seek = content_frames
        else:
            seek = (tokens[last - 1] - tb) * INPUT_STRIDE
    else:
        duration = content_frames / (SAMPLE_RATE / HOP)
        stamps = [t for t in tokens if t >= tb]
        if stamps and stamps[-1] != tb:  # the model said where the speech ends
            duration = (stamps[-1] - tb) * SECONDS_PER_TOKEN
        segments.append(WhisperSegment(offset, offset + duration, model.text(tokens), list(tokens)))
        seek = content_frames
    if seek <= 0:  # never stand still (a window closed at 0.00 would loop forever)
        seek = content_frames
    # faster-whisper drops empty and zero-length segments (from the output and the context)
    return [s for s in segments if s.text and s.end > s.start], min(seek, content_frames)


def iter_segments(model: "WhisperCT2", blocks: Iterable[np.ndarray], language: Optional[str] = None
                  ) -> Iterator[WhisperSegment]:
    """Segments with times (seconds from the stream's start), as the windows are decoded."""
    from .whisper_words import add_word_timestamps

    window = _Window(blocks)
    language = language or model.language
    previous: list[int] = list(model.initial_prompt)
    while True:
        samples = window.fill()
        content_frames = min(samples.size // HOP, N_FRAMES)
        if content_frames < 1:
            return
        offset = window.offset / SAMPLE_RATE
        encoded = model.encode([samples])
        if language is None:  # faster-whisper: detect once, from the first window
            language = model.detect_language(encoded)[0]
        prompt = model.prompt(language, previous if model.condition_on_previous_text or not previous
                              else model.initial_prompt, timestamps=True)
        attempt: Attempt = model.generate(encoded, [prompt])[0]
        if attempt.no_speech_prob > 0.6 and attempt.avg_logprob < -1.0:
            window.advance(content_frames * HOP)
            continue
        segments, seek = split_segments(model, attempt.tokens, offset, content_frames)
        if model.word_timestamps and segments:
            add_word_timestamps(model, encoded, language, segments, offset, content_frames)
        for s in segments:
            yield s
        previous.extend(t for s in segments for t in s.tokens)  # timestamps included, as faster-whisper does
        if attempt.temperature > PROMPT_RESET_TEMPERATURE:
            previous = []
        window.advance(seek * HOP)


def transcribe_long(model: "WhisperCT2", blocks: Iterable[np.ndarray], language: Optional[str] = None
                    ) -> list[WhisperSegment]:
    return list(iter_segments(model, blocks, language))
