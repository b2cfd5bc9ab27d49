"""docs/config.md, generated from the schema so that the reference cannot drift.

Each key's line comes from its dataclass field: the dotted key, the type in words, the
default, and the field's trailing ``# comment`` in schema.py. Regenerate with
``python -m xllm_cli.config.reference > docs/config.md``; a test compares the file
with this output.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from . import schema
from .typed import describe_type

_FIELD_LINE = re.compile(r"^\s+(\w+): [^=#]+?(?:= .*?)?(?:\s+#\s*(.*))?$")

# Sections in the order a recipe lists them: (dotted prefix, dataclass).
SECTIONS = [
    ("", schema.Recipe),
    ("model", schema.ModelConfig),
    ("model.llm", schema.LLMConfig),
    ("model.llm_init", schema.LLMInitConfig),
    ("model.speech_encoder", schema.SpeechEncoderConfig),
    ("model.cformer", schema.CFormerConfig),
    ("model.speech_adapter / image_adapter / video_adapter", schema.AdapterConfig),
    ("model.vision_encoder", schema.VisionEncoderConfig),
    ("model.vision_encoder.init", schema.VisionInitConfig),
    ("model.qformer", schema.QFormerConfig),
    ("model.itc", schema.ITCConfig),
    ("features", schema.FeaturesConfig),
    ("data", schema.DataConfig),
    ("data.batch (and stageN.batch)", schema.BatchConfig),
    ("data.batch.spec_augment", schema.SpecAugmentConfig),
    ("stageN (N = 0..3)", schema.StageConfig),
    ("stageN.data", schema.StageData),
    ("stageN.data.speech / image / video", schema.SplitData),
]


def _comments(cls) -> dict[str, str]:
    """Field name -> its trailing comment, for ``cls`` and its dataclass bases."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        for line in inspect.getsource(klass).splitlines():
            m = _FIELD_LINE.match(line)
            if m and m.group(2):
                out[m.group(1)] = m.group(2).strip()
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(section)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _section(prefix: str, cls) -> list[str]:
    hints = typing.get_type_hints(cls)
    comments = _comments(cls)
    doc = (inspect.getdoc(cls) or "").splitlines()[0]
    lines = [f"## `{prefix}`" if prefix else "## top level", "", doc, "", "| key | type | default | meaning |",
             "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        kind = "see below" if f.name == "model" and cls is schema.Recipe else describe_type(hints[f.name])
        meaning = comments.get(f.name, "").replace("|", "\\|")
        lines.append(f"| `{f.name}` | {kind} | `{_default(f)}` | {meaning} |")
    return lines + [""]


def render() -> str:
    """The whole reference as markdown."""
    out = [
        "# Recipe and config reference",
        "",
        "Generated from `xllm_cli/config/schema.py` by `python -m xllm_cli.config.reference`; do not edit by hand.",
        "Every recipe (`recipes/*.yaml`, `egs/*/conf/*.yaml`) and every saved `EXP/stageN/config.yaml` is",
        "parsed against these sections. A key that is not listed, or a value of the wrong type, is refused",
        "before any work starts, with the key's dotted path (`stage1.epochs: expected an integer, got 'one'`).",
        "`--set a.b=value` overrides are checked the same way. `include: [file.yaml]` merges other files",
        "first (paths relative to the including file; the including file wins).",
        "",
    ]
    for prefix, cls in SECTIONS:
        out += _section(prefix, cls)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
