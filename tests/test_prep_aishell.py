"""`xllm prep aishell` / `xllm prep aishell2` on small corpora built here (tiny real wavs)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import soundfile as sf

from xllm_cli.corpora import aishell as aishell_mod
from xllm_cli.corpora.aishell import prepare_aishell
from xllm_cli.data.durations import wav_duration
from xllm_cli.data.wavheader import parse_wav_header
from xllm_cli.corpora.aishell2 import prepare_aishell2
from xllm_cli.data.tables import read_table
from xllm_cli.errors import XllmError

# part -> speaker -> [(utterance number, seconds, transcript or None)]
AISHELL = {
    "train": {"S0002": [(122, 0.25, "而 对 楼市 成交"), (123, 0.1, "抑制 作用 最 大"), (124, 0.3, None)],
              "S0003": [(1, 0.2, "的 限 购"), (2, 0.15, "ｋ ｔ ｖ 节目")]},
    "dev": {"S0724": [(1, 0.1, "北京 房价"), (2, 0.12, "上涨")]},
    "test": {"S0764": [(1, 0.3, "我们 今天"), (7, 0.05, "好")]},
}
NO_AUDIO = "BAC009S0002W0999"  # a transcript line whose wav is not in the corpus


def write_wav(path, seconds, sample_rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(round(seconds * sample_rate)), dtype="float32"), sample_rate, subtype="PCM_16")


def utt_id(spk, number):
    return f"BAC009{spk}W{number:04d}"


def build_aishell(root, tarred=False):
    base = root / "data_aishell"
    lines = []
    for part, speakers in AISHELL.items():
        for spk, utts in speakers.items():
            for number, seconds, text in utts:
                write_wav(base / "wav" / part / spk / f"{utt_id(spk, number)}.wav", seconds)
                if text is not None:
                    lines.append(f"{utt_id(spk, number)} {text}")
            if tarred:  # as distributed: wav/S0002.tar.gz holding train/S0002/*.wav
                with tarfile.open(base / "wav" / f"{spk}.tar.gz", "w:gz") as tar:
                    tar.add(base / "wav" / part / spk, arcname=f"{part}/{spk}")
    if tarred:
        for part in AISHELL:
            for spk in AISHELL[part]:
                for f in (base / "wav" / part / spk).iterdir():
                    f.unlink()
                (base / "wav" / part / spk).rmdir()
            (base / "wav" / part).rmdir()
    lines.append(f"{NO_AUDIO} 没有 音频")
    (base / "transcript").mkdir(parents=True)
    (base / "transcript" / "aishell_transcript_v0.8.txt").write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    return root


def check_aishell_output(data, report):
    assert {k: (v.utterances, v.speakers) for k, v in report.sets.items()} == {"train": (4, 2), "dev": (2, 1), "test": (2, 1)}
    text = read_table(data / "train" / "text")
    assert text[utt_id("S0002", 122)] == "而对楼市成交"  # segmentation spaces gone
    assert text[utt_id("S0003", 2)] == "KTV节目"  # full-width letters to ASCII capitals
    assert utt_id("S0002", 124) not in text  # wav without transcript: skipped
    utt2spk = read_table(data / "train" / "utt2spk")
    assert utt2spk[utt_id("S0002", 122)] == "BAC009S0002"
    assert all(u.startswith(s) for u, s in utt2spk.items())  # Kaldi: speaker is a prefix
    for part, speakers in AISHELL.items():
        durs = read_table(data / part / "utt2dur")
        for spk, utts in speakers.items():
            for number, seconds, text in utts:
                if text is not None:
                    assert float(durs[utt_id(spk, number)]) == pytest.approx(seconds, abs=1e-4)
    wav = read_table(data / "dev" / "wav.scp")
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in wav.values())
    assert read_table(data / "test" / "spk2utt")["BAC009S0764"].split() == [utt_id("S0764", 1), utt_id("S0764", 7)]
    assert [os.path.basename(p) for p in report.no_transcript] == [f"{utt_id('S0002', 124)}.wav"]
    assert report.no_audio == [NO_AUDIO]


def test_extracted_layout(tmp_path):
    corpus = build_aishell(tmp_path / "aishell")
    report = prepare_aishell(corpus, tmp_path / "data")
    check_aishell_output(tmp_path / "data", report)
    assert report.extracted == 0
    # CORPUS may also be data_aishell/ itself
    prepare_aishell(corpus / "data_aishell", tmp_path / "data2")
    assert (tmp_path / "data2" / "train" / "text").read_bytes() == (tmp_path / "data" / "train" / "text").read_bytes()


def test_tarred_layout_extracts_once(tmp_path, monkeypatch):
    corpus = build_aishell(tmp_path / "aishell", tarred=True)
    report = prepare_aishell(corpus, tmp_path / "data")
    assert report.extracted == 4
    check_aishell_output(tmp_path / "data", report)
    assert (corpus / "data_aishell" / "wav" / ".S0002.tar.gz.extracted").is_file()

    def no_more_extraction(*args, **kwargs):
        raise AssertionError("extracted again")

    monkeypatch.setattr(aishell_mod, "safe_extract", no_more_extraction)
    assert prepare_aishell(corpus, tmp_path / "data").extracted == 0


def test_evil_tarball_is_rejected_and_nothing_is_written(tmp_path):
    corpus = build_aishell(tmp_path / "aishell")
    wav_dir = corpus / "data_aishell" / "wav"
    evil = wav_dir / "S0666.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../x")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(XllmError, match=r"S0666.tar.gz: member '../x': path leaves the destination"):
        prepare_aishell(corpus, tmp_path / "data")
    assert not (corpus / "data_aishell" / "x").exists() and not (wav_dir / "x").exists()
    assert not (tmp_path / "data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aishell"]


def test_corrupt_tarball(tmp_path):
    corpus = build_aishell(tmp_path / "aishell")
    (corpus / "data_aishell" / "wav" / "S0667.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage" * 20)
    with pytest.raises(XllmError, match=r"S0667.tar.gz: corrupt or truncated archive"):
        prepare_aishell(corpus, tmp_path / "data")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "bad_line, message",
    [
        (f"{utt_id('S0002', 500)}", rf"aishell_transcript_v0.8.txt:\d+: utterance '{utt_id('S0002', 500)}' has no text"),
        (f"{utt_id('S0002', 122)} 重复", rf"aishell_transcript_v0.8.txt:\d+: duplicate utterance id '{utt_id('S0002', 122)}' \(first on line \d+\)"),
    ],
)
def test_bad_transcript_lines_name_file_and_line(tmp_path, bad_line, message):
    corpus = build_aishell(tmp_path / "aishell")
    data = tmp_path / "data"
    prepare_aishell(corpus, data)
    before = (data / "train" / "text").read_bytes()
    transcript = corpus / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt"
    transcript.write_text(transcript.read_text(encoding="utf-8") + bad_line + "\n", encoding="utf-8")
    with pytest.raises(XllmError, match=message):
        prepare_aishell(corpus, data)
    assert (data / "train" / "text").read_bytes() == before  # the earlier result is untouched


def test_missing_inputs(tmp_path):
    with pytest.raises(XllmError, match="corpus folder not found"):
        prepare_aishell(tmp_path / "nope", tmp_path / "data")
    corpus = build_aishell(tmp_path / "aishell")
    (corpus / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt").unlink()
    with pytest.raises(XllmError, match="aishell_transcript_v0.8.txt: transcript file not found"):
        prepare_aishell(corpus, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "xllm_cli", *map(str, args)], capture_output=True, text=True)


def test_cli(tmp_path):
    corpus = build_aishell(tmp_path / "aishell")
    proc = run_cli("prep", "aishell", corpus, tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    assert len(read_table(tmp_path / "data" / "train" / "text")) == 4
    log = (tmp_path / "data" / "prep_aishell.log").read_text(encoding="utf-8")
    assert "BAC009S0002W0124.wav" in log  # the full list of skipped wavs is in the log
    missing = run_cli("prep", "aishell", tmp_path / "nope", tmp_path / "data3")
    assert missing.returncode != 0
    assert missing.stderr.strip() == f"xllm: error: {tmp_path / 'nope'}: corpus folder not found"
    assert "Traceback" not in missing.stderr and not (tmp_path / "data3").exists()
    for cmd in ("aishell", "aishell2", "dir", "manifest"):
        lines = [line.strip() for line in run_cli("prep", cmd, "--help").stdout.splitlines() if line.strip()]
        assert lines[-1].startswith(f"Example: xllm prep {cmd} ")  # the example comes last


def test_wav_header_parse_matches_soundfile(tmp_path):
    for subtype, rate, channels in (("PCM_16", 16000, 1), ("PCM_24", 44100, 2), ("FLOAT", 8000, 1)):
        path = tmp_path / f"{subtype}.wav"
        sf.write(path, np.zeros((12345, channels), dtype="float32"), rate, subtype=subtype)
        assert wav_duration(str(path)) == pytest.approx(sf.info(path).duration, abs=1e-9)
    # a header this parser does not handle falls back to soundfile
    path = tmp_path / "adpcm.wav"
    sf.write(path, np.zeros(16000, dtype="float32"), 16000, subtype="IMA_ADPCM")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert parse_wav_header(fd, os.fstat(fd).st_size) is None
    finally:
        os.close(fd)
    assert wav_duration(str(path)) == pytest.approx(sf.info(path).duration, abs=1e-3)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(XllmError, match="bad.wav: not a readable audio file"):
        wav_duration(str(tmp_path / "bad.wav"))


# --------------------------------------------------------------------------- AISHELL-2


def build_set(folder, utts, with_scp=True, extra_scp=(), extra_trans=()):
    """utts: [(utt, speaker folder, seconds, text)]."""
    scp, trans = [], []
    for utt, spk, seconds, text in utts:
        write_wav(folder / "wav" / spk / f"{utt}.wav", seconds)
        scp.append(f"{utt}\twav/{spk}/{utt}.wav")
        trans.append(f"{utt}\t{text}")
    scp += list(extra_scp)
    trans += list(extra_trans)
    if with_scp:
        (folder / "wav.scp").write_text("\n".join(scp) + "\n", encoding="utf-8")
    (folder / "trans.txt").write_text("\n".join(trans) + "\n", encoding="utf-8")


def build_aishell2(root):
    ios = root / "AISHELL-2" / "iOS"
    build_set(ios / "data", [("ID0002W0001", "C0002", 0.2, "厨房用具"), ("ID0002W0002", "C0002", 0.1, "打开ｔｖ"),
                             ("ID0003W0001", "C0003", 0.15, "今天 天气")],
              extra_scp=["ID0003W0009\twav/C0003/ID0003W0009.wav"],  # listed, but the file does not exist
              extra_trans=["ID0003W0009\t文件不在", "ID0009W0001\t没有音频"])
    write_wav(ios / "data" / "wav" / "C0003" / "ID0003W0002.wav", 0.1)  # audio entry without transcript
    with open(ios / "data" / "wav.scp", "a", encoding="utf-8") as f:
        f.write("ID0003W0002\twav/C0003/ID0003W0002.wav\n")
    build_set(ios / "dev", [("ID0116W0001", "D0116", 0.1, "开发")])
    build_set(ios / "test", [("ID0117W0001", "T0117", 0.1, "测试")])
    ev = root / "AISHELL-DEV-TEST-SET"
    build_set(ev / "iOS" / "dev", [("ID0116W0001", "D0116", 0.1, "开发")])
    build_set(ev / "iOS" / "test", [("IT0011W0001", "T0011", 0.12, "换一首歌"), ("IT0011W0002", "T0011", 0.1, "好")])
    build_set(ev / "Android" / "dev", [("AD0116W0001", "D0116", 0.1, "安卓")], with_scp=False)  # listed from wav/
    build_set(ev / "MIC" / "test", [("MT0011W0001", "T0011", 0.2, "麦克风")])
    staging = root / "staging"
    build_set(staging / "test", [("AT0011W0001", "T0011", 0.1, "安卓测试")])
    with tarfile.open(ev / "Android" / "test.tar.gz", "w:gz") as tar:  # packed as in the download
        tar.add(staging / "test", arcname="test")
    return root


def test_aishell2_with_evaluation_sets(tmp_path):
    corpus = build_aishell2(tmp_path / "a2")
    data = tmp_path / "data"
    report = prepare_aishell2(corpus, data)
    counts = {k: v.utterances for k, v in report.sets.items()}
    assert counts == {"train": 3, "dev": 1, "test": 1, "dev_ios": 1, "test_ios": 2,
                      "dev_android": 1, "test_android": 1, "test_mic": 1}
    assert read_table(data / "train" / "text") == {"ID0002W0001": "厨房用具", "ID0002W0002": "打开TV", "ID0003W0001": "今天 天气"}
    assert read_table(data / "train" / "utt2spk")["ID0003W0001"] == "ID0003"
    assert float(read_table(data / "train" / "utt2dur")["ID0003W0001"]) == pytest.approx(0.15, abs=1e-4)
    assert float(read_table(data / "test_mic" / "utt2dur")["MT0011W0001"]) == pytest.approx(0.2, abs=1e-4)
    assert read_table(data / "test_android" / "text") == {"AT0011W0001": "安卓测试"}
    assert read_table(data / "dev_android" / "wav.scp")["AD0116W0001"].endswith("Android/dev/wav/D0116/AD0116W0001.wav")
    assert [os.path.basename(p) for p in report.no_transcript] == ["ID0003W0002.wav"]
    assert report.no_audio == ["ID0003W0009", "ID0009W0001"]


def test_aishell2_errors(tmp_path):
    with pytest.raises(XllmError, match="corpus folder not found"):
        prepare_aishell2(tmp_path / "nope", tmp_path / "data")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(XllmError, match="no AISHELL-2 corpus here"):
        prepare_aishell2(empty, tmp_path / "data")
    corpus = build_aishell2(tmp_path / "a2")
    trans = corpus / "AISHELL-2" / "iOS" / "dev" / "trans.txt"
    trans.write_text("ID0116W0001\t开发\nID0116W0002\n", encoding="utf-8")
    with pytest.raises(XllmError, match=r"dev/trans.txt:2: utterance 'ID0116W0002' has no text"):
        prepare_aishell2(corpus, tmp_path / "data")
    trans.unlink()
    with pytest.raises(XllmError, match=r"dev/trans.txt: transcript file not found"):
        prepare_aishell2(corpus, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_whole_corpus_tarball_and_duplicate_ids(tmp_path):
    built = build_aishell(tmp_path / "built", tarred=True)
    corpus = tmp_path / "aishell"
    corpus.mkdir()
    with tarfile.open(corpus / "data_aishell.tgz", "w:gz") as tar:  # openslr's download: tarballs inside a tarball
        tar.add(built / "data_aishell", arcname="data_aishell")
    report = prepare_aishell(corpus, tmp_path / "data")
    check_aishell_output(tmp_path / "data", report)
    assert (corpus / ".data_aishell.tgz.extracted").is_file()
    clash = corpus / "data_aishell" / "wav" / "dev" / "S0724" / f"{utt_id('S0002', 122)}.wav"
    write_wav(clash, 0.1)
    with pytest.raises(XllmError, match=rf"duplicate utterance id '{utt_id('S0002', 122)}'"):
        prepare_aishell(corpus, tmp_path / "data")
