"""Feature extraction: Kaldi fbank + global CMVN, Whisper log-mel, raw waveform, augmentation, image transforms."""

from __future__ import annotations

import json
import math

import pytest
import soundfile as sf
import torch

from xllm_cli.data.features import (
    Cmvn,
    FbankExtractor,
    build_feature_extractor,
    build_image_transform,
    compute_cmvn,
    parse_speed_factors,
    spec_augment,
    speed_perturb,
)
from xllm_cli.config.schema import FeaturesConfig, SpecAugmentConfig, SpeechEncoderConfig, VisionEncoderConfig
from xllm_cli.errors import XllmError

torch.set_num_threads(1)
SR = 16000


def tone(seconds: float, freq: float = 440.0, seed: int = 0) -> torch.Tensor:
    """A tone plus a little noise: fbank of pure digital silence would be log(0)."""
    t = torch.arange(int(seconds * SR)) / SR
    noise = torch.randn(t.numel(), generator=torch.Generator().manual_seed(seed)) * 0.01
    return (0.3 * torch.sin(2 * math.pi * freq * t) + noise).float()


def write_datadir(root, durations: dict[str, float]):
    root.mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    lines = {"wav.scp": [], "utt2spk": [], "text": [], "utt2dur": []}
    for i, (utt, dur) in enumerate(sorted(durations.items())):
        path = root / "wav" / f"{utt}.wav"
        sf.write(path, tone(dur, 200 + 150 * i, seed=i).numpy(), SR)
        lines["wav.scp"].append(f"{utt} {path}")
        lines["utt2spk"].append(f"{utt} {utt.split('-')[0]}")
        lines["text"].append(f"{utt} 你好")
        lines["utt2dur"].append(f"{utt} {dur}")
    for name, rows in lines.items():
        (root / name).write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return root


# -------------------------------------------------------------------- fbank
def test_fbank_shape_and_frame_count():
    ex = build_feature_extractor(SpeechEncoderConfig(type="conformer"), FeaturesConfig())
    assert isinstance(ex, FbankExtractor) and ex.dim == 80 and ex.frame_shift == pytest.approx(0.01)
    feats = ex(tone(1.0))
    # 25 ms window, 10 ms shift, no edge padding (Kaldi snip_edges): 1 + (16000 - 400) // 160 = 98
    assert feats.shape == (98, 80)
    assert ex.num_frames(16000) == 98
    assert torch.isfinite(feats).all()
    # numpy input and (1, samples) input give the same result
    assert torch.equal(ex(tone(1.0).numpy()), feats)
    assert torch.equal(ex(tone(1.0).unsqueeze(0)), feats)
    # shorter than one window still yields one frame
    assert ex(tone(0.01)).shape == (1, 80)


def test_fbank_dims_configurable_and_dither_only_in_training():
    ex = build_feature_extractor(SpeechEncoderConfig(type="conformer"), FeaturesConfig(num_mel_bins=40, dither=1.0))
    wave = tone(0.5)
    assert ex(wave).shape[1] == 40
    assert torch.equal(ex(wave), ex(wave)), "evaluation must be deterministic (no dither)"
    assert not torch.equal(ex(wave, train=True), ex(wave, train=True)), "training dither should add noise"


def test_cmvn_normalises_the_data_it_was_computed_on(tmp_path):
    data = write_datadir(tmp_path / "train", {"a-1": 0.6, "a-2": 0.9, "b-1": 1.2, "b-2": 0.4})
    raw = build_feature_extractor(SpeechEncoderConfig(type="conformer"), FeaturesConfig())
    out = tmp_path / "exp" / "cmvn.json"
    stats = compute_cmvn(data, raw, out)
    assert out.is_file()
    assert not [p for p in out.parent.iterdir() if p.name != "cmvn.json"], "atomic write must leave no temp file"
    content = json.loads(out.read_text())
    assert len(content["mean"]) == len(content["std"]) == 80 and content["utterances"] == 4
    assert content["frames"] == stats["frames"] > 0

    ex = build_feature_extractor(SpeechEncoderConfig(type="conformer"), FeaturesConfig(), cmvn_path=out)
    from xllm_cli.data.datadir import DataDir
    from xllm_cli.data.features import load_wave

    feats = torch.cat([ex(load_wave(u)) for u in DataDir.load(data).utterances()])
    assert feats.shape[0] == content["frames"]
    assert feats.mean(0).abs().max() < 1e-3
    assert (feats.std(0, unbiased=False) - 1).abs().max() < 1e-2

    # JSON round trip
    cmvn = Cmvn.load(out, 80)
    assert torch.allclose(cmvn.mean, torch.tensor(content["mean"]))
    assert torch.allclose(cmvn.std, torch.tensor(content["std"]))
    # max_utts takes a subset; several directories are pooled
    assert compute_cmvn(data, raw, tmp_path / "sub.json", max_utts=2)["utterances"] == 2
    other = write_datadir(tmp_path / "other", {"c-1": 0.5})
    assert compute_cmvn([data, other], raw, tmp_path / "two.json")["utterances"] == 5


def test_cmvn_errors(tmp_path):
    with pytest.raises(XllmError, match="not found"):
        Cmvn.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"mean": [0, 0], "std": [1, 1]}')
    with pytest.raises(XllmError, match="2 dimensions but the features have 80"):
        build_feature_extractor(SpeechEncoderConfig(type="conformer"), FeaturesConfig(), cmvn_path=bad)
    bad.write_text("not json")
    with pytest.raises(XllmError, match="not a CMVN JSON"):
        Cmvn.load(bad)


def test_unknown_encoder_type():
    with pytest.raises(XllmError, match="unknown encoder type"):
        build_feature_extractor(SpeechEncoderConfig(type="lstm"), FeaturesConfig())


# ------------------------------------------------------------ other encoders
def test_whisper_extractor_unpadded(tmp_path):
    from transformers import WhisperFeatureExtractor

    WhisperFeatureExtractor(feature_size=80).save_pretrained(tmp_path / "whisper")
    ex = build_feature_extractor(SpeechEncoderConfig(type="whisper", path=str(tmp_path / "whisper")), FeaturesConfig())
    assert ex.dim == 80 and ex.kind == "whisper" and ex.frame_shift == pytest.approx(0.01)
    wave = tone(1.23)
    feats = ex(wave)
    assert feats.shape == (len(wave) // 160, 80)
    # same values as the processor's usual 30 s padded output, on the real frames
    full = ex.processor(wave.numpy(), sampling_rate=SR, return_tensors="pt")["input_features"][0].T
    assert full.shape[0] == 3000
    assert torch.allclose(feats, full[: feats.shape[0]], atol=1e-4)
    with pytest.raises(XllmError, match="cannot load a Whisper feature extractor"):
        build_feature_extractor(SpeechEncoderConfig(type="whisper", path=str(tmp_path / "nope")), FeaturesConfig())


def test_waveform_extractor_normalised():
    ex = build_feature_extractor(SpeechEncoderConfig(type="hubert"), FeaturesConfig())
    feats = ex(tone(0.5) * 0.1 + 0.05)
    assert feats.shape == (8000, 1) and ex.dim == 1
    assert abs(float(feats.mean())) < 1e-4 and abs(float(feats.std()) - 1) < 1e-3


# -------------------------------------------------------------- augmentation
@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_changes_length_by_factor(factor):
    wave = tone(1.0)
    out = speed_perturb(wave, factor)
    assert abs(out.numel() - len(wave) / factor) <= 2
    assert speed_perturb(wave, 1.0) is wave
    assert parse_speed_factors(True) == [0.9, 1.0, 1.1]
    assert parse_speed_factors(False) is None


def test_spec_augment_masks_and_is_seeded():
    feats = torch.randn(300, 80) + 5.0  # no natural zeros
    opts = SpecAugmentConfig(num_freq_masks=2, freq_mask_width=20, num_time_masks=2, time_mask_width=50, time_mask_ratio=0.2)
    g1 = torch.Generator().manual_seed(3)
    g2 = torch.Generator().manual_seed(3)
    a, b = spec_augment(feats, opts, g1), spec_augment(feats, opts, g2)
    assert torch.equal(a, b), "same generator state, same masks"
    assert feats.min() > 0, "input untouched"
    zero_cols = (a == 0).all(0).sum()
    zero_rows = (a == 0).all(1).sum()
    masked = [spec_augment(feats, opts, torch.Generator().manual_seed(s)) for s in range(10)]
    assert any((m == 0).all(0).any() for m in masked), "some frequency masks"
    assert any((m == 0).all(1).any() for m in masked), "some time masks"
    assert zero_cols <= 40 and zero_rows <= 60  # within the configured widths (ratio caps time at 60 frames)
    assert spec_augment(feats, False) is feats
    assert spec_augment(feats, SpecAugmentConfig(enabled=False)) is feats
    assert torch.equal(spec_augment(feats, True, torch.Generator().manual_seed(3)),
                       spec_augment(feats, SpecAugmentConfig(), torch.Generator().manual_seed(3)))


# ------------------------------------------------------------------- images
def test_tiny_image_transform():
    from PIL import Image

    transform = build_image_transform(VisionEncoderConfig(path=None, image_size=64))
    img = Image.new("RGB", (100, 50), (255, 0, 128))
    x = transform(img)
    assert x.shape == (3, 64, 64)
    assert torch.allclose(x[0], torch.ones(64, 64)) and torch.allclose(x[1], -torch.ones(64, 64))
    assert transform(img.convert("L")).shape == (3, 64, 64)  # grey images become RGB


def test_tiny_image_transform_matches_the_random_tower_size():
    """No image_size: the transform uses init.image_size, else 64, as models/vision.py builds the tower
    (it used to default to 224, which a 64-pixel random tower refuses)."""
    from xllm_cli.config.schema import VisionInitConfig

    assert build_image_transform(VisionEncoderConfig()).image_size == 64
    assert build_image_transform(VisionEncoderConfig(init=VisionInitConfig(image_size=32))).image_size == 32


def test_pretrained_image_processor(tmp_path):
    from PIL import Image
    from transformers import CLIPImageProcessor

    CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip")
    transform = build_image_transform(VisionEncoderConfig(path=str(tmp_path / "clip")))
    x = transform(Image.new("RGB", (80, 60), (10, 200, 30)))
    assert x.shape == (3, 32, 32)
