"""Speech for the mini corpus: espeak-ng Mandarin from tone-numbered pinyin (or English), plus noise.

Two interchangeable espeak-ng back ends:

- ``binary``: Debian's ``espeak-ng`` program (one short process per piece,
  about 10 ms; argument lists, never a shell), used when it is on PATH;
- ``library``: the ``libespeak-ng`` shared library and data inside the
  ``espeakng-loader`` wheel, driven through ctypes in synchronous mode, for
  machines where only pip is available.

The Mandarin voice is ``cmn-latn-pinyin`` (plain ``cmn`` would read the tone
digits aloud) with a variant (``+f2``, ``+m3``...) per speaker; the English
corpus uses ``en-us`` and ``en`` (British) with the same variants.

A sentence is synthesized in pieces (before the key word, the key word, after
it) that are trimmed and joined with short pauses: that gives the exact time
span of the key word, which the noisy image test set drowns in noise.
"""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from dataclasses import dataclass

import numpy as np

from ..errors import XllmError

VOICE = "cmn-latn-pinyin"
ESPEAK_MISSING = (
    "espeak-ng not found: install it (Debian/Ubuntu: sudo apt-get install espeak-ng) "
    "or the Python wheel (pip install espeakng-loader)"
)


def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """int16 samples and rate from espeak's streamed WAV (its size fields are placeholders)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise XllmError("espeak-ng wrote no WAV data")
    pos, rate = 12, 22050
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk == b"fmt ":
            rate = struct.unpack("<I", data[pos + 12 : pos + 16])[0]
        elif chunk == b"data":
            body = data[pos + 8 :]
            body = body[: len(body) // 2 * 2]
            return np.frombuffer(body, dtype="<i2").copy(), rate
        pos += 8 + size + (size & 1)
    raise XllmError("espeak-ng wrote no audio")


class EspeakBinary:
    """The ``espeak-ng`` program."""

    name = "binary"

    def __init__(self, path: str):
        self.path = path

    def synth(self, pinyin: str, voice: str, speed: int, pitch: int, ssml: bool = False) -> tuple[np.ndarray, int]:
        args = [self.path, *(["-m"] if ssml else []), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", pinyin]
        result = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        if result.returncode != 0:
            detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise XllmError(f"espeak-ng failed for '{pinyin}' ({voice}): {detail[-1] if detail else 'no message'}")
        return _parse_wav(result.stdout)


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakLibrary:
    """libespeak-ng from the ``espeakng-loader`` wheel, in-process (one instance per process)."""

    name = "library"
    _AUDIO_OUTPUT_SYNCHRONOUS = 2
    _RATE, _PITCH = 1, 3
    _POS_CHARACTER, _CHARS_UTF8, _SSML = 1, 1, 0x10

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError:
            raise XllmError(ESPEAK_MISSING) from None
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.rate = self.lib.espeak_Initialize(self._AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.rate <= 0:
            raise XllmError(f"cannot initialise libespeak-ng with data at {data.decode()}")
        self._chunks: list[np.ndarray] = []

        def collect(samples, count, events):  # called by espeak for each block it produces
            if count > 0:
                self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: espeak holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.espeak_Synchronize.restype = ctypes.c_int

    def synth(self, pinyin: str, voice: str, speed: int, pitch: int, ssml: bool = False) -> tuple[np.ndarray, int]:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise XllmError(f"libespeak-ng has no voice '{voice}'")
        self.lib.espeak_SetParameter(self._RATE, int(speed), 0)
        self.lib.espeak_SetParameter(self._PITCH, int(pitch), 0)
        self._chunks = []
        text = pinyin.encode("utf-8")
        flags = self._CHARS_UTF8 | (self._SSML if ssml else 0)
        err = self.lib.espeak_Synth(text, len(text) + 1, 0, self._POS_CHARACTER, 0, flags, None, None)
        self.lib.espeak_Synchronize()
        if err != 0:
            raise XllmError(f"libespeak-ng failed for '{pinyin}' (error {err})")
        wave = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        return wave.astype(np.int16), self.rate


BREAK_S = 0.5  # pause espeak puts between pieces of one call; no piece has an inner pause > 0.05 s
SPLIT_S = 0.25


def synth_pieces(engine, pieces: list[str], voice: str, speed: int, pitch: int) -> tuple[list[np.ndarray], int]:
    """Each piece as trimmed float32 samples, from ONE espeak call when possible.

    Starting espeak-ng costs more than synthesizing a short sentence, so the
    pieces go in one SSML text separated by long breaks and are cut apart at
    the long silences. If the cut does not give one part per piece (it always
    has so far), each piece is synthesized on its own.
    """
    if len(pieces) > 1:
        text = "<speak>" + f' <break time="{int(BREAK_S * 1000)}ms"/> '.join(pieces) + "</speak>"
        samples, rate = engine.synth(text, voice, speed, pitch, ssml=True)
        parts = split_on_pauses(samples.astype(np.float32) / 32768.0, rate, SPLIT_S)
        if len(parts) == len(pieces):
            return parts, rate
    out, rate = [], 22050
    for piece in pieces:
        samples, rate = engine.synth(piece, voice, speed, pitch)
        out.append(trim(samples.astype(np.float32) / 32768.0, rate))
    return out, rate


def split_on_pauses(wave: np.ndarray, rate: int, min_pause: float, threshold: float = 0.01,
                    keep: float = 0.01) -> list[np.ndarray]:
    """Cut ``wave`` at silences longer than ``min_pause`` s; each part trimmed like :func:`trim`."""
    loud = np.flatnonzero(np.abs(wave) > threshold)
    if loud.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(loud) > min_pause * rate)
    starts = np.concatenate([[loud[0]], loud[cuts + 1]])
    ends = np.concatenate([loud[cuts], [loud[-1]]])
    margin = int(keep * rate)
    return [wave[max(a - margin, 0) : b + margin + 1] for a, b in zip(starts, ends)]


_ENGINE = None


def espeak_available() -> bool:
    """Whether ``get_engine("auto")`` can find an espeak-ng: the binary on PATH or the wheel's library."""
    if shutil.which("espeak-ng"):
        return True
    try:
        import espeakng_loader  # noqa: F401
    except ImportError:
        return False
    return True


def get_engine(backend: str = "auto"):
    """The espeak back end for this process: ``auto`` (binary if on PATH), ``binary`` or ``library``."""
    global _ENGINE
    if _ENGINE is not None and (backend == "auto" or _ENGINE.name == backend):
        return _ENGINE
    if backend not in ("auto", "binary", "library"):
        raise XllmError(f"unknown espeak back end '{backend}' (auto, binary, library)")
    path = shutil.which("espeak-ng")
    if backend == "binary" or (backend == "auto" and path):
        if path is None:
            raise XllmError(ESPEAK_MISSING)
        _ENGINE = EspeakBinary(path)
    else:
        _ENGINE = EspeakLibrary()
    return _ENGINE


# ----------------------------------------------------------------------- rendering


def trim(wave: np.ndarray, rate: int, threshold: float = 0.01, keep: float = 0.01) -> np.ndarray:
    """Cut leading/trailing near-silence (espeak pads every call), keeping ``keep`` s of margin."""
    if wave.size == 0:
        return wave
    loud = np.flatnonzero(np.abs(wave) > threshold)
    if loud.size == 0:
        return wave[:0]
    margin = int(keep * rate)
    return wave[max(loud[0] - margin, 0) : loud[-1] + margin + 1]


@dataclass
class Voice:
    """How one utterance is spoken."""

    variant: str  # espeak variant, also the speaker id (f2, m3, ...)
    speed: int  # words per minute
    pitch: int  # 0-99
    base: str = VOICE  # espeak voice the variant applies to


def speak_pieces(pieces: list[tuple[str, bool]], voice: Voice, rng: np.random.Generator,
                 sample_rate: int = 16000, backend: str = "auto") -> tuple[np.ndarray, tuple[float, float] | None]:
    """Synthesize pieces (pinyin for the Mandarin voice) and join them; return the float32 wave at ``sample_rate`` and the
    (start, end) seconds of the piece flagged as the key (None when there is none)."""
    from ..data.audio import resample

    engine = get_engine(backend)
    waves, rate = synth_pieces(engine, [p for p, _ in pieces], f"{voice.base}+{voice.variant}", voice.speed, voice.pitch)
    parts: list[np.ndarray] = []
    key_span = None
    pos = 0
    for i, (wave, (_, is_key)) in enumerate(zip(waves, pieces)):
        gap = int(rng.uniform(0.03, 0.09) * rate) if i else int(rng.uniform(0.15, 0.35) * rate)
        parts.append(np.zeros(gap, dtype=np.float32))
        pos += gap
        if is_key:
            key_span = (pos / rate, (pos + len(wave)) / rate)
        parts.append(wave)
        pos += len(wave)
    rate = rate or 22050
    parts.append(np.zeros(int(rng.uniform(0.15, 0.35) * rate), dtype=np.float32))
    joined = np.concatenate(parts)
    return resample(joined, rate, sample_rate), key_span


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    size = 1 << max(n - 1, 1).bit_length()  # a power of two: FFTs of odd lengths can be slow
    spectrum = np.fft.rfft(rng.standard_normal(size))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(f), size)[:n]


def _babble_like(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Speech-shaped noise: low-passed noise under a random 2-6 Hz syllable-rate envelope,
    summed over a few 'talkers'. No real words, so it never adds recognizable text."""
    out = np.zeros(n)
    t = np.arange(n) / rate
    for _ in range(3):
        x = rng.standard_normal(n + 3)
        x = (x[:-3] + x[1:-2] + x[2:-1] + x[3:]) / 4  # crude low-pass (< ~2 kHz)
        x += 0.5 * _pink(n, rng)
        env = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 2 * np.pi))
        out += x * env
    return out


def make_noise(kind: str, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        x = _pink(n, rng)
    elif kind == "babble":
        x = _babble_like(n, rate, rng)
    else:
        raise ValueError(kind)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def speech_rms(wave: np.ndarray) -> float:
    """RMS over the louder (speech) samples, so pauses do not change the SNR."""
    a = np.abs(wave)
    active = wave[a > 0.05 * (a.max() + 1e-9)]
    return float(np.sqrt(np.mean(active**2))) if active.size else 1e-4


def add_noise(wave: np.ndarray, snr_db: float, kind: str, rate: int, rng: np.random.Generator) -> np.ndarray:
    noise = make_noise(kind, len(wave), rate, rng)
    level = speech_rms(wave) / (10 ** (snr_db / 20))
    return wave + level * noise


def drown(wave: np.ndarray, span: tuple[float, float], rate: int, rng: np.random.Generator,
          margin: float = 0.03) -> np.ndarray:
    """Bury ``span`` (seconds): the speech there is attenuated by 30 dB under a noise burst twice
    as loud as the speech, so the word cannot be heard (only an image can tell it)."""
    start = max(int((span[0] - margin) * rate), 0)
    end = min(int((span[1] + margin) * rate), len(wave))
    if end <= start:
        return wave
    out = wave.copy()
    n = end - start
    ramp = np.ones(n, dtype=np.float32)
    r = min(int(0.01 * rate), n // 2)
    if r:
        ramp[:r] = np.linspace(0, 1, r)
        ramp[-r:] = np.linspace(1, 0, r)
    burst = make_noise(str(rng.choice(["white", "pink", "babble"])), n, rate, rng) * 2.0 * speech_rms(wave)
    out[start:end] = out[start:end] * (1 - ramp * (1 - 0.03)) + burst * ramp
    return out
