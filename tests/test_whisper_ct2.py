"""Whisper baseline through CTranslate2, on a tiny random Whisper built offline."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from xllm_cli.main import app

runner = CliRunner()
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def build_tiny_whisper(out, favour_char: str | None = None):
    """Random Whisper + byte-level tokenizer with Whisper's special tokens (same id layout:
    256 bytes, then <|endoftext|>, ...). ``favour_char`` biases the decoder to emit that byte."""
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
    if favour_char is not None:  # constant decoder output pointing at one token's embedding
        target = vocab[b2u[ord(favour_char)]]
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
    assert w.prompt == ["<|startoftranscript|>", "<|zh|>", "<|transcribe|>", "<|notimestamps|>"]
    rng = np.random.RandomState(0)
    waves = [0.1 * rng.randn(16000).astype(np.float32), np.zeros(4000, np.float32), 0.1 * rng.randn(8000)]
    texts = w.transcribe(waves, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert WhisperCT2(random_ct2, language="en", max_length=16).prompt[1] == "<|en|>"


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
    from xllm_cli.decoding.whisper_ct2 import WhisperCT2
    from xllm_cli.errors import XllmError

    random_ct2, _ = whisper_dirs
    with pytest.raises(XllmError, match="language 'xx'"):
        WhisperCT2(random_ct2, language="xx")
    with pytest.raises(XllmError, match="no model.bin"):
        WhisperCT2(tmp_path)
