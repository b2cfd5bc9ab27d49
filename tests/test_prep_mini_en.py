"""`xllm prep mini --lang en`: the English mini corpus, and the Mandarin one left as it was."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xllm_cli.corpora import mini_grammar as G
from xllm_cli.corpora import mini_grammar_en as E
from xllm_cli.corpora.mini import SPEAKERS, SPEECH_SETS, MiniOptions, plan_sets, prepare_mini
from xllm_cli.corpora.mini_tts import espeak_available
from xllm_cli.data.tables import read_table
from test_prep_mini import check_key_word_drowned

ENGLISH = re.compile(r"[a-z]+( [a-z]+)*")


def _plans(lang: str, seed: int = 0):
    # backend fixed: it goes into the file digests, and planning needs no espeak
    return plan_sets(Path("/x"), Path("/x/audio"), MiniOptions(seed=seed, lang=lang, backend="binary"))


def have_tools() -> bool:
    return bool(shutil.which("ffmpeg") and shutil.which("ffprobe")) and espeak_available()


# ------------------------------------------------------------------ grammar and plan (no audio)


def test_english_words_cover_the_grammar():
    for template in G.TEMPLATES:
        fields = set(re.findall(r"\{(\w+)\}", E.PATTERNS[template.name]))
        assert {f for f in fields if f.isupper()} == set(template.slots), template.name
        for slot, values in template.slots.items():
            assert set(values) <= set(E.SLOT_WORDS[slot]), (template.name, slot)
    for slot, words in E.SLOT_WORDS.items():
        assert len(set(words.values())) == len(words), slot  # one English word per canonical value
    assert all(re.fullmatch("[a-z]+", w) for w in E.vocabulary())
    assert 60 <= len(E.vocabulary()) <= 150
    assert set(E.VOICES) == {spk for spk, _, _ in SPEAKERS}
    assert (E.cardinal(23), E.cardinal(20), E.cardinal(11)) == ("twenty three", "twenty", "eleven")


def test_english_sentences():
    def render(template, key, **values):
        s = G.Sentence(template, tuple(values.items()))
        return E.English().render(s, key)

    s = render("table", "N", N="三", C="红色", O="杯子")
    assert s.text == "there are three red cups on the table" and s.key_word == "three"
    assert s.pieces == [("there are", False), ("three", True), ("red cups on the table", False)]
    assert render("table", "O", N="一", C="橙色", O="鱼").text == "there is one orange fish on the table"
    assert render("open", "O", C="白色", O="灯").text == "turn on the white lamp"
    assert render("close", "C", C="白色", O="门").text == "close the white door"
    assert render("room_on", "A", R="客厅", A="空调").pieces == [("turn on the living room", False),
                                                               ("air conditioner", True)]
    assert render("date", "D", M="二", D="二十三").text == "today is february twenty three"
    assert render("alarm", "H", H="两").text == "wake me up at two tomorrow"


def test_english_plan_translates_the_mandarin_one():
    """Same sizes, speakers, noise, pictures and held-out combinations; only words and voices differ."""
    en, lm_en, holdout = _plans("en")
    zh, lm_zh, _ = _plans("zh")
    assert {k: len(v) for k, v in en.items()} == {k: len(v) for k, v in zh.items()} == {
        "train": 2000, "dev": 150, "test": 200, "train_img": 800, "test_img": 150, "test_img_noisy": 150, "video": 20}
    assert len(lm_en) == len(lm_zh) == 4000
    for name in SPEECH_SETS:
        for a, b in zip(en[name], zh[name]):
            assert (a.utt_id, a.spk, a.scene, a.noise, a.snr, a.drown, a.rng_seed) == (
                b.utt_id, b.spk, b.scene, b.noise, b.snr, b.drown, b.rng_seed)
            assert a.voice == E.VOICES[a.spk] and Path(a.wav).name != Path(b.wav).name
            assert ENGLISH.fullmatch(a.text), a.text  # lower case, no punctuation
            assert " ".join(p for p, _ in a.pieces) == a.text  # espeak reads the transcript itself
            assert [k for _, k in a.pieces].count(True) == 1 and f" {a.key_word} " in f" {a.text} "
    # held-out combinations: never in training material; every test word is
    train_text = {j.text for j in en["train"] + en["train_img"]} | set(lm_en)
    test_text = {j.text for j in en["test"] + en["test_img"] + en["video"]}
    assert not test_text & train_text and not {j.text for j in en["dev"]} & (train_text | test_text)
    assert {w for t in test_text for w in t.split()} <= {w for j in en["train"] for w in j.text.split()}
    colour, obj = (E.SLOT_WORDS[s][v] for s, v in zip("CO", sorted(holdout.test_pairs[("C", "O")])[0]))
    assert not any(f"{colour} {obj}" in t for t in train_text)
    assert any(f"{colour} {obj}" in t for t in test_text)


def test_pictured_words_match_the_picture():
    """The key word of a picture set names what the picture shows (colour, object or count)."""
    en, _, _ = _plans("en")
    rgb = {E.SLOT_WORDS["C"][zh]: rgb for zh, rgb in G.COLOUR_RGB.items()}
    objects = {E.SLOT_WORDS["O"][zh]: zh for zh in G.OBJECTS}
    counts = {E.cardinal(n): n for n in range(1, 6)}
    for job in en["train_img"] + en["test_img"] + en["test_img_noisy"] + en["video"]:
        words = job.text.split()
        said = [w for w in words if w in rgb]
        assert said == [] or tuple(job.scene["rgb"]) == rgb[said[0]], job.text
        thing = next(w for w in words if w in objects or w.rstrip("s") in objects)
        assert job.scene["obj"] == objects.get(thing) or job.scene["obj"] == objects[thing.rstrip("s")]
        count = counts[words[2]] if words[0] in ("there", "i") else 1  # "there are N ...", "i want N ..."
        assert job.scene["count"] == count, job.text
        key = job.key_word
        assert key in rgb or key in counts or key == thing, (job.text, key)


def test_mandarin_plan_unchanged():
    """--lang en must not move a single Mandarin random draw or file name (digests as before it)."""
    zh, lm, _ = _plans("zh")
    names = [Path(j.wav).name for k in sorted(zh) for j in zh[k]]
    assert hashlib.sha1(json.dumps(names).encode()).hexdigest() == "073001b54a11eabb1eb170a61ac4cca0e95559ec"
    assert hashlib.sha1("\n".join(lm).encode()).hexdigest() == "45e1c86c6f85723096746834a1be6aa80f00765d"
    first = zh["test_img_noisy"][0]
    assert (first.text, Path(first.wav).name) == ("我想要两个书", "m7-sn-00000.1c60c50a.wav")
    assert first.pieces == [("wo2 xiang3 yao4 liang3 ge4", False), ("shu1", True)]


def test_unknown_language(tmp_path):
    from xllm_cli.errors import XllmError

    with pytest.raises(XllmError, match="unknown mini corpus language 'fr'") as e:
        prepare_mini(tmp_path / "d", MiniOptions(lang="fr"))
    assert "\n" not in str(e.value)


def test_library_backend_speaks_english():
    pytest.importorskip("espeakng_loader")
    from xllm_cli.corpora.mini_tts import EspeakLibrary, synth_pieces

    engine = EspeakLibrary()
    for voice in sorted(set(E.VOICES.values())):
        parts, rate = synth_pieces(engine, ["there are", "three", "red cups on the table"], f"{voice}+m3", 170, 50)
        assert len(parts) == 3 and all(0.1 < len(p) / rate < 2.5 for p in parts), voice


# ------------------------------------------------------------------------- a tiny build


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not have_tools():
        pytest.skip("needs ffmpeg and espeak-ng")
    data = tmp_path_factory.mktemp("mini_en") / "data"
    r = subprocess.run([sys.executable, "-m", "xllm_cli", "prep", "mini", str(data), "--lang", "en",
                        "--scale", "0.05", "--jobs", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return data, r.stderr


def test_english_build_validates(corpus):
    from xllm_cli.data.validate import validate_datadir

    data, stderr = corpus
    assert "distinct words" in stderr
    for name in SPEECH_SETS:
        report = validate_datadir(data / name, check_audio=True)
        assert report.ok and report.num_utterances > 0, (name, report.errors)
        texts = read_table(data / name / "text").values()
        assert all(ENGLISH.fullmatch(t) for t in texts), name
    assert all(ENGLISH.fullmatch(t) for t in read_table(data / "lm_text" / "text").values())
    words = (data / "local" / "words.txt").read_text().split()
    assert words == E.vocabulary() and not (data / "local" / "lexicon.txt").exists()
    assert re.match(r"(test|dev) CO [a-z]+ [a-z]+$", (data / "local" / "holdout.txt").read_text().splitlines()[0])
    durations = [float(d) for d in read_table(data / "train" / "utt2dur").values()]
    assert 0.8 <= min(durations) and max(durations) <= 5.0


def test_english_noisy_set_drowns_the_key_word(corpus):
    check_key_word_drowned(corpus[0], words=str.split)  # a whole word, not a substring


def test_help_shows_lang():
    r = subprocess.run([sys.executable, "-m", "xllm_cli", "prep", "mini", "--help"], capture_output=True,
                       text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and "--lang" in r.stdout and "--lang en" in r.stdout
