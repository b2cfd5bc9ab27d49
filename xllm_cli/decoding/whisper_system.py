"""The Whisper baseline as a decoding system (``xllm decode --whisper DIR``), and its model builder.

``build_whisper`` is shared with ``xllm transcribe --whisper``: the same options
(faster-whisper's: language detection, task, initial prompt, temperature
fallback) load the same model either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Optional

from ..console import log
from .batches import SkippedBatch, make_batches, read_each, utt_duration
from .prefetch import prefetch
from .systems import DecodingSystem

if TYPE_CHECKING:
    from .options import DecodeOptions
    from .results import NBest
    from .whisper_ct2 import WhisperCT2

# 30 s windows per batch when --batch-size is not given. The encoder's attention
# over 1500 frames costs ~70 MB per window and head group on CPU (16 windows: over
# 1 GB RSS for whisper-base, with no speed gained on a few cores); a GPU has room.
CPU_BATCH = 2
GPU_BATCH = 16


def build_whisper(model_dir: Path, device: str = "cpu", beam: int = 1, language: Optional[str] = None,
                  task: str = "transcribe", initial_prompt: Optional[str] = None, temperature: Optional[str] = None,
                  threads: Optional[int] = None, word_timestamps: bool = False,
                  max_length: Optional[int] = None) -> "WhisperCT2":
    from .whisper_ct2 import WhisperCT2, parse_temperatures

    kind, _, index = device.partition(":")
    extra = {"max_length": max_length} if max_length else {}
    model = WhisperCT2(model_dir, language=language, task=task, device=kind,
                       compute_type="int8" if kind == "cpu" else "float16", beam_size=beam, threads=threads or 0,
                       initial_prompt=initial_prompt, temperatures=parse_temperatures(temperature),
                       word_timestamps=word_timestamps, **extra)
    if index:
        log.warning(f"--device {device}: the Whisper baseline runs on the first visible GPU "
                    f"(set CUDA_VISIBLE_DEVICES={index} to pick one)")
    log.info(f"Whisper baseline {model_dir}: {'multilingual' if model.multilingual else 'English-only'}, "
             f"language {model.language or 'detected'}, task {task}, beam {beam}")
    return model


@dataclass
class AudioBatch:
    utt_ids: list[str]
    durations: list[float]
    waves: list[Any]
    skipped: dict[str, str]  # utterances of the group whose audio could not be read (batches.py)


def _audio_batch(group: list[Any], channel: str) -> AudioBatch | SkippedBatch:
    from ..data.audio import load_utterance

    read, skipped = read_each(group, lambda u: (u.utt_id, load_utterance(u, channel=channel)))
    if not read:
        return SkippedBatch(skipped)
    return AudioBatch([u for u, _ in read], [len(w) / 16000 for _, w in read], [w for _, w in read], skipped)


class WhisperSystem(DecodingSystem):
    """A CTranslate2 Whisper model directory (``--whisper DIR``) as a baseline, same decode directory format."""

    name = "whisper"
    selected_by_mode = False
    # Utterances over 30 s are decoded long-form (whisper_longform.py): no length limit of its own.
    max_duration: ClassVar[float] = float("inf")

    @classmethod
    def tag(cls, opts: "DecodeOptions", stage: Optional[int]) -> str:
        """``whisper_beam5``, then ``_zh`` for --language zh, ``_translate``, ``_t2s`` (docs/experiment.md)."""
        tag = f"whisper_beam{opts.beam}"
        if opts.language:
            tag += f"_{opts.language}"
        if opts.task != "transcribe":
            tag += f"_{opts.task}"
        if opts.t2s:
            tag += "_t2s"
        if opts.channel != "mix":
            tag += f"_{opts.channel}"
        return tag

    @classmethod
    def model_file(cls, opts: "DecodeOptions", stage: Optional[int]) -> Path:
        return Path(opts.whisper) / "model.bin"

    def __init__(self, opts: "DecodeOptions", stage: Optional[int] = None) -> None:
        super().__init__(opts, stage)
        self.model = build_whisper(opts.whisper, opts.device, opts.beam, opts.language, opts.task,
                                   opts.initial_prompt, opts.temperature, opts.threads,
                                   max_length=opts.max_new_tokens)

    def batches(self, utts: list[Any]) -> Iterator[Any]:
        size = self.opts.batch_size
        if size is None and self.opts.max_batch_seconds is None:
            size = CPU_BATCH if self.opts.device == "cpu" else GPU_BATCH
        groups = make_batches(utts, size, self.opts.max_batch_seconds, utt_duration)
        yield from prefetch(_audio_batch(g, self.opts.channel) for g in groups)

    def decode(self, batch: Any) -> list["NBest"]:
        texts = self.model.transcribe(batch.waves, batch_size=len(batch.waves))
        if self.opts.t2s:
            from .t2s import to_simplified

            texts = [to_simplified(t) for t in texts]
        return [[(t, 0.0)] for t in texts]


class WhisperFileDecoder:
    """``xllm transcribe --whisper``: a file's block stream -> timed segments (long-form seek, no VAD)."""

    def __init__(self, opts: Any) -> None:
        self.opts = opts
        self.model = build_whisper(opts.whisper, opts.device, opts.beam, opts.language, opts.task,
                                   opts.initial_prompt, opts.temperature, opts.threads,
                                   word_timestamps=opts.word_timestamps)

    def segments(self, blocks: Any, source: Path) -> Iterator[Any]:
        from .transcribe import Segment
        from .whisper_longform import iter_segments

        convert = (lambda t: t)
        if self.opts.t2s:
            from .t2s import to_simplified as convert
        for s in iter_segments(self.model, blocks):
            words = None
            if s.words is not None:
                words = [{"start": w.start, "end": w.end, "word": convert(w.word), "probability": w.probability}
                         for w in s.words]
            yield Segment(round(s.start, 3), round(s.end, 3), " ".join(convert(s.text).split()), words)
