"""The Whisper baseline options of ``xllm decode`` and ``xllm transcribe`` (faster-whisper's), defined once."""

from __future__ import annotations

from typing import Optional

import typer


def whisper_option(command: str):
    where = "decode_<set>_whisper_beamN under --exp, or exp/whisper_<name>" if command == "decode" else "no --exp needed"
    return typer.Option(
        None, "--whisper",
        help=f"Use this CTranslate2 Whisper model directory (what faster-whisper loads: model.bin, "
             f"tokenizer.json, vocabulary) instead of a trained experiment ({where}).",
    )


def language_option():
    return typer.Option(None, "--language", help="With --whisper: language code (en, zh, ...); default: detected "
                                                   "from the first 30 s, as faster-whisper does.")


def task_option():
    return typer.Option("transcribe", "--task", help="With --whisper: transcribe, or translate (into English).")


def initial_prompt_option() -> Optional[str]:
    return typer.Option(None, "--initial-prompt",
                        help="With --whisper: text given as previous context (names, spelling, style).")


def temperature_option() -> Optional[str]:
    return typer.Option(
        None, "--temperature",
        help="With --whisper: temperatures tried in turn when a window's output is too repetitive or unlikely "
             "(default 0,0.2,0.4,0.6,0.8,1.0; 0 = greedy/beam only).",
    )


def t2s_option():
    return typer.Option(False, "--t2s", help="With --whisper: write Chinese in Simplified characters (OpenCC t2s); "
                                              "Whisper writes Traditional, AISHELL references are Simplified.")


def channel_option():
    return typer.Option("mix", "--channel", help="Stereo audio: mix (mean of the channels), left or right.")
