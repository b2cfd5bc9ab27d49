"""xllm decode --nj: split, parallel parts, merge == nj 1, reruns skip finished parts."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from xllm_cli.data.datadir import Utterance, write_datadir
from xllm_cli.decoding import job
from xllm_cli.decoding import parallel as P
from xllm_cli.decoding.batches import make_batches
from xllm_cli.decoding.decode import run_decode
from xllm_cli.decoding.options import DecodeOptions
from tiny_exp import build_tiny_exp

TEXTS = {f"s{k % 3}-u{k:02d}": f"word{k} and {k * 7 % 5}" for k in range(9)}


def make_data(root: Path) -> Path:
    utts = []
    for k, (utt, text) in enumerate(sorted(TEXTS.items())):
        wav = root / "wav" / f"{utt}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, np.zeros(1600 * (k % 4 + 1), dtype=np.float32), 16000)
        utts.append(Utterance(utt_id=utt, spk=utt.split("-")[0], recording=utt, path=str(wav), text=text,
                              duration=0.1 * (k % 4 + 1)))
    write_datadir(root / "test", utts)
    return root / "test"


class Fake:
    """Deterministic answers that depend on the utterance only (as greedy decoding should)."""

    def batches(self, utts):
        for g in make_batches(utts, 2, None, lambda u: u.duration):
            yield SimpleNamespace(utt_ids=[u.utt_id for u in g], durations=[u.duration for u in g])

    def decode(self, batch):
        return [[(TEXTS[u] if not u.endswith("3") else "wrong", -1.0), ("other", -3.0)] for u in batch.utt_ids]


def in_process_launcher(calls: list):
    """Runs each part as `--part k/N` would, in this process, with the fake decoder."""

    def launch(opts, parts, total):
        calls.append(list(parts))
        for k in parts:
            part_opts = DecodeOptions(**{**vars(opts), "part": (k, opts.nj), "nj": 1})
            run_decode(part_opts, decoder_factory=lambda o, s: Fake())

    return launch


def decode(tmp_path, nj, calls=None):
    opts = DecodeOptions(exp=tmp_path / "exp", data=tmp_path / "data" / "test", stage=3, nj=nj, beam=2, nbest=2)
    return run_decode(opts, decoder_factory=lambda o, s: Fake(), launcher=in_process_launcher(calls if calls is not None else []))


@pytest.fixture
def setup(tmp_path):
    make_data(tmp_path / "data")
    (tmp_path / "exp" / "stage3" / "best").mkdir(parents=True)
    return tmp_path


def test_nj3_merge_equals_nj1(setup, tmp_path):
    one = decode(tmp_path, 1)
    hyp1 = (one.decode_dir / "hyp").read_bytes()
    nbest1 = (one.decode_dir / "nbest.jsonl").read_bytes()
    result1 = one.result_lines
    for name in ("hyp", "nbest.jsonl", "result.txt"):
        (one.decode_dir / name).unlink()
    three = decode(tmp_path, 3)
    assert three.decode_dir == one.decode_dir
    assert (three.decode_dir / "hyp").read_bytes() == hyp1
    assert (three.decode_dir / "nbest.jsonl").read_bytes() == nbest1
    assert three.result_lines == result1 and "%WER" in result1[0]
    # Kaldi's split layout, and one output directory per part
    for k in (1, 2, 3):
        assert (tmp_path / "data" / "test" / "split3" / str(k) / "utt2spk").is_file()
        assert (three.decode_dir / "split3" / str(k) / "hyp").is_file()
    part_utts = [(three.decode_dir / "split3" / str(k) / "hyp").read_text().count("\n") for k in (1, 2, 3)]
    assert part_utts == [3, 3, 3]
    timing = json.loads((three.decode_dir / "timing.json").read_text())  # the merged run's, as for --nj 1
    assert timing["utterances"] == 9 and timing["decoded_now"] == 9 and timing["audio_seconds"] > 0


def test_rerun_skips_finished_parts(setup, tmp_path):
    calls = []
    first = decode(tmp_path, 3, calls)
    part_hyps = [first.decode_dir / "split3" / str(k) / "hyp" for k in (1, 2, 3)]
    mtimes = [p.stat().st_mtime_ns for p in part_hyps]
    split_mtime = (tmp_path / "data" / "test" / "split3" / "2" / "text").stat().st_mtime_ns
    assert calls == [[1, 2, 3]]

    decode(tmp_path, 3, calls)  # everything finished: nothing is launched
    assert calls == [[1, 2, 3]]
    assert [p.stat().st_mtime_ns for p in part_hyps] == mtimes
    assert (tmp_path / "data" / "test" / "split3" / "2" / "text").stat().st_mtime_ns == split_mtime
    log = (first.decode_dir / "decode.log").read_text()
    assert "part 2/3 already decoded" in log

    part_hyps[1].unlink()  # as if part 2 had been killed
    decode(tmp_path, 3, calls)
    assert calls == [[1, 2, 3], [2]]
    assert part_hyps[0].stat().st_mtime_ns == mtimes[0]
    assert (first.decode_dir / "hyp").read_text().count("\n") == 9


def test_worker_arguments_are_the_parents_with_the_part(tmp_path):
    """A worker reruns the parent's own arguments, without --nj and with its own --part/--threads/--device."""
    from typer.testing import CliRunner

    from xllm_cli.decoding import decode as decode_module
    from xllm_cli.main import app

    seen = []
    exp, data = tmp_path / "e x p", tmp_path / "d"
    given = ["decode", "--exp", str(exp), "--data", str(data), "--stage", "3", "--nj", "4", "--beam", "3",
             "--nbest=2", "--no-image", "--max-batch-seconds", "30", "--threads", "7", "--device", "cpu",
             "--tag", "--nj", "--trust-remote-code", "--max-duration", "20", "--strict"]
    # (a value that looks like an option stays a value)
    original = decode_module.run_decode
    decode_module.run_decode = seen.append
    try:
        res = CliRunner().invoke(app, given)
    finally:
        decode_module.run_decode = original
    assert res.exit_code == 0, res.output
    (opts,) = seen
    assert opts.nj == 4 and opts.beam == 3 and not opts.use_image and opts.tag == "--nj"
    args = P.worker_command(opts, 2, 4, threads=1)
    assert args[:4] == [sys.executable, "-m", "xllm_cli", "decode"]
    assert f"--exp={exp}" in args  # a path with spaces stays one argument
    assert "--nj" not in args and not any(a.startswith("--nj=") for a in args)
    i = args.index("--part")
    assert args[i + 1] == "2/4"
    assert args[args.index("--threads") + 1] == "1" and "--threads=7" not in args  # cores / N, not the parent's
    assert args[args.index("--device") + 1] == "cpu" and "--device=cpu" not in args
    assert "--no-image" in args and "--beam=3" in args and "--nbest=2" in args and "--stage=3" in args
    assert "--max-batch-seconds=30" in args and "--tag=--nj" in args
    assert "--trust-remote-code" in args and "--max-duration=20" in args and "--strict" in args
    # the worker parses to the same options (but its part, threads and nj) and names the same decode directory
    seen.clear()
    decode_module.run_decode = seen.append
    try:
        res = CliRunner().invoke(app, args[3:])
    finally:
        decode_module.run_decode = original
    assert res.exit_code == 0, res.output
    (worker,) = seen
    assert worker.part == (2, 4) and worker.nj == 1 and worker.threads == 1
    assert {k: v for k, v in vars(worker).items() if k not in ("part", "nj", "threads", "argv")} == \
        {k: v for k, v in vars(opts).items() if k not in ("part", "nj", "threads", "argv")}
    assert job.decode_tag(worker, 3) == job.decode_tag(opts, 3) == "--nj"
    no_tag = DecodeOptions(**{**vars(opts), "tag": None})
    assert job.decode_tag(no_tag, 3) == "stage3_llm_beam3_noimage"


def test_workers_need_the_command_line(tmp_path):
    from xllm_cli.errors import XllmError

    opts = DecodeOptions(exp=tmp_path, data=tmp_path, nj=2)  # built in Python, not by `xllm decode`
    with pytest.raises(XllmError, match="DecodeOptions.argv"):
        P.worker_command(opts, 1, 2, threads=1)


def test_more_jobs_than_utterances_is_a_user_error(setup, tmp_path):
    from xllm_cli.errors import XllmError

    with pytest.raises(XllmError, match="--nj 12"):
        decode(tmp_path, 12)


# ----------------------------------------------------------------------------- real processes, real tiny model


def test_cli_nj2_subprocesses_equal_nj1_and_rerun_skips(tmp_path):
    import subprocess

    rng = np.random.default_rng(2)
    utts = []
    for k in range(8):
        utt = f"spk{k % 2}-{k:02d}"
        wav = tmp_path / "wav" / f"{utt}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        n = int(16000 * rng.uniform(0.3, 0.9))
        sf.write(wav, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        utts.append(Utterance(utt_id=utt, spk=f"spk{k % 2}", recording=utt, path=str(wav), text="你好世界"))
    write_datadir(tmp_path / "data" / "test", utts)  # no utt2dur: durations come from the audio headers
    exp = build_tiny_exp(tmp_path, ["你好世界", "今天天气很好"])

    def xllm(*args):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        return subprocess.run([sys.executable, "-m", "xllm_cli", "decode", "--exp", str(exp), "--data",
                               str(tmp_path / "data" / "test"), "--stage", "3", "--batch-size", "3", *args],
                              capture_output=True, text=True, timeout=180, env=env)

    # nj 1 in this process; nj 2 as `xllm decode` spawning two `--part k/2` processes
    one = run_decode(DecodeOptions(exp=exp, data=tmp_path / "data" / "test", stage=3, batch_size=3, tag="one"))
    two = xllm("--tag", "two", "--nj", "2", "--wer")
    assert two.returncode == 0, two.stderr
    d1, d2 = one.decode_dir, exp / "decode_test_two"
    assert (d1 / "hyp").read_text(encoding="utf-8") == (d2 / "hyp").read_text(encoding="utf-8")
    assert (d1 / "hyp").read_text(encoding="utf-8").count("\n") == 8
    assert two.stdout.splitlines()[0].split()[:2] == one.result_lines[0].split()[:2]  # "%CER x.xx" printed by --wer
    assert "RTF" in (d2 / "decode.log").read_text()
    assert "decoding part 1/2" in (d2 / "split2" / "1" / "decode.log").read_text()

    mtimes = [(d2 / "split2" / k / "hyp").stat().st_mtime_ns for k in ("1", "2")]
    # the rerun (in this process, with the real subprocess launcher) finds both parts finished
    run_decode(DecodeOptions(exp=exp, data=tmp_path / "data" / "test", stage=3, batch_size=3, tag="two", nj=2))
    assert [(d2 / "split2" / k / "hyp").stat().st_mtime_ns for k in ("1", "2")] == mtimes
    assert "part 1/2 already decoded" in (d2 / "decode.log").read_text()


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has finished; only its parent's wait is missing


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_sigterm_of_the_parent_stops_its_workers(tmp_path):
    """`kill PID` of `xllm decode --nj 2`: the parent exits non-zero and no worker decodes on."""
    import signal
    import subprocess
    import time

    utts = []
    for k in range(40):  # enough work that a worker outliving its parent would be seen alive
        utt = f"spk{k % 2}-{k:02d}"
        wav = tmp_path / "wav" / f"{utt}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, (0.1 * np.random.default_rng(k).standard_normal(24000)).astype(np.float32), 16000)
        utts.append(Utterance(utt_id=utt, spk=f"spk{k % 2}", recording=utt, path=str(wav), text="你好", duration=1.5))
    write_datadir(tmp_path / "data" / "test", utts)
    exp = build_tiny_exp(tmp_path, ["你好世界"])
    parent = subprocess.Popen([sys.executable, "-m", "xllm_cli", "decode", "--exp", str(exp), "--data",
                               str(tmp_path / "data" / "test"), "--stage", "3", "--batch-size", "1", "--nj", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            workers = _children(parent.pid)
            time.sleep(0.05)
        assert len(workers) == 2, parent.communicate(timeout=60)
        time.sleep(1.0)  # the workers are importing or decoding
        parent.send_signal(signal.SIGTERM)
        _, err = parent.communicate(timeout=60)
        assert parent.returncode != 0
        assert "SIGTERM" in err and "Traceback" not in err
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [w for w in workers if _alive(w)]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
