"""How a text is written: without spaces between words (Chinese, Japanese) or with them.

Decides the Whisper baseline's language and how ``xllm transcribe`` joins its
segments. (Scoring itself uses ``unit="auto"``, see ``xllm_cli/scoring``.)
"""

from __future__ import annotations

from ..scoring.normalize import is_cjk


def score_unit(refs: dict[str, str]) -> str:
    """``char`` for text written without spaces between words (Chinese, Japanese), ``word`` otherwise.

    A character counts as CJK by ``scoring.normalize.is_cjk`` (Han ideographs and
    kana), the same test scoring's ``auto`` unit uses.
    """
    cjk = spaced = 0
    for text in refs.values():
        for ch in text:
            if is_cjk(ch):
                cjk += 1
            elif not ch.isspace():
                spaced += 1
    return "char" if cjk >= spaced else "word"
