"""A decode job's identity: the stage it uses, its directory ``EXP/decode_<set>_<tag>``, its fingerprint.

The tag comes from the decoding system (``systems.py``): ``stage3_llm_beam1``,
``stage1_nar``, ``whisper_beam5`` (``whisper_beam5_zh_t2s`` with ``--language zh
--t2s``), with ``_noimage``/``_novideo`` and ``_ct2rescore_lmW`` suffixes;
``--tag`` replaces it, ``--out`` names the directory itself (docs/experiment.md).
The Whisper baseline needs no experiment: without ``--exp`` its decode
directories go under ``exp/whisper_<model-dir-name>``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .options import DecodeOptions
from .results import model_fingerprint
from .systems import system_for


def set_name(data: Path) -> str:
    """The set's name is the data directory's basename (``data/test`` -> ``test``)."""
    return Path(os.path.abspath(data)).name


def resolve_stage(opts: DecodeOptions) -> int | None:
    """The stage whose model decodes: as given, else the latest trained one (llm) or 1 (nar); None for Whisper."""
    return system_for(opts).resolve_stage(opts.exp, opts.stage)


def decode_tag(opts: DecodeOptions, stage: int | None) -> str:
    """``--tag``, else the system's: ``stage3_llm_beam1`` / ``stage1_nar`` / ``whisper`` (+ suffixes)."""
    return opts.tag or system_for(opts).tag(opts, stage)


def max_duration(opts: DecodeOptions) -> float:
    """``--max-duration``, else the longest input the system's model takes (``DecodingSystem.max_duration``)."""
    return opts.max_duration if opts.max_duration is not None else system_for(opts).max_duration


def exp_dir(opts: DecodeOptions) -> Path:
    """``--exp``, else (the Whisper baseline) ``exp/whisper_<model-dir-name>`` in the working directory."""
    if opts.exp is not None:
        return Path(opts.exp)
    return Path("exp") / f"whisper_{Path(os.path.abspath(opts.whisper)).name}"


def decode_dir_for(opts: DecodeOptions, stage: int | None) -> Path:
    if opts.out is not None:
        return Path(opts.out)
    return exp_dir(opts) / f"decode_{set_name(opts.data)}_{decode_tag(opts, stage)}"


def decode_fingerprint(opts: DecodeOptions, stage: int | None) -> dict:
    """What decides the hypotheses: the model file (path, size, mtime) and the search options.

    Results (a finished part, a partial file) are reused only when it matches, so a
    retrained model or a different beam never reuses stale hypotheses. The batch
    size is left out: it does not change the results.
    """
    search = {"mode": opts.mode, "beam": opts.beam, "nbest": opts.nbest, "max_new_tokens": opts.max_new_tokens,
              "use_image": opts.use_image, "use_video": opts.use_video}
    if opts.whisper is not None:  # faster-whisper's options decide its hypotheses too
        search.update(language=opts.language, task=opts.task, initial_prompt=opts.initial_prompt,
                      temperature=opts.temperature, t2s=opts.t2s, channel=opts.channel)
    return model_fingerprint(system_for(opts).model_file(opts, stage), search)
