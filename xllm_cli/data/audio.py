"""Audio input: any file (or a video's audio track) as 16 kHz mono float32.

Two readers, chosen per file:

- soundfile (libsndfile) for WAV/FLAC/OGG: no subprocess, and a segment is read
  by seeking to its first frame, so a 2 s utterance inside a 1 h recording
  costs 2 s of I/O;
- ffmpeg for everything else (mp3, m4a, opus, the audio track of mp4/mkv/...),
  called with argument lists built by ffmpeg-python (never a shell string);
  segments use input seeking (``-ss`` before ``-i``) and ``-t``.

Resampling happens where the samples are: ffmpeg's ``-ar`` on its path,
``torchaudio.functional.resample`` after soundfile. :func:`iter_audio_blocks`
streams hour-long files through an ffmpeg pipe in fixed-size blocks so memory
stays bounded by one block. Durations (headers, no decoding) are
:mod:`xllm_cli.data.durations`' job; finding and probing ffmpeg is :mod:`.media`'s.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..errors import XllmError
from .durations import wav_truncation
from .layout import SEGMENT_END_TOLERANCE, format_seconds
from .media import corrupt, existing_file, ffmpeg_failure, is_soundfile_path
from .media import require_ffmpeg

if TYPE_CHECKING:  # pragma: no cover
    from .utterance import Utterance

SAMPLE_RATE = 16000
# A segment may end this much past what was decoded: rounding in segments files (validate's
# SEGMENT_END_TOLERANCE) plus the samples an mp3/aac decoder drops at the end of a stream.
_SHORT_READ_TOLERANCE = max(SEGMENT_END_TOLERANCE, 0.05)
_PROBLEM = re.compile(r"utterance '([^'\n]*)': (.*)")


class AudioProblem(XllmError):
    """One utterance's audio cannot be used: ``utt_id`` and a one-line ``reason`` naming the file.

    A decoder skips the utterance and reports it (by id and reason) instead of
    stopping; training stops with the message, as for any XllmError. Raised by
    :func:`load_utterance` for a missing, unreadable, truncated or empty file and
    for a segment that runs past the end of its recording.
    """

    def __init__(self, utt_id: str, reason: str | None = None):
        if reason is None:  # rebuilt from its message alone (a DataLoader worker re-raises it that way)
            found = _PROBLEM.findall(utt_id)
            utt_id, reason = found[-1] if found else ("?", utt_id)
        super().__init__(f"utterance '{utt_id}': {reason}")
        self.utt_id = utt_id
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.utt_id, self.reason)


@functools.lru_cache(maxsize=8)
def _resampler(orig_sr: int, new_sr: int):
    # The sinc kernel costs far more to build than to apply (22.05k -> 16k: ~100 ms vs ~2 ms
    # for a 3 s utterance), so keep one transform per rate pair.
    import torchaudio

    return torchaudio.transforms.Resample(orig_sr, new_sr)


def resample(wave: np.ndarray, orig_sr: int, new_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling of a mono float32 signal (torchaudio's sinc interpolation)."""
    if orig_sr == new_sr or wave.size == 0:
        return wave.astype(np.float32, copy=False)
    import torch

    with torch.no_grad():
        out = _resampler(int(orig_sr), int(new_sr))(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
    return out.numpy()


CHANNELS = ("mix", "left", "right")


def _pick_channel(data: np.ndarray, channel: str) -> np.ndarray:
    """Mono from ``[frames, channels]``: their mean (``mix``), the first (``left``) or the second (``right``).

    A mono source gives its only channel whatever is asked.
    """
    if data.shape[1] == 1:
        return data[:, 0].copy()
    if channel == "left":
        return data[:, 0].copy()
    if channel == "right":
        return data[:, 1].copy()
    return data.mean(axis=1)


def _soundfile_read(path: Path, sample_rate: int, start: float | None, end: float | None,
                    channel: str = "mix") -> np.ndarray:
    import soundfile

    with soundfile.SoundFile(str(path)) as f:
        sr = f.samplerate
        first = int(round((start or 0.0) * sr))
        last = f.frames if end is None else min(f.frames, int(round(end * sr)))
        first = min(max(first, 0), f.frames)
        if last <= first:
            return np.zeros(0, dtype=np.float32)
        f.seek(first)
        data = f.read(last - first, dtype="float32", always_2d=True)
    return resample(_pick_channel(data, channel), sr, sample_rate)


def _ffmpeg_decode_args(
    path: Path, sample_rate: int, start: float | None = None, end: float | None = None, channel: str = "mix"
) -> list[str]:
    """ffmpeg arguments decoding the first audio stream of ``path`` to f32le on stdout.

    Mono (ffmpeg's downmix) for ``channel="mix"``; two interleaved channels otherwise
    (a mono source duplicated), from which :func:`_pick_channel` takes one.
    """
    import ffmpeg

    input_opts: dict = {}
    if start:
        input_opts["ss"] = f"{start:.6f}"
    if end is not None:
        input_opts["t"] = f"{max(end - (start or 0.0), 0.0):.6f}"
    stream = (
        ffmpeg.input(str(path), **input_opts)
        .audio.output("pipe:", format="f32le", acodec="pcm_f32le", ac=1 if channel == "mix" else 2, ar=sample_rate)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
    )
    return stream.compile(cmd=require_ffmpeg())


def _ffmpeg_read(path: Path, sample_rate: int, start: float | None, end: float | None,
                 channel: str = "mix") -> np.ndarray:
    args = _ffmpeg_decode_args(path, sample_rate, start, end, channel)
    try:
        result = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as e:
        raise XllmError(f"{path}: cannot run ffmpeg: {e}") from None
    if result.returncode != 0:
        raise ffmpeg_failure(path, result.stderr)
    samples = np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)
    return samples if channel == "mix" else _pick_channel(samples[: samples.size // 2 * 2].reshape(-1, 2), channel)


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    start: float | None = None,
    end: float | None = None,
    channel: str = "mix",
) -> np.ndarray:
    """Read ``path`` (or the part from ``start`` to ``end`` seconds) as float32 mono in [-1, 1].

    Multichannel audio is averaged to mono, or ``channel`` ``left``/``right`` picks
    one; the result is at ``sample_rate``.
    Video files give their first audio track.
    """
    path = existing_file(path)
    if start is not None and end is not None and end < start:
        raise XllmError(f"{path}: segment end {end} is before its start {start}")
    if is_soundfile_path(path):
        try:
            return _soundfile_read(path, sample_rate, start, end, channel)
        except XllmError:
            raise
        except Exception as e:  # a .wav libsndfile cannot parse (e.g. an odd codec): ffmpeg may
            sf_error = f"{type(e).__name__}: {e}"
            if shutil.which("ffmpeg") is None:
                raise corrupt(path, sf_error) from None
    return _ffmpeg_read(path, sample_rate, start, end, channel)


def load_utterance(utt: "Utterance", sample_rate: int = SAMPLE_RATE, channel: str = "mix") -> np.ndarray:
    """The samples of one data-directory utterance, honouring its segment bounds.

    Raises :class:`AudioProblem` (an XllmError) when its audio is unusable, rather
    than returning silence or a shortened signal: a wav cut short (libsndfile would
    read what is left), no samples at all, or a segment past the end of the file.
    """
    try:
        truncated = wav_truncation(utt.path) if Path(utt.path).suffix.lower() == ".wav" else None
        if truncated:
            raise AudioProblem(utt.utt_id, f"{utt.path}: {truncated}")
        wave = load_audio(utt.path, sample_rate=sample_rate, start=utt.start, end=utt.end, channel=channel)
    except AudioProblem:
        raise
    except XllmError as e:
        raise AudioProblem(utt.utt_id, str(e)) from None
    got = wave.size / sample_rate
    if utt.end is not None and got + _SHORT_READ_TOLERANCE < utt.end - (utt.start or 0.0):
        start = utt.start or 0.0
        raise AudioProblem(
            utt.utt_id,
            f"{utt.path}: segment {format_seconds(start)}..{format_seconds(utt.end)} s runs past the end of "
            f"the file ({format_seconds(start + got)} s)",
        )
    if wave.size == 0:
        raise AudioProblem(utt.utt_id, f"{utt.path}: no audio samples (0 s)")
    return wave


def iter_audio_blocks(
    path: str | Path, block_seconds: float = 30.0, sample_rate: int = SAMPLE_RATE, channel: str = "mix"
) -> Iterator[np.ndarray]:
    """Yield consecutive float32 mono blocks of ``block_seconds`` (the last one shorter).

    Memory stays bounded by one block whatever the file's length: ffmpeg decodes
    and resamples into a pipe that is read one block at a time. WAV/FLAC files
    already at ``sample_rate`` are read block-wise by soundfile without ffmpeg.
    """
    path = existing_file(path)
    block = max(1, int(round(block_seconds * sample_rate)))
    if is_soundfile_path(path):
        import soundfile

        try:
            info = soundfile.info(str(path))
        except Exception:
            info = None
        if info is not None and info.samplerate == sample_rate:
            with soundfile.SoundFile(str(path)) as f:
                while True:
                    data = f.read(block, dtype="float32", always_2d=True)
                    if len(data) == 0:
                        return
                    yield _pick_channel(data, channel)
    args = _ffmpeg_decode_args(path, sample_rate, channel=channel)
    width = 1 if channel == "mix" else 2  # interleaved samples per frame in the pipe
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        nbytes = block * 4 * width
        while True:
            chunks, have = [], 0
            while have < nbytes:  # a pipe read may return less than asked
                chunk = proc.stdout.read(nbytes - have)
                if not chunk:
                    break
                chunks.append(chunk)
                have += len(chunk)
            if have:
                samples = np.frombuffer(b"".join(chunks), dtype="<f4").astype(np.float32)
                yield samples if width == 1 else _pick_channel(samples[: samples.size // 2 * 2].reshape(-1, 2), channel)
            if have < nbytes:
                break
        stderr = proc.stderr.read()
        if proc.wait() != 0:
            raise ffmpeg_failure(path, stderr)
    finally:  # a consumer that stops early must not leave ffmpeg running
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
