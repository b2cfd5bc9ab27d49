"""The decoding systems ``xllm decode`` can run, in one registry (docs/extending.md).

A system is a class: its class methods name the job (the stage whose model it
uses, the decode directory's tag, the model file the results depend on); an
instance holds the loaded model and turns utterances into batches and batches
into n-best lists::

    class MySystem(DecodingSystem):
        name = "mine"                                   # --mode mine
        def batches(self, utts): ...                    # batches with .utt_ids, .durations
        def decode(self, batch): ...                    # [[(text, score), ...] per utterance]
    SYSTEMS["mine"] = MySystem

``--mode llm|nar`` picks a system by name; ``--whisper DIR`` picks ``whisper``
(a system with ``selected_by_mode = False`` is chosen by its own option).
Models are loaded only when an instance is made (torch, transformers and
ctranslate2 are imported lazily).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Optional

from ..errors import XllmError
from .batches import make_batches

if TYPE_CHECKING:
    from .bundle import DecodeBundle
    from .options import DecodeOptions
    from .results import NBest

NO_TRAINED_STAGE_HINT = "train one, or give --stage / --mode nar"


class DecodingSystem(ABC):
    """The common interface of the decoding systems."""

    name: ClassVar[str] = ""
    selected_by_mode: ClassVar[bool] = True  # chosen by --mode NAME (else by an option of its own)
    # The longest utterance the model takes as one input (--max-duration's default);
    # longer ones are reported and skipped, not truncated into a few invented words.
    max_duration: ClassVar[float] = 60.0

    # -- naming the job (no model loaded)
    @classmethod
    def resolve_stage(cls, exp: Path, stage: Optional[int]) -> Optional[int]:
        """The stage whose model decodes (None: the system does not use the experiment's models)."""
        return None

    @classmethod
    def tag(cls, opts: "DecodeOptions", stage: Optional[int]) -> str:
        """The decode directory's default suffix: ``EXP/decode_<set>_<tag>``."""
        return cls.name

    @classmethod
    @abstractmethod
    def model_file(cls, opts: "DecodeOptions", stage: Optional[int]) -> Path:
        """The file whose identity (path, size, mtime) the results depend on (``fingerprint.json``)."""

    # -- decoding (the model is loaded by __init__)
    def __init__(self, opts: "DecodeOptions", stage: Optional[int]) -> None:
        self.opts = opts
        self.stage = stage

    @abstractmethod
    def batches(self, utts: list[Any]) -> Iterator[Any]:
        """Batches with ``.utt_ids`` and ``.durations`` in decoding order."""

    @abstractmethod
    def decode(self, batch: Any) -> list["NBest"]:
        """An n-best list per utterance of the batch, best first."""


# ----------------------------------------------------------------------------- the X-LLM model


class XllmSystem(DecodingSystem):
    """A stage's X-LLM model (``EXP/stageN/{averaged,best}``) and the feature pipeline it was trained with."""

    default_stages: ClassVar[tuple[int, ...]] = (3, 2)  # searched highest first when --stage is not given

    @classmethod
    def resolve_stage(cls, exp: Path, stage: Optional[int]) -> int:
        from ..experiment import resolve_stage

        if stage is not None and stage not in (1, 2, 3):
            raise XllmError(f"--stage must be 1, 2 or 3 (a stage with a model), not {stage}")
        return resolve_stage(exp, stage, among=cls.default_stages, hint=NO_TRAINED_STAGE_HINT)

    @classmethod
    def tag(cls, opts: "DecodeOptions", stage: Optional[int]) -> str:
        tag = f"stage{stage}_{cls.name}" + cls.search_tag(opts)
        if not opts.use_image:
            tag += "_noimage"
        if not opts.use_video:
            tag += "_novideo"
        if opts.rescore:
            tag += f"_{opts.rescore}rescore_lm{opts.lm_weight:g}"
        return tag

    @classmethod
    def search_tag(cls, opts: "DecodeOptions") -> str:
        return ""

    @classmethod
    def model_file(cls, opts: "DecodeOptions", stage: Optional[int]) -> Path:
        from ..experiment import model_dir

        return model_dir(opts.exp, stage) / "model.safetensors"

    def __init__(self, opts: "DecodeOptions", stage: Optional[int], bundle: Optional["DecodeBundle"] = None) -> None:
        from .bundle import load_for_decoding

        super().__init__(opts, stage)
        self.bundle = bundle if bundle is not None else load_for_decoding(Path(opts.exp), stage, opts.device)

    def batches(self, utts: list[Any]) -> Iterator[Any]:
        groups = make_batches(utts, self.opts.batch_size, self.opts.max_batch_seconds, self.bundle.duration)
        yield from self.bundle.iter_batches(groups, use_image=self.opts.use_image, use_video=self.opts.use_video)


class LlmSystem(XllmSystem):
    """LLM generation (greedy or beam search) from the soft prompts: left-padded, KV cache, bf16 on GPU."""

    name = "llm"

    @classmethod
    def resolve_stage(cls, exp: Path, stage: Optional[int]) -> int:
        if stage == 1:
            raise XllmError("the stage-1 model has no trained LLM adapter: use --mode nar with --stage 1, or --stage 2/3")
        return super().resolve_stage(exp, stage)

    @classmethod
    def search_tag(cls, opts: "DecodeOptions") -> str:
        return f"_beam{opts.beam}"

    def decode(self, batch: Any) -> list["NBest"]:
        return self.bundle.generate(batch, beam=self.opts.beam, nbest=self.opts.nbest,
                                    max_new_tokens=self.opts.max_new_tokens, use_image=self.opts.use_image,
                                    use_video=self.opts.use_video)


class NarSystem(XllmSystem):
    """The C-Former's own non-autoregressive classifier (the stage-1 model by default)."""

    name = "nar"

    @classmethod
    def resolve_stage(cls, exp: Path, stage: Optional[int]) -> int:
        return 1 if stage is None else super().resolve_stage(exp, stage)

    def decode(self, batch: Any) -> list["NBest"]:
        return [[(text, 0.0)] for text in self.bundle.nar_decode(batch)]


# ----------------------------------------------------------------------------- the registry

def _whisper_system() -> type[DecodingSystem]:
    from .whisper_system import WhisperSystem

    return WhisperSystem


SYSTEMS: dict[str, type[DecodingSystem]] = {
    "llm": LlmSystem,
    "nar": NarSystem,
}


def mode_names() -> tuple[str, ...]:
    """The values of ``--mode``."""
    return tuple(name for name, system in SYSTEMS.items() if system.selected_by_mode)


def system_for(opts: "DecodeOptions") -> type[DecodingSystem]:
    """The system the options select: ``--whisper DIR``, else ``--mode``."""
    return SYSTEMS["whisper" if opts.whisper is not None else opts.mode]


# whisper_system.py subclasses DecodingSystem, so it is registered once this module is defined
WhisperSystem = SYSTEMS["whisper"] = _whisper_system()


def build_decoder(opts: "DecodeOptions", stage: Optional[int]) -> DecodingSystem:
    """The system with its model loaded (the default ``decoder_factory`` of ``run_decode``)."""
    return system_for(opts)(opts, stage)
