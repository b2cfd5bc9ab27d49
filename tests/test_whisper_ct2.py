"""Whisper baseline through CTranslate2, on a tiny random Whisper built offline."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from xllm_cli.main import app

runner = CliRunner()
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def build_tiny_whisper(out, favour_char: str | None = None, favour_token: str | None = None):
    """Random Whisper + byte-level tokenizer with Whisper's special tokens (same id layout:
    256 bytes, then <|endoftext|>, ...). ``favour_char`` biases the decoder to emit that byte,
    ``favour_token`` that special token (``<|de|>``: language detection finds German)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration)

    from xllm_cli.decoding.whisper_ct2 import _bytes_to_unicode

    torch.set_num_threads(1)
    b2u = _bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(SPECIALS)
    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    cfg = WhisperConfig(vocab_size=len(vocab) + 10, num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_source_positions=1500, max_target_positions=64, decoder_start_token_id=sot,
                        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, suppress_tokens=[],
                        begin_suppress_tokens=[eot])
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg)
    if favour_char is not None or favour_token is not None:  # constant decoder output pointing at one token
        target = vocab[favour_token] if favour_token else vocab[b2u[ord(favour_char)]]
        with torch.no_grad():
            e = model.model.decoder.embed_tokens.weight[target].clone()
            model.model.decoder.layer_norm.weight.zero_()
            model.model.decoder.layer_norm.bias.copy_(e * 1000)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    WhisperFeatureExtractor().save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def whisper_dirs(tmp_path_factory):
    from xllm_cli.decoding.ct2 import convert_to_ct2

    root = tmp_path_factory.mktemp("whisper")
    random_hf = build_tiny_whisper(root / "random_hf")
    res = runner.invoke(app, ["export", "whisper", str(random_hf), "--out", str(root / "random_ct2")])
    assert res.exit_code == 0, res.output
    biased = convert_to_ct2(build_tiny_whisper(root / "biased_hf", favour_char="a"), root / "biased_ct2")
    return root / "random_ct2", biased


def test_random_whisper_transcribes_to_strings(whisper_dirs):
    from xllm_cli.decoding.whisper_ct2 import WhisperCT2

    random_ct2, _ = whisper_dirs
    w = WhisperCT2(random_ct2, language="zh", max_length=16)
    assert [w.tokens[i] for i in w.prompt("zh")] == ["<|startoftranscript|>", "<|zh|>", "<|transcribe|>",
                                                     "<|notimestamps|>"]
    rng = np.random.RandomState(0)
    waves = [0.1 * rng.randn(16000).astype(np.float32), np.zeros(4000, np.float32), 0.1 * rng.randn(8000)]
    texts = w.transcribe(waves, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert [w.tokens[i] for i in WhisperCT2(random_ct2, task="translate").prompt("en")][1:3] == [
        "<|en|>", "<|translate|>"]


def test_decoded_text_comes_from_generated_ids(whisper_dirs, tmp_path):
    from xllm_cli.decoding.whisper_ct2 import WhisperCT2

    _, biased = whisper_dirs
    texts = WhisperCT2(biased, language="zh", max_length=12).transcribe([np.zeros(16000, np.float32)] * 3, batch_size=2)
    assert len(texts) == 3 and texts[0] and set("".join(texts)) == {"a"}
    # without tokenizer.json, ids are decoded with vocabulary.json's byte-level tokens
    bare = tmp_path / "bare"
    shutil.copytree(biased, bare)
    (bare / "tokenizer.json").unlink()
    assert WhisperCT2(bare, language="zh", max_length=12).transcribe([np.zeros(16000, np.float32)]) == texts[:1]


def test_errors_are_one_line(whisper_dirs, tmp_path):
    from xllm_cli.decoding.whisper_ct2 import WhisperCT2, parse_temperatures
    from xllm_cli.errors import XllmError

    random_ct2, _ = whisper_dirs
    with pytest.raises(XllmError, match="language 'xx'"):
        WhisperCT2(random_ct2, language="xx")
    with pytest.raises(XllmError, match="no model.bin"):
        WhisperCT2(tmp_path)
    with pytest.raises(XllmError, match="--task must be"):
        WhisperCT2(random_ct2, task="summarise")
    with pytest.raises(XllmError, match="--temperature"):
        parse_temperatures("0,hot")
    assert parse_temperatures("0,0.5") == (0.0, 0.5) and parse_temperatures(None)[0] == 0.0


def test_log_mel_is_whisper_s_without_torch():
    """Our numpy features equal transformers' WhisperFeatureExtractor (float64 reference) to 1e-4."""
    from transformers import WhisperFeatureExtractor

    from xllm_cli.decoding.whisper_features import N_FRAMES, log_mel

    rng = np.random.RandomState(1)
    for seconds in (0.5, 7.0, 30.0, 31.0):
        wave = (0.1 * rng.randn(int(16000 * seconds))).astype(np.float32)
        ref = WhisperFeatureExtractor(feature_size=80)([wave[:480000]], sampling_rate=16000,
                                                        return_tensors="np").input_features[0]
        ours = log_mel(wave)
        assert ours.shape == (80, N_FRAMES) and ours.dtype == np.float32
        assert np.abs(ours - ref).max() < 1e-4, seconds


def test_language_is_detected_when_not_given(whisper_dirs, monkeypatch):
    """No --language: the model's detection picks each window's language token (was: always <|zh|>)."""
    from xllm_cli.decoding.whisper_ct2 import WhisperCT2
    from xllm_cli.errors import XllmError

    random_ct2, _ = whisper_dirs
    w = WhisperCT2(random_ct2, max_length=8)
    assert w.multilingual and w.language is None
    with pytest.raises(XllmError, match="give --language"):  # CTranslate2 detects only for real-size vocabularies
        w.transcribe([np.zeros(16000, np.float32)])
    prompts = []
    real = w.model

    class Detecting:  # CTranslate2's detect_language for a real multilingual model: German for the 2nd window
        is_multilingual = True

        def detect_language(self, encoded):
            return [[("<|en|>", 0.9)], [("<|de|>", 0.8)]][: encoded.shape[0]]

        def generate(self, features, batch_prompts, **kw):
            prompts.extend(batch_prompts)
            return real.generate(features, batch_prompts, **kw)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(w, "model", Detecting())
    w.transcribe([np.zeros(16000, np.float32), np.zeros(8000, np.float32)], batch_size=2)
    assert [w.tokens[p[1]] for p in prompts[:2]] == ["<|en|>", "<|de|>"] and w.detected == {"en": 1, "de": 1}
    fixed = WhisperCT2(random_ct2, language="zh", max_length=8)
    monkeypatch.setattr(fixed, "model", Detecting())
    prompts.clear()
    fixed.transcribe([np.zeros(16000, np.float32)])
    assert fixed.detected == {} and fixed.tokens[prompts[0][1]] == "<|zh|>"  # --language given: no detection


def test_temperature_fallback_retries_a_repetitive_window(whisper_dirs, monkeypatch):
    """A window whose text compresses too well (a loop) is decoded again, sampling at the next temperature;
    a fluent one is not."""
    from types import SimpleNamespace

    from xllm_cli.decoding import whisper_ct2 as W

    _, biased = whisper_dirs
    w = W.WhisperCT2(biased, language="en", max_length=40, temperatures=(0.0, 0.4, 1.0))
    a = w.token_id["a"]
    calls = []

    def generate(features, prompts, **kw):  # a model stuck on "aaaa..." until it samples hot
        t = kw.get("sampling_temperature", 0.0) if kw.get("sampling_topk") == 0 else 0.0
        calls.append(t)
        ids = [a] * 60 if t < 1.0 else [a, w.token_id["b"], w.token_id["c"]]
        return [SimpleNamespace(sequences_ids=[ids], scores=[-0.1], no_speech_prob=0.0) for _ in prompts]

    monkeypatch.setattr(w, "model", SimpleNamespace(generate=generate))
    monkeypatch.setattr(W.WhisperCT2, "_subset", lambda self, enc, rows: enc)
    attempt = w.generate(None, [w.prompt("en")])[0]
    assert calls == [0.0, 0.4, 1.0] and attempt.temperature == 1.0 and w.text(attempt.tokens) == "abc"
    assert W.compression_ratio("a" * 60) > W.COMPRESSION_RATIO_THRESHOLD > W.compression_ratio("abc")
    calls.clear()
    w.temperatures = (0.0,)  # --temperature 0: no fallback
    assert w.generate(None, [w.prompt("en")])[0].temperature == 0.0 and calls == [0.0]
