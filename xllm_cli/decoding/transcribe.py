"""Transcribe audio or video files of any length with an experiment's model or a Whisper baseline.

With ``--whisper DIR`` the CTranslate2 Whisper model reads the same block
stream and seeks through it 30 s window by window (``whisper_longform.py``, as
faster-whisper does): its own timestamps make the segments, ``--word-timestamps``
adds word times to the json output. Otherwise:

Each file is streamed (``iter_audio_blocks``: ffmpeg decodes any format, the
audio track of a video included) through the VAD chunker; speech chunks of at
most ``--max-chunk`` seconds are decoded ``--batch-size`` at a time as they come.
Only one batch of chunks and the chunker's buffer (at most one chunk) are held,
so an hour-long file needs no more memory than a minute-long one. Images
(``--image``) and, for a model with a video interface, frames of a video file
give the LLM context.

Output per file: ``text`` (a line per chunk), ``srt``, ``vtt`` or ``json``
(segments with start/end seconds), to stdout, ``--out DIR/<name>.<ext>``, or
``--out FILE.<ext>`` for a single input. ``--out`` is checked before the model
loads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence

from ..console import log, progress_bar
from ..errors import XllmError
from ..fsutil import atomic_write_text
from ..data.vad import SpeechChunk, VadChunker, VadOptions

FORMATS = ("text", "srt", "vtt", "json")
EXTENSIONS = {"text": "txt", "srt": "srt", "vtt": "vtt", "json": "json"}
BLOCK_SECONDS = 10.0  # audio read from ffmpeg at a time


@dataclass
class TranscribeOptions:
    exp: Optional[Path]  # None: only with --whisper
    files: list[Path]
    image: Optional[Path] = None
    format: str = "text"
    out: Optional[Path] = None
    max_chunk: float = 25.0
    vad_aggressiveness: int = 2
    batch_size: int = 8
    stage: Optional[int] = None
    device: str = "cpu"
    beam: int = 1
    channel: str = "mix"  # stereo: mix, left or right
    threads: Optional[int] = None  # CTranslate2 threads (--whisper)
    # the Whisper baseline (faster-whisper's options)
    whisper: Optional[Path] = None
    language: Optional[str] = None  # None: detected from each file's first 30 s
    task: str = "transcribe"
    initial_prompt: Optional[str] = None
    temperature: Optional[str] = None
    word_timestamps: bool = False
    t2s: bool = False

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise XllmError(f"--format must be one of {', '.join(FORMATS)}, not '{self.format}'")
        if self.batch_size < 1:
            raise XllmError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.beam < 1:
            raise XllmError(f"--beam must be at least 1, not {self.beam}")
        if not 1.0 <= self.max_chunk <= 60.0:
            raise XllmError(f"--max-chunk must be between 1 and 60 seconds, not {self.max_chunk}")
        if not self.files:
            raise XllmError("give at least one FILE to transcribe")
        for f in self.files:
            if not Path(f).is_file():
                raise XllmError(f"{f}: file not found")
        if len(self.files) > 1 and self.out is None and self.format != "text":
            raise XllmError(f"--format {self.format} for several files needs --out DIR (one {self.format} file per input)")
        if self.out is not None:
            self._check_out()
        if self.image is not None and not Path(self.image).is_file():
            raise XllmError(f"{self.image}: image not found")
        if self.exp is not None and not Path(self.exp).is_dir():
            raise XllmError(f"{self.exp}: experiment directory not found")
        self._check_model()

    def _check_model(self) -> None:
        from .options import CHANNELS

        if self.channel not in CHANNELS:
            raise XllmError(f"--channel must be one of {', '.join(CHANNELS)}, not '{self.channel}'")
        if self.whisper is None:  # (no --exp either: build_chunk_decoder says so; tests bring their own decoder)
            given = [n for n, on in (("language", self.language), ("task", self.task != "transcribe"),
                                     ("initial-prompt", self.initial_prompt), ("temperature", self.temperature),
                                     ("word-timestamps", self.word_timestamps), ("t2s", self.t2s)) if on]
            if given:
                raise XllmError(f"--{given[0]} is an option of the Whisper baseline: give --whisper DIR")
            return
        if self.exp is not None:
            raise XllmError("give either --exp or --whisper, not both")
        if not Path(self.whisper).is_dir():
            raise XllmError(f"{self.whisper}: Whisper CTranslate2 model directory not found")
        if self.task not in ("transcribe", "translate"):
            raise XllmError(f"--task must be transcribe or translate, not '{self.task}'")
        if self.temperature is not None:
            from .whisper_ct2 import parse_temperatures

            parse_temperatures(self.temperature)


    def out_is_file(self) -> bool:
        """``--out`` names the output file itself: an existing file, or a name ending in the format's extension."""
        out = Path(self.out)
        return out.is_file() or (not out.is_dir() and out.suffix.lower() == f".{EXTENSIONS[self.format]}")

    def _check_out(self) -> None:
        """Before any model loads: an --out that cannot take the results is a one-line error now, not after decoding."""
        out = Path(self.out)
        if self.out_is_file():
            if len(self.files) > 1:
                raise XllmError(f"--out {out}: a file, but {len(self.files)} inputs need a directory "
                                f"(one {self.format} file per input)")
            parent = out.parent
        else:
            if out.exists() and not out.is_dir():
                raise XllmError(f"--out {out}: exists and is not a directory")
            parent = out
        existing = next((a for a in (parent, *parent.parents) if a.exists()), None)
        if existing is not None and not existing.is_dir():
            raise XllmError(f"--out {out}: {existing} is a file, not a directory")


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: Optional[list[dict]] = None  # --whisper --word-timestamps: {"start", "end", "word", "probability"}


@dataclass
class Transcript:
    file: str
    segments: list[Segment] = field(default_factory=list)
    duration: float = 0.0  # seconds of audio read

    @property
    def text(self) -> str:
        joiner = "" if _is_unspaced([s.text for s in self.segments]) else " "
        return joiner.join(s.text for s in self.segments if s.text)


class ChunkDecoder(Protocol):
    """Decodes a batch of speech chunks of one file; the model behind it is loaded once."""

    def decode_chunks(self, chunks: Sequence[SpeechChunk], source: Path) -> list[str]:
        ...


# ----------------------------------------------------------------------------- streaming


def iter_chunk_batches(
    blocks: Iterable[Any], vad: VadOptions, batch_size: int, chunker: VadChunker | None = None
) -> Iterator[list[SpeechChunk]]:
    """Batches of speech chunks, produced while the blocks stream in."""
    chunker = chunker or VadChunker(vad)
    pending: list[SpeechChunk] = []
    for block in blocks:
        pending.extend(chunker.feed(block))
        while len(pending) >= batch_size:
            yield pending[:batch_size]
            pending = pending[batch_size:]
    pending.extend(chunker.flush())
    for i in range(0, len(pending), batch_size):
        yield pending[i : i + batch_size]


def transcribe_stream(
    blocks: Iterable[Any], decoder: ChunkDecoder, source: Path, vad: VadOptions, batch_size: int,
    on_chunk: Callable[[SpeechChunk], None] | None = None, chunker: VadChunker | None = None,
) -> Transcript:
    """Decode one recording given as a stream of blocks."""
    result = Transcript(file=str(source))
    chunker = chunker or VadChunker(vad)

    def counted(bs):
        for b in bs:
            result.duration += len(b) / vad.sample_rate
            yield b

    for batch in iter_chunk_batches(counted(blocks), vad, batch_size, chunker=chunker):
        texts = decoder.decode_chunks(batch, source)
        for chunk, text in zip(batch, texts):
            result.segments.append(Segment(round(chunk.start, 3), round(chunk.end, 3), " ".join(text.split())))
            if on_chunk is not None:
                on_chunk(chunk)
    return result


def transcribe_segments(blocks: Iterable[Any], decoder: Any, source: Path, sample_rate: int,
                        on_segment: Callable[[Segment], None] | None = None) -> Transcript:
    """Decode one recording with a decoder that makes its own segments (the Whisper baseline)."""
    result = Transcript(file=str(source))

    def counted(bs):
        for b in bs:
            result.duration += len(b) / sample_rate
            yield b

    for segment in decoder.segments(counted(blocks), source):
        result.segments.append(segment)
        if on_segment is not None:
            on_segment(segment)
    return result


def transcribe_file(path: Path, decoder: ChunkDecoder, vad: VadOptions, batch_size: int, show_progress: bool = True,
                    channel: str = "mix") -> Transcript:
    from ..data.audio import iter_audio_blocks
    from ..data.durations import audio_duration

    try:
        total = float(audio_duration(path))
    except XllmError:  # a container without a duration in its header: no ETA (reading says if it is broken)
        total = None
    with progress_bar("audio s") as bar:
        task = bar.add_task(Path(path).name, total=total, visible=show_progress)
        blocks = iter_audio_blocks(path, block_seconds=BLOCK_SECONDS, sample_rate=vad.sample_rate, channel=channel)
        if hasattr(decoder, "segments"):  # Whisper: its own timestamps cut the segments, no VAD
            result = transcribe_segments(blocks, decoder, Path(path), vad.sample_rate,
                                         on_segment=lambda s: bar.update(task, completed=s.end))
        else:
            result = transcribe_stream(blocks, decoder, Path(path), vad, batch_size,
                                       on_chunk=lambda c: bar.update(task, completed=c.end))
        bar.update(task, completed=total if total is not None else result.duration)
    return result


# ----------------------------------------------------------------------------- formats


def _is_unspaced(texts: Sequence[str]) -> bool:
    from .language import score_unit

    return score_unit({str(i): t for i, t in enumerate(texts)}) == "char" if any(texts) else False


def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def format_text(t: Transcript) -> str:
    return "".join(f"{s.text}\n" for s in t.segments if s.text)


def format_srt(t: Transcript) -> str:
    blocks = []
    for i, s in enumerate((s for s in t.segments if s.text), start=1):
        blocks.append(f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n")
    return "\n".join(blocks)


def format_vtt(t: Transcript) -> str:
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in t.segments if s.text]
    return "WEBVTT\n\n" + "\n".join(cues)


def transcript_dict(t: Transcript) -> dict:
    return {
        "file": t.file,
        "duration": round(t.duration, 3),
        "text": t.text,
        "segments": [{k: v for k, v in asdict(s).items() if k != "words" or v is not None} for s in t.segments],
    }


def format_json(t: Transcript) -> str:
    return json.dumps(transcript_dict(t), ensure_ascii=False, indent=2) + "\n"


FORMATTERS = {"text": format_text, "srt": format_srt, "vtt": format_vtt, "json": format_json}


def output_paths(files: Sequence[Path], out: Path, fmt: str) -> list[Path]:
    """``OUT/<stem>.<ext>``; files sharing a stem get ``<stem>.2.<ext>``, ... (never overwrite each other)."""
    seen: dict[str, int] = {}
    paths = []
    for f in files:
        stem = Path(f).stem
        seen[stem] = seen.get(stem, 0) + 1
        name = stem if seen[stem] == 1 else f"{stem}.{seen[stem]}"
        paths.append(Path(out) / f"{name}.{EXTENSIONS[fmt]}")
    return paths


# ----------------------------------------------------------------------------- the command


def run_transcribe(opts: TranscribeOptions, decoder_factory: Callable[[TranscribeOptions], ChunkDecoder] | None = None,
                   echo: Callable[[str], None] | None = None) -> list[Transcript]:
    """``xllm transcribe``: decode every file, write or print it as soon as it is done."""
    import sys

    opts.validate()
    vad = VadOptions(aggressiveness=opts.vad_aggressiveness, max_chunk=opts.max_chunk)
    vad.validate()
    decoder = (decoder_factory or build_chunk_decoder)(opts)
    echo = echo or (lambda s: sys.stdout.write(s))
    if opts.out is None:
        targets = [None] * len(opts.files)
    elif opts.out_is_file():
        targets = [Path(opts.out)]
    else:
        targets = output_paths(opts.files, opts.out, opts.format)
    results = []
    for i, (path, target) in enumerate(zip(opts.files, targets)):
        t = transcribe_file(Path(path), decoder, vad, opts.batch_size, channel=opts.channel)
        results.append(t)
        text = FORMATTERS[opts.format](t)
        if target is not None:
            atomic_write_text(target, text)
            log.info(f"{path}: {len(t.segments)} segments, {t.duration:.1f} s -> {target}")
        else:
            if len(opts.files) > 1:  # text only (see validate): a header per file, as `head` does
                echo(f"{'' if i == 0 else chr(10)}==> {path} <==\n")
            echo(text)
    return results


def build_chunk_decoder(opts: TranscribeOptions) -> ChunkDecoder:
    if opts.whisper is None and opts.exp is None:
        raise XllmError("give --exp EXP (a trained experiment) or --whisper DIR (a CTranslate2 Whisper model)")
    if opts.whisper is not None:
        from .whisper_system import WhisperFileDecoder

        return WhisperFileDecoder(opts)
    return XllmChunkDecoder(opts)


class XllmChunkDecoder:
    """Features of each chunk (+ image / video frames) -> the model's greedy/beam hypothesis."""

    def __init__(self, opts: TranscribeOptions) -> None:
        from .bundle import load_for_decoding
        from .systems import LlmSystem

        if opts.exp is None:
            raise XllmError("--exp is required")
        stage = LlmSystem.resolve_stage(Path(opts.exp), opts.stage)
        self.opts = opts
        self.bundle = load_for_decoding(Path(opts.exp), stage, opts.device)
        self.image = None
        if opts.image is not None:
            if not self.bundle.has_vision:
                log.warning(f"the model of {opts.exp} has no image interface: --image is ignored")
            else:
                self.image = self.bundle.load_image(opts.image)
        self._video: tuple[str, Any] | None = None

    def _video_frames(self, source: Path):
        """Frames of a video file for a model with a video interface (sampled once per file)."""
        if self._video is None or self._video[0] != str(source):
            self._video = (str(source), self.bundle.load_video(source))
            if self._video[1] is not None:
                log.info(f"{source}: {self._video[1].shape[0]} video frames give the model context")
        return self._video[1]

    def decode_chunks(self, chunks: Sequence[SpeechChunk], source: Path) -> list[str]:
        batch = self.bundle.batch_from_waves(
            [c.samples for c in chunks], ids=[f"{Path(source).stem}-{i}" for i in range(len(chunks))],
            image=self.image, video=self._video_frames(source),
        )
        # max_new_tokens bounded per chunk by its duration, as in decode
        nbest = self.bundle.generate(batch, beam=self.opts.beam, nbest=1, use_image=self.image is not None,
                                     use_video=True)
        return [n[0][0] if n else "" for n in nbest]
