"""Traditional -> Simplified Chinese (``--t2s``), with OpenCC's maintained ``opencc`` package.

Whisper writes Chinese mostly in Traditional characters; AISHELL and most
Mandarin test sets are Simplified, so without conversion every such character
scores as a substitution. The import is lazy: only ``--t2s`` needs the package.
"""

from __future__ import annotations

import functools

from ..errors import XllmError


@functools.lru_cache(maxsize=1)
def _converter():
    try:
        import opencc
    except ImportError:
        raise XllmError("--t2s needs OpenCC: pip install opencc") from None
    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """``這是說話`` -> ``这是说话``; other scripts pass through unchanged."""
    return _converter().convert(text) if text else text
