"""`xllm prep mini`: the synthesized corpus, at 5% size (about 180 utterances)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from xllm_cli.corpora import mini_grammar as G
from xllm_cli.corpora.mini import SPEECH_SETS, MiniOptions, plan_sets, prepare_mini
from xllm_cli.corpora.mini_tts import espeak_available
from xllm_cli.data.datadir import DataDir
from xllm_cli.data.tables import read_table

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs ffmpeg"
)
SCALE = "0.05"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not espeak_available():
        pytest.skip("needs espeak-ng")
    data = tmp_path_factory.mktemp("mini") / "data"
    r = subprocess.run([sys.executable, "-m", "xllm_cli", "prep", "mini", str(data), "--scale", SCALE, "--jobs", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return data, r.stderr


def test_summary_and_log(corpus):
    data, stderr = corpus
    for name in ("train", "test_img_noisy", "lm_text", "distinct chars"):
        assert name in stderr
    assert (data / "prep_mini.log").is_file()


def test_datadirs_validate(corpus):
    from xllm_cli.data.validate import validate_datadir

    data, _ = corpus
    for name in SPEECH_SETS:
        report = validate_datadir(data / name, check_audio=True)
        assert report.ok, (name, report.errors)
        assert report.num_utterances > 0
        for f in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur"):
            assert (data / name / f).is_file(), (name, f)
    lm = read_table(data / "lm_text" / "text")
    assert len(lm) == 200


def test_audio_format_and_speakers(corpus):
    data, _ = corpus
    dd = DataDir.load(data / "train")
    for utt in dd.utterances()[:20]:
        info = sf.info(utt.path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 0.8 <= utt.duration <= 4.5
        assert utt.utt_id.startswith(utt.spk + "-")
        assert utt.spk[0] in "fm" and utt.spk[1:].isdigit()
    assert len(dd.speakers()) >= 6


def test_test_sentences_unseen(corpus):
    data, _ = corpus
    train = set(read_table(data / "train" / "text").values()) | set(read_table(data / "train_img" / "text").values())
    train |= set(read_table(data / "lm_text" / "text").values())
    for name in ("test", "test_img", "dev", "video"):
        assert not set(read_table(data / name / "text").values()) & train, name


def test_full_size_plan():
    """The full-size plan (cheap: no audio): sizes, held-out combinations, closed vocabulary."""
    plans, lm, holdout = plan_sets(Path("/nonexistent"), Path("/nonexistent/audio"), MiniOptions())
    sizes = {k: len(v) for k, v in plans.items()}
    assert sizes == {"train": 2000, "dev": 150, "test": 200, "train_img": 800, "test_img": 150,
                     "test_img_noisy": 150, "video": 20}
    train_text = {j.text for j in plans["train"] + plans["train_img"]} | set(lm)
    test_text = {j.text for j in plans["test"] + plans["test_img"] + plans["video"]}
    assert not test_text & train_text
    assert not {j.text for j in plans["dev"]} & (train_text | test_text)
    train_chars = set("".join(j.text for j in plans["train"]))
    assert set("".join(test_text)) <= train_chars  # unseen combinations, not unseen characters
    assert 50 <= len(G.vocabulary()) <= 150
    assert all(ch in G.PINYIN for ch in G.vocabulary())
    # a held-out colour+object pair never appears in training sentences
    colour, obj = sorted(holdout.test_pairs[("C", "O")])[0]
    assert not any(colour + "的" + obj in t for t in train_text)
    assert any(colour + "的" + obj in t for t in test_text)


def test_pinyin_tones():
    assert G.to_pinyin("把红色的灯打开") == "ba3 hong2 se4 de5 deng1 da3 kai1"
    assert G.to_pinyin("我想要一个球") == "wo2 xiang3 yao4 yi2 ge4 qiu2"  # 3-3 sandhi, 一个


def test_images_show_the_sentence(corpus):
    data, _ = corpus
    images = read_table(data / "test_img" / "image.scp")
    texts = read_table(data / "test_img" / "text")
    assert images and set(images) == set(texts)
    for utt, path in images.items():
        img = Image.open(path)
        assert img.format == "PNG" and img.size == (96, 96)
        colour = next((w for w, _ in G.COLOURS if w in texts[utt]), None)
        if colour:  # enough pixels of the spoken colour
            px = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)
            close = (np.abs(px - np.array(G.COLOUR_RGB[colour])).sum(axis=1) < 40).sum()
            assert close > 60, (utt, texts[utt])
    noisy = read_table(data / "test_img_noisy" / "image.scp")
    assert sorted(noisy.values()) == sorted(images.values())  # same pictures
    assert sorted(read_table(data / "test_img_noisy" / "text").values()) == sorted(texts.values())
    assert all(Path(p).suffix == ".png" for p in read_table(data / "train_img" / "image.scp").values())


def read_key_spans(data: Path) -> dict[str, tuple[float, float, str, bool]]:
    """``DATA/local/key_spans.txt``: utt -> (start, end, key word, drowned)."""
    spans = {}
    for line in (data / "local" / "key_spans.txt").read_text().splitlines():
        utt, start, end, word, drowned = line.split()
        spans[utt] = (float(start), float(end), word, drowned == "1")
    return spans


def check_key_word_drowned(data: Path, words=lambda text: text) -> None:
    """In each test_img_noisy utterance the key word (a word of ``words(text)``) is drowned in
    noise: inside its span the noisy signal no longer follows the clean twin's; outside it does."""
    spans = read_key_spans(data)
    clean = read_table(data / "test_img" / "wav.scp")
    noisy = read_table(data / "test_img_noisy" / "wav.scp")
    texts = read_table(data / "test_img_noisy" / "text")
    assert len(noisy) == len(clean) > 0
    for utt in clean:
        twin = utt.replace("-si-", "-sn-")
        start, end, word, drowned = spans[twin]
        assert drowned and not spans[utt][3] and word in words(texts[twin]) and 0.1 < end - start < 1.2
        a, _ = sf.read(clean[utt])
        b, _ = sf.read(noisy[twin])
        i, j = int(start * 16000), int(end * 16000)
        inside = np.corrcoef(a[i:j], b[i:j])[0, 1]
        m = 800  # the burst reaches 30 ms past the word (plus its ramp)
        outside = np.corrcoef(np.r_[a[: i - m], a[j + m :]], np.r_[b[: i - m], b[j + m :]])[0, 1]
        assert abs(inside) < 0.3 and outside > 0.9, (utt, inside, outside)


def test_noisy_set_drowns_the_key_word(corpus):
    check_key_word_drowned(corpus[0])


def test_video(corpus):
    from xllm_cli.data.audio import load_audio
    from xllm_cli.data.video import sample_frames, video_duration

    data, _ = corpus
    videos = read_table(data / "video" / "video.scp")
    wavs = read_table(data / "video" / "wav.scp")
    durs = read_table(data / "video" / "utt2dur")
    assert videos and videos == wavs and all(p.endswith(".mp4") for p in videos.values())
    for utt, path in videos.items():
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,nb_frames",
                                "-of", "json", path], capture_output=True, text=True, check=True)
        streams = json.loads(probe.stdout)["streams"]
        kinds = [s["codec_type"] for s in streams]
        assert "video" in kinds and "audio" in kinds
        frames = int(next(s for s in streams if s["codec_type"] == "video")["nb_frames"])
        assert abs(frames - float(durs[utt]) * 10) <= 2  # 10 frames per second of speech
        assert 1.0 < video_duration(path) < 5.0
        assert len(sample_frames(path, 4)) == 4
        assert abs(len(load_audio(path)) / 16000 - float(durs[utt])) < 0.1


def test_rerun_reuses_and_is_deterministic(corpus, tmp_path):
    data, _ = corpus
    before = {p.name: p.read_text() for p in (data / "train").iterdir()}
    report = prepare_mini(data, MiniOptions(scale=float(SCALE), jobs=1), progress=False)
    assert report.made == 0 and report.reused > 0  # nothing synthesized again
    assert {p.name: p.read_text() for p in (data / "train").iterdir()} == before
    # as after a kill: missing files (and only those) are made again
    lost = sorted((data / "audio" / "dev").glob("*.wav"))[:2]
    for wav in lost:
        wav.unlink()
    report = prepare_mini(data, MiniOptions(scale=float(SCALE), jobs=1), progress=False)
    assert report.made == 2 and all(wav.is_file() for wav in lost)
    # same seed elsewhere: same texts and lists (paths aside); another seed: different
    other = tmp_path / "again"
    prepare_mini(other, MiniOptions(scale=0.01, jobs=1, seed=0), progress=False)
    small = read_table(other / "train" / "text")
    big = read_table(data / "train" / "text")
    assert all(big[k] == v for k, v in small.items())  # a set's utterance i does not depend on --scale
    plans_a, lm_a, _ = plan_sets(Path("/x"), Path("/x/a"), MiniOptions(seed=0))
    plans_b, lm_b, _ = plan_sets(Path("/x"), Path("/x/a"), MiniOptions(seed=0))
    plans_c, lm_c, _ = plan_sets(Path("/x"), Path("/x/a"), MiniOptions(seed=1))
    assert [j.text for j in plans_a["test"]] == [j.text for j in plans_b["test"]] and lm_a == lm_b
    assert [j.text for j in plans_a["test"]] != [j.text for j in plans_c["test"]]
    # identical audio for the same settings (same espeak-ng)
    wav = sorted((other / "audio" / "train").glob("*.wav"))[0]
    twin = data / "audio" / "train" / wav.name
    assert twin.is_file() and np.array_equal(sf.read(wav)[0], sf.read(twin)[0])


def test_espeak_library_backend():
    pytest.importorskip("espeakng_loader")
    from xllm_cli.corpora.mini_tts import EspeakLibrary, synth_pieces

    engine = EspeakLibrary()
    parts, rate = synth_pieces(engine, ["ba3", "hong2 se4", "de5 deng1"], "cmn-latn-pinyin+f2", 170, 50)
    assert rate == 22050 and len(parts) == 3
    assert all(0.05 < len(p) / rate < 1.5 for p in parts)
    assert len(parts[1]) > len(parts[0])  # two syllables last longer than one


def test_bad_scale(tmp_path):
    from xllm_cli.errors import XllmError

    with pytest.raises(XllmError, match="scale"):
        prepare_mini(tmp_path / "d", MiniOptions(scale=0))


def test_missing_espeak_binary_message(monkeypatch):
    from xllm_cli.corpora import mini_tts
    from xllm_cli.errors import XllmError

    monkeypatch.setattr(mini_tts, "_ENGINE", None)
    monkeypatch.setattr(mini_tts.shutil, "which", lambda name: None)
    with pytest.raises(XllmError, match="espeak-ng not found") as e:
        mini_tts.get_engine("binary")
    assert "apt-get install espeak-ng" in str(e.value) and "\n" not in str(e.value)


def test_empty_span_sidecar_left_by_a_kill_is_redone(corpus):
    """Issue 12: a kill between the wav and its ``.span`` sidecar left an empty sidecar, and
    every rerun failed with a bare JSONDecodeError; now the utterance is made again."""
    data, _ = corpus
    prepare_mini(data, MiniOptions(scale=float(SCALE), jobs=1), progress=False)  # all done
    span = sorted((data / "audio" / "test").glob("*.span"))[0]
    good = span.read_text()
    span.write_text("")
    report = prepare_mini(data, MiniOptions(scale=float(SCALE), jobs=1), progress=False)
    assert report.made == 1 and span.read_text() == good
    assert not [p for p in span.parent.iterdir() if p.name.startswith(".")]  # no temp files left
