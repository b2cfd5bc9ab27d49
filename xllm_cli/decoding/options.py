"""The options of ``xllm decode`` (one dataclass) and their validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import XllmError
from ..scoring.normalize import DEFAULT_UNIT, UNITS, NormalizeOptions, scoring_defaults
from .systems import mode_names

CHANNELS = ("mix", "left", "right")
# options of the Whisper baseline alone (with their defaults): given without --whisper they are an error
WHISPER_ONLY = {"language": None, "task": "transcribe", "initial_prompt": None, "temperature": None, "t2s": False,
                "channel": "mix"}


@dataclass
class DecodeOptions:
    exp: Optional[Path]  # None: only with --whisper (job.exp_dir)
    data: Path
    stage: Optional[int] = None  # None: the latest trained stage (llm) or 1 (nar)
    mode: str = "llm"  # a decoding system chosen by --mode (systems.py)
    beam: int = 1
    nbest: int = 1
    batch_size: Optional[int] = None
    max_batch_seconds: Optional[float] = None
    max_new_tokens: Optional[int] = None  # None: bounded by the input length
    nj: int = 1
    use_image: bool = True
    use_video: bool = True
    device: str = "cpu"
    tag: Optional[str] = None
    wer: bool = False
    rescore: Optional[str] = None  # "ct2"
    lm_weight: float = 0.5
    whisper: Optional[Path] = None  # the Whisper baseline system's CTranslate2 directory
    part: Optional[tuple[int, int]] = None  # (k, N): this process decodes DATA/split{N}/k
    threads: Optional[int] = None  # torch threads in this process
    max_duration: Optional[float] = None  # longest utterance decoded; None: the system's (60 s LLM, 30 s Whisper)
    strict: bool = False  # fail on unusable audio instead of listing it in DECODE/skipped
    out: Optional[Path] = None  # the decode directory itself (default: EXP/decode_<set>_<tag>)
    # the Whisper baseline (--whisper): faster-whisper's options
    language: Optional[str] = None  # None: detected per utterance (the first 30 s of a long one)
    task: str = "transcribe"  # or translate (to English)
    initial_prompt: Optional[str] = None
    temperature: Optional[str] = None  # "0" or "0,0.2,...": the fallback temperatures (None: faster-whisper's)
    t2s: bool = False  # Traditional -> Simplified Chinese in the hypotheses (OpenCC)
    channel: str = "mix"  # stereo: left, right or their mean
    # scoring (the same options and defaults as xllm score)
    unit: str = DEFAULT_UNIT
    normalize: NormalizeOptions = field(default_factory=scoring_defaults)
    # The `xllm decode` arguments as given (options only, each `--name=value` or a flag):
    # the --nj workers rerun them with --part/--threads/--device of their own (parallel.py).
    argv: Optional[list[str]] = None

    def validate(self) -> None:
        modes = mode_names()
        if self.mode not in modes:
            raise XllmError(f"--mode must be one of {', '.join(modes)}, not '{self.mode}'")
        if self.beam < 1:
            raise XllmError(f"--beam must be at least 1, not {self.beam}")
        if self.nbest < 1:
            raise XllmError(f"--nbest must be at least 1, not {self.nbest}")
        if self.nbest > self.beam:
            raise XllmError(f"--nbest {self.nbest} needs --beam of at least {self.nbest} (n-best lists come from beam search)")
        if self.batch_size is not None and self.max_batch_seconds is not None:
            raise XllmError("give either --batch-size or --max-batch-seconds, not both")
        if self.batch_size is not None and self.batch_size < 1:
            raise XllmError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.max_batch_seconds is not None and not self.max_batch_seconds > 0:
            raise XllmError(f"--max-batch-seconds must be positive, not {self.max_batch_seconds}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise XllmError(f"--max-new-tokens must be at least 1, not {self.max_new_tokens}")
        if self.nj < 1:
            raise XllmError(f"--nj must be at least 1, not {self.nj}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise XllmError(f"--device must be cpu or cuda, not '{self.device}'")
        if self.rescore not in (None, "ct2"):
            raise XllmError(f"--rescore supports only 'ct2', not '{self.rescore}'")
        if self.rescore and self.mode != "llm":
            raise XllmError("--rescore needs --mode llm (it rescores the LLM's n-best lists)")
        if self.rescore and self.nbest < 2:
            raise XllmError("--rescore ct2 needs an n-best list: give --beam N --nbest N with N >= 2")
        if self.whisper is not None and (self.mode != "llm" or self.rescore):
            raise XllmError("--whisper runs the Whisper baseline alone: drop --mode/--rescore")
        if self.whisper is None:
            given = [name for name, default in WHISPER_ONLY.items() if getattr(self, name) != default]
            if given:
                raise XllmError(f"--{given[0].replace('_', '-')} is an option of the Whisper baseline: give --whisper DIR")
            if self.exp is None:
                raise XllmError("--exp is required (the experiment whose model decodes); only --whisper DIR "
                                "decodes without one")
        if self.task not in ("transcribe", "translate"):
            raise XllmError(f"--task must be transcribe or translate, not '{self.task}'")
        if self.channel not in CHANNELS:
            raise XllmError(f"--channel must be one of {', '.join(CHANNELS)}, not '{self.channel}'")
        if self.temperature is not None:
            from .whisper_ct2 import parse_temperatures

            parse_temperatures(self.temperature)
        if self.unit not in UNITS:
            raise XllmError(f"--unit must be one of {', '.join(UNITS)}, not '{self.unit}'")
        if self.max_duration is not None and not self.max_duration > 0:
            raise XllmError(f"--max-duration must be positive, not {self.max_duration}")
        if self.tag is not None and (not self.tag or "/" in self.tag or self.tag.startswith(".")):
            raise XllmError(f"--tag must be a plain name, not '{self.tag}'")


def parse_part(text: str) -> tuple[int, int]:
    """``"k/N"`` -> (k, N) with 1 <= k <= N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise XllmError(f"--part must look like k/N (e.g. 2/4), not '{text}'") from None
    if not 1 <= k <= n:
        raise XllmError(f"--part {text}: need 1 <= k <= N")
    return k, n
