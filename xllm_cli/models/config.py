"""Model-config helpers: default prompts, reading a preset's ``model:`` section."""

from __future__ import annotations

from pathlib import Path

# X-LLM's own instructions (ASR, multimodal ASR); the others follow the same style.
DEFAULT_PROMPTS = {
    "asr": "请忠实地识别该语音",
    "image_asr": "根据图片请忠实地识别该语音",
    "video_asr": "根据视频请忠实地识别该语音",
    "caption": "请描述这张图片",
    "video_caption": "请描述这段视频",
}


def default_prompt(prompts: dict, speech: bool, image: bool, video: bool) -> str:
    """The instruction for an utterance given the modalities it brings."""
    if speech:
        return prompts["image_asr"] if image else prompts["video_asr"] if video else prompts["asr"]
    return prompts["caption"] if image else prompts["video_caption"]


def load_model_config(path: str | Path) -> dict:
    """The ``model:`` section of a YAML file (a preset, a recipe, or a saved model's config.yaml)."""
    import yaml

    from xllm_cli.errors import XllmError

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise XllmError(f"{path}: no 'model:' section")
    return data["model"]
