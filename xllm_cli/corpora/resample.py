"""Converting a corpus' audio to 16-bit mono PCM WAV at one rate (``xllm prep dir --resample``).

wav.scp may name FLAC, MP3 or 44.1 kHz stereo files: xllm reads them, but Kaldi
cannot without a pipe, and lhotse's Kaldi import fails on them. Converting once
at prep time gives a data directory every toolkit reads.

Files already in the target format are used as they are. The others are decoded
with :func:`xllm_cli.data.audio.load_audio` (any format ffmpeg reads, mixed to
mono, resampled) and written atomically, in a process pool whose workers die
with the command (:func:`xllm_cli.procutil.die_with_parent`). A converted file
exists only complete, so a run that was interrupted resumes where it stopped:
existing outputs are skipped.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Sequence

from ..console import log, progress_bar
from ..data.durations import audio_header
from ..errors import XllmError
from ..fsutil import atomic_save
from ..procutil import die_with_parent


def needs_conversion(path: str, rate: int) -> bool:
    """Whether ``path`` is anything but 16-bit mono PCM WAV at ``rate`` (its header decides)."""
    header = audio_header(path)
    return not (header.container in ("WAV", "WAVEX") and header.codec == "PCM_16"
                and header.channels == 1 and header.rate == rate)


def convert_file(source: str, target: str, rate: int) -> str:
    """``source`` as 16-bit mono PCM WAV at ``rate`` in ``target`` (written atomically); returns ``target``."""
    import soundfile

    from ..data.audio import load_audio

    wave = load_audio(source, sample_rate=rate)
    if wave.size == 0:
        raise XllmError(f"{source}: no audio samples (0 s); nothing to convert")
    atomic_save(target, lambda tmp: soundfile.write(tmp, wave, rate, subtype="PCM_16", format="WAV"))
    return target


def convert_all(sources: Sequence[str], out_dir: str | Path, names: Sequence[str], rate: int, jobs: int = 1) -> list[str]:
    """Paths to use in wav.scp for ``sources``: converted files ``out_dir/<name>.wav`` where
    needed, the source itself where it is already in the target format."""
    out_dir = Path(out_dir).absolute()
    result = list(sources)
    todo: list[tuple[int, str]] = []
    for i, (source, name) in enumerate(zip(sources, names)):
        target = str(out_dir / f"{name}.wav")
        if os.path.isfile(target):  # converted by an earlier (perhaps interrupted) run
            result[i] = target
        elif needs_conversion(source, rate):
            todo.append((i, target))
    skipped = sum(1 for i, s in enumerate(sources) if result[i] != s)
    if skipped:
        log.info(f"{skipped:,} files already converted in {out_dir} (an earlier run); kept")
    if not todo:
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info(f"converting {len(todo):,} files to {rate} Hz mono 16-bit WAV in {out_dir}")
    with progress_bar("files") as progress:
        task = progress.add_task("resample", total=len(todo))
        if jobs <= 1:
            for i, target in todo:
                result[i] = convert_file(sources[i], target, rate)
                progress.advance(task)
            return result
        with ProcessPoolExecutor(max_workers=jobs, initializer=die_with_parent) as pool:
            futures = {pool.submit(convert_file, sources[i], target, rate): i for i, target in todo}
            try:
                for future in as_completed(futures):
                    result[futures[future]] = future.result()
                    progress.advance(task)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return result
