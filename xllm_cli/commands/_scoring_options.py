"""The scoring options of ``xllm score`` and ``xllm decode``, defined once so that both score alike.

Defaults come from :mod:`xllm_cli.scoring.normalize` (``DEFAULT_UNIT``,
``scoring_defaults``): unit ``auto``, case folded, punctuation removed.
"""

from __future__ import annotations

import typer

from ..errors import XllmError
from ..scoring.normalize import DEFAULT_UNIT, UNITS, NormalizeOptions, scoring_defaults

_DEFAULTS = scoring_defaults()


def unit_option():
    return typer.Option(
        DEFAULT_UNIT, "--unit", "-u",
        help="Scoring unit: auto (default: CJK characters one by one, other words whole; CER for Chinese, "
             "WER for space-delimited text, MER for a mix), char (CER; every character, spaces ignored), "
             "word (WER; whitespace words).",
    )


def punct_option():
    return typer.Option(
        _DEFAULTS.remove_punct, "--no-punct/--keep-punct",
        help="Remove punctuation (ASCII and CJK such as 。，、《》) before scoring (default) or score it.",
    )


def lower_option():
    return typer.Option(
        _DEFAULTS.lower, "--lower/--keep-case",
        help="Fold case before scoring (default; 'Hello' = 'hello', as sclite and Whisper's normaliser) "
             "or score case differences as errors.",
    )


def nfkc_option():
    return typer.Option(False, "--nfkc", help="Map full-width characters to half-width (Unicode NFKC) first.")


def keep_spaces_option():
    return typer.Option(
        False, "--keep-spaces", help="With --unit char, score word gaps as a '<space>' unit (ESPnet style).",
    )


def normalize_options(unit: str, remove_punct: bool, nfkc: bool, lower: bool, keep_spaces: bool) -> NormalizeOptions:
    """The options as given, checked (one-line error for a bad --unit)."""
    if unit not in UNITS:
        raise XllmError(f"--unit must be one of {', '.join(UNITS)}, not '{unit}'")
    return NormalizeOptions(remove_punct=remove_punct, nfkc=nfkc, lower=lower, remove_spaces=not keep_spaces)
