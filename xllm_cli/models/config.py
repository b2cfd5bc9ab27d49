"""X-LLM's default instructions (``model.prompts`` is merged over them).

The ``model:`` section itself is typed in :mod:`xllm_cli.config.schema` and saved/read by
:mod:`xllm_cli.config.saved`."""

from __future__ import annotations

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
