"""Speech features computed on the fly: Kaldi fbank + global CMVN, Whisper log-mel, raw waveform.

Every extractor takes a 1-D float waveform at 16 kHz in [-1, 1] and returns a
``(frames, dim)`` tensor for the real length of the audio (no padding: batching
pads, and a model that needs fixed-length input, like Whisper's 30 s encoder,
pads itself). Which extractor a model gets follows from its speech encoder's
``type`` (``build_feature_extractor``), so features can never disagree with the
encoder they feed.

Training-time augmentation lives here too: speed perturbation (on the waveform,
by resampling, as Kaldi's ``sox speed``) and SpecAugment (on the features).
Both take an explicit ``torch.Generator`` so that an augmented epoch is a pure
function of (seed, epoch, utterance) -- a resumed run sees the same data as one
that never stopped, and DataLoader workers need no extra seeding.
"""

from __future__ import annotations

import abc

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from ..errors import XllmError
from ..fsutil import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from ..config.schema import FeaturesConfig, SpecAugmentConfig, SpeechEncoderConfig, VisionEncoderConfig

SAMPLE_RATE = 16000

# Kaldi's fbank works on 16-bit integer sample values; scaling keeps its log
# energies (and the dither amplitude) on the usual Kaldi/WeNet/ESPnet scale.
_INT16_SCALE = 32768.0


class FeatureExtractor(abc.ABC):
    """Waveform (samples,) float in [-1, 1] -> features (frames, dim).

    ``train=True`` enables what only training wants (fbank dither); the result
    is otherwise deterministic.
    """

    dim: int = 0
    frame_shift: float = 0.01  # seconds per output frame
    kind: str = "base"  # "fbank" | "whisper" | "waveform"
    sample_rate: int = SAMPLE_RATE

    @abc.abstractmethod
    def __call__(self, wave: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Features (frames, dim) of one utterance."""

    @abc.abstractmethod
    def num_frames(self, num_samples: int) -> int:
        """Frames this extractor returns for ``num_samples`` samples (for length bookkeeping)."""


def _as_wave(wave) -> torch.Tensor:
    """Accept numpy or torch, (samples,) or (1, samples); return float32 (samples,)."""
    if not isinstance(wave, torch.Tensor):
        wave = torch.as_tensor(wave)
    wave = wave.to(torch.float32)
    if wave.dim() == 2 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.dim() != 1:
        raise ValueError(f"expected a mono waveform (samples,), got shape {tuple(wave.shape)}")
    return wave


# ----------------------------------------------------------------------- CMVN
@dataclass
class Cmvn:
    """Global mean/variance normalisation: (x - mean) / std per feature dimension."""

    mean: torch.Tensor  # (dim,)
    std: torch.Tensor  # (dim,)

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean) / self.std

    @classmethod
    def load(cls, path: str | Path, dim: int | None = None) -> "Cmvn":
        path = Path(path)
        if not path.is_file():
            raise XllmError(f"{path}: CMVN file not found (compute it with compute_cmvn / stage 1)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            mean = torch.tensor(data["mean"], dtype=torch.float32)
            std = torch.tensor(data["std"], dtype=torch.float32)
        except (ValueError, KeyError, TypeError) as e:
            raise XllmError(f"{path}: not a CMVN JSON file with 'mean' and 'std' lists ({e})") from None
        if mean.dim() != 1 or mean.shape != std.shape:
            raise XllmError(f"{path}: 'mean' and 'std' must be lists of the same length")
        if dim is not None and mean.numel() != dim:
            raise XllmError(f"{path}: CMVN has {mean.numel()} dimensions but the features have {dim}")
        if not torch.all(std > 0):
            raise XllmError(f"{path}: 'std' must be positive")
        return cls(mean, std)


# ---------------------------------------------------------------- extractors
class FbankExtractor(FeatureExtractor):
    """Kaldi-compatible log mel filterbank (25 ms window, 10 ms shift), optional global CMVN."""

    kind = "fbank"

    def __init__(
        self,
        num_mel_bins: int = 80,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        dither: float = 0.0,
        cmvn: Cmvn | None = None,
    ):
        self.dim = num_mel_bins
        self.frame_length_ms = frame_length_ms
        self.frame_shift_ms = frame_shift_ms
        self.frame_shift = frame_shift_ms / 1000.0
        self.dither = dither  # used only when train=True; evaluation is always dither-free
        self.cmvn = cmvn

    def raw(self, wave: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Fbank without CMVN (what ``compute_cmvn`` accumulates)."""
        from torchaudio.compliance import kaldi

        wave = _as_wave(wave)
        window = int(self.sample_rate * self.frame_length_ms / 1000)
        if wave.numel() < window:  # shorter than one frame: pad so that we still get one frame
            wave = torch.nn.functional.pad(wave, (0, window - wave.numel()))
        return kaldi.fbank(
            wave.unsqueeze(0) * _INT16_SCALE,
            num_mel_bins=self.dim,
            frame_length=self.frame_length_ms,
            frame_shift=self.frame_shift_ms,
            dither=self.dither if train else 0.0,
            energy_floor=0.0,
            sample_frequency=self.sample_rate,
        )

    def __call__(self, wave: torch.Tensor, train: bool = False) -> torch.Tensor:
        feats = self.raw(wave, train)
        return self.cmvn(feats) if self.cmvn is not None else feats

    def num_frames(self, num_samples: int) -> int:
        window = int(self.sample_rate * self.frame_length_ms / 1000)
        shift = int(self.sample_rate * self.frame_shift_ms / 1000)
        return 1 + (max(num_samples, window) - window) // shift

    def load_cmvn(self, path: str | Path) -> None:
        self.cmvn = Cmvn.load(path, self.dim)


class WhisperExtractor(FeatureExtractor):
    """Whisper log-mel from transformers' ``WhisperFeatureExtractor``, for the real length only.

    The processor normally pads to 30 s; we ask for ``padding="longest"`` on one
    utterance, which is the same computation without the padding (its
    log-mel clamp uses the maximum over the signal, which padding with zeros does
    not change). The Whisper encoder wrapper pads to its 3000 frames itself.
    """

    kind = "whisper"

    def __init__(self, processor):
        self.processor = processor
        self.dim = int(processor.feature_size)
        self.sample_rate = int(processor.sampling_rate)
        self.hop = int(processor.hop_length)
        self.frame_shift = self.hop / self.sample_rate

    def __call__(self, wave: torch.Tensor, train: bool = False) -> torch.Tensor:
        wave = _as_wave(wave)
        frames = self.num_frames(wave.numel())
        # Zeros after the end (half a window) make the last frames equal to those of
        # the processor's usual zero-padded 30 s input, instead of reflect-padded ones.
        tail = max(self.hop, frames * self.hop - wave.numel()) + int(self.processor.n_fft) // 2
        wave = torch.nn.functional.pad(wave, (0, tail))
        out = self.processor(
            wave.numpy(),
            sampling_rate=self.sample_rate,
            return_tensors="pt",
            padding="longest",
            truncation=False,
        )
        feats = out["input_features"][0].transpose(0, 1).contiguous()  # (frames, n_mels)
        return feats[:frames]

    def num_frames(self, num_samples: int) -> int:
        return max(num_samples, self.hop) // self.hop


class WaveformExtractor(FeatureExtractor):
    """Raw waveform (samples, 1), zero mean and unit variance per utterance (HuBERT / wav2vec 2.0 input)."""

    kind = "waveform"

    def __init__(self, normalize: bool = True):
        self.dim = 1
        self.frame_shift = 1.0 / SAMPLE_RATE
        self.normalize = normalize

    def __call__(self, wave: torch.Tensor, train: bool = False) -> torch.Tensor:
        wave = _as_wave(wave)
        if self.normalize:
            wave = (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7)
        return wave.unsqueeze(1)

    def num_frames(self, num_samples: int) -> int:
        return num_samples


def fbank_extractor(encoder: "SpeechEncoderConfig", features: "FeaturesConfig", cmvn_path=None) -> FbankExtractor:
    """Kaldi fbank with ``features``' window, shift and dither (training only); ``num_mel_bins``
    null = the encoder's ``input_dim``; global CMVN from ``cmvn_path`` when given."""
    extractor = FbankExtractor(
        num_mel_bins=int(features.num_mel_bins or encoder.input_dim),
        frame_length_ms=float(features.frame_length_ms),
        frame_shift_ms=float(features.frame_shift_ms),
        dither=float(features.dither),
    )
    if cmvn_path is not None:
        extractor.load_cmvn(cmvn_path)
    return extractor


# Whisper's own front end has 80 mel bins (large-v3: 128, read from its preprocessor config).
WHISPER_MEL_BINS = 80


def whisper_extractor(encoder: "SpeechEncoderConfig", features: "FeaturesConfig", cmvn_path=None) -> WhisperExtractor:
    """``WhisperFeatureExtractor.from_pretrained(encoder.path)``, or a default one with
    ``features.num_mel_bins`` (null = 80) mels when there is no path."""
    from transformers import WhisperFeatureExtractor

    path = encoder.path
    if path:
        try:
            processor = WhisperFeatureExtractor.from_pretrained(str(path))
        except OSError as e:
            raise XllmError(f"{path}: cannot load a Whisper feature extractor ({str(e).splitlines()[0]})") from None
    else:
        processor = WhisperFeatureExtractor(feature_size=int(features.num_mel_bins or WHISPER_MEL_BINS))
    return WhisperExtractor(processor)


def waveform_extractor(encoder: "SpeechEncoderConfig", features: "FeaturesConfig", cmvn_path=None) -> WaveformExtractor:
    """Raw waveform, normalised per utterance unless ``features.normalize`` is false."""
    return WaveformExtractor(normalize=bool(features.normalize))


# Feature kinds an encoder type can declare (models/speech_encoders.py ENCODERS).
FEATURE_EXTRACTORS = {"fbank": fbank_extractor, "whisper": whisper_extractor, "waveform": waveform_extractor}


def build_feature_extractor(
    encoder: "SpeechEncoderConfig | None", features: "FeaturesConfig | None" = None, cmvn_path=None
) -> FeatureExtractor:
    """The extractor that feeds ``encoder`` (``model.speech_encoder``; None = the default conformer).

    The encoder type's registry entry (:data:`xllm_cli.models.speech_encoders.ENCODERS`)
    names its feature kind; an unknown type is a one-line error listing the registered ones.
    ``features`` is the recipe's ``features:`` section (None = its defaults).
    """
    from ..config.schema import FeaturesConfig, SpeechEncoderConfig
    from ..models.speech_encoders import encoder_spec

    encoder = encoder if encoder is not None else SpeechEncoderConfig()
    features = features if features is not None else FeaturesConfig()
    spec = encoder_spec(encoder)
    return FEATURE_EXTRACTORS[spec.features](encoder, features, cmvn_path)


# ----------------------------------------------------------------------- CMVN
def load_wave(utt) -> torch.Tensor:
    """An utterance's 16 kHz mono samples as a float32 tensor (segments honoured)."""
    from .audio import load_utterance

    return torch.from_numpy(load_utterance(utt)).to(torch.float32)


def _utterances_of(datadir) -> list:
    """A path, a DataDir, a list of paths / DataDirs / Utterances -> list of Utterance."""
    from .datadir import DataDir

    sources = [datadir] if isinstance(datadir, (str, Path, DataDir)) else list(datadir)
    utts = []
    for source in sources:
        if isinstance(source, (str, Path)):
            utts.extend(DataDir.load(source).utterances())
        elif isinstance(source, DataDir):
            utts.extend(source.utterances())
        else:
            utts.append(source)
    return utts


def compute_cmvn(datadir, extractor: FbankExtractor, out_path, max_utts: int | None = None) -> dict:
    """Global feature mean/std over a training set -> ``out_path`` JSON (written atomically).

    ``max_utts`` takes that many utterances spread evenly over the (sorted) set,
    so a subset still covers every speaker range. Sums are kept in float64.
    ``datadir``: a data directory, a DataDir, or a list of either (or of Utterance).
    Returns the JSON content ``{"mean", "std", "frames", "utterances", "dim"}``.
    """
    from ..console import progress_bar

    utts = _utterances_of(datadir)
    if not utts:
        raise XllmError(f"{datadir}: no utterances to compute CMVN from")
    if max_utts is not None and 0 < max_utts < len(utts):
        step = len(utts) / max_utts
        utts = [utts[int(i * step)] for i in range(max_utts)]
    raw = getattr(extractor, "raw", None)
    if raw is None:
        raise XllmError(f"CMVN applies to fbank features only, not '{extractor.kind}'")
    total = torch.zeros(extractor.dim, dtype=torch.float64)
    total_sq = torch.zeros(extractor.dim, dtype=torch.float64)
    frames = 0
    with progress_bar("utt") as progress:
        task = progress.add_task("cmvn", total=len(utts))
        for utt in utts:
            feats = raw(load_wave(utt), train=False).to(torch.float64)
            total += feats.sum(0)
            total_sq += (feats * feats).sum(0)
            frames += feats.shape[0]
            progress.advance(task)
    mean = total / frames
    var = (total_sq / frames - mean * mean).clamp_min(1e-10)
    std = var.sqrt().clamp_min(1e-5)
    data = {
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(v), 6) for v in std],
        "frames": frames,
        "utterances": len(utts),
        "dim": extractor.dim,
    }
    atomic_write_text(out_path, json.dumps(data, indent=1) + "\n")
    return data


# -------------------------------------------------------------- augmentation
def utterance_generator(seed: int, epoch: int, utt_id: str, what: str = "") -> torch.Generator:
    """A torch.Generator that depends only on (seed, epoch, utterance, purpose)."""
    key = zlib.crc32(f"{seed}:{epoch}:{utt_id}:{what}".encode("utf-8"))
    gen = torch.Generator()
    gen.manual_seed(key)
    return gen


def speed_perturb(wave: torch.Tensor, factor: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Play ``wave`` ``factor`` times faster (length / factor, pitch shifted), as Kaldi's speed perturbation.

    Resampling from ``sample_rate * factor`` to ``sample_rate`` does exactly that.
    """
    if abs(factor - 1.0) < 1e-6:
        return wave
    from torchaudio.functional import resample

    orig = int(round(sample_rate * factor))
    g = math.gcd(orig, sample_rate)
    return resample(_as_wave(wave), orig // g, sample_rate // g)


def choose_speed(factors: Sequence[float], seed: int, epoch: int, utt_id: str) -> float:
    """One of ``factors`` for this utterance in this epoch: uniform over utterances, no RNG state.

    A hash rather than a generator: the batch sampler asks for every utterance's
    factor each epoch (to pack by perturbed length), and this is ~50x cheaper.
    """
    return float(factors[zlib.crc32(f"{seed}:{epoch}:{utt_id}:speed".encode("utf-8")) % len(factors)])


def spec_augment_config(value: "bool | SpecAugmentConfig | None") -> "SpecAugmentConfig | None":
    """``data.batch.spec_augment`` resolved: true -> the defaults, a config with ``enabled: false``,
    false or None -> None (no masking)."""
    from ..config.schema import SpecAugmentConfig

    if value is None or value is False:
        return None
    if value is True:
        return SpecAugmentConfig()
    if not isinstance(value, SpecAugmentConfig):
        raise XllmError(f"spec_augment: expected true/false or a SpecAugment mapping, got {value!r}")
    return value if value.enabled else None


def spec_augment(feats: torch.Tensor, cfg, generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) without time warping: frequency and time masks set to 0
    (= the CMVN mean) in a copy of ``feats`` (frames, dim).

    ``cfg``: a :class:`~xllm_cli.config.schema.SpecAugmentConfig`, or true for its defaults.
    """
    opts = spec_augment_config(cfg)
    if opts is None:
        return feats
    feats = feats.clone()
    frames, dim = feats.shape

    def draw(high: int) -> int:  # uniform integer in [0, high)
        return int(torch.randint(max(high, 1), (1,), generator=generator))

    for _ in range(opts.num_freq_masks):
        width = draw(min(opts.freq_mask_width, dim) + 1)
        if width:
            start = draw(dim - width + 1)
            feats[:, start : start + width] = 0.0
    max_time = min(opts.time_mask_width, int(frames * opts.time_mask_ratio))
    for _ in range(opts.num_time_masks):
        width = draw(max_time + 1)
        if width:
            start = draw(frames - width + 1)
            feats[start : start + width, :] = 0.0
    return feats


def parse_speed_factors(cfg) -> list[float] | None:
    """``speed_perturb``: true -> [0.9, 1.0, 1.1]; a list -> those factors; false/None -> disabled."""
    if cfg is None or cfg is False:
        return None
    if cfg is True:
        return [0.9, 1.0, 1.1]
    if isinstance(cfg, (int, float)):
        return [float(cfg)]
    try:
        factors = [float(f) for f in cfg]
    except (TypeError, ValueError):
        raise XllmError(f"speed_perturb: expected true/false or a list of factors, got {cfg!r}") from None
    if not factors or any(f <= 0 for f in factors):
        raise XllmError(f"speed_perturb: factors must be positive, got {cfg!r}")
    return factors


# ------------------------------------------------------------------- images
def build_image_transform(vision: "VisionEncoderConfig"):
    """PIL image -> (3, H, W) float tensor for the vision encoder (see ``images.py``)."""
    from .images import build_image_transform as build

    return build(vision)
