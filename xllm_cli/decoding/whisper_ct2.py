"""A CTranslate2 Whisper model directory as a baseline recognizer (what faster-whisper loads).

Any faster-whisper style directory works (``model.bin``, ``vocabulary.json`` or
``vocabulary.txt``, ``tokenizer.json``); so does the output of ``xllm export
whisper``. The model is used as faster-whisper uses it:

* the language is detected from the first 30 s unless ``language`` is given
  (English-only ``*.en`` models have no language token);
* ``task`` ``transcribe`` or ``translate`` (to English), an ``initial_prompt``
  (``<|startofprev|>`` context), temperature fallback (a window whose output is too
  repetitive, compression ratio > 2.4, or too unlikely, mean log-prob < -1, is
  decoded again at the next temperature, sampling);
* audio up to 30 s is decoded in batches without timestamps (``transcribe``);
  longer audio goes through the long-form seek loop (``whisper_longform.py``).

Features are computed in numpy (``whisper_features.py``): neither torch nor
transformers is imported on this path, which kept RSS near faster-whisper's.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..console import log
from ..errors import XllmError
from .whisper_features import N_SAMPLES, batch_log_mel

TASKS = ("transcribe", "translate")
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # faster-whisper's and OpenAI's
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
ENGLISH_ONLY_VOCAB = 51864  # the *.en models (their config may still list lang_ids)


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


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass
class Attempt:
    """One window's generation: its tokens and the numbers the fallback rule looks at."""

    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float


def parse_temperatures(text: str | float | Sequence[float] | None) -> tuple[float, ...]:
    """``"0"`` / ``"0,0.2,0.4"`` / a float -> the temperatures tried in turn (one-line error otherwise)."""
    if text is None:
        return DEFAULT_TEMPERATURES
    if isinstance(text, (int, float)):
        values = (float(text),)
    elif isinstance(text, str):
        try:
            values = tuple(float(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise XllmError(f"--temperature must be a number or a comma-separated list (0,0.2,0.4), not '{text}'") from None
    else:
        values = tuple(float(x) for x in text)
    if not values or any(not 0.0 <= t <= 2.0 for t in values):
        raise XllmError(f"--temperature values must be between 0 and 2, not '{text}'")
    return values


class WhisperCT2:
    """A CTranslate2 Whisper model with its tokens; batched short audio, long audio by seeking."""

    def __init__(self, model_dir: str | Path, language: Optional[str] = None, task: str = "transcribe",
                 device: str = "cpu", compute_type: str = "int8", beam_size: int = 1, max_length: int = 448,
                 threads: int = 0, initial_prompt: Optional[str] = None,
                 temperatures: Sequence[float] = DEFAULT_TEMPERATURES, condition_on_previous_text: bool = True,
                 word_timestamps: bool = False) -> None:
        import ctranslate2

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "model.bin").is_file():
            raise XllmError(f"{self.model_dir}: not a CTranslate2 Whisper directory (no model.bin); "
                            f"convert one with: xllm export whisper HF_DIR --out DIR")
        if task not in TASKS:
            raise XllmError(f"--task must be one of {', '.join(TASKS)}, not '{task}'")
        supported = ctranslate2.get_supported_compute_types(device)
        if compute_type not in supported:
            compute_type = "int8" if "int8" in supported else "float32"
        self.model = ctranslate2.models.Whisper(str(self.model_dir), device=device, compute_type=compute_type,
                                                intra_threads=threads)
        self.tokens = self._vocabulary()
        self.token_id = {t: i for i, t in enumerate(self.tokens)}
        self.eot = self._special("<|endoftext|>")
        self.sot = self._special("<|startoftranscript|>")
        self.no_timestamps = self._special("<|notimestamps|>")
        self.sot_prev = self.token_id.get("<|startofprev|>")
        self.timestamp_begin = self.no_timestamps + 1
        self.multilingual = self._multilingual()
        self.task = task
        if not self.multilingual:
            if language not in (None, "en"):
                raise XllmError(f"{self.model_dir}: an English-only model cannot take --language {language}")
            if task == "translate":
                raise XllmError(f"{self.model_dir}: an English-only model cannot --task translate")
        elif language is not None:
            self._language_token(language)  # fails now, before any audio is read, on an unknown code
        self.language = language if self.multilingual else "en"
        self.beam_size, self.max_length = beam_size, max_length
        self.temperatures = tuple(temperatures)
        self.condition_on_previous_text = condition_on_previous_text
        self.word_timestamps = word_timestamps
        self.n_mels = self.model.n_mels
        self.decoder = self._decoder()
        self.initial_prompt = self._encode_prompt(initial_prompt)
        self.detected: dict[str, int] = {}  # language -> windows it was detected in (for the log)
        # faster-whisper's suppression: the config's non-speech symbols (-1) and the task/control tokens
        self.suppress = [-1] + [self.token_id[t] for t in ("<|transcribe|>", "<|translate|>", "<|startoftranscript|>",
                                                           "<|startofprev|>", "<|startoflm|>", "<|nocaptions|>",
                                                           "<|nospeech|>") if t in self.token_id]

    # ------------------------------------------------------------------ vocabulary

    def _vocabulary(self) -> list[str]:
        vocab = self.model_dir / "vocabulary.json"
        if vocab.is_file():
            return json.loads(vocab.read_text(encoding="utf-8"))
        txt = self.model_dir / "vocabulary.txt"
        if txt.is_file():
            tokens = txt.read_text(encoding="utf-8").split("\n")
            return tokens[:-1] if tokens and tokens[-1] == "" else tokens  # the file's final newline
        raise XllmError(f"{self.model_dir}: no vocabulary.json")

    def _special(self, token: str) -> int:
        if token not in self.token_id:
            raise XllmError(f"{self.model_dir}: special token {token} not in the vocabulary (not a Whisper model?)")
        return self.token_id[token]

    def _multilingual(self) -> bool:
        """CTranslate2 tells for the real Whisper sizes; a ``*.en`` model has exactly 51864 tokens;
        another (a small custom model) is multilingual when the converter listed ``lang_ids``."""
        if self.model.is_multilingual:
            return True
        if len(self.tokens) == ENGLISH_ONLY_VOCAB:
            return False
        try:
            cfg = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return bool(cfg.get("lang_ids"))

    def _language_token(self, language: str) -> int:
        token = f"<|{language}|>"
        if token not in self.token_id:
            raise XllmError(f"{self.model_dir}: language '{language}' is not in the model's vocabulary "
                            f"(give a code such as en, zh, de)")
        return self.token_id[token]

    def _decoder(self):
        path = self.model_dir / "tokenizer.json"
        if path.is_file():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(path))
        return _VocabDecoder(self.tokens)

    def _encode_prompt(self, text: Optional[str]) -> list[int]:
        if not text or not text.strip():
            return []
        if isinstance(self.decoder, _VocabDecoder):
            raise XllmError(f"{self.model_dir}: --initial-prompt needs tokenizer.json beside the model")
        return self.decoder.encode(" " + text.strip(), add_special_tokens=False).ids

    def text(self, ids: Sequence[int]) -> str:
        """The text of the text tokens (specials and timestamps, ids >= <|endoftext|>, left out)."""
        return self.decoder.decode([i for i in ids if i < self.eot]).strip()

    def token_text(self, ids: Sequence[int]) -> str:
        """Raw decoded text, leading space kept (word splitting needs it)."""
        return self.decoder.decode([i for i in ids if i < self.eot])

    # ------------------------------------------------------------------ prompts

    def sot_sequence(self, language: Optional[str]) -> list[int]:
        seq = [self.sot]
        if self.multilingual:
            seq.append(self._language_token(language or "en"))
            seq.append(self._special(f"<|{self.task}|>"))
        return seq

    def prompt(self, language: Optional[str], previous: Sequence[int] = (), timestamps: bool = False) -> list[int]:
        """``[<|startofprev|> previous...] <|sot|> <|lang|> <|task|> [<|notimestamps|>]`` (OpenAI's layout)."""
        out: list[int] = []
        if previous and self.sot_prev is not None:
            out = [self.sot_prev, *list(previous)[-(self.max_length // 2 - 1):]]
        out += self.sot_sequence(language)
        if not timestamps:
            out.append(self.no_timestamps)
        return out

    # ------------------------------------------------------------------ model calls

    def features(self, waves: Sequence[np.ndarray]):
        import ctranslate2

        return ctranslate2.StorageView.from_array(batch_log_mel(list(waves), self.n_mels))

    def encode(self, waves: Sequence[np.ndarray]):
        """Encoder output of 30 s windows; reused by detection, generation and alignment."""
        return self.model.encode(self.features(waves), to_cpu=False)

    def detect_language(self, encoded) -> list[str]:
        """The most likely language of each window ("en" for an English-only model)."""
        if not self.multilingual:
            return ["en"] * encoded.shape[0]
        found = []
        for token, p in self._language_probs(encoded):
            code = token[2:-2]
            self.detected[code] = self.detected.get(code, 0) + 1
            log.debug(f"Whisper language: {code} (p={p:.2f})")
            found.append(code)
        return found

    def _language_probs(self, encoded) -> list[tuple[str, float]]:
        """The best language token and its probability per window (CTranslate2's ``detect_language``)."""
        if not self.model.is_multilingual:  # a custom model multilingual by its lang_ids alone
            raise XllmError(f"{self.model_dir}: CTranslate2 cannot detect the language with this model: "
                            f"give --language")
        return [probs[0] for probs in self.model.detect_language(encoded)]

    def _subset(self, encoded, rows: list[int]):
        """Rows of an encoder output (temperature fallback decodes only the windows that failed)."""
        import ctranslate2

        if len(rows) == encoded.shape[0]:
            return encoded
        host = encoded if encoded.device == "cpu" else encoded.to_device(ctranslate2.Device.cpu)
        array = np.asarray(host)[rows]
        picked = ctranslate2.StorageView.from_array(np.ascontiguousarray(array))
        return picked if encoded.device == "cpu" else picked.to_device(ctranslate2.Device.cuda)

    def _attempt(self, result, temperature: float) -> Attempt:
        tokens = list(result.sequences_ids[0])
        n = len(tokens)
        avg = result.scores[0] * n / (n + 1) if result.scores else 0.0  # faster-whisper's length-normalised mean
        return Attempt(tokens, avg, float(getattr(result, "no_speech_prob", 0.0)), temperature,
                       compression_ratio(self.text(tokens)))

    def generate(self, encoded, prompts: list[list[int]]) -> list[Attempt]:
        """One attempt per window, with temperature fallback for the windows that need it."""
        tried: list[list[Attempt]] = [[] for _ in prompts]
        chosen: list[Optional[Attempt]] = [None] * len(prompts)
        todo = list(range(len(prompts)))
        for temperature in self.temperatures:
            if not todo:
                break
            opts: dict[str, Any] = {"beam_size": self.beam_size} if temperature == 0 else {
                "beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature}
            results = self.model.generate(self._subset(encoded, todo), [prompts[i] for i in todo],
                                          max_length=self.max_length, return_scores=True,
                                          return_no_speech_prob=True, suppress_blank=True,
                                          suppress_tokens=self.suppress, **opts)
            retry = []
            for i, result in zip(todo, results):
                attempt = self._attempt(result, temperature)
                tried[i].append(attempt)
                silent = attempt.no_speech_prob > NO_SPEECH_THRESHOLD and attempt.avg_logprob < LOG_PROB_THRESHOLD
                if not silent and (attempt.compression_ratio > COMPRESSION_RATIO_THRESHOLD
                                   or attempt.avg_logprob < LOG_PROB_THRESHOLD):
                    retry.append(i)
                else:
                    chosen[i] = attempt
            todo = retry
        for i in todo:  # every temperature failed: faster-whisper keeps the likeliest non-repetitive attempt
            fluent = [a for a in tried[i] if a.compression_ratio <= COMPRESSION_RATIO_THRESHOLD] or tried[i]
            chosen[i] = max(fluent, key=lambda a: a.avg_logprob)
        return chosen  # type: ignore[return-value]

    # ------------------------------------------------------------------ short audio, batched

    def transcribe(self, waves: Sequence[np.ndarray], batch_size: int = 8) -> list[str]:
        """Transcribe 16 kHz mono float waveforms, one text per input.

        Inputs up to 30 s are decoded ``batch_size`` at a time in one window each;
        longer ones go through the long-form seek loop, one at a time.
        """
        from .whisper_longform import transcribe_long

        texts: list[Optional[str]] = [None] * len(waves)
        short = [i for i, w in enumerate(waves) if np.asarray(w).size <= N_SAMPLES]
        for i, w in enumerate(waves):
            if np.asarray(w).size > N_SAMPLES:
                segments = transcribe_long(self, [np.asarray(w, dtype=np.float32).reshape(-1)])
                texts[i] = join_texts([s.text for s in segments], self.language)
        for start in range(0, len(short), max(batch_size, 1)):
            rows = short[start:start + batch_size]
            encoded = self.encode([np.asarray(waves[i], dtype=np.float32).reshape(-1) for i in rows])
            languages = [self.language] * len(rows) if self.language else self.detect_language(encoded)
            prompts = [self.prompt(lang, self.initial_prompt) for lang in languages]
            for i, attempt in zip(rows, self.generate(encoded, prompts)):
                texts[i] = self.text(attempt.tokens)
        return [t or "" for t in texts]


UNSPACED_LANGUAGES = ("zh", "ja", "th", "lo", "my", "yue")  # written without spaces between words


def join_texts(texts: Sequence[str], language: Optional[str]) -> str:
    """Segments joined as the language writes: with spaces, or without for Chinese/Japanese/Thai."""
    parts = [t.strip() for t in texts if t.strip()]
    if language in UNSPACED_LANGUAGES:
        return "".join(parts)
    if language is None:
        from .language import score_unit

        if parts and score_unit({str(i): t for i, t in enumerate(parts)}) == "char":
            return "".join(parts)
    return " ".join(parts)
