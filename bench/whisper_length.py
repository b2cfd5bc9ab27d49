#!/usr/bin/env python
"""Whisper encoder time per utterance: real length (the default) vs padded to the 30 s window.

A Whisper-small-shaped encoder with random weights (d_model 768, 12 layers, 12 heads, FFN
3072, 80 mels: the speed does not depend on the weights) runs through the speech-encoder
wrapper, ``whisper_pad_to_30s`` false and true, on ``--seconds`` of log-mel frames
(100 frames per second), batch 1, under ``torch.no_grad`` (a frozen encoder). The two
settings are interleaved ``--repeat`` times after one warm-up each; the best time is printed.

    python bench/whisper_length.py [--seconds 5] [--repeat 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xllm_cli.config.schema import SpeechEncoderConfig  # noqa: E402
from xllm_cli.models.speech_encoders import WhisperEncoderWrapper  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import WhisperConfig

    with tempfile.TemporaryDirectory() as tmp:
        WhisperConfig(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072,
                      decoder_layers=1, num_mel_bins=80, max_source_positions=1500).save_pretrained(tmp)
        torch.manual_seed(0)
        encoders = {pad: WhisperEncoderWrapper(SpeechEncoderConfig(type="whisper", path=tmp, whisper_pad_to_30s=pad),
                                               load_weights=False).eval() for pad in (False, True)}
    frames = int(args.seconds * 100)
    feats, lens = torch.randn(1, frames, 80), torch.tensor([frames])
    times: dict[bool, list[float]] = {False: [], True: []}
    shapes = {}
    with torch.no_grad():
        for pad, enc in encoders.items():
            shapes[pad] = tuple(enc(feats, lens)[0].shape)  # warm-up
        for _ in range(args.repeat):
            for pad, enc in encoders.items():
                t0 = time.perf_counter()
                enc(feats, lens)
                times[pad].append(time.perf_counter() - t0)
    print(f"load {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}; "
          f"{args.seconds:g} s input ({frames} frames), Whisper-small-shaped random encoder, batch 1")
    for pad in (False, True):
        label = "padded to 30 s" if pad else "real length"
        print(f"{label:>15}: {min(times[pad]):.3f} s/utt (runs {', '.join(f'{t:.3f}' for t in times[pad])}), "
              f"output {shapes[pad]}")
    print(f"speed-up: {min(times[True]) / min(times[False]):.1f}x")


if __name__ == "__main__":
    main()
