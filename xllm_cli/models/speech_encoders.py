"""Speech encoders behind one interface: ``(feats (B,T,D), lens (B,)) -> (hidden (B,T',H), lens')``.

:data:`ENCODERS` is the one registry of encoder types: each declares how it is
built and which features feed it (a kind of :data:`xllm_cli.data.features.FEATURE_EXTRACTORS`),
so that the feature pipeline and the model can never disagree about a type.
Adding an encoder (docs/extending.md)::

    @register_encoder("my_encoder", features="fbank")
    class MyEncoder(nn.Module):
        pretrained = False  # True when weights come from ``cfg.path``
        def __init__(self, cfg: SpeechEncoderConfig, load_weights: bool = True): ...
        def forward(self, feats, lens): ...  # -> (hidden, lens'); set self.output_dim

- ``conformer``: built-in, trained from scratch: Conv2d subsampling (x4/x6/x8) then
  ``torchaudio.models.Conformer``. Features: fbank + CMVN.
- ``whisper``: the encoder of a Whisper checkpoint (local dir or hub id). Features: log-mel,
  unpadded (frames, n_mels). By default the encoder runs on the batch's real length with its
  positional embeddings sliced (as WeNet and icefall do): a 5 s utterance costs a sixth of
  the 30 s window. ``whisper_pad_to_30s: true`` pads to Whisper's fixed window instead (what
  it was pre-trained on) and trims the output to the true length.
- ``hubert`` / ``wav2vec2``: transformers AutoModel. Features: raw waveform (samples, 1).

Every encoder exposes ``output_dim`` and ``pretrained`` (weights came from a path, so
save_model references them instead of copying).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from xllm_cli.config.schema import SpeechEncoderConfig
from xllm_cli.errors import XllmError
from xllm_cli.models.cif import lengths_to_mask


@dataclass(frozen=True)
class EncoderSpec:
    """What one encoder type needs: its builder and the kind of features it reads."""

    build: Callable[[SpeechEncoderConfig, bool], nn.Module]  # (model.speech_encoder, load_weights) -> module
    features: str  # "fbank" | "whisper" | "waveform" (xllm_cli.data.features.FEATURE_EXTRACTORS)


ENCODERS: dict[str, EncoderSpec] = {}
DEFAULT_ENCODER = "conformer"


def register_encoder(*names: str, features: str):
    """Class decorator: register ``cls(cfg, load_weights)`` under each of ``names``."""

    def add(build):
        for name in names:
            ENCODERS[name.lower()] = EncoderSpec(build=build, features=features)
        return build

    return add


def encoder_spec(encoder_cfg: SpeechEncoderConfig | dict | None) -> EncoderSpec:
    """The registry entry for ``model.speech_encoder`` (its ``type``, default conformer).

    Takes the typed section, or the plain mapping the feature pipeline still passes.
    """
    if isinstance(encoder_cfg, SpeechEncoderConfig):
        kind = encoder_cfg.type.lower()
    else:
        kind = str((encoder_cfg or {}).get("type", DEFAULT_ENCODER)).lower()
    if kind not in ENCODERS:
        known = ", ".join(sorted(ENCODERS))
        raise XllmError(f"model.speech_encoder.type '{kind}': unknown encoder type (registered: {known})")
    return ENCODERS[kind]


def sinusoidal_positions(length: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(length, dim) sinusoidal position table (Vaswani et al.)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe.to(dtype)


class Conv2dSubsampling(nn.Module):
    """Conv2d front end reducing the frame rate by 4, 6 or 8 (WeNet/ESPnet style, no padding)."""

    _LAYERS = {4: [(3, 2), (3, 2)], 6: [(3, 2), (5, 3)], 8: [(3, 2), (3, 2), (3, 2)]}

    def __init__(self, input_dim: int, d_model: int, factor: int = 4, channels: int | None = None):
        super().__init__()
        channels = channels or d_model
        if factor not in self._LAYERS:
            raise XllmError(f"speech_encoder.subsampling must be 4, 6 or 8, not {factor}")
        self.kernels = self._LAYERS[factor]
        layers: list[nn.Module] = []
        ch_in, freq = 1, input_dim
        for k, s in self.kernels:
            layers += [nn.Conv2d(ch_in, channels, k, s), nn.ReLU()]
            ch_in = channels
            freq = (freq - k) // s + 1
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(channels * freq, d_model)

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        """Frames after subsampling."""
        for k, s in self.kernels:
            lens = torch.div(lens - k, s, rounding_mode="floor") + 1
        return lens.clamp(min=0)

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,T,D), (B,) -> (B,T',d_model), (B,)."""
        x = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        return x, self.output_lengths(lens)


@register_encoder("conformer", features="fbank")
class ConformerEncoder(nn.Module):
    """Conv2d subsampling + sinusoidal positions + torchaudio Conformer.

    torchaudio's convolution module does not mask padding, so padded frames would leak into
    valid ones through the depthwise conv (results would depend on the batch). A forward
    pre-hook zeroes padded frames at the input of every depthwise conv.
    """

    pretrained = False

    def __init__(self, cfg: SpeechEncoderConfig, load_weights: bool = True):  # trained from scratch: no weights
        super().__init__()
        from torchaudio.models import Conformer

        d = cfg.d_model
        self.output_dim = d
        self.subsampling = Conv2dSubsampling(cfg.input_dim, d, cfg.subsampling, cfg.subsampling_channels)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conformer = Conformer(
            input_dim=d,
            num_heads=cfg.num_heads,
            ffn_dim=cfg.ffn_dim or 4 * d,
            num_layers=cfg.num_layers,
            depthwise_conv_kernel_size=cfg.conv_kernel,
            dropout=cfg.dropout,
        )
        self._conv_mask: torch.Tensor | None = None
        for layer in self.conformer.conformer_layers:
            layer.conv_module.sequential[2].register_forward_pre_hook(self._mask_hook)

    def _mask_hook(self, module, args):
        if self._conv_mask is None:
            return None
        return (args[0] * self._conv_mask,)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,T,D) fbank, (B,) -> (B,T',d_model), (B,)."""
        feats = feats.masked_fill(~lengths_to_mask(lens, feats.shape[1])[..., None], 0.0)
        x, out_lens = self.subsampling(feats, lens)
        x = x * math.sqrt(self.output_dim) + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        x = self.dropout(x)
        out_lens = out_lens.clamp(min=1, max=x.shape[1])
        self._conv_mask = lengths_to_mask(out_lens, x.shape[1]).to(x.dtype)[:, None, :]
        try:
            x, out_lens = self.conformer(x, out_lens)
        finally:
            self._conv_mask = None
        return x, out_lens


@register_encoder("whisper", features="whisper")
class WhisperEncoderWrapper(nn.Module):
    """Whisper's encoder on the real length (default), or padded to the 30 s window; outputs trimmed."""

    pretrained = True

    def __init__(self, cfg: SpeechEncoderConfig, load_weights: bool = True):
        super().__init__()
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        from xllm_cli.models.loading import load_prefixed_state_dict, resolve_pretrained

        path = cfg.path
        if not path:
            raise XllmError("speech_encoder.path is required for type whisper")
        model_dir = resolve_pretrained(str(path), ["*.json", "*.safetensors", "*.txt"])
        config = WhisperConfig.from_pretrained(str(model_dir))
        self.encoder = WhisperEncoder(config)
        if load_weights:
            sd = load_prefixed_state_dict(model_dir, ["model.encoder.", "encoder."])
            if not sd:
                raise XllmError(f"{model_dir}: no Whisper encoder weights found")
            missing, _ = self.encoder.load_state_dict(sd, strict=False)
            missing = [m for m in missing if not m.startswith("embed_positions")]
            if missing:
                raise XllmError(f"{model_dir}: Whisper encoder weights missing: {missing[:3]}")
        self.output_dim = config.d_model
        self.num_mel_bins = config.num_mel_bins
        self.window = config.max_source_positions * 2  # mel frames the encoder expects (3000)
        self.pad_to_30s = cfg.whisper_pad_to_30s

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,T,n_mels) log-mel, (B,) -> (B,ceil(T/2),d_model) trimmed, (B,)."""
        B, T, D = feats.shape
        if D != self.num_mel_bins:
            raise XllmError(f"whisper encoder expects {self.num_mel_bins} mel bins, features have {D}")
        if T > self.window:
            raise XllmError(f"whisper encoder takes at most {self.window} frames (30 s), got {T}: segment the audio")
        out_lens = (lens - 1) // 2 + 1
        t_out = int(out_lens.max().item())
        if not self.pad_to_30s:
            return self._real_length(feats, lens, out_lens)[:, :t_out], out_lens
        mask = lengths_to_mask(lens, T)
        # Whisper's own padding is log-mel of silence: the per-utterance floor of the features.
        floor = feats.masked_fill(~mask[..., None], float("inf")).amin(dim=(1, 2), keepdim=True)
        floor = torch.where(torch.isfinite(floor), floor, torch.zeros_like(floor))
        x = feats.masked_fill(~mask[..., None], 0.0) + floor * (~mask[..., None]).to(feats.dtype)
        x = torch.cat([x, floor.expand(B, self.window - T, D)], dim=1) if T < self.window else x
        dtype = self.encoder.conv1.weight.dtype
        hidden = self.encoder(input_features=x.transpose(1, 2).to(dtype)).last_hidden_state
        return hidden[:, :t_out], out_lens

    def _real_length(self, feats: torch.Tensor, lens: torch.Tensor, out_lens: torch.Tensor) -> torch.Tensor:
        """Whisper's encoder forward on the batch's own length, positions sliced (WeNet/icefall).

        transformers' ``WhisperEncoder.forward`` insists on 3000 frames, so its steps run here.
        Padding frames are zeroed before each conv (as a lone utterance's conv padding would be)
        and masked out of self-attention, so an utterance's output does not depend on its batch.
        """
        enc = self.encoder
        dtype = enc.conv1.weight.dtype
        in_mask = lengths_to_mask(lens, feats.shape[1])[:, None, :]
        x = feats.transpose(1, 2).to(dtype) * in_mask.to(dtype)
        x = nn.functional.gelu(enc.conv1(x)) * in_mask.to(dtype)
        x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)  # (B, T', d)
        x = x + enc.embed_positions.weight[: x.shape[1]].to(x.dtype)
        x = nn.functional.dropout(x, p=enc.dropout, training=enc.training)
        keep = lengths_to_mask(out_lens, x.shape[1])
        attn = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, torch.finfo(x.dtype).min)
        attn = attn[:, None, None, :]  # (B, 1, 1, T') additive, broadcast over queries
        for layer in enc.layers:
            x = layer(x, attn)
            x = x[0] if isinstance(x, tuple) else x
        return enc.layer_norm(x)


@register_encoder("hubert", "wav2vec2", features="waveform")
class SSLEncoderWrapper(nn.Module):
    """HuBERT / wav2vec2 (transformers AutoModel) on raw waveforms (B, samples, 1)."""

    pretrained = True

    def __init__(self, cfg: SpeechEncoderConfig, load_weights: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        from xllm_cli.models.loading import resolve_pretrained

        path = cfg.path
        if not path:
            raise XllmError(f"speech_encoder.path is required for type {cfg.type}")
        model_dir = resolve_pretrained(str(path), ["*.json", "*.safetensors", "*.bin", "*.txt"])
        if load_weights:
            self.model = AutoModel.from_pretrained(str(model_dir))
        else:
            self.model = AutoModel.from_config(AutoConfig.from_pretrained(str(model_dir)))
        self.freeze_frontend()
        self.output_dim = self.model.config.hidden_size
        # group-norm feature extractors (base models) must not get an attention mask (HF docs)
        self.use_mask = getattr(self.model.config, "feat_extract_norm", "layer") == "layer"

    def freeze_frontend(self) -> None:
        """Keep the CNN feature encoder frozen (also when the transformer is fine-tuned), as HF recipes do."""
        fe = getattr(self.model, "feature_extractor", None)
        if fe is not None:
            for p in fe.parameters():
                p.requires_grad_(False)
            if hasattr(fe, "_requires_grad"):
                fe._requires_grad = False

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,S,1) waveform, (B,) samples -> (B,T',H), (B,) frames."""
        wave = feats[..., 0] if feats.dim() == 3 else feats
        mask = lengths_to_mask(lens, wave.shape[1])
        wave = wave.masked_fill(~mask, 0.0)
        kwargs = {"attention_mask": mask.long()} if self.use_mask else {}
        dtype = next(self.model.parameters()).dtype
        hidden = self.model(input_values=wave.to(dtype), **kwargs).last_hidden_state
        out_lens = self.model._get_feat_extract_output_lengths(lens).long().clamp(max=hidden.shape[1])
        return hidden, out_lens


def build_speech_encoder(cfg: SpeechEncoderConfig | dict, load_weights: bool = True) -> nn.Module:
    """Speech encoder from the ``model.speech_encoder`` section (see :data:`ENCODERS`).

    A plain mapping is checked against the schema first (unknown keys are errors).
    """
    from xllm_cli.config.typed import parse

    spec = encoder_spec(cfg)
    return spec.build(parse(SpeechEncoderConfig, cfg, "model.speech_encoder"), load_weights)
