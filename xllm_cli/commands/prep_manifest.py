"""``xllm prep manifest``: a multimodal manifest (JSON, JSON Lines, TSV) into a data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def add_to(prep_app: typer.Typer) -> None:
    prep_app.command("manifest")(manifest)


def manifest(
    manifest_file: Path = typer.Argument(..., metavar="MANIFEST", help="JSON list, JSON Lines or TSV (header row) of utterances."),
    data: Path = typer.Argument(..., metavar="DATA", help="Output data directory (e.g. data/train)."),
    root: Optional[Path] = typer.Option(None, help="Folder that relative media paths start from (default: the manifest's folder)."),
    prompt: Optional[str] = typer.Option(None, help="Prompt for records without one (written to DATA/prompt)."),
    check_files: bool = typer.Option(True, "--check-files/--no-check-files", help="Require every audio/image/video file to exist."),
) -> None:
    """Prepare a VSDial-CN / X-LLM style multimodal manifest.

    Each record needs audio (``audio``/``speech``/``wav``) and a transcript
    (``text``/``transcript``/``asr``); ``image``, ``video``, ``prompt``, ``speaker``
    and ``id`` are optional. Writes wav.scp, text, utt2spk, spk2utt, image.scp,
    video.scp and prompt as present.

    Example: xllm prep manifest vsdial/train.json data/train --root vsdial
    """
    from ..console import console
    from ..corpora.manifest import prepare_manifest

    count = prepare_manifest(manifest_file, data, root=root, default_prompt=prompt, check_files=check_files)
    console.print(f"{data}: {count} utterances from {manifest_file}")
