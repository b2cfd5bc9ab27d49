"""Word timestamps for Whisper segments: cross-attention alignment (CTranslate2's ``align``).

As faster-whisper does: the window's text tokens are aligned to the encoder
frames by dynamic time warping over the alignment heads' attention; a word
starts at the frame where its first token's alignment jumps in. Tokens are
grouped into words at spaces and punctuation, or one character each for
languages written without spaces.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Optional

import numpy as np

from .whisper_longform import Word

if TYPE_CHECKING:
    from .whisper_ct2 import WhisperCT2
    from .whisper_longform import WhisperSegment

TOKENS_PER_SECOND = 50  # encoder frames per second (20 ms each)
_PUNCTUATION = set(string.punctuation) | set("，。！？、；：“”‘’（）《》")


def _split_on_unicode(model: "WhisperCT2", tokens: list[int]) -> tuple[list[str], list[list[int]]]:
    """Pieces of text that decode to whole characters (a CJK character may take two byte tokens)."""
    words, groups, current = [], [], []
    for t in tokens:
        current.append(t)
        text = model.token_text(current) if t < model.eot else ""
        if "\ufffd" not in text:
            words.append(text)
            groups.append(current)
            current = []
    return words, groups


def split_words(model: "WhisperCT2", tokens: list[int], language: Optional[str]) -> tuple[list[str], list[list[int]]]:
    """``tokens`` (ending with <|endoftext|>) grouped into words."""
    from .whisper_ct2 import UNSPACED_LANGUAGES

    pieces, groups = _split_on_unicode(model, tokens)
    if language in UNSPACED_LANGUAGES:
        return pieces, groups
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for piece, group in zip(pieces, groups):
        starts_word = group[0] >= model.eot or piece.startswith(" ") or piece.strip() in _PUNCTUATION
        if starts_word or not words:
            words.append(piece)
            word_tokens.append(list(group))
        else:
            words[-1] += piece
            word_tokens[-1].extend(group)
    return words, word_tokens


def add_word_timestamps(model: "WhisperCT2", encoded, language: Optional[str], segments: list["WhisperSegment"],
                        offset: float, content_frames: int) -> None:
    """Fill ``segment.words`` for the segments of one window (times from the stream's start)."""
    text_tokens = [t for s in segments for t in s.tokens if t < model.eot]
    if not text_tokens:
        return
    result = model.model.align(encoded, model.sot_sequence(language), [text_tokens], content_frames)[0]
    text_idx = np.array([a[0] for a in result.alignments])
    time_idx = np.array([a[1] for a in result.alignments])
    probs = list(result.text_token_probs)
    words, word_tokens = split_words(model, text_tokens + [model.eot], language)
    if len(text_idx) == 0:
        return
    bounds = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_times = time_idx[jumps] / TOKENS_PER_SECOND
    timed: list[Word] = []
    for i, (word, toks) in enumerate(zip(words[:-1], word_tokens[:-1])):  # the last "word" is <|endoftext|>
        a, b = int(bounds[i]), int(bounds[i + 1])
        if b >= len(jump_times):
            break
        p = float(np.mean(probs[a:b])) if probs[a:b] else 0.0
        timed.append(Word(round(offset + float(jump_times[a]), 3), round(offset + float(jump_times[b]), 3),
                          word, round(p, 4)))
    # hand the words to their segments by token count (each segment's words follow each other)
    counts = iter(len(t) for t in word_tokens)
    for s in segments:
        s.words, need = [], sum(1 for t in s.tokens if t < model.eot)
        while need > 0 and timed:
            w = timed.pop(0)
            s.words.append(w)
            need -= next(counts, need)
