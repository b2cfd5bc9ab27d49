"""`xllm prep dir`: a user's own folder of audio files with .txt transcripts or a TSV."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from xllm_cli.corpora.generic import ids_for, prepare_dir
from xllm_cli.data.tables import read_table
from xllm_cli.errors import XllmError


def write_audio(path, seconds, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * 16000), dtype="float32"), 16000, format=fmt)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "my audio"
    write_audio(root / "alice" / "take 1.wav", 0.5)
    (root / "alice" / "take 1.txt").write_text("Hello  world\n", encoding="utf-8")
    write_audio(root / "alice" / "b.flac", 0.25, fmt="FLAC")
    (root / "alice" / "b.txt").write_text("第二句\n话\n", encoding="utf-8")
    write_audio(root / "top.wav", 0.1)
    (root / "top.txt").write_text("top level", encoding="utf-8")
    write_audio(root / "bob" / "no_text.wav", 0.1)  # no transcript: reported, skipped
    (root / "notes.md").write_text("not audio")
    return root


def test_txt_transcripts(folder, tmp_path):
    data = tmp_path / "data" / "mine"
    report = prepare_dir(folder, data)
    assert read_table(data / "text") == {"alice-b": "第二句 话", "alice-take_1": "Hello world", "top": "top level"}
    assert read_table(data / "utt2spk") == {"alice-b": "alice", "alice-take_1": "alice", "top": "top"}
    durs = read_table(data / "utt2dur")
    assert float(durs["alice-take_1"]) == pytest.approx(0.5, abs=1e-3)
    assert float(durs["alice-b"]) == pytest.approx(0.25, abs=1e-3)
    assert read_table(data / "wav.scp")["alice-b"] == str(folder / "alice" / "b.flac")
    assert [os.path.basename(p) for p in report.no_transcript] == ["no_text.wav"]
    assert report.sets["mine"].utterances == 3


def test_extension_filter(folder, tmp_path):
    prepare_dir(folder, tmp_path / "d", extensions="flac")
    assert list(read_table(tmp_path / "d" / "text")) == ["alice-b"]


def test_tsv(folder, tmp_path):
    tsv = tmp_path / "list.tsv"
    tsv.write_text("path\ttext\nalice/take 1.wav\tfrom the tsv\n" f"{folder / 'top.wav'}\tabsolute path\n", encoding="utf-8")
    prepare_dir(folder, tmp_path / "d", tsv=tsv)
    assert read_table(tmp_path / "d" / "text") == {"alice-take_1": "from the tsv", "top": "absolute path"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("alice/take 1.wav\tone\nalice/nope.wav\ttwo\n", r"list.tsv:2: audio file not found"),
        ("alice/take 1.wav\tone\nalice/take 1.wav\tagain\n", r"list.tsv:2: duplicate audio file 'alice/take 1.wav' \(first on line 1\)"),
        ("alice/take 1.wav one\n", r"list.tsv:1: expected 'path<TAB>transcript'"),
    ],
)
def test_tsv_errors_name_the_line(folder, tmp_path, content, message):
    tsv = tmp_path / "list.tsv"
    tsv.write_text(content, encoding="utf-8")
    with pytest.raises(XllmError, match=message):
        prepare_dir(folder, tmp_path / "d", tsv=tsv)
    assert not (tmp_path / "d").exists()


def test_bad_inputs(folder, tmp_path):
    write_audio(folder / "alice" / "b.wav", 0.1)  # same id as b.flac
    with pytest.raises(XllmError, match=r"gets the utterance id 'alice-b', as does"):
        prepare_dir(folder, tmp_path / "d")
    with pytest.raises(XllmError, match="audio folder not found"):
        prepare_dir(tmp_path / "nope", tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_ids():
    assert ids_for("spk1/a b.wav") == ("spk1-a_b", "spk1")
    assert ids_for("x/spk 1/utt.flac") == ("x_spk_1-utt", "x_spk_1")
    assert ids_for("solo.mp3") == ("solo", "solo")
    assert ids_for("a-b/x-1.wav") == ("a_b-x-1", "a_b")  # no '-' in speaker ids
    assert ids_for("top-level.wav") == ("top_level", "top_level")


def test_speaker_sort_order_agrees_with_utterance_order(tmp_path):
    """Issue 11.9: speaker folders a, a-b, a_b, ab gave utt2spk that Kaldi's validate_data_dir.sh
    rejects ("not in sorted order when sorted first on speaker-id"); xllm data validate must fail there too."""
    from xllm_cli.data.tables import c_sort_key
    from xllm_cli.data.validate import validate_datadir

    root = tmp_path / "audio"
    for spk in ("a", "a-b", "a_b", "ab"):
        for stem in ("x", "x-2"):
            write_audio(root / spk / f"{stem}.wav", 0.1)
            (root / spk / f"{stem}.txt").write_text("hi", encoding="utf-8")
    write_audio(root / "a-c.wav", 0.1)  # a top-level file is its own speaker
    (root / "a-c.txt").write_text("hi", encoding="utf-8")
    data = tmp_path / "data"
    prepare_dir(root, data)
    utt2spk = read_table(data / "utt2spk")
    assert len(set(utt2spk.values())) == 5, utt2spk  # a-b and a_b stay two speakers
    assert sorted(utt2spk, key=c_sort_key) == sorted(utt2spk, key=lambda u: (c_sort_key(utt2spk[u]), c_sort_key(u)))
    assert all(u.startswith(s) for u, s in utt2spk.items())
    report = validate_datadir(data)
    assert report.errors == [] and report.warnings == [], report
    # the old ids: a validate error now, not a warning
    (data / "utt2spk").write_text("a-b-x a-b\na-x a\n")
    (data / "spk2utt").write_text("a a-x\na-b a-b-x\n")
    (data / "wav.scp").write_text("".join(f"{u} {root / 'a' / 'x.wav'}\n" for u in ("a-b-x", "a-x")))
    for name in ("text", "utt2dur", "reco2dur"):
        (data / name).unlink(missing_ok=True)
    assert any("sorted first on speaker-id" in e for e in validate_datadir(data).errors)


def test_empty_transcripts_are_skipped_and_counted(folder, tmp_path):
    """Issue 11.10: an empty .txt (or TSV text) skipped with a warning and a count, not a stop."""
    (folder / "alice" / "b.txt").write_text("  \n", encoding="utf-8")
    report = prepare_dir(folder, tmp_path / "d")
    assert sorted(read_table(tmp_path / "d" / "text")) == ["alice-take_1", "top"]
    assert [os.path.basename(p) for p in report.empty_transcript] == ["b.flac"]
    assert [os.path.basename(p) for p in report.no_transcript] == ["no_text.wav"]
    tsv = tmp_path / "list.tsv"
    tsv.write_text("alice/take 1.wav\t\ntop.wav\tok\n", encoding="utf-8")
    report = prepare_dir(folder, tmp_path / "e", tsv=tsv)
    assert list(read_table(tmp_path / "e" / "text")) == ["top"] and report.empty_transcript == [f"{tsv}:1"]
    proc = subprocess.run([sys.executable, "-m", "xllm_cli", "prep", "dir", str(folder), str(tmp_path / "f")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "1 empty transcripts" in " ".join((proc.stdout + proc.stderr).split()), proc.stderr


def test_resample_converts_what_kaldi_cannot_read(tmp_path, monkeypatch):
    """Issue 11.8: FLAC / 44.1 kHz stereo become 16 kHz mono 16-bit WAVs under DATA/wav; a wav already
    in that format is kept; a second run converts nothing; validate warns about unconverted dirs."""
    from xllm_cli.corpora import resample as resample_module
    from xllm_cli.data.validate import validate_datadir

    root = tmp_path / "audio"
    write_audio(root / "s" / "ok.wav", 0.5)
    write_audio(root / "s" / "c.flac", 0.25, fmt="FLAC")
    (root / "s").mkdir(exist_ok=True)
    t = np.arange(44100) / 44100
    sf.write(root / "s" / "st.wav", np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1) * 0.3, 44100)
    for stem in ("ok", "c", "st"):
        (root / "s" / f"{stem}.txt").write_text("hi", encoding="utf-8")
    plain = tmp_path / "plain"
    prepare_dir(root, plain)
    warnings = validate_datadir(plain).warnings
    assert any("FLAC" in w and "--resample 16000" in w for w in warnings), warnings
    assert any("44100 Hz, not 16 kHz" in w and "2 channels, not mono" in w for w in warnings), warnings

    data = tmp_path / "data"
    prepare_dir(root, data, resample=16000, jobs=2)
    wav = read_table(data / "wav.scp")
    assert wav["s-ok"] == str(root / "s" / "ok.wav")
    for utt in ("s-c", "s-st"):
        assert wav[utt] == str((data / "wav" / f"{utt}.wav").absolute())
        info = sf.info(wav[utt])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert float(read_table(data / "utt2dur")["s-st"]) == pytest.approx(1.0, abs=1e-3)
    report = validate_datadir(data)
    assert report.errors == [] and report.warnings == [], report
    calls = []
    monkeypatch.setattr(resample_module, "convert_file", lambda *a: calls.append(a))
    prepare_dir(root, data, resample=16000)  # resumed: everything is converted already
    assert calls == [] and read_table(data / "wav.scp") == wav


def test_cli(folder, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "xllm_cli", "prep", "dir", str(folder), str(tmp_path / "d"), "--ext", "wav"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(read_table(tmp_path / "d" / "text")) == ["alice-take_1", "top"]
    assert (tmp_path / "d" / "prep_dir.log").is_file()
    proc = subprocess.run([sys.executable, "-m", "xllm_cli", "prep", "dir", str(tmp_path / "nope"), str(tmp_path / "e")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.strip().endswith("audio folder not found")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --- issue 12 ---------------------------------------------------------------


@pytest.mark.parametrize("same", [True, False])
def test_never_deletes_the_users_own_files(folder, tmp_path, same):
    """``xllm prep dir A A`` (or into a folder of the user's own files) must not remove
    their ``segments`` and ``prompt``, which a data directory write drops as stale."""
    data = folder if same else tmp_path / "theirs"
    data.mkdir(exist_ok=True)
    (data / "segments").write_text("mine\n")
    (data / "prompt").write_text("mine too\n")
    proc = subprocess.run([sys.executable, "-m", "xllm_cli", "prep", "dir", str(folder), str(data)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and str(data) in proc.stderr
    assert (data / "segments").read_text() == "mine\n" and (data / "prompt").read_text() == "mine too\n"
    assert not (data / "wav.scp").exists() and not (data / "prep_dir.log").exists()
    with pytest.raises(XllmError, match="segments"):
        prepare_dir(folder, data)


def test_rerun_into_its_own_data_dir_is_fine(folder, tmp_path):
    data = tmp_path / "d"
    prepare_dir(folder, data)
    prepare_dir(folder, data)
    assert len(read_table(data / "text")) == 3
