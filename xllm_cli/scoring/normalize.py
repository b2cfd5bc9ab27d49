"""Text normalisation and tokenisation before scoring.

The same options apply to reference and hypothesis, so that a mismatch in
punctuation, width (``ＡＢＣ`` vs ``ABC``) or case is not counted as an error
unless the user asks for it.

Units:

* ``char``: every non-space character is a unit (Chinese/Japanese CER, Kaldi
  AISHELL style). With ``remove_spaces=False`` a space between words becomes the
  unit ``<space>`` (ESPnet's character convention), so word boundaries count.
* ``word``: whitespace-separated words (WER; pre-segmented Chinese too).
* ``auto``: CJK ideographs and kana one unit each, every other run of letters or
  digits one word; ``你好world 3`` -> ``你 好 world 3``. Hangul is left in words:
  Korean separates words with spaces.
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass

UNITS = ("char", "word", "auto")
SPACE_TOKEN = "<space>"

_ASCII_PUNCT = frozenset(string.punctuation)
_APOSTROPHES = frozenset("'’")


@dataclass
class NormalizeOptions:
    """What to normalise away before scoring.

    The field defaults change nothing but punctuation (the trainer's validation
    CER uses them); ``xllm score`` and ``xllm decode`` start from
    :func:`scoring_defaults`, which also folds case.
    """

    remove_punct: bool = True   # ASCII + Unicode punctuation (CJK 。，、《》…) -> space; word-internal apostrophe kept
    nfkc: bool = False          # Unicode NFKC: full-width letters/digits/punctuation -> half-width
    lower: bool = False         # case folding (str.casefold)
    remove_spaces: bool = True  # char unit only: spaces are not units (False: each word gap scores as "<space>")

    def describe(self, unit: str) -> str:
        """One line for result.txt: what was scored and what was normalised away."""
        parts = [f"unit {unit}", "case folded" if self.lower else "case kept",
                 "punctuation removed" if self.remove_punct else "punctuation kept"]
        if self.nfkc:
            parts.append("NFKC")
        if unit == "char" and not self.remove_spaces:
            parts.append("spaces scored as <space>")
        return "Normalisation: " + ", ".join(parts)


DEFAULT_UNIT = "auto"  # xllm score and xllm decode: CER for Chinese, WER for spaced text, MER for a mix


def scoring_defaults() -> NormalizeOptions:
    """What ``xllm score`` and ``xllm decode`` normalise unless told otherwise.

    Case is folded and punctuation removed, as sclite users and Whisper's English
    normaliser expect: "Hello, world" vs "hello world" is not a recognition error.
    Chinese has neither case nor (after removal) punctuation, so its CER is unchanged.
    """
    return NormalizeOptions(remove_punct=True, lower=True)


def is_cjk(ch: str) -> bool:
    """True for characters scored one by one in ``auto`` mode (Han ideographs, kana)."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF      # CJK Unified Ideographs
        or 0x3400 <= cp <= 0x4DBF   # Extension A
        or 0x20000 <= cp <= 0x3134F # Extensions B-G
        or 0xF900 <= cp <= 0xFAFF   # Compatibility Ideographs
        or 0x3040 <= cp <= 0x30FF   # Hiragana, Katakana
        or 0x31F0 <= cp <= 0x31FF   # Katakana phonetic extensions
        or 0x3005 <= cp <= 0x3007   # 々 〆 〇
    )


def is_punct(ch: str) -> bool:
    """ASCII punctuation, any Unicode punctuation (P*), and full-width forms of ASCII punctuation."""
    if ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P"):
        return True
    return unicodedata.normalize("NFKC", ch) in _ASCII_PUNCT if ord(ch) > 0x7F else False


def _strip_punct(text: str) -> str:
    out = []
    last = len(text) - 1
    for i, ch in enumerate(text):
        if ch in _APOSTROPHES and 0 < i < last and text[i - 1].isalnum() and text[i + 1].isalnum() \
                and not is_cjk(text[i - 1]) and not is_cjk(text[i + 1]):
            out.append(ch)  # don't, it's: the apostrophe belongs to the word
        elif is_punct(ch):
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def normalize_text(text: str, opts: NormalizeOptions | None = None) -> str:
    """Apply NFKC, case folding and punctuation removal; collapse whitespace."""
    opts = opts or NormalizeOptions()
    if opts.nfkc:
        text = unicodedata.normalize("NFKC", text)
    if opts.lower:
        text = text.casefold()
    if opts.remove_punct:
        text = _strip_punct(text)
    return " ".join(text.split())


def _auto_tokens(word: str) -> list[str]:
    tokens: list[str] = []
    run = ""
    for ch in word:
        if is_cjk(ch):
            if run:
                tokens.append(run)
                run = ""
            tokens.append(ch)
        else:
            run += ch
    if run:
        tokens.append(run)
    return tokens


def tokenize(text: str, unit: str, opts: NormalizeOptions | None = None) -> list[str]:
    """Normalise ``text`` and split it into scoring units (no unit contains whitespace)."""
    opts = opts or NormalizeOptions()
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
    words = normalize_text(text, opts).split()
    if unit == "word":
        return words
    if unit == "auto":
        return [tok for word in words for tok in _auto_tokens(word)]
    if opts.remove_spaces:
        return [ch for word in words for ch in word]
    tokens: list[str] = []
    for i, word in enumerate(words):
        if i:
            tokens.append(SPACE_TOKEN)
        tokens.extend(word)
    return tokens


def metric_name(unit: str, ref_tokens: list[list[str]]) -> str:
    """``CER`` for char, ``WER`` for word; ``auto``: CER (only CJK), WER (no CJK) or MER (mixed)."""
    if unit == "char":
        return "CER"
    if unit == "word":
        return "WER"
    has_cjk = has_word = False
    for toks in ref_tokens:
        for tok in toks:
            if len(tok) == 1 and is_cjk(tok):
                has_cjk = True
            else:
                has_word = True
        if has_cjk and has_word:
            return "MER"
    return "CER" if has_cjk else "WER"
