"""A CTranslate2 Whisper model directory as a baseline recognizer.

Any faster-whisper style directory works (``model.bin``, ``vocabulary.json``,
``tokenizer.json`` and, when present, ``preprocessor_config.json``); so does the
output of ``xllm export whisper``. Audio goes through transformers'
``WhisperFeatureExtractor`` (log-mel, padded/truncated to 30 s), then greedy or
beam search from ``<|startoftranscript|><|zh|><|transcribe|><|notimestamps|>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..console import log
from ..errors import XllmError

SAMPLE_RATE = 16000


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte <-> printable-character table (Whisper's byte-level BPE)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))


class _VocabDecoder:
    """Decodes ids with ``vocabulary.json`` alone (for directories without tokenizer.json)."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.byte_of = {c: b for b, c in _bytes_to_unicode().items()}

    def decode(self, ids: Sequence[int]) -> str:
        data = bytearray()
        for i in ids:
            for ch in self.tokens[i]:
                if ch in self.byte_of:
                    data.append(self.byte_of[ch])
        return data.decode("utf-8", errors="replace")


class WhisperCT2:
    """Batched transcription with a CTranslate2 Whisper model."""

    def __init__(self, model_dir: str | Path, language: str | None = "zh", task: str = "transcribe",
                 device: str = "cpu", compute_type: str = "int8", beam_size: int = 1, max_length: int = 448,
                 threads: int = 0) -> None:
        import ctranslate2

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "model.bin").is_file():
            raise XllmError(f"{self.model_dir}: not a CTranslate2 Whisper directory (no model.bin); "
                            f"convert one with: xllm export whisper HF_DIR --out DIR")
        supported = ctranslate2.get_supported_compute_types(device)
        if compute_type not in supported:
            compute_type = "int8" if "int8" in supported else "float32"
        self.model = ctranslate2.models.Whisper(str(self.model_dir), device=device, compute_type=compute_type,
                                                intra_threads=threads)
        self.tokens = self._vocabulary()
        self.token_id = {t: i for i, t in enumerate(self.tokens)}
        self.eot = self.token_id.get("<|endoftext|>")
        if self.eot is None:
            raise XllmError(f"{self.model_dir}/vocabulary.json: no <|endoftext|> token (not a Whisper model?)")
        self.prompt = self._prompt(language, task)
        self.beam_size, self.max_length = beam_size, max_length
        self.features = self._feature_extractor()
        self.decoder = self._decoder()

    def _vocabulary(self) -> list[str]:
        vocab = self.model_dir / "vocabulary.json"
        if vocab.is_file():
            return json.loads(vocab.read_text(encoding="utf-8"))
        txt = self.model_dir / "vocabulary.txt"
        if txt.is_file():
            return txt.read_text(encoding="utf-8").split("\n")
        raise XllmError(f"{self.model_dir}: no vocabulary.json")

    def _multilingual(self) -> bool:
        """CTranslate2 calls a model multilingual by its vocabulary size (real Whisper sizes);
        the converter's ``lang_ids`` also tells, for small custom models."""
        if self.model.is_multilingual:
            return True
        try:
            cfg = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return bool(cfg.get("lang_ids"))

    def _prompt(self, language: str | None, task: str) -> list[str]:
        prompt = ["<|startoftranscript|>"]
        if self._multilingual():
            if language:
                lang = f"<|{language}|>"
                if lang not in self.token_id:
                    raise XllmError(f"{self.model_dir}: language '{language}' is not in the model's vocabulary")
                prompt.append(lang)
            prompt.append(f"<|{task}|>")
        prompt.append("<|notimestamps|>")
        missing = [t for t in prompt if t not in self.token_id]
        if missing:
            raise XllmError(f"{self.model_dir}: special token(s) {missing} not in the vocabulary")
        return prompt

    def _feature_extractor(self):
        from transformers import WhisperFeatureExtractor

        if (self.model_dir / "preprocessor_config.json").is_file():
            fe = WhisperFeatureExtractor.from_pretrained(str(self.model_dir))
        else:
            fe = WhisperFeatureExtractor(feature_size=self.model.n_mels)
        if fe.feature_size != self.model.n_mels:
            raise XllmError(f"{self.model_dir}: preprocessor has {fe.feature_size} mel bins, "
                            f"the model expects {self.model.n_mels}")
        return fe

    def _decoder(self):
        path = self.model_dir / "tokenizer.json"
        if path.is_file():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(path))
        return _VocabDecoder(self.tokens)

    def _text(self, ids: Sequence[int]) -> str:
        # text tokens come before <|endoftext|>; specials and timestamps after it
        return self.decoder.decode([i for i in ids if i < self.eot]).strip()

    def transcribe(self, waves: Sequence[np.ndarray], batch_size: int = 8) -> list[str]:
        """Transcribe 16 kHz mono float waveforms; one text per input (30 s at most each)."""
        import ctranslate2

        texts: list[str] = []
        chunk = self.features.n_samples
        for start in range(0, len(waves), max(batch_size, 1)):
            group = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waves[start:start + batch_size]]
            if any(len(w) > chunk for w in group):
                log.warning(f"Whisper baseline: audio longer than {chunk / SAMPLE_RATE:.0f} s is truncated")
            feats = self.features(group, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
            feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32))
            results = self.model.generate(feats, [self.prompt] * len(group), beam_size=self.beam_size,
                                          max_length=self.max_length)
            texts.extend(self._text(r.sequences_ids[0]) for r in results)
        return texts
