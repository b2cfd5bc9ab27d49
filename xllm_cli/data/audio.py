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
stays bounded by one block.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..errors import XllmError

if TYPE_CHECKING:  # pragma: no cover
    from .datadir import Utterance

SAMPLE_RATE = 16000
FFMPEG_MISSING = (
    "ffmpeg not found: install it (Debian/Ubuntu: sudo apt-get install ffmpeg; or conda install ffmpeg)"
)
# Extensions libsndfile reads; anything else (or a soundfile failure) goes to ffmpeg.
SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".w64", ".caf"}


def require_ffmpeg() -> str:
    """Path of the ``ffmpeg`` binary, or a one-line XllmError saying how to install it."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise XllmError(FFMPEG_MISSING)
    return path


def require_ffprobe() -> str:
    """Path of ``ffprobe`` (shipped with ffmpeg); same install hint when missing."""
    path = shutil.which("ffprobe")
    if path is None:
        raise XllmError(FFMPEG_MISSING.replace("ffmpeg not found", "ffprobe not found"))
    return path


def _check_exists(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise XllmError(f"{path}: audio file not found")
    return path


def _corrupt(path: str | Path, detail: str) -> XllmError:
    detail = " ".join(detail.split())  # one line, whatever the library said
    if len(detail) > 200:
        detail = detail[:200] + "..."
    return XllmError(f"{path}: cannot read audio (corrupt or unsupported file): {detail}")


def _ffmpeg_detail(stderr: bytes) -> str:
    lines = [l for l in stderr.decode("utf-8", "replace").splitlines() if l.strip()]
    return lines[-1] if lines else "ffmpeg failed"


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


def _is_soundfile_path(path: Path) -> bool:
    return path.suffix.lower() in SOUNDFILE_EXTENSIONS


def _soundfile_read(path: Path, sample_rate: int, start: float | None, end: float | None) -> np.ndarray:
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
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, sr, sample_rate)


def _ffmpeg_decode_args(
    path: Path, sample_rate: int, start: float | None = None, end: float | None = None
) -> list[str]:
    """ffmpeg arguments decoding the first audio stream of ``path`` to mono f32le on stdout."""
    import ffmpeg

    input_opts: dict = {}
    if start:
        input_opts["ss"] = f"{start:.6f}"
    if end is not None:
        input_opts["t"] = f"{max(end - (start or 0.0), 0.0):.6f}"
    stream = (
        ffmpeg.input(str(path), **input_opts)
        .audio.output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
    )
    return stream.compile(cmd=require_ffmpeg())


def _ffmpeg_read(path: Path, sample_rate: int, start: float | None, end: float | None) -> np.ndarray:
    args = _ffmpeg_decode_args(path, sample_rate, start, end)
    try:
        result = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as e:
        raise XllmError(f"{path}: cannot run ffmpeg: {e}") from None
    if result.returncode != 0:
        raise _corrupt(path, _ffmpeg_detail(result.stderr))
    return np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Read ``path`` (or the part from ``start`` to ``end`` seconds) as float32 mono in [-1, 1].

    Multichannel audio is averaged to mono; the result is at ``sample_rate``.
    Video files give their first audio track.
    """
    path = _check_exists(path)
    if start is not None and end is not None and end < start:
        raise XllmError(f"{path}: segment end {end} is before its start {start}")
    if _is_soundfile_path(path):
        try:
            return _soundfile_read(path, sample_rate, start, end)
        except XllmError:
            raise
        except Exception as e:  # a .wav libsndfile cannot parse (e.g. an odd codec): ffmpeg may
            sf_error = f"{type(e).__name__}: {e}"
            if shutil.which("ffmpeg") is None:
                raise _corrupt(path, sf_error) from None
    return _ffmpeg_read(path, sample_rate, start, end)


def load_utterance(utt: "Utterance", sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The samples of one data-directory utterance, honouring its segment bounds."""
    return load_audio(utt.path, sample_rate=sample_rate, start=utt.start, end=utt.end)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding)."""
    path = _check_exists(path)
    if _is_soundfile_path(path):
        import soundfile

        try:
            info = soundfile.info(str(path))
            return info.frames / float(info.samplerate)
        except Exception as e:
            if shutil.which("ffprobe") is None:
                raise _corrupt(path, f"{type(e).__name__}: {e}") from None
    return _probe_duration(path, "audio")


def _probe(path: Path) -> dict:
    import ffmpeg

    try:
        return ffmpeg.probe(str(path), cmd=require_ffprobe())
    except ffmpeg.Error as e:
        raise _corrupt(path, _ffmpeg_detail(e.stderr or b"")) from None


def _probe_duration(path: Path, kind: str) -> float:
    """Duration of the first ``kind`` ("audio"/"video") stream, else of the container."""
    info = _probe(path)
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == kind]
    if not streams:
        raise XllmError(f"{path}: no {kind} stream")
    for value in (streams[0].get("duration"), (info.get("format") or {}).get("duration")):
        try:
            if value is not None and float(value) > 0:
                return float(value)
        except ValueError:
            continue
    raise _corrupt(path, f"no duration in the {kind} stream or container header")


def iter_audio_blocks(
    path: str | Path, block_seconds: float = 30.0, sample_rate: int = SAMPLE_RATE
) -> Iterator[np.ndarray]:
    """Yield consecutive float32 mono blocks of ``block_seconds`` (the last one shorter).

    Memory stays bounded by one block whatever the file's length: ffmpeg decodes
    and resamples into a pipe that is read one block at a time. WAV/FLAC files
    already at ``sample_rate`` are read block-wise by soundfile without ffmpeg.
    """
    path = _check_exists(path)
    block = max(1, int(round(block_seconds * sample_rate)))
    if _is_soundfile_path(path):
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
                    yield data.mean(axis=1) if data.shape[1] > 1 else data[:, 0].copy()
    args = _ffmpeg_decode_args(path, sample_rate)
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        nbytes = block * 4
        while True:
            chunks, have = [], 0
            while have < nbytes:  # a pipe read may return less than asked
                chunk = proc.stdout.read(nbytes - have)
                if not chunk:
                    break
                chunks.append(chunk)
                have += len(chunk)
            if have:
                yield np.frombuffer(b"".join(chunks), dtype="<f4").astype(np.float32)
            if have < nbytes:
                break
        stderr = proc.stderr.read()
        if proc.wait() != 0:
            raise _corrupt(path, _ffmpeg_detail(stderr))
    finally:  # a consumer that stops early must not leave ffmpeg running
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
