"""Speech encoder wrappers built from tiny random configs saved to tmp dirs."""

from __future__ import annotations

import pytest
import torch

from xllm_cli.errors import XllmError
from xllm_cli.models.speech_encoders import build_speech_encoder

torch.set_num_threads(1)


def _lens_mask(lens, T):
    return torch.arange(T)[None, :] < lens[:, None]


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_conformer_lengths_and_padding_invariance(factor):
    torch.manual_seed(0)
    enc = build_speech_encoder(
        {"type": "conformer", "input_dim": 40, "d_model": 32, "num_layers": 2, "num_heads": 2, "ffn_dim": 64,
         "subsampling": factor, "conv_kernel": 7}
    ).eval()
    feats = torch.randn(2, 120, 40)
    lens = torch.tensor([120, 70])
    feats[1, 70:] = 0
    out, out_lens = enc(feats, lens)
    assert out.shape[0] == 2 and out.shape[2] == 32
    assert out.shape[1] == int(out_lens[0]) == int(enc.subsampling.output_lengths(torch.tensor(120)))
    assert int(out_lens[1]) == int(enc.subsampling.output_lengths(torch.tensor(70)))
    assert int(out_lens[0]) in range(120 // factor - 2, 120 // factor + 1)
    # the short utterance alone gives the same frames: padding does not leak (depthwise conv masked)
    alone, alone_lens = enc(feats[1:, :70], lens[1:])
    n = int(alone_lens[0])
    assert n == int(out_lens[1])
    torch.testing.assert_close(out[1, :n], alone[0, :n], atol=1e-5, rtol=1e-5)


def _tiny_whisper(out_dir, layers: int = 1):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(
        d_model=16, encoder_layers=layers, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=32, vocab_size=100, pad_token_id=1, bos_token_id=2, eos_token_id=3,
        decoder_start_token_id=2, suppress_tokens=None, begin_suppress_tokens=None,
    )
    full = WhisperForConditionalGeneration(cfg).eval()
    full.save_pretrained(str(out_dir))
    return full


def test_whisper_wrapper_pads_and_trims(tmp_path):
    full = _tiny_whisper(tmp_path / "whisper")
    enc = build_speech_encoder({"type": "whisper", "path": str(tmp_path / "whisper"),
                                "whisper_pad_to_30s": True}).eval()
    assert enc.pretrained and enc.output_dim == 16
    # weights really come from the checkpoint's encoder
    torch.testing.assert_close(enc.encoder.conv1.weight, full.model.encoder.conv1.weight)
    feats = torch.randn(2, 301, 80)
    lens = torch.tensor([301, 120])
    with torch.no_grad():
        out, out_lens = enc(feats, lens)
    assert out_lens.tolist() == [151, 60]
    assert out.shape == (2, 151, 16)  # trimmed, not 1500 frames
    # same as running Whisper's encoder on the 3000-frame padded input and cutting
    x = torch.full((1, 80, 3000), float(feats[0].min()))
    x[0, :, :301] = feats[0].t()
    with torch.no_grad():
        ref = full.model.encoder(input_features=x).last_hidden_state
    torch.testing.assert_close(out[0], ref[0, :151], atol=1e-4, rtol=1e-4)
    with pytest.raises(XllmError):
        enc(torch.randn(1, 3001, 80), torch.tensor([3001]))


def test_whisper_real_length_is_the_default_and_never_pads_to_3000(tmp_path):
    """Default: Whisper runs on the real length with sliced positions (no 3000-frame padding)."""
    full = _tiny_whisper(tmp_path / "whisper", layers=2)
    enc = build_speech_encoder({"type": "whisper", "path": str(tmp_path / "whisper")}).eval()
    padded = build_speech_encoder({"type": "whisper", "path": str(tmp_path / "whisper"),
                                   "whisper_pad_to_30s": True}).eval()
    conv_frames = []
    enc.encoder.conv1.register_forward_pre_hook(lambda m, a: conv_frames.append(a[0].shape[-1]))
    feats, lens = torch.randn(2, 301, 80), torch.tensor([301, 120])
    with torch.no_grad():
        out, out_lens = enc(feats, lens)
        ref, ref_lens = padded(feats, lens)
        alone, _ = enc(feats[1:, :120], lens[1:])
    assert conv_frames and max(conv_frames) == 301  # the batch's length, never the 30 s window
    assert out_lens.tolist() == ref_lens.tolist() == [151, 60]
    assert out.shape == ref.shape == (2, 151, 16)
    # the real-length forward is Whisper's own layers with positions 0..T'-1
    x = torch.nn.functional.gelu(full.model.encoder.conv1(feats[:1].transpose(1, 2)))
    x = torch.nn.functional.gelu(full.model.encoder.conv2(x)).transpose(1, 2)
    x = x + full.model.encoder.embed_positions.weight[:151]
    with torch.no_grad():
        for layer in full.model.encoder.layers:
            x = layer(x, None)
            x = x[0] if isinstance(x, tuple) else x
        x = full.model.encoder.layer_norm(x)
    torch.testing.assert_close(out[0], x[0], atol=1e-4, rtol=1e-4)
    # padding in a batch does not reach the short utterance (zeroed before the convs, masked in attention)
    torch.testing.assert_close(out[1, :60], alone[0, :60], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2"])
def test_ssl_wrappers_output_lengths(tmp_path, kind):
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    common = dict(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    if kind == "hubert":
        model = HubertModel(HubertConfig(**common))
    else:
        model = Wav2Vec2Model(Wav2Vec2Config(feat_extract_norm="layer", do_stable_layer_norm=True, **common))
    model.save_pretrained(str(tmp_path / kind))
    enc = build_speech_encoder({"type": kind, "path": str(tmp_path / kind)}).eval()
    assert enc.pretrained and enc.output_dim == 16
    wave = torch.randn(2, 1600, 1)
    lens = torch.tensor([1600, 900])
    with torch.no_grad():
        out, out_lens = enc(wave, lens)

    def expected(n):
        n = (n - 10) // 5 + 1
        return (n - 3) // 2 + 1

    assert out_lens.tolist() == [expected(1600), expected(900)]
    assert out.shape == (2, expected(1600), 16)
    # the CNN front end stays frozen even when the encoder is fine-tuned
    assert not any(p.requires_grad for p in enc.model.feature_extractor.parameters())


def test_unknown_encoder_type():
    with pytest.raises(XllmError):
        build_speech_encoder({"type": "nope"})
    with pytest.raises(XllmError):
        build_speech_encoder({"type": "whisper"})  # needs a path


def test_one_registry_for_encoders_and_features():
    from xllm_cli.config.schema import SpeechEncoderConfig
    from xllm_cli.data.features import FEATURE_EXTRACTORS, build_feature_extractor
    from xllm_cli.models.speech_encoders import ENCODERS

    assert {"conformer", "whisper", "hubert", "wav2vec2"} <= set(ENCODERS)
    assert all(spec.features in FEATURE_EXTRACTORS for spec in ENCODERS.values())
    # a type the model cannot build gets no features either: one line naming the registered types
    for build in (lambda: build_speech_encoder({"type": "wavlm"}), lambda: build_feature_extractor(SpeechEncoderConfig(type="wavlm"))):
        with pytest.raises(XllmError, match="unknown encoder type") as e:
            build()
        assert "conformer, hubert, wav2vec2, whisper" in str(e.value) and "\n" not in str(e.value)
