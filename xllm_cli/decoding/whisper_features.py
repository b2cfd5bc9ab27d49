"""Whisper's log-mel spectrogram in numpy float32, one 30 s window at a time.

Same numbers as OpenAI Whisper / transformers' ``WhisperFeatureExtractor``
(400-point periodic Hann STFT, hop 160, Slaney mel filters, log10 clamped to
8 below the maximum, scaled by (x + 4) / 4), without importing torch or
transformers: importing them cost ~0.5 GB of RSS in the Whisper baseline, and the
transformers extractor works in float64 on the padded 30 s for every utterance.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # one window: 480000 samples
N_FRAMES = N_SAMPLES // HOP  # 3000 mel frames per window
FRAMES_PER_SECOND = SAMPLE_RATE / HOP  # 100
INPUT_STRIDE = 2  # the encoder halves the frames: timestamps count 20 ms steps


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, Whisper's): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = 3.0 * f / 200.0
    log_part = f >= 1000.0
    return np.where(log_part, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), 200.0 * m / 3.0)


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> np.ndarray:
    """``[n_mels, N_FFT // 2 + 1]`` triangular filters, Slaney-normalised (librosa.filters.mel)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:n_mels + 2] - mel_points[:n_mels]))[:, None]
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)  # periodic Hann


def log_mel(wave: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """``[n_mels, N_FRAMES]`` float32 features of one window (zero-padded or cut to 30 s)."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)[:N_SAMPLES]
    if wave.size < N_SAMPLES:
        wave = np.pad(wave, (0, N_SAMPLES - wave.size))
    padded = np.pad(wave, (N_FFT // 2, N_FFT // 2), mode="reflect")  # torch.stft(center=True)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:N_FRAMES]  # a view: no copy
    spec = np.fft.rfft(frames * _window(), axis=-1)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    mel = mel_filters(n_mels) @ power.T
    logs = np.log10(np.maximum(mel, 1e-10))
    logs = np.maximum(logs, logs.max() - 8.0)
    return ((logs + 4.0) / 4.0).astype(np.float32)


def batch_log_mel(waves: list[np.ndarray], n_mels: int = 80) -> np.ndarray:
    """``[batch, n_mels, N_FRAMES]`` contiguous float32 (CTranslate2's input layout)."""
    out = np.empty((len(waves), n_mels, N_FRAMES), dtype=np.float32)
    for i, w in enumerate(waves):
        out[i] = log_mel(w, n_mels)
    return out
