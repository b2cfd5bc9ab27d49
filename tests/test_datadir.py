"""Kaldi-style data directories: reading, writing, validation and transformations."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xllm_cli import fsutil
from xllm_cli.data.datadir import DataDir, Utterance, write_datadir
from xllm_cli.data.datadir_ops import combine_datadirs, fix_datadir, sort_datadir, split_datadir, subset_datadir
from xllm_cli.data.layout import KNOWN_FILES
from xllm_cli.data.validate import validate_datadir
from xllm_cli.errors import XllmError

RATE = 16000


def make_wav(path: Path, seconds: float, rate: int = RATE, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (rng.standard_normal(int(seconds * rate)) * 1000).astype(np.int16), rate, subtype="PCM_16")
    return str(path.resolve())


def speech_utts(tmp_path: Path, spec=(("spkA", 3), ("spkB", 2))) -> list[Utterance]:
    """Whole-recording utterances with text and durations, ids prefixed by the speaker."""
    utts = []
    for s, (spk, n) in enumerate(spec):
        for j in range(n):
            utt = f"{spk}-u{j}"
            seconds = 0.1 + 0.05 * j
            path = make_wav(tmp_path / "wav" / f"{utt}.wav", seconds, seed=s * 10 + j)
            utts.append(Utterance(utt, spk, utt, path, text=f"word{j} {spk.lower()}", duration=seconds))
    return utts


@pytest.fixture
def good(tmp_path) -> Path:
    d = tmp_path / "data" / "good"
    write_datadir(d, speech_utts(tmp_path))
    return d


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------- write / load


def test_write_sorts_in_c_order_and_round_trips(tmp_path):
    img = tmp_path / "img.png"
    img.write_bytes(b"png")
    # Upper case sorts before lower case in C (byte) order, unlike a locale-aware sort.
    utts = [
        Utterance(
            "b-1",
            "b",
            "b-1",
            make_wav(tmp_path / "b1.wav", 0.1),
            text="zwei",
            duration=0.1,
            image=str(img),
            prompt="describe",
        ),
        Utterance("B-1", "B", "B-1", make_wav(tmp_path / "B1.wav", 0.2), text="eins", duration=0.2),
        Utterance("a-é", "a", "a-é", make_wav(tmp_path / "ae.wav", 0.1), text="übung", duration=0.1),
    ]
    d = tmp_path / "d"
    write_datadir(d, utts)
    assert [line.split()[0] for line in lines(d / "wav.scp")] == ["B-1", "a-é", "b-1"]
    assert lines(d / "spk2utt") == ["B B-1", "a a-é", "b b-1"]
    assert lines(d / "image.scp") == [f"b-1 {img}"]
    assert lines(d / "prompt") == ["b-1 describe"]
    assert lines(d / "utt2dur") == ["B-1 0.2", "a-é 0.1", "b-1 0.1"]
    assert not (d / "segments").exists()
    loaded = DataDir.load(d).utterances()
    assert [u.utt_id for u in loaded] == ["B-1", "a-é", "b-1"]
    assert loaded == sorted(utts, key=lambda u: u.utt_id.encode())
    assert validate_datadir(d, check_audio=True).errors == []


def test_segments_for_parts_of_a_recording(tmp_path):
    rec = make_wav(tmp_path / "long.wav", 1.0)
    utts = [
        Utterance("s1-a", "s1", "rec1", rec, start=0.0, end=0.4, text="one"),
        Utterance("s1-b", "s1", "rec1", rec, start=0.5, end=0.95, text="two"),
    ]
    d = tmp_path / "d"
    write_datadir(d, utts)
    assert lines(d / "segments") == ["s1-a rec1 0 0.4", "s1-b rec1 0.5 0.95"]
    assert lines(d / "wav.scp") == [f"rec1 {rec}"]
    assert lines(d / "utt2dur") == ["s1-a 0.4", "s1-b 0.45"]
    got = DataDir.load(d).utterances()
    assert [(u.recording, u.start, u.end, u.path) for u in got] == [("rec1", 0.0, 0.4, rec), ("rec1", 0.5, 0.95, rec)]
    assert validate_datadir(d, check_audio=True).errors == []


def test_from_utterances_rejects_conflicts(tmp_path):
    a = Utterance("u1", "u1", "u1", "/x.wav")
    with pytest.raises(XllmError, match="duplicate utterance id 'u1'"):
        DataDir.from_utterances([a, a])
    with pytest.raises(XllmError, match="two paths"):
        DataDir.from_utterances([Utterance("u1", "s", "r", "/a.wav", 0, 1), Utterance("u2", "s", "r", "/b.wav", 0, 1)])
    with pytest.raises(XllmError, match="one non-empty word"):
        DataDir.from_utterances([Utterance("u 1", "s", "u 1", "/a.wav")])
    with pytest.raises(XllmError, match="pipes"):
        DataDir.from_utterances([Utterance("u1", "u1", "u1", "sox a.wav -t wav - |")])


def test_relative_paths_resolve_against_cwd_and_stay_verbatim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_wav(tmp_path / "audio" / "s-1.wav", 0.1)
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text("s-1 audio/s-1.wav\n")
    (d / "utt2spk").write_text("s-1 s\n")
    (d / "spk2utt").write_text("s s-1\n")
    [u] = DataDir.load(d).utterances()
    assert u.path == str(tmp_path / "audio" / "s-1.wav")
    subset_datadir(d, tmp_path / "sub", first=1)
    assert lines(tmp_path / "sub" / "wav.scp") == ["s-1 audio/s-1.wav"]  # not rewritten
    assert validate_datadir("d").errors == []


@pytest.mark.parametrize(
    "value",
    ["sox /a.wav -t wav - |", "ark:/data/raw.ark", "/data/raw.ark:1234", "ark,s,cs:/x.ark", "-"],
)
def test_wav_scp_pipes_and_archives_are_rejected_never_run(tmp_path, value):
    marker = tmp_path / "ran"
    d = tmp_path / "d"
    d.mkdir()
    if value.endswith("|"):
        value = f"touch {marker} |"
    (d / "wav.scp").write_text(f"u1 {value}\n")
    (d / "utt2spk").write_text("u1 u1\n")
    (d / "spk2utt").write_text("u1 u1\n")
    with pytest.raises(XllmError) as e:
        DataDir.load(d)
    assert str(e.value).startswith(f"{d / 'wav.scp'}:1: recording 'u1':")
    report = validate_datadir(d, check_audio=True)
    assert [p for p in report.errors if p.startswith(f"{d / 'wav.scp'}:1:")], report.errors
    assert not [p for p in report.errors if "no audio" in p]  # one problem, not two
    with pytest.raises(XllmError, match="would drop every utterance"):
        fix_datadir(d)  # dropping the entry is fine, running it is not
    assert not marker.exists()


def test_strict_load_names_file_and_line(good):
    (good / "text").write_text("spkA-u0 a\nspkA-u0 b\n")
    with pytest.raises(XllmError, match=r"text:2: duplicate key 'spkA-u0'"):
        DataDir.load(good)
    (good / "text").write_bytes(b"spkA-u0 ok\nspkA-u1 \xff\xfe\n")
    with pytest.raises(XllmError, match=r"text:2: not valid UTF-8"):
        DataDir.load(good)
    (good / "utt2spk").unlink()
    with pytest.raises(XllmError, match="utt2spk: file not found"):
        DataDir.load(good)


def test_utterances_raises_on_missing_audio(good):
    (good / "wav.scp").write_text("\n".join(lines(good / "wav.scp")[1:]) + "\n")
    with pytest.raises(XllmError, match=r"utt2spk:1: utterance 'spkA-u0' has no audio"):
        DataDir.load(good).utterances()


# --------------------------------------------------------- interoperability


def test_kaldiio_reads_our_wav_scp(good):
    kaldiio = pytest.importorskip("kaldiio")
    table = kaldiio.load_scp(str(good / "wav.scp"))
    assert sorted(table) == [line.split()[0] for line in lines(good / "wav.scp")]
    for u in DataDir.load(good).utterances():
        rate, samples = table[u.utt_id]
        expected, expected_rate = sf.read(u.path, dtype="int16")
        assert rate == expected_rate == RATE
        np.testing.assert_array_equal(samples, expected)


def test_lhotse_kaldi_importer_reads_our_dirs(tmp_path, good):
    lhotse_kaldi = pytest.importorskip("lhotse.kaldi")
    recordings, supervisions, _ = lhotse_kaldi.load_kaldi_data_dir(good, sampling_rate=RATE)
    utts = {u.utt_id: u for u in DataDir.load(good).utterances()}
    assert sorted(recordings.ids) == sorted(utts)
    for sup in supervisions:
        assert sup.text == utts[sup.id].text and sup.speaker == utts[sup.id].spk
        assert sup.duration == pytest.approx(utts[sup.id].duration, abs=1e-3)
    audio = recordings["spkA-u1"].load_audio()
    assert audio.shape == (1, int(0.15 * RATE))
    # A segmented directory too (lhotse then reads the durations from the audio).
    rec = make_wav(tmp_path / "long.wav", 1.0)
    seg = tmp_path / "seg"
    write_datadir(
        seg, [Utterance("s-a", "s", "r", rec, 0.1, 0.5, text="x"), Utterance("s-b", "s", "r", rec, 0.5, 0.9, text="y")]
    )
    recordings, supervisions, _ = lhotse_kaldi.load_kaldi_data_dir(seg, sampling_rate=RATE)
    assert recordings["r"].duration == pytest.approx(1.0)
    assert [(s.id, s.start, round(s.duration, 3), s.text) for s in supervisions] == [
        ("s-a", 0.1, 0.4, "x"),
        ("s-b", 0.5, 0.4, "y"),
    ]


# ------------------------------------------------------------- atomic writes


def test_failed_write_leaves_old_file_intact(good, monkeypatch):
    dd = DataDir.load(good)
    before = (good / "text").read_bytes()
    dd.text = {k: "changed" for k in dd.text}

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(fsutil.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        dd.save(good)
    assert (good / "text").read_bytes() == before
    assert not [p for p in os.listdir(good) if p.endswith(".tmp")]


# ---------------------------------------------------------------- validation


def test_good_dir_validates_cleanly(good):
    report = validate_datadir(good, check_audio=True)
    assert report.ok and report.errors == [] and report.warnings == []
    assert report.num_utterances == 5
    assert validate_datadir(good, check_audio=True).errors == []


def _replace_line(path: Path, number: int, new: str | None) -> None:
    old = lines(path)
    if new is None:
        del old[number - 1]
    else:
        old[number - 1] = new
    path.write_text("".join(x + "\n" for x in old), encoding="utf-8")


def _segmented(tmp_path) -> Path:
    rec = make_wav(tmp_path / "rec.wav", 1.0)
    d = tmp_path / "seg"
    write_datadir(
        d, [Utterance("s-a", "s", "r", rec, 0.0, 0.5, text="x"), Utterance("s-b", "s", "r", rec, 0.5, 1.0, text="y")]
    )
    return d


# (mutation, file, line, expected words) for one validator rule each.
CASES = {
    "unsorted": (
        lambda d: (d / "text").write_text("".join(x + "\n" for x in reversed(lines(d / "text")))),
        "text",
        2,
        "not sorted",
    ),
    "duplicate": (
        lambda d: (d / "utt2spk").write_text((d / "utt2spk").read_text() + "spkB-u1 spkB\n"),
        "utt2spk",
        6,
        "duplicate key",
    ),
    "missing audio": (lambda d: _replace_line(d / "wav.scp", 2, None), "utt2spk", 2, "has no audio"),
    "non-utf8": (
        lambda d: (d / "text").write_bytes((d / "text").read_bytes().replace(b"word1", b"w\xe9rd1", 1)),
        "text",
        2,
        "not valid UTF-8",
    ),
    "empty text": (lambda d: _replace_line(d / "text", 2, "spkA-u1"), "text", 2, "empty transcript"),
    "spk2utt mismatch": (
        lambda d: _replace_line(d / "spk2utt", 1, "spkA spkA-u0 spkA-u1"),
        "utt2spk",
        3,
        "missing from spk2utt",
    ),
    "spk2utt wrong speaker": (
        lambda d: (d / "spk2utt").write_text("spkA spkA-u0 spkA-u1\nspkB spkA-u2 spkB-u0 spkB-u1\n"),
        "spk2utt",
        2,
        "utt2spk says 'spkA'",
    ),
    "image key": (
        lambda d: (d / "image.scp").write_text(f"nobody {d / 'wav.scp'}\n"),
        "image.scp",
        1,
        "not an utterance",
    ),
    "pipe": (lambda d: _replace_line(d / "wav.scp", 1, "spkA-u0 cat /dev/null |"), "wav.scp", 1, "command pipes"),
    "missing file": (
        lambda d: _replace_line(d / "wav.scp", 3, "spkA-u2 /nonexistent/x.wav"),
        "wav.scp",
        3,
        "file not found",
    ),
    "no text line": (lambda d: _replace_line(d / "text", 5, None), "utt2spk", 5, "no transcript"),
    "bad utt2dur": (lambda d: _replace_line(d / "utt2dur", 1, "spkA-u0 -3"), "utt2dur", 1, "not a number >= 0"),
    "orphan recording": (
        lambda d: (d / "wav.scp").write_text((d / "wav.scp").read_text() + f"zzz {d / 'wav.scp'}\n"),
        "wav.scp",
        6,
        "not an utterance",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_rule_reports_file_and_line(good, case):
    mutate, name, line, words = CASES[case]
    mutate(good)
    report = validate_datadir(good)
    prefix = f"{good / name}:{line}: "
    assert any(e.startswith(prefix) and words in e for e in report.errors), report.errors
    assert not report.ok


@pytest.mark.parametrize(
    "segment, words, reco2dur",
    [
        ("s-b r 0.5 1.6", "after the end of recording 'r'", True),  # known from reco2dur
        ("s-b r 0.5 1.6", "after the end of recording 'r'", False),  # known from the audio header
        ("s-b r 0.5 0.4", "not after start", False),
        ("s-b r -0.1 0.4", "negative", False),
        ("s-b r 0.5 -1", "end time -1", False),
        ("s-b r 0.5", "segments lines are", False),
        ("s-b missing 0.5 0.9", "recording 'missing' is not in wav.scp", False),
    ],
)
def test_segment_rules(tmp_path, segment, words, reco2dur):
    d = _segmented(tmp_path)
    if reco2dur:
        (d / "reco2dur").write_text("r 1.0\n")
    _replace_line(d / "segments", 2, segment)
    (d / "utt2dur").unlink()  # its check against the segment is another rule
    report = validate_datadir(d, check_audio=not reco2dur)
    assert any(e.startswith(f"{d / 'segments'}:2: ") and words in e for e in report.errors), report.errors
    assert validate_datadir(_segmented(tmp_path / "fresh"), check_audio=True).errors == []


def test_utt2dur_must_match_segment(tmp_path):
    d = _segmented(tmp_path)
    _replace_line(d / "utt2dur", 1, "s-a 0.3")
    assert any(e.startswith(f"{d / 'utt2dur'}:1:") and "segment is 0.5 s" for e in validate_datadir(d).errors)


def test_check_audio_rules(tmp_path, good):
    _replace_line(good / "utt2dur", 2, "spkA-u1 0.9")  # real length 0.15 s
    make_wav(Path(lines(good / "wav.scp")[3].split()[1]), 0.1, rate=4000)
    Path(lines(good / "wav.scp")[4].split()[1]).write_bytes(b"not audio at all")
    errors = validate_datadir(good).errors  # headers are always read
    assert any(e.startswith(f"{good / 'utt2dur'}:2:") and "audio is 0.15 s" in e for e in errors), errors
    assert any(e.startswith(f"{good / 'wav.scp'}:4:") and "sample rate 4000 Hz" in e for e in errors), errors
    assert any(e.startswith(f"{good / 'wav.scp'}:5:") and "cannot read audio" in e for e in errors), errors
    assert validate_datadir(good, check_audio=True).errors == errors  # an unreadable header is not decoded again


def test_check_audio_empty_and_too_long(good, monkeypatch):
    make_wav(Path(lines(good / "wav.scp")[0].split()[1]), 0.0)
    errors = validate_datadir(good, check_audio=True).errors
    assert any(e.startswith(f"{good / 'wav.scp'}:1:") and "audio is empty" in e for e in errors), errors
    import xllm_cli.data.validate as validate_module

    from xllm_cli.data.durations import AudioHeader

    monkeypatch.setattr(validate_module, "audio_header", lambda path: AudioHeader(4000.0, 16000, 1, "WAV", "PCM_16"))
    errors = validate_datadir(good, check_audio=True).errors
    assert any(e.startswith(f"{good / 'utt2spk'}:2:") and ">= 1 h" in e for e in errors), errors


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_video_utterance_audio_read_from_the_video(tmp_path):
    video = tmp_path / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=f=440:d=0.5:r=16000",
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=32x32:d=0.5",
            "-shortest",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(video),
        ],
        check=True,
    )
    d = tmp_path / "video"
    write_datadir(d, [Utterance("v-1", "v", "v-1", str(video), text="red", duration=0.5, video=str(video))])
    assert lines(d / "video.scp") == [f"v-1 {video}"]
    assert validate_datadir(d, check_audio=True).errors == []
    _replace_line(d / "utt2dur", 1, "v-1 2.5")
    errors = validate_datadir(d, check_audio=True).errors
    assert any(e.startswith(f"{d / 'utt2dur'}:1:") and "utt2dur says 2.5 s" in e for e in errors), errors


def test_speaker_prefix_is_a_warning(tmp_path):
    utts = [Utterance("u1", "zed", "u1", make_wav(tmp_path / "u1.wav", 0.1), text="a", duration=0.1)]
    write_datadir(tmp_path / "d", utts)
    report = validate_datadir(tmp_path / "d")
    assert report.ok
    assert any(
        w.startswith(f"{tmp_path / 'd' / 'utt2spk'}:1: warning:") and "not a prefix" in w for w in report.warnings
    )


def test_many_problems_are_capped(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text("")
    (d / "utt2spk").write_text("".join(f"u{i:03d} u{i:03d}\n" for i in range(50)))
    (d / "spk2utt").write_text("".join(f"u{i:03d} u{i:03d}\n" for i in range(50)))
    errors = validate_datadir(d).errors
    assert len(errors) == 21 and "30 more like this" in errors[-1]


# --------------------------------------------------------------- operations


def test_fix_drops_broken_utterances_and_keeps_backup(good):
    originals = {p.name: p.read_bytes() for p in good.iterdir() if p.is_file()}
    _replace_line(good / "text", 2, None)  # spkA-u1 loses its transcript
    _replace_line(good / "wav.scp", 5, None)  # spkB-u1 loses its audio
    (good / "utt2spk").write_text("".join(x + "\n" for x in reversed(lines(good / "utt2spk"))))
    (good / "image.scp").write_text(f"spkA-u0 {good / 'text'}\nghost {good / 'text'}\n")
    (good / "text").write_text((good / "text").read_text() + "\n")  # a blank line
    broken = {p.name: p.read_bytes() for p in good.iterdir() if p.is_file()}
    assert not validate_datadir(good).ok
    notes, backup = fix_datadir(good)
    assert backup == good / ".backup.1"
    assert any("spkA-u1" in n and "no text" in n for n in notes)
    assert any("spkB-u1" in n and "no audio" in n for n in notes)
    report = validate_datadir(good)
    assert report.errors == [], report.errors
    assert DataDir.load(good).utt_ids() == ["spkA-u0", "spkA-u2", "spkB-u0"]
    assert lines(good / "spk2utt") == ["spkA spkA-u0 spkA-u2", "spkB spkB-u0"]
    assert lines(good / "image.scp") == [f"spkA-u0 {good / 'text'}"]
    assert {p.name: p.read_bytes() for p in backup.iterdir()} == {k: v for k, v in broken.items() if k in KNOWN_FILES}
    assert set(originals) <= set(broken)


def test_fix_refuses_to_empty_a_directory(good):
    (good / "wav.scp").write_text("")
    with pytest.raises(XllmError, match="would drop every utterance"):
        fix_datadir(good)
    assert (good / "utt2spk").exists() and not list(good.glob(".backup*"))
    (good / "wav.scp").unlink()
    with pytest.raises(XllmError, match="wav.scp: file"):
        fix_datadir(good)


def test_fix_fills_missing_durations(good, tmp_path):
    _replace_line(good / "utt2dur", 2, None)
    _replace_line(good / "reco2dur", 2, None)
    assert any(e.startswith(f"{good / 'wav.scp'}:2:") and "reco2dur" in e for e in validate_datadir(good).errors)
    notes, _ = fix_datadir(good)
    assert "added 1 missing line(s) to utt2dur" in notes and "added 1 missing line(s) to reco2dur" in notes
    assert lines(good / "utt2dur")[1] == "spkA-u1 0.15" and lines(good / "reco2dur")[1] == "spkA-u1 0.15"
    assert validate_datadir(good, check_audio=True).errors == []
    # Unreadable audio: the incomplete file goes rather than a wrong duration.
    _replace_line(good / "utt2dur", 3, None)
    _replace_line(good / "reco2dur", 3, None)
    Path(lines(good / "wav.scp")[2].split()[1]).write_bytes(b"junk")
    notes, _ = fix_datadir(good)
    assert not (good / "utt2dur").exists() and any("removed utt2dur" in n for n in notes)
    assert not (good / "reco2dur").exists() and any("removed reco2dur" in n for n in notes)


def test_sort_only_reorders(good):
    for name in ("text", "utt2spk", "wav.scp"):
        (good / name).write_text("".join(x + "\n" for x in reversed(lines(good / name))))
    _replace_line(good / "spk2utt", 1, "spkA spkA-u2 spkA-u0 spkA-u1")
    before = {name: sorted(lines(good / name)) for name in ("text", "utt2spk", "wav.scp")}
    assert not validate_datadir(good).ok
    assert set(sort_datadir(good)) == {"text", "utt2spk", "wav.scp", "spk2utt"}
    assert validate_datadir(good).errors == []
    assert {name: lines(good / name) for name in before} == before
    assert sort_datadir(good) == []


def test_split_balanced_contiguous(good):
    parts = split_datadir(good, 2)
    assert parts == [good / "split2" / "1", good / "split2" / "2"]
    ids = [DataDir.load(p).utt_ids() for p in parts]
    assert ids == [["spkA-u0", "spkA-u1"], ["spkA-u2", "spkB-u0", "spkB-u1"]]
    for p in parts:
        assert validate_datadir(p, check_audio=True).errors == []
        assert len(lines(p / "wav.scp")) == len(lines(p / "utt2spk"))
    with pytest.raises(XllmError, match="cannot split 5 utterances into 6"):
        split_datadir(good, 6)


def test_split_per_speaker_keeps_speakers_whole(tmp_path):
    d = tmp_path / "d"
    write_datadir(d, speech_utts(tmp_path, (("a", 1), ("b", 4), ("c", 1), ("d", 2))))
    parts = [DataDir.load(p) for p in split_datadir(d, 3, per_spk=True)]
    speakers = [sorted(set(p.utt2spk.values())) for p in parts]
    assert speakers == [["a"], ["b"], ["c", "d"]]
    assert sum(len(p) for p in parts) == 8
    with pytest.raises(XllmError, match="4 speakers into 5"):
        split_datadir(d, 5, per_spk=True)


def test_split_segmented_keeps_only_used_recordings(tmp_path):
    r1, r2 = make_wav(tmp_path / "r1.wav", 1.0), make_wav(tmp_path / "r2.wav", 1.0)
    utts = [
        Utterance(f"s-{r}{i}", "s", r, p, i * 0.5, i * 0.5 + 0.4) for r, p in (("r1", r1), ("r2", r2)) for i in range(2)
    ]
    write_datadir(tmp_path / "d", utts)
    first, second = split_datadir(tmp_path / "d", 2)
    assert lines(first / "wav.scp") == [f"r1 {r1}"] and lines(second / "wav.scp") == [f"r2 {r2}"]
    assert validate_datadir(first).errors == [] and validate_datadir(second).errors == []


def test_subset_options(good, tmp_path):
    out = tmp_path / "sub"
    assert subset_datadir(good, out, first=2)[0].utt_ids() == ["spkA-u0", "spkA-u1"]
    assert DataDir.load(out).utt_ids() == ["spkA-u0", "spkA-u1"]
    assert lines(out / "wav.scp") == lines(good / "wav.scp")[:2]
    assert validate_datadir(out).errors == []
    assert subset_datadir(good, out, last=1)[0].utt_ids() == ["spkB-u1"]
    assert DataDir.load(out).utt_ids() == ["spkB-u1"]
    (tmp_path / "utts").write_text("spkB-u0\nspkA-u2 extra field\nunknown\n")
    sub, warnings = subset_datadir(good, out, utt_list=tmp_path / "utts")
    assert sub.utt_ids() == ["spkA-u2", "spkB-u0"] and "1 listed utterances" in warnings[0]
    (tmp_path / "spks").write_text("spkB\n")
    assert subset_datadir(good, out, spk_list=tmp_path / "spks")[0].utt_ids() == ["spkB-u0", "spkB-u1"]
    with pytest.raises(XllmError, match="exactly one"):
        subset_datadir(good, out, first=1, last=1)


def test_combine_and_duplicate_ids(good, tmp_path):
    other = tmp_path / "other"
    write_datadir(other, speech_utts(tmp_path / "o", (("spkC", 2),)))
    out = tmp_path / "all"
    combined, warnings = combine_datadirs(out, [good, other])
    assert warnings == [] and len(combined) == 7
    assert validate_datadir(out, check_audio=True).errors == []
    assert lines(out / "text") == sorted(lines(good / "text") + lines(other / "text"))
    with pytest.raises(XllmError) as e:
        combine_datadirs(tmp_path / "dup", [good, out])
    assert "duplicate utterance id 'spkA-u0'" in str(e.value) and str(good) in str(e.value) and str(out) in str(e.value)


def test_combine_drops_partial_text_with_warning(good, tmp_path):
    other = tmp_path / "other"
    write_datadir(other, [Utterance("x-1", "x", "x-1", make_wav(tmp_path / "x.wav", 0.1), duration=0.1)])
    combined, warnings = combine_datadirs(tmp_path / "all", [good, other])
    assert combined.text is None and any("text is missing" in w for w in warnings)
    assert not (tmp_path / "all" / "text").exists()
    assert validate_datadir(tmp_path / "all").errors == []


def test_combine_segmented_with_whole_recordings(good, tmp_path):
    seg = _segmented(tmp_path)
    combined, warnings = combine_datadirs(tmp_path / "mixed", [seg, good])
    assert len(combined) == 7 and warnings == ["reco2dur is missing in some directories; the combined directory has none"]
    segments = lines(tmp_path / "mixed" / "segments")
    assert "s-a r 0 0.5" in segments and "spkA-u1 spkA-u1 0 0.15" in segments
    assert validate_datadir(tmp_path / "mixed", check_audio=True).errors == []
    assert [u.start for u in DataDir.load(tmp_path / "mixed").utterances()][:2] == [0.0, 0.5]


def test_info(good, tmp_path):
    info = DataDir.load(good).info()
    assert (info["utterances"], info["speakers"], info["recordings"], info["text"], info["images"]) == (5, 2, 5, 5, 0)
    durations = [0.1, 0.15, 0.2, 0.1, 0.15]
    assert info["total_hours"] == pytest.approx(sum(durations) / 3600)
    stats = info["duration_seconds"]
    assert (stats["min"], stats["max"]) == (0.1, 0.2)
    assert stats["median"] == pytest.approx(0.15) and stats["mean"] == pytest.approx(0.14)
    assert stats["p90"] == pytest.approx(float(np.percentile(durations, 90)))
