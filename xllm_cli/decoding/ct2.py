"""CTranslate2 for the experiment's frozen LLM: export, and n-best rescoring as a text-side LM.

CTranslate2 cannot feed input embeddings (soft prompts) into decoder-only models
(CTranslate2 issue #1117), so the X-LLM decoding itself stays in PyTorch. What
CTranslate2 does well here is score token sequences fast on CPU (int8): each
first-pass hypothesis is scored by the LLM as text after the prompt, and the
score is combined with the first-pass score ("shallow fusion" after the fact).
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ..errors import XllmError
from ..fsutil import apply_umask

QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "generation_config.json", "preprocessor_config.json")
EXPORT_INFO = "xllm_export.json"


# ----------------------------------------------------------------------------- locating the LLM


def _read_llm_path(model_dir: Path) -> str | None:
    """``model.llm.path`` of a saved model directory's config.yaml (relative paths resolved against it).

    A broken file is a one-line error naming it (``config/saved.py``).
    """
    from ..config.saved import load_model_config

    llm = getattr(load_model_config(model_dir), "llm", None)  # another model family may have no LLM
    return llm.path if llm is not None else None


def _resolve(path: str, *bases: Path) -> Path | None:
    p = Path(path)
    if p.is_absolute():
        return p if p.is_dir() else None
    for base in (Path.cwd(), *bases):  # cwd first: Kaldi recipes run from egs/<corpus>/
        if (base / p).is_dir():
            return base / p
    return None


def find_llm_dir(exp: str | Path, stage: int | None = None) -> Path:
    """The HF directory of the experiment's frozen LLM.

    Reads ``model.llm.path`` from ``EXP/stage{N}/{averaged|best}/config.yaml`` (the
    highest stage that has one when ``stage`` is None; a relative path is resolved
    against the config's folder by ``config/saved.py``, else against the working
    directory, then the experiment: older experiments); falls back to
    ``EXP/stage0/llm`` (the tiny preset's stage-0 LM).
    """
    from ..experiment import CONFIG, model_dir, stage_dir

    exp = Path(exp)
    if not exp.is_dir():
        raise XllmError(f"{exp}: experiment directory not found")
    stages = [stage] if stage is not None else sorted(
        (int(p.name[5:]) for p in exp.glob("stage*") if p.name[5:].isdigit()), reverse=True)
    for n in stages:
        for sub in ("averaged", "best"):  # not model_dir(): an averaged/ without an LLM path falls back to best/
            cfg = stage_dir(exp, n) / sub / CONFIG
            if cfg.is_file():
                path = _read_llm_path(cfg.parent)
                if path:
                    found = _resolve(path, exp)
                    if found is None:
                        raise XllmError(f"{cfg}: model.llm.path '{path}' is not a directory")
                    return found
    stage0_llm = model_dir(exp, 0)  # EXP/stage0/llm
    if (stage0_llm / "config.json").is_file():
        return stage0_llm
    where = f"stage{stage}" if stage is not None else "any stage"
    raise XllmError(f"{exp}: no LLM found ({where}/{{averaged,best}}/config.yaml with model.llm.path, "
                    f"or stage0/llm); give the HF directory with --llm DIR")


# ----------------------------------------------------------------------------- export


def _converter(model_dir: Path, copy_files: list[str]):
    import ctranslate2

    from ..trust import remote_code_allowed

    class Converter(ctranslate2.converters.TransformersConverter):
        """Loads the tokenizer the way xllm does, so a char-level tokenizer is not replaced by
        the model type's default tokenizer class."""

        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            try:
                from ..models.tokenizer import load_tokenizer
            except ImportError:
                return super().load_tokenizer(tokenizer_class, model_name_or_path, **kwargs)
            return load_tokenizer(model_name_or_path)

    # The converter imports the model with transformers: a folder's own code runs only with
    # --trust-remote-code (xllm_cli.trust), as for every other load.
    return Converter(str(model_dir), copy_files=copy_files, low_cpu_mem_usage=True,
                     trust_remote_code=remote_code_allowed())


def convert_to_ct2(model_dir: str | Path, out_dir: str | Path, quantization: str = "int8",
                   force: bool = False) -> Path:
    """Convert an HF model directory (causal LM or Whisper) to a CTranslate2 directory.

    Writes into a temporary directory beside ``out_dir`` and renames it into place,
    so an interrupted export never leaves a half-written model. The tokenizer and
    preprocessor files are copied along (CTranslate2 itself only needs its vocabulary).
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if quantization not in QUANTIZATIONS:
        raise XllmError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, not '{quantization}'")
    if not (model_dir / "config.json").is_file():
        raise XllmError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    if out_dir.exists() and not force:
        raise XllmError(f"{out_dir}: already exists (use --force to overwrite)")
    copy = [name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _converter(model_dir, copy).convert(str(tmp), quantization=quantization, force=True)
        _fill_whisper_lang_ids(tmp)
        info = {"source": str(model_dir.resolve()), "quantization": quantization}
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        apply_umask(tmp)  # mkdtemp made it 0700: the export should be as readable as any folder the user makes
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (ValueError, OSError)) and not isinstance(e, FileNotFoundError):
            raise XllmError(f"{model_dir}: CTranslate2 conversion failed: {e}") from e
        raise
    return out_dir


def _fill_whisper_lang_ids(ct2_dir: Path) -> None:
    """Give a converted Whisper model its language ids when the converter found none.

    transformers 5 no longer keeps ``lang_to_id`` in the generation config, nor
    ``additional_special_tokens`` on the tokenizer, where the converter looks for
    them; without them ``detect_language`` fails. Whisper's language tokens are the
    ids between ``<|startoftranscript|>`` and ``<|translate|>``.
    """
    cfg_path, vocab_path = ct2_dir / "config.json", ct2_dir / "vocabulary.json"
    if not cfg_path.is_file() or not vocab_path.is_file():
        return
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if "lang_ids" not in cfg or cfg["lang_ids"]:
        return
    ids = {tok: i for i, tok in enumerate(json.loads(vocab_path.read_text(encoding="utf-8")))}
    sot, translate = ids.get("<|startoftranscript|>"), ids.get("<|translate|>")
    if sot is None or translate is None or translate <= sot + 1:
        return
    cfg["lang_ids"] = list(range(sot + 1, translate))
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def export_llm_ct2(llm_dir: str | Path, out_dir: str | Path, quantization: str = "int8", force: bool = False) -> Path:
    """Convert the experiment's frozen LLM (an HF directory) to CTranslate2 (default int8)."""
    return convert_to_ct2(llm_dir, out_dir, quantization=quantization, force=force)


# ----------------------------------------------------------------------------- rescoring


@functools.lru_cache(maxsize=4)
def load_generator(ct2_dir: str, device: str = "cpu", compute_type: str = "int8", threads: int = 0):
    """A cached ``ctranslate2.Generator`` (loading is the slow part)."""
    import ctranslate2

    if not (Path(ct2_dir) / "model.bin").is_file():
        raise XllmError(f"{ct2_dir}: not a CTranslate2 model directory (no model.bin); run: xllm export ct2 EXP")
    if device == "cpu" and compute_type not in ctranslate2.get_supported_compute_types("cpu"):
        compute_type = "int8" if "int8" in ctranslate2.get_supported_compute_types("cpu") else "float32"
    return ctranslate2.Generator(ct2_dir, device=device, compute_type=compute_type, intra_threads=threads)


def _load_tokenizer(tokenizer: Any, ct2_dir: Path):
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from ..models.tokenizer import load_tokenizer

    return load_tokenizer(str(tokenizer if tokenizer is not None else ct2_dir))


def lm_log_probs(ct2_dir: str | Path, tokenizer: Any, prompts: Sequence[str], texts: Sequence[str],
                 device: str = "cpu", compute_type: str = "int8", max_batch_size: int = 64) -> list[float]:
    """Log-probability of each ``text`` (plus end-of-sequence) after its ``prompt`` under the LLM.

    The sequence scored is ``[bos or eos] + prompt + text + [eos]``; only the text and
    end tokens count, so the prompt conditions the score without adding to it.
    """
    ct2_dir = Path(ct2_dir)
    tok = _load_tokenizer(tokenizer, ct2_dir)
    generator = load_generator(str(ct2_dir), device, compute_type)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    batch, offsets = [], []
    for prompt, text in zip(prompts, texts):
        prefix = ([start] if start is not None else []) + tok.encode(prompt, add_special_tokens=False)
        ids = prefix + tok.encode(text, add_special_tokens=False)
        if tok.eos_token_id is not None:
            ids.append(tok.eos_token_id)
        batch.append(tok.convert_ids_to_tokens(ids))
        offsets.append(max(len(prefix) - 1, 0))  # log_probs[k] is the score of token k + 1
    if not batch:
        return []
    results = generator.score_batch(batch, max_batch_size=max_batch_size, max_input_length=0)
    return [float(sum(r.log_probs[off:])) for r, off in zip(results, offsets)]


def score_nbest(ct2_dir: str | Path, tokenizer: Any, prompt_texts: Sequence[str],
                nbest: Sequence[Sequence[tuple[str, float]]], lm_weight: float, device: str = "cpu",
                compute_type: str = "int8") -> list[list[tuple[str, float, float, float]]]:
    """Every hypothesis as ``(text, first_pass, lm_log_prob, combined)``, best first per utterance."""
    if len(prompt_texts) != len(nbest):
        raise ValueError(f"{len(prompt_texts)} prompts for {len(nbest)} n-best lists")
    flat = [(i, text, score) for i, hyps in enumerate(nbest) for text, score in hyps]
    lm = lm_log_probs(ct2_dir, tokenizer, [prompt_texts[i] for i, _, _ in flat], [t for _, t, _ in flat],
                      device=device, compute_type=compute_type)
    out: list[list[tuple[str, float, float, float]]] = [[] for _ in nbest]
    for (i, text, first), lp in zip(flat, lm):
        out[i].append((text, float(first), lp, float(first) + lm_weight * lp))
    for hyps in out:
        hyps.sort(key=lambda h: -h[3])  # stable: ties keep the first-pass order
    return out


def rescore_nbest(ct2_dir: str | Path, tokenizer: Any, prompt_texts: Sequence[str],
                  nbest: Sequence[Sequence[tuple[str, float]]], lm_weight: float, device: str = "cpu",
                  compute_type: str = "int8") -> list[tuple[str, float]]:
    """Re-rank each n-best list by ``first_pass + lm_weight * LM log-prob``; the best ``(text, score)`` each.

    ``tokenizer``: the LLM's tokenizer object, its directory, or None (the one copied
    into ``ct2_dir`` by the export). An empty n-best list gives ``("", -inf)``.
    """
    ranked = score_nbest(ct2_dir, tokenizer, prompt_texts, nbest, lm_weight, device, compute_type)
    return [(h[0][0], h[0][3]) if h else ("", -math.inf) for h in ranked]
