"""Data directories survive a failed write, keep the user's files, and bad input is reported clearly (issue 12)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from xllm_cli.data import writing
from xllm_cli.data.datadir import DataDir, Utterance, write_datadir
from xllm_cli.data.datadir_ops import fix_datadir, subset_datadir
from xllm_cli.data.validate import validate_datadir
from xllm_cli.errors import XllmError

SR = 16000


def make_wav(path, seconds: float) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(seconds * SR), 0.1, dtype="float32"), SR, subtype="PCM_16")
    return str(path)


def utts(root, n: int = 3, segments: bool = False) -> list[Utterance]:
    out = []
    for i in range(n):
        path = make_wav(root / "wav" / f"s-{i}.wav", 0.2)
        out.append(Utterance(f"s-{i}", "s", f"s-{i}", path, text=f"t{i}", duration=0.2,
                             start=0.0 if segments else None, end=0.2 if segments else None))
    return out


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- 12.6: old or new, never a mix
def test_a_write_failing_half_way_leaves_the_old_directory(tmp_path, monkeypatch):
    d = tmp_path / "d"
    write_datadir(d, utts(tmp_path))
    (d / "conf").mkdir()
    (d / "conf" / "fbank.conf").write_text("--num-mel-bins=80\n")
    (d / "cmvn").write_text("user's\n")
    before = snapshot(d)
    real = writing.write_table
    calls = []

    def full_disk(path, table):
        calls.append(path)
        if len(calls) == 3:  # two tables written, then the disk is full
            with open(path, "w") as f:
                f.write("half a li")
            raise XllmError(f"{path}: {os.strerror(errno.ENOSPC).lower()}")
        real(path, table)

    monkeypatch.setattr(writing, "write_table", full_disk)
    with pytest.raises(XllmError, match="no space left"):
        subset_datadir(d, tmp_path / "sub", first=2)  # a new directory: nothing appears
    assert not (tmp_path / "sub").exists()
    calls.clear()
    with pytest.raises(XllmError, match="no space left"):
        DataDir.load(d).select(["s-0", "s-1"]).save(d)
    assert snapshot(d) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "wav"]  # no temporary sibling left
    monkeypatch.setattr(writing, "write_table", real)

    DataDir.load(d).select(["s-0"]).save(d)
    assert len(DataDir.load(d)) == 1
    assert (d / "conf" / "fbank.conf").read_text() == "--num-mel-bins=80\n" and (d / "cmvn").read_text() == "user's\n"


def test_a_new_directory_gets_the_umask_mode(tmp_path):
    """Issue 12.18: the temporary folder (0700 from mkdtemp) is renamed into place with the umask's mode."""
    old = os.umask(0o022)
    try:
        write_datadir(tmp_path / "d", utts(tmp_path))
    finally:
        os.umask(old)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "d" / "wav.scp").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- 12.9: never delete what xllm did not write
def test_a_users_table_is_never_deleted(tmp_path):
    d = tmp_path / "d"
    write_datadir(d, utts(tmp_path))
    (d / "segments").write_text("mine 1 2\n")  # the user's own file, not in .xllm_written
    (d / "prompt").write_text("s-0 mine\n")
    with pytest.raises(XllmError, match=r"segments: not written by xllm"):
        write_datadir(d, utts(tmp_path))
    assert (d / "segments").read_text() == "mine 1 2\n" and (d / "prompt").read_text() == "s-0 mine\n"


def test_tables_xllm_wrote_are_replaced_or_dropped(tmp_path):
    """A subset without segments into a folder an earlier xllm write gave segments: they go (Kaldi users
    expect the directory to describe the new data only)."""
    d = tmp_path / "d"
    write_datadir(d, utts(tmp_path, segments=True))
    assert (d / "segments").is_file()
    write_datadir(d, utts(tmp_path))
    assert not (d / "segments").exists() and validate_datadir(d).ok


# ---------------------------------------------------------------- 12.7: fix keeps every backup
def test_fix_twice_keeps_the_first_backup(tmp_path):
    d = tmp_path / "d"
    write_datadir(d, utts(tmp_path))
    (d / "text").write_text("s-0 t0\ns-2 t2\n")  # s-1 lost its transcript
    broken = (d / "text").read_bytes()
    _, first = fix_datadir(d)
    assert first == d / ".backup.1" and (first / "text").read_bytes() == broken
    _, second = fix_datadir(d)
    assert second == d / ".backup.2"
    assert (first / "text").read_bytes() == broken  # not overwritten by the fixed file
    assert (second / "text").read_text() == "s-0 t0\ns-2 t2\n"


# ---------------------------------------------------------------- 12.15/12.16: input refused or reported
def test_a_bom_is_an_error_and_fix_strips_it(tmp_path):
    d = tmp_path / "d"
    write_datadir(d, utts(tmp_path))
    (d / "text").write_bytes(b"\xef\xbb\xbf" + (d / "text").read_bytes())
    message = f"{d / 'text'}:1: starts with a UTF-8 BOM; xllm data fix strips it"
    with pytest.raises(XllmError) as e:
        DataDir.load(d)
    assert str(e.value) == message
    assert message in validate_datadir(d).errors
    fix_datadir(d)
    assert (d / "text").read_text(encoding="utf-8").startswith("s-0 t0\n") and validate_datadir(d).ok


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xllm_cli", *map(str, args)], capture_output=True, text=True)


def test_validate_fails_on_an_empty_directory_and_on_unreadable_audio(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "wav.scp").write_text("")
    (empty / "utt2spk").write_text("")
    (empty / "spk2utt").write_text("")
    report = validate_datadir(empty)
    assert any("no utterances" in e for e in report.errors), report.errors
    (tmp_path / "bare").mkdir()
    assert not validate_datadir(tmp_path / "bare").ok

    d = tmp_path / "d"
    write_datadir(d, utts(tmp_path))
    (tmp_path / "wav" / "s-1.wav").write_bytes(np.random.default_rng(0).bytes(300))
    proc = run_cli("data", "validate", d)  # no --check-audio: the headers are read anyway
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{d / 'wav.scp'}:2: recording 's-1':" in proc.stderr and "cannot read audio" in proc.stderr


def test_truncated_and_empty_wavs_are_validate_errors(tmp_path):
    d = tmp_path / "d"
    write_datadir(d, utts(tmp_path))
    wav = tmp_path / "wav" / "s-0.wav"
    wav.write_bytes(wav.read_bytes()[:2000])
    errors = validate_datadir(d).errors
    assert any(e.startswith(f"{d / 'wav.scp'}:1:") and "truncated wav" in e for e in errors), errors


def test_bad_audio_is_a_per_utterance_problem(tmp_path):
    """The decoder skips and reports by id and reason: AudioProblem(XllmError) with .utt_id and .reason."""
    from xllm_cli.data.audio import AudioProblem, load_utterance

    good = make_wav(tmp_path / "good.wav", 1.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes((tmp_path / "good.wav").read_bytes()[:16044])  # header + 0.5 s of the promised 1 s
    empty = make_wav(tmp_path / "empty.wav", 0.0)
    cases = {
        "u-cut": (Utterance("u-cut", "u", "u-cut", str(cut)), "truncated wav: the header promises 1 s"),
        "u-empty": (Utterance("u-empty", "u", "u-empty", empty), "no audio samples"),
        "u-past": (Utterance("u-past", "u", "r", good, start=0.5, end=3.0), "segment 0.5..3 s runs past the end"),
        "u-gone": (Utterance("u-gone", "u", "u-gone", str(tmp_path / "gone.wav")), "audio file not found"),
    }
    for utt_id, (utt, reason) in cases.items():
        with pytest.raises(AudioProblem) as e:
            load_utterance(utt)
        assert e.value.utt_id == utt_id and reason in e.value.reason and isinstance(e.value, XllmError)
        assert str(e.value) == f"utterance '{utt_id}': {e.value.reason}" and "\n" not in str(e.value)
    assert load_utterance(Utterance("u-ok", "u", "r", good, start=0.5, end=1.0)).size == 8000


def test_an_audio_problem_keeps_its_id_through_dataloader_workers(tmp_path):
    from xllm_cli.config.schema import BatchConfig, FeaturesConfig
    from xllm_cli.data.audio import AudioProblem
    from xllm_cli.data.batching import build_dataloader
    from xllm_cli.data.features import build_feature_extractor

    d = tmp_path / "d"
    write_datadir(d, utts(tmp_path, n=1))
    make_wav(tmp_path / "wav" / "s-0.wav", 0.0)
    loader = build_dataloader(d, build_feature_extractor(None, FeaturesConfig()), None, BatchConfig(num_workers=1), train=False)
    with pytest.raises(AudioProblem) as e:
        list(loader)
    assert e.value.utt_id == "s-0" and "no audio samples" in e.value.reason and "Traceback" not in str(e.value)


def test_an_oversized_image_is_a_one_line_error(tmp_path, monkeypatch):
    from PIL import Image

    from xllm_cli.data.images import TinyImageTransform, load_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for size in (12, 20):  # PIL warns above MAX_IMAGE_PIXELS and raises above twice that
        path = tmp_path / f"big{size}.png"
        Image.new("RGB", (size, size)).save(path)
        with pytest.raises(XllmError, match=rf"^{path}: image too large"):
            load_image(path, TinyImageTransform(8))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_a_video_without_audio_says_so(tmp_path):
    """Issue 11.11: not ffmpeg's "add a trailing '?' to the map"."""
    from xllm_cli.data.audio import load_audio
    from xllm_cli.data.durations import audio_duration

    clip = tmp_path / "silent.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=10:duration=1",
                    "-c:v", "mpeg4", str(clip)], check=True)
    for read in (load_audio, audio_duration):
        with pytest.raises(XllmError) as e:
            read(clip)
        assert str(e.value) == f"no audio stream in {clip}"
