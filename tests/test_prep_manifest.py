"""`xllm prep manifest`: VSDial/X-LLM style JSON, JSON Lines and TSV manifests."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from xllm_cli.corpora.manifest import prepare_manifest
from xllm_cli.data.tables import read_table
from xllm_cli.errors import XllmError


@pytest.fixture
def media(tmp_path):
    root = tmp_path / "vsdial"
    (root / "wav").mkdir(parents=True)
    (root / "img").mkdir()
    for i in range(3):
        sf.write(root / "wav" / f"a{i}.wav", np.zeros(1600, dtype="float32"), 16000)
        Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "img" / f"i{i}.png")
    return root


def records():
    return [
        {"id": f"d{i}", "speaker": "spkA", "speech": f"wav/a{i}.wav", "image": f"img/i{i}.png", "asr": f"图片 里 有 {i} 个 苹果"}
        for i in range(3)
    ]


def test_json_list_becomes_a_data_dir(media, tmp_path):
    manifest = media / "train.json"
    manifest.write_text(json.dumps(records(), ensure_ascii=False), encoding="utf-8")
    assert prepare_manifest(manifest, tmp_path / "data", default_prompt="根据图片请忠实地识别该语音") == 3
    text = read_table(tmp_path / "data" / "text")
    assert text["spkA-d1"] == "图片 里 有 1 个 苹果"
    images = read_table(tmp_path / "data" / "image.scp")
    assert images["spkA-d2"].endswith("img/i2.png")
    assert read_table(tmp_path / "data" / "utt2spk")["spkA-d0"] == "spkA"
    assert read_table(tmp_path / "data" / "prompt")["spkA-d0"] == "根据图片请忠实地识别该语音"


def test_jsonl_and_tsv_give_the_same_directory(media, tmp_path):
    jsonl = media / "a.jsonl"
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records()) + "\n", encoding="utf-8")
    tsv = media / "b.tsv"
    tsv.write_text("id\tspeaker\tspeech\timage\tasr\n" + "".join(
        f"{r['id']}\t{r['speaker']}\t{r['speech']}\t{r['image']}\t{r['asr']}\n" for r in records()), encoding="utf-8")
    prepare_manifest(jsonl, tmp_path / "j")
    prepare_manifest(tsv, tmp_path / "t")
    for name in ("wav.scp", "text", "utt2spk", "image.scp"):
        assert (tmp_path / "j" / name).read_text() == (tmp_path / "t" / name).read_text()


def test_missing_media_names_the_line(media, tmp_path):
    bad = records()
    bad[1]["image"] = "img/nope.png"
    manifest = media / "bad.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in bad) + "\n")
    with pytest.raises(XllmError, match=r"bad.jsonl:2: file not found"):
        prepare_manifest(manifest, tmp_path / "out")
    assert not (tmp_path / "out" / "wav.scp").exists()


def test_record_that_is_not_an_object(media, tmp_path):
    manifest = media / "wrapped.json"
    manifest.write_text(json.dumps({"data": [records()[0], 7]}))
    with pytest.raises(XllmError, match=r"wrapped.json: record 2 is not a JSON object"):
        prepare_manifest(manifest, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_json_in_one_line(media, tmp_path):
    manifest = media / "broken.jsonl"
    manifest.write_text('{"speech": "wav/a0.wav", "text": "x"}\n{"speech": \n')
    proc = subprocess.run([sys.executable, "-m", "xllm_cli", "prep", "manifest", str(manifest), str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "broken.jsonl:2: invalid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- issue 12 ---------------------------------------------------------------


def test_jsonl_with_one_record_is_accepted(media, tmp_path):
    manifest = media / "one.jsonl"
    manifest.write_text(json.dumps(records()[0], ensure_ascii=False) + "\n", encoding="utf-8")
    assert prepare_manifest(manifest, tmp_path / "one") == 1
    assert read_table(tmp_path / "one" / "text")["spkA-d0"] == "图片 里 有 0 个 苹果"


@pytest.mark.parametrize("value, kind", [(["a", "b"], "array"), ({"zh": "x"}, "object"), (12, "number")])
def test_text_that_is_not_a_string_names_file_and_line(media, tmp_path, value, kind):
    bad = records()
    bad[1]["asr"] = value
    manifest = media / "typed.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in bad) + "\n")
    with pytest.raises(XllmError, match=rf"typed.jsonl:2: 'asr' must be a string, not a JSON {kind}"):
        prepare_manifest(manifest, tmp_path / "out")
    listed = media / "typed.json"
    listed.write_text(json.dumps(bad))
    with pytest.raises(XllmError, match=r"typed.json: 'asr' must be a string.*\(record 2\)"):
        prepare_manifest(listed, tmp_path / "out")
    assert not (tmp_path / "out").exists()
