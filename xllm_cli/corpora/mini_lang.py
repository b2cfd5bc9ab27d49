"""The language of the mini corpus: how a grammar sentence is written down and spoken.

The grammar (:mod:`mini_grammar`: templates, slot values, held-out
combinations, sampling) is the same for every language. Its canonical slot
values are the Mandarin words, and everything that is not speech follows them:
the pictures, the held-out pairs, the speakers, the noise. A language only
decides, for one grammar sentence and its key slot,

- the transcript (``text``),
- the pieces espeak-ng speaks (before the key word, the key word, after it),
  in the form the voice reads (tone-numbered pinyin for Mandarin),
- the key word as it appears in the transcript,

plus the espeak voice of each speaker and the unit of the vocabulary (Mandarin
characters, English words). So with one seed the English corpus is a
sentence-by-sentence translation of the Mandarin one, with the same pictures.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import mini_grammar as G

LANGUAGES = ("zh", "en")


@dataclass(frozen=True)
class Spoken:
    """One grammar sentence in a language."""

    text: str  # the transcript
    pieces: list[tuple[str, bool]]  # (what espeak reads, is the key word)
    key_word: str  # the key slot's word(s) as they appear in ``text``


class Mandarin:
    """The original corpus: characters, read as tone-numbered pinyin by ``cmn-latn-pinyin``."""

    code = "zh"
    unit = "chars"

    def voice(self, spk: str) -> str:
        from .mini_tts import VOICE

        return VOICE

    def render(self, sentence: G.Sentence, key: str) -> Spoken:
        # pinyin of the whole sentence first: tone sandhi crosses the piece boundaries
        syllables = G.pinyin_syllables(sentence.text)
        pieces, pos = [], 0
        for text, is_key in sentence.pieces(key):
            pieces.append((" ".join(syllables[pos : pos + len(text)]), is_key))
            pos += len(text)
        return Spoken(sentence.text, pieces, sentence.slots[key])

    def units(self, text: str) -> list[str]:
        return list(text)

    def word(self, slot: str, value: str) -> str:
        """A canonical slot value as written in DATA/local files (one field, no spaces)."""
        return value

    def lexicon(self) -> tuple[str, str]:
        """(file name, contents) of the DATA/local word list."""
        return "lexicon.txt", "".join(f"{c} {G.PINYIN[c]}\n" for c in G.vocabulary())


def get_language(code: str):
    from ..errors import XllmError

    if code == "zh":
        return Mandarin()
    if code == "en":
        from .mini_grammar_en import English

        return English()
    raise XllmError(f"unknown mini corpus language '{code}' ({', '.join(LANGUAGES)})")
