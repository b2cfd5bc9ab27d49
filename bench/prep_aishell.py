#!/usr/bin/env python
"""Benchmark: ``xllm prep aishell`` against lhotse's ``prepare_aishell`` on one tree.

Builds a full-size AISHELL-1 skeleton in the extracted layout both tools read
(``data_aishell/wav/{train,dev,test}/S*/BAC009S*W*.wav`` plus
``data_aishell/transcript/aishell_transcript_v0.8.txt``): 141,925 tiny wavs
(0.10-0.16 s of silence, 16 kHz, 16-bit) of which 325 have no transcript line,
as in the real corpus; 120,098 / 14,326 / 7,176 transcribed utterances from
340 / 40 / 20 speakers. Then it times, side by side in one run:

* xllm, library call ``prepare_aishell`` (best of ``--repeat``);
* xllm, the CLI ``python -m xllm_cli prep aishell`` (best of ``--repeat``, includes start-up);
* lhotse ``prepare_aishell(corpus, output_dir)`` (one run);

and checks that both produce the same utterances, texts, speakers and durations.

Usage:
    python bench/prep_aishell.py                      # full size, temp dir, removed after
    python bench/prep_aishell.py --root /tmp/aishell_skel --keep   # reuse the tree next time
    python bench/prep_aishell.py --scale 0.05         # quick run

The page cache is warmed (one untimed pass reading every wav header) before
timing so that neither tool pays for a cold disk the other does not.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# AISHELL-1 as released: transcribed utterances and speakers per set, wavs without text.
SETS = {"train": (120098, 340), "dev": (14326, 40), "test": (7176, 20)}
UNTRANSCRIBED = 325
WORDS = ["而", "对", "楼市", "成交", "抑制", "作用", "最", "大", "的", "限", "购", "北京", "房价", "上涨", "我们", "今天"]
SAMPLE_RATE = 16000


def wav_bytes(num_samples: int) -> bytes:
    data_size = num_samples * 2
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_size, b"WAVE", b"fmt ", 16, 1, 1,
                         SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16, b"data", data_size)
    return header + bytes(data_size)


def build_skeleton(root: Path, scale: float) -> dict:
    """Write the tree under ``root``; returns its figures. Reused when already built at this scale."""
    stamp = root / ".skeleton.json"
    if stamp.is_file():
        info = json.loads(stamp.read_text())
        if info.get("scale") == scale:
            print(f"reusing skeleton at {root} ({info['wavs']:,} wavs)", flush=True)
            return info
        shutil.rmtree(root / "data_aishell", ignore_errors=True)
    rng = random.Random(0)
    base = root / "data_aishell"
    (base / "transcript").mkdir(parents=True, exist_ok=True)
    blobs = [wav_bytes(1600 + 160 * k) for k in range(7)]  # 0.10 .. 0.16 s
    lines = []
    wavs = 0
    speaker_number = 2
    untranscribed = max(1, round(UNTRANSCRIBED * scale)) if scale < 1 else UNTRANSCRIBED
    start = time.perf_counter()
    for part, (n_utts, n_spk) in SETS.items():
        n_utts = max(1, round(n_utts * scale))
        n_spk = max(1, min(n_utts, round(n_spk * scale)))
        extra = untranscribed if part == "train" else 0
        per_spk = [n_utts // n_spk + (1 if i < n_utts % n_spk else 0) for i in range(n_spk)]
        for i, count in enumerate(per_spk):
            spk = f"S{speaker_number:04d}"
            speaker_number += 1
            folder = base / "wav" / part / spk
            folder.mkdir(parents=True, exist_ok=True)
            # The untranscribed wavs are spread over the first training speakers.
            n_files = count + (extra // n_spk + (1 if i < extra % n_spk else 0) if extra else 0)
            for w in range(1, n_files + 1):
                utt = f"BAC009{spk}W{w:04d}"
                with open(folder / f"{utt}.wav", "wb") as f:
                    f.write(blobs[(wavs + w) % len(blobs)])
                if w <= count:
                    words = rng.choices(WORDS, k=rng.randint(3, 10))
                    lines.append(f"{utt} {' '.join(words)}\n")
            wavs += n_files
    lines.sort()
    (base / "transcript" / "aishell_transcript_v0.8.txt").write_text("".join(lines), encoding="utf-8")
    info = {"scale": scale, "wavs": wavs, "transcript_lines": len(lines), "build_seconds": time.perf_counter() - start}
    stamp.write_text(json.dumps(info))
    print(f"built skeleton at {root}: {wavs:,} wavs, {len(lines):,} transcript lines in {info['build_seconds']:.1f} s", flush=True)
    return info


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU time: steadier than wall time on a machine shared with other jobs."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def warm_cache(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root / "data_aishell" / "wav"):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                f.read(64)


def read_datadir(folder: Path) -> dict[str, tuple[str, str, float]]:
    def table(name: str) -> dict[str, str]:
        out = {}
        for line in (folder / name).read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(" ")
            out[key] = value
        return out

    spk, text, dur = table("utt2spk"), table("text"), table("utt2dur")
    return {u: (spk[u], text[u], float(dur[u])) for u in spk}


def read_lhotse(out: Path, part: str) -> dict[str, tuple[str, str, float]]:
    rows = {}
    with gzip.open(out / f"aishell_supervisions_{part}.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            s = json.loads(line)
            rows[s["id"]] = (s["speaker"], s["text"], float(s["duration"]))
    return rows


def compare(ours: dict, theirs: dict, part: str) -> list[str]:
    problems = []
    if set(ours) != set(theirs):
        only_ours, only_theirs = set(ours) - set(theirs), set(theirs) - set(ours)
        problems.append(f"{part}: utterance sets differ ({len(only_ours)} only in xllm, {len(only_theirs)} only in lhotse)")
        return problems
    bad_text = [u for u in ours if ours[u][1] != theirs[u][1]]
    bad_spk = [u for u in ours if not ours[u][0].endswith(theirs[u][0])]
    bad_dur = [u for u in ours if abs(ours[u][2] - theirs[u][2]) > 1e-3]
    for what, bad in (("texts", bad_text), ("speakers", bad_spk), ("durations", bad_dur)):
        if bad:
            problems.append(f"{part}: {len(bad)} {what} differ (e.g. {bad[0]}: {ours[bad[0]]} vs {theirs[bad[0]]})")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="where the skeleton lives (reused when present); default: a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir / outputs")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full size (e.g. 0.05 for a quick run)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the xllm library call and CLI (best is reported)")
    parser.add_argument("--jobs", type=int, default=1, help="xllm --jobs (header-reading threads)")
    parser.add_argument("--skip-lhotse", action="store_true")
    args = parser.parse_args()

    temp = None
    root = args.root
    if root is None:
        temp = tempfile.mkdtemp(prefix="bench_prep_aishell.")
        root = Path(temp)
    root.mkdir(parents=True, exist_ok=True)
    info = build_skeleton(root, args.scale)
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    warm_cache(root)

    from xllm_cli.corpora.aishell import prepare_aishell

    logging.getLogger("xllm").setLevel(logging.ERROR)  # skipped-file warnings: summarised below
    results = []  # (name, wall seconds, cpu seconds, utterances)
    repeat = max(1, args.repeat)
    lib_runs = []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), cpu_seconds()
        report = prepare_aishell(root, out / "xllm_lib", jobs=args.jobs)
        lib_runs.append((time.perf_counter() - start, cpu_seconds() - cpu))
    n_ours = report.utterances
    results.append((f"xllm prepare_aishell (library, best of {repeat})", *min(lib_runs), n_ours))
    print(f"xllm library runs (wall s): {', '.join(f'{t:.2f}' for t, _ in lib_runs)}; "
          f"skipped {len(report.no_transcript)} wavs without transcript, {len(report.no_audio)} transcripts without audio", flush=True)

    cmd = [sys.executable, "-m", "xllm_cli", "prep", "aishell", str(root), str(out / "xllm_cli"), "--jobs", str(args.jobs)]
    cli_runs = []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        cli_runs.append((time.perf_counter() - start, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu))
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
    print(f"xllm CLI runs (wall s): {', '.join(f'{t:.2f}' for t, _ in cli_runs)}", flush=True)
    results.append((f"xllm prep aishell (CLI incl. start-up, best of {repeat})", *min(cli_runs), n_ours))

    problems: list[str] = []
    if not args.skip_lhotse:
        from lhotse.recipes import prepare_aishell as lhotse_prepare_aishell

        logging.getLogger().setLevel(logging.ERROR)  # lhotse warns once per untranscribed wav
        start, cpu = time.perf_counter(), cpu_seconds()
        manifests = lhotse_prepare_aishell(root, out / "lhotse")
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        n_lhotse = sum(len(m["supervisions"]) for m in manifests.values())
        results.append(("lhotse prepare_aishell (1 run)", wall, cpu, n_lhotse))
        for part in SETS:
            problems += compare(read_datadir(out / "xllm_lib" / part), read_lhotse(out / "lhotse", part), part)
    for part in SETS:
        if read_datadir(out / "xllm_lib" / part) != read_datadir(out / "xllm_cli" / part):
            problems.append(f"{part}: library and CLI outputs differ")

    print()
    print(f"tree: {info['wavs']:,} wavs, {info['transcript_lines']:,} transcript lines (scale {args.scale}); "
          f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    print(f"{'':56} {'wall s':>8} {'CPU s':>8} {'utt/s':>9} {'utts':>9}")
    for name, wall, cpu, n in results:
        print(f"{name:56} {wall:8.2f} {cpu:8.2f} {n / wall:9,.0f} {n:9,}")
    if not args.skip_lhotse:
        (_, lib, lib_cpu, _), (_, cli, cli_cpu, _), (_, lh, lh_cpu, _) = results
        print(f"speed-up vs lhotse (wall): library {lh / lib:.1f}x, CLI {lh / cli:.1f}x; "
              f"(CPU): library {lh_cpu / lib_cpu:.1f}x, CLI {lh_cpu / cli_cpu:.1f}x")
    print("outputs agree (utterance sets, texts, speakers, durations)" if not problems else "MISMATCH:\n  " + "\n  ".join(problems))
    if temp is not None and not args.keep:
        shutil.rmtree(temp, ignore_errors=True)
    elif args.root is not None and not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
