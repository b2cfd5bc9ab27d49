"""Datasets and collate: lazy data dirs -> Batch with features, prompts, images, videos; filters; text-only data."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from xllm_cli.config.schema import BatchConfig, FeaturesConfig, SpeechEncoderConfig, VisionEncoderConfig
from xllm_cli.config.typed import parse
from xllm_cli.data.batch import Batch
from xllm_cli.data.batching import build_dataloader, build_text_dataloader
from xllm_cli.data.dataset import SpeechDataset, TextDataset, collate, load_utterances
from xllm_cli.data.features import build_feature_extractor, build_image_transform
from xllm_cli.errors import XllmError

torch.set_num_threads(1)
SR = 16000


def bc(options: dict) -> BatchConfig:
    """``data.batch`` as a recipe would give it."""
    return parse(BatchConfig, options, "data.batch")


def write_wave(path, seconds: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * math.pi * (200 + 50 * seed) * t) + 0.01 * rng.standard_normal(t.size)).astype("float32"), SR)


def write_table(path, rows: dict) -> None:
    path.write_text("".join(f"{k} {v}\n" for k, v in sorted(rows.items())), encoding="utf-8")


def make_datadir(root, durations: dict[str, float], images: dict | None = None, videos: dict | None = None,
                 prompts: dict | None = None, texts: dict | None = None, utt2dur: bool = True):
    root.mkdir(parents=True, exist_ok=True)
    wav = {}
    for i, (utt, dur) in enumerate(sorted(durations.items())):
        path = root / f"{utt}.wav"
        write_wave(path, dur, i)
        wav[utt] = str(path)
    wav.update(videos or {})  # video utterances: wav.scp points at the mp4 (audio through ffmpeg)
    write_table(root / "wav.scp", wav)
    write_table(root / "utt2spk", {u: u.split("-")[0] for u in wav})
    write_table(root / "text", texts if texts is not None else {u: f"文本{u[-1]}" for u in wav})
    if utt2dur:
        write_table(root / "utt2dur", {**durations, **{u: 1.0 for u in (videos or {})}})
    if images:
        write_table(root / "image.scp", images)
    if videos:
        write_table(root / "video.scp", videos)
    if prompts:
        write_table(root / "prompt", prompts)
    return root


def make_png(path, color) -> str:
    from PIL import Image

    Image.new("RGB", (40, 30), color).save(path)
    return str(path)


def make_mp4(path) -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not installed")
    subprocess.run(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc=size=32x32:rate=10:duration=1",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=1:sample_rate=16000",
         "-c:v", "mpeg4", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )
    return str(path)


@pytest.fixture(scope="module")
def fbank():
    return build_feature_extractor(SpeechEncoderConfig(type="conformer"), FeaturesConfig())


# ------------------------------------------------------------------ collate
def test_collate_pads_features_and_masks():
    items = [
        {"utt_id": "a", "feats": torch.ones(5, 4), "text": "x", "prompt": None, "duration": 0.05,
         "image": torch.full((3, 8, 8), 2.0)},
        {"utt_id": "b", "feats": torch.ones(3, 4) * 3, "text": "yy", "prompt": "p", "duration": 0.03,
         "video": torch.full((2, 3, 8, 8), 5.0)},
        {"utt_id": "c", "feats": torch.ones(1, 4), "text": "z", "prompt": None, "duration": 0.01},
    ]
    b = collate(items)
    assert isinstance(b, Batch) and b.utt_ids == ["a", "b", "c"]
    assert b.feats.shape == (3, 5, 4) and b.feat_lens.tolist() == [5, 3, 1]
    assert torch.all(b.feats[1, 3:] == 0) and torch.all(b.feats[1, :3] == 3) and torch.all(b.feats[2, 1:] == 0)
    assert b.texts == ["x", "yy", "z"] and b.prompts == [None, "p", None] and b.durations == [0.05, 0.03, 0.01]
    assert b.images.shape == (3, 3, 8, 8) and b.image_mask.tolist() == [True, False, False]
    assert torch.all(b.images[0] == 2) and torch.all(b.images[1:] == 0)
    assert b.videos.shape == (3, 2, 3, 8, 8) and b.video_mask.tolist() == [False, True, False]
    assert torch.all(b.videos[1] == 5) and torch.all(b.videos[0] == 0)
    plain = collate([{k: v for k, v in it.items() if k not in ("image", "video")} for it in items])
    assert plain.images is None and plain.image_mask is None and plain.videos is None


# ------------------------------------------------------------------ dataset
def test_dataset_is_lazy_and_features_on_the_fly(tmp_path, fbank, monkeypatch):
    d = make_datadir(tmp_path / "d", {"s1-a": 0.5, "s1-b": 1.0}, prompts={"s1-b": "请转写"})
    calls = []
    import xllm_cli.data.dataset as dataset_mod

    real = dataset_mod.load_wave
    monkeypatch.setattr(dataset_mod, "load_wave", lambda u: calls.append(u.utt_id) or real(u))
    ds = SpeechDataset(load_utterances(d), fbank)
    assert calls == [], "nothing decoded before __getitem__"
    item = ds[1]
    assert calls == ["s1-b"] and item["feats"].shape == (98, 80) and item["prompt"] == "请转写"
    assert item["text"] == "文本b" and item["duration"] == pytest.approx(1.0)


def test_loader_batch_fields(tmp_path, fbank):
    d = make_datadir(tmp_path / "d", {"s1-a": 0.5, "s1-b": 1.0, "s2-c": 0.7}, prompts={"s1-a": "P"})
    batches = list(build_dataloader(d, fbank, None, bc({"max_batch_seconds": 100}), train=False))
    assert len(batches) == 1
    b = batches[0]
    assert b.utt_ids == ["s1-a", "s2-c", "s1-b"]  # evaluation: sorted by length
    assert b.feats.shape == (3, 98, 80) and b.feat_lens.tolist() == [48, 68, 98]
    assert b.prompts == ["P", None, None] and b.images is None and b.videos is None
    assert b.durations == pytest.approx([0.5, 0.7, 1.0])


def test_duration_filters_training_only(tmp_path, fbank):
    d = make_datadir(tmp_path / "d", {"s1-a": 0.3, "s1-b": 1.0, "s1-c": 2.0, "s1-d": 3.0})
    cfg = {"min_duration": 0.5, "max_duration": 2.5, "max_batch_seconds": 100}
    train = build_dataloader(d, fbank, None, bc(cfg), train=True)
    assert sorted(u.utt_id for u in train.dataset.utts) == ["s1-b", "s1-c"]
    assert sorted(sum((b.utt_ids for b in train), [])) == ["s1-b", "s1-c"]
    assert len(build_dataloader(d, fbank, None, bc(cfg), train=False).dataset) == 4
    with pytest.raises(XllmError, match="no utterances left"):
        build_dataloader(d, fbank, None, bc({"min_duration": 10}), train=True)
    # without utt2dur the duration comes from the audio header
    nodur = make_datadir(tmp_path / "nodur", {"s1-a": 0.3, "s1-b": 1.0}, utt2dur=False)
    assert [u.duration for u in load_utterances(nodur)] == pytest.approx([0.3, 1.0])


def test_duration_filter_uses_speed_perturbed_lengths(tmp_path, fbank):
    """Issue 10.3: a 28 s utterance at speed 0.9 is 31 s, past max_duration 30 (a Whisper encoder's
    3000 frames): training must drop it, not crash on it; evaluation keeps it (no perturbation)."""
    d = make_datadir(tmp_path / "d", {"s1-a": 0.2, "s1-b": 0.3})
    (d / "utt2dur").write_text("s1-a 28\ns1-b 2\n")  # the filter reads utt2dur, not the audio
    cfg = {"max_duration": 30, "speed_perturb": [0.9, 1.0, 1.1], "max_batch_seconds": 100}
    assert [u.utt_id for u in build_dataloader(d, fbank, None, bc(cfg), train=True).dataset.utts] == ["s1-b"]
    assert len(build_dataloader(d, fbank, None, bc({**cfg, "speed_perturb": False}), train=True).dataset) == 2
    assert len(build_dataloader(d, fbank, None, bc(cfg), train=False).dataset) == 2
    # min_duration applies to the fastest version: 2 s at 1.1 is 1.82 s
    short = {**cfg, "max_duration": 0, "min_duration": 1.9}
    assert [u.utt_id for u in build_dataloader(d, fbank, None, bc(short), train=True).dataset.utts] == ["s1-a"]


def test_several_dirs_and_errors(tmp_path, fbank):
    a = make_datadir(tmp_path / "a", {"s1-a": 0.5})
    b = make_datadir(tmp_path / "b", {"s2-b": 0.5})
    loader = build_dataloader([a, b], fbank, None, BatchConfig(), train=True)
    assert sorted(u.utt_id for u in loader.dataset.utts) == ["s1-a", "s2-b"]
    with pytest.raises(XllmError, match="ids must be unique"):
        load_utterances([a, a])
    notext = make_datadir(tmp_path / "c", {"s3-a": 0.5, "s3-b": 0.5}, texts={"s3-a": "x"})
    with pytest.raises(XllmError, match="'s3-b' has no transcript"):
        build_dataloader(notext, fbank, None, BatchConfig(), train=True)
    assert len(build_dataloader(notext, fbank, None, BatchConfig(), train=False).dataset) == 2  # decoding needs no text


def test_augmentation_only_in_training(tmp_path):
    ex = build_feature_extractor(SpeechEncoderConfig(type="conformer"), FeaturesConfig())
    d = make_datadir(tmp_path / "d", {f"s1-{c}": 1.0 + 0.1 * i for i, c in enumerate("abcdef")})
    cfg = {"spec_augment": {"num_freq_masks": 2, "freq_mask_width": 30, "num_time_masks": 2, "time_mask_width": 30,
                            "time_mask_ratio": 0.3},
           "speed_perturb": [0.9, 1.1], "max_batch_seconds": 100}

    def batch_of(train, seed=0, epoch=0):
        return next(iter(build_dataloader(d, ex, None, bc(cfg), train=train, seed=seed, epoch=epoch)))

    ev = batch_of(False)
    tr = batch_of(True)
    valid = lambda b: [b.feats[i, : n] for i, n in enumerate(b.feat_lens.tolist())]
    # evaluation: no masks (fbank of real audio is never exactly 0), true lengths
    assert all((f != 0).all() for f in valid(ev))
    assert ev.feat_lens.tolist() == [98 + 10 * i for i in range(6)]
    # training: masked bins/frames and lengths changed by the speed factor
    assert any((f == 0).all(0).any() or (f == 0).all(1).any() for f in valid(tr))
    dur = dict(zip(tr.utt_ids, tr.durations))
    for utt in tr.utt_ids:
        orig = 1.0 + 0.1 * "abcdef".index(utt[-1])
        assert min(abs(dur[utt] - orig / 0.9), abs(dur[utt] - orig / 1.1)) < 1e-3
    # a pure function of (seed, epoch, utterance)
    again = batch_of(True)
    assert again.utt_ids == tr.utt_ids and torch.equal(again.feats, tr.feats)
    other = batch_of(True, epoch=1)
    order = {u: i for i, u in enumerate(other.utt_ids)}
    assert any(not torch.equal(tr.feats[i], other.feats[order[u]]) for i, u in enumerate(tr.utt_ids))


def test_images_and_video_in_batch(tmp_path, fbank):
    red = make_png(tmp_path / "red.png", (255, 0, 0))
    mp4 = make_mp4(tmp_path / "clip.mp4")
    d = make_datadir(tmp_path / "d", {"s1-a": 0.9, "s1-b": 1.0}, images={"s1-a": red}, videos={"s2-v": mp4})
    transform = build_image_transform(VisionEncoderConfig(image_size=16))
    cfg = {"max_batch_seconds": 100, "num_frames": 3}
    (b,) = list(build_dataloader(d, fbank, transform, bc(cfg), train=False))
    assert b.utt_ids == ["s1-a", "s1-b", "s2-v"]
    assert b.images.shape == (3, 3, 16, 16) and b.image_mask.tolist() == [True, False, False]
    assert torch.allclose(b.images[0, 0], torch.ones(16, 16)) and torch.all(b.images[1:] == 0)
    assert b.videos.shape == (3, 3, 3, 16, 16) and b.video_mask.tolist() == [False, False, True]
    assert b.videos[2].abs().sum() > 0 and torch.all(b.videos[:2] == 0)
    assert b.feat_lens[2] >= 95  # the clip's audio track, read through ffmpeg
    # use_images / use_video off, or no transform: speech only
    (b,) = list(build_dataloader(d, fbank, transform, bc({**cfg, "use_images": False, "use_video": False}), train=False))
    assert b.images is None and b.videos is None
    (b,) = list(build_dataloader(d, fbank, None, bc(cfg), train=False))
    assert b.images is None and b.videos is None
    # image-only batches (stage-1 image training): no speech features
    (b,) = list(build_dataloader(d, None, transform, bc({**cfg, "use_audio": False}), train=False))
    assert b.feats is None and b.images.shape[0] == 3


def test_workers_give_the_same_batches(tmp_path, fbank):
    d = make_datadir(tmp_path / "d", {f"s1-{c}": 0.3 + 0.1 * i for i, c in enumerate("abcdefgh")})
    cfg = {"max_batch_seconds": 1.5, "spec_augment": True, "speed_perturb": True}
    one = list(build_dataloader(d, fbank, None, bc(cfg), train=True, seed=5))
    two = list(build_dataloader(d, fbank, None, bc({**cfg, "num_workers": 2}), train=True, seed=5))
    assert [b.utt_ids for b in one] == [b.utt_ids for b in two]
    assert all(torch.equal(x.feats, y.feats) for x, y in zip(one, two))


# --------------------------------------------------------------- text only
def test_text_dataset_and_loader(tmp_path):
    d = tmp_path / "lm_text"
    d.mkdir()
    (d / "text").write_text("u1 今天天气很好\nu2 你好\nu3\n", encoding="utf-8")
    other = tmp_path / "more.txt"
    other.write_text("u1 再见\n", encoding="utf-8")
    ds = TextDataset([d, other])
    assert ds.texts() == ["今天天气很好", "你好", "再见"]  # the id-only line is skipped
    loader = build_text_dataloader([d, other], bc({"max_batch_chars": 8}), train=True, seed=1)
    batches = list(loader)
    assert sorted(sum((b.texts for b in batches), [])) == sorted(ds.texts())
    assert all(b.feats is None for b in batches)
    assert all(sum(map(len, b.texts)) <= 8 or len(b) == 1 for b in batches)
    with pytest.raises(XllmError, match="not found"):
        TextDataset(tmp_path / "missing")


def test_worker_errors_are_one_line(tmp_path, fbank):
    d = make_datadir(tmp_path / "d", {"s1-a": 0.5}, images={"s1-a": str(tmp_path / "missing.png")})
    transform = build_image_transform(VisionEncoderConfig(image_size=8))
    with pytest.raises(XllmError) as err:
        list(build_dataloader(d, fbank, transform, bc({"num_workers": 1}), train=False))
    assert str(err.value) == f"{tmp_path / 'missing.png'}: image not found"
