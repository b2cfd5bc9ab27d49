"""Multimodal manifests (VSDial-CN / X-LLM style) into Kaldi data directories.

A manifest lists one utterance per record with speech, an optional image or
video, a transcript and an optional prompt. Accepted containers:

* JSON: a list of objects, or ``{"data": [...]}`` / ``{"annotations": [...]}``
* JSON Lines: one object per line
* TSV with a header row naming the columns

Field names are matched case-insensitively against common spellings
(``audio``/``speech``/``wav``, ``text``/``transcript``/``asr``, ...). Relative
media paths resolve against ``root`` (default: the manifest's folder).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import XllmError, at, require_file

FIELDS = {
    "utt_id": ("utt_id", "id", "uttid", "key", "utt"),
    "audio": ("audio", "speech", "wav", "audio_path", "speech_path", "wav_path", "audio_filepath"),
    "image": ("image", "img", "image_path", "picture"),
    "video": ("video", "video_path"),
    "text": ("text", "transcript", "transcription", "asr", "sentence", "caption"),
    "prompt": ("prompt", "instruction", "question"),
    "speaker": ("speaker", "spk", "spk_id", "speaker_id"),
}


@dataclass
class ManifestRecord:
    line: int
    fields: dict[str, str]


def _normalise_keys(obj: dict, path: Path | None = None, line: int | None = None) -> dict[str, str]:
    """The record's fields under their canonical names, as strings.

    A list or object (or, for the transcript, anything but a string) is an error
    naming the file and line: ``str()`` would write its Python repr as the text.
    Numbers are fine for ids and speakers.
    """
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    out = {}
    for name, spellings in FIELDS.items():
        for spelling in spellings:
            value = lowered.get(spelling)
            if value in (None, ""):
                continue
            if isinstance(value, (list, dict)) or (name in ("text", "prompt") and not isinstance(value, str)):
                raise at(path or "manifest", line, f"'{spelling}' must be a string, not a JSON {_json_kind(value)}")
            out[name] = str(value).strip()
            break
    return out


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {list: "array", dict: "object", int: "number", float: "number"}.get(type(value), type(value).__name__)


def read_manifest(path: str | Path) -> Iterator[ManifestRecord]:
    """Yield records of a JSON, JSON Lines or TSV manifest with line numbers for errors."""
    path = require_file(path, "manifest")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise at(path, None, f"not valid UTF-8 (byte {e.start})") from None
    stripped = text.lstrip()
    if path.suffix.lower() in (".tsv", ".txt", ".csv") and not stripped.startswith(("{", "[")):
        delimiter = "," if path.suffix.lower() == ".csv" else "\t"
        reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
        if not reader.fieldnames:
            raise at(path, 1, "missing header row")
        for number, row in enumerate(reader, start=2):
            yield ManifestRecord(number, _normalise_keys(row, path, number))
        return
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise at(path, e.lineno, f"invalid JSON: {e.msg}") from None
        yield from _json_records(path, records)
        return
    if stripped.startswith("{") and not _looks_like_jsonl(path, text):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as e:
            raise at(path, e.lineno, f"invalid JSON: {e.msg}") from None
        records = next((document[k] for k in ("data", "annotations", "utterances") if k in document), None)
        if not isinstance(records, list):
            raise at(path, None, "JSON object without a 'data', 'annotations' or 'utterances' list")
        yield from _json_records(path, records)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise at(path, number, f"invalid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise at(path, number, "record is not a JSON object")
        yield ManifestRecord(number, _normalise_keys(obj, path, number))


def _json_records(path: Path, records: list) -> Iterator[ManifestRecord]:
    """Records of a JSON list, numbered from 1 (JSON gives no line numbers)."""
    for number, obj in enumerate(records, start=1):
        if not isinstance(obj, dict):
            raise at(path, None, f"record {number} is not a JSON object")
        try:
            fields = _normalise_keys(obj, path, None)
        except XllmError as e:  # JSON gives no line numbers: name the record instead
            raise XllmError(f"{e} (record {number})") from None
        yield ManifestRecord(number, fields)


def _looks_like_jsonl(path: Path, text: str) -> bool:
    """JSON Lines rather than one JSON document: by the name (``.jsonl``, also with
    one record), else by a first line that is a whole JSON value of its own."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return True
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return False
    try:
        json.loads(lines[0])
        return True
    except json.JSONDecodeError:
        return False


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "utt"


def prepare_manifest(manifest: str | Path, out_dir: str | Path, root: str | Path | None = None,
                     default_prompt: str | None = None, check_files: bool = True) -> int:
    """Write a Kaldi data directory from a manifest; returns the number of utterances.

    Utterance ids come from the manifest's id field, else the audio file's stem;
    the speaker (when given) is prefixed so that it is a prefix of the utterance
    id, as Kaldi requires.
    """
    from ..data.datadir import Utterance, write_datadir

    manifest = Path(manifest)
    base = Path(root) if root is not None else manifest.parent
    utterances: dict[str, Utterance] = {}
    for record in read_manifest(manifest):
        f = record.fields
        if "audio" not in f:
            raise at(manifest, record.line, "record has no audio/speech path")
        if "text" not in f:
            raise at(manifest, record.line, "record has no transcript (text)")
        audio = _resolve(base, f["audio"], manifest, record.line, check_files)
        image = _resolve(base, f["image"], manifest, record.line, check_files) if "image" in f else None
        video = _resolve(base, f["video"], manifest, record.line, check_files) if "video" in f else None
        utt = _safe_id(f.get("utt_id") or Path(f["audio"]).stem)
        spk = _safe_id(f["speaker"]) if "speaker" in f else utt
        if not utt.startswith(spk):
            utt = f"{spk}-{utt}"
        if utt in utterances:
            raise at(manifest, record.line, f"duplicate utterance id '{utt}'")
        text = " ".join(f["text"].split())
        utterances[utt] = Utterance(
            utt_id=utt, spk=spk, recording=utt, path=str(audio), text=text,
            image=str(image) if image else None, video=str(video) if video else None,
            prompt=f.get("prompt") or default_prompt,
        )
    if not utterances:
        raise XllmError(f"{manifest}: no records")
    write_datadir(out_dir, utterances.values())
    return len(utterances)


def _resolve(base: Path, value: str, manifest: Path, line: int, check: bool) -> Path:
    path = Path(value)
    if not path.is_absolute():
        path = base / path
    path = path.resolve()
    if check and not path.is_file():
        raise at(manifest, line, f"file not found: {path}")
    return path
