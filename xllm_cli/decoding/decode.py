"""The decode job: an experiment's model over a data directory, into a decode directory.

``run_decode`` is what ``xllm decode`` calls. It

1. finds the stage's model (``stage_model_dir``) and names the decode directory
   ``EXP/decode_<set>_<tag>`` (DESIGN §4);
2. decodes the utterances in batches sorted by length (longest first, so that a
   batch that does not fit in memory fails at once and padding stays small),
   with the LLM (greedy or beam search from the soft prompts, left-padded, KV
   cache, bf16 on GPU), the C-Former's non-autoregressive classifier
   (``--mode nar``) or a CTranslate2 Whisper baseline (``--whisper``);
3. appends each finished batch to ``hyp.partial.jsonl`` so that a killed job
   resumes where it stopped, and writes ``hyp`` atomically at the end (a job is
   finished when its ``hyp`` exists and ``fingerprint.json`` names the same
   model file and search options: a rerun then only scores);
   each utterance's generation is bounded by its own duration (``token_limits``),
   so greedy hypotheses do not depend on the batch size;
4. with ``--nj N`` runs N such jobs on ``DATA/split{N}/k`` (see ``parallel.py``)
   and merges them;
5. writes ``ref``, ``hyp.trn``/``ref.trn``, ``per_utt`` and ``result.txt``
   through the scoring module when the data has a ``text`` file, prints the
   result lines with ``--wer``, and the real-time factor.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence

from ..console import log, progress_bar, setup_logging
from ..errors import XllmError
from ..fsutil import atomic_write, atomic_write_text
from ..data.tables import c_sort_key

MODES = ("llm", "nar")
PARTIAL = "hyp.partial.jsonl"  # one JSON line per decoded utterance, appended per batch
TIMING = "timing.json"  # decode seconds, audio seconds, utterances of the last run
NBEST = "nbest.jsonl"  # {"utt": id, "nbest": [[text, score], ...]} per utterance
DEFAULT_BATCH_SIZE = 16

NBest = list[tuple[str, float]]


# ----------------------------------------------------------------------------- options


@dataclass
class DecodeOptions:
    exp: Path
    data: Path
    stage: Optional[int] = None  # None: the latest trained stage (llm) or 1 (nar)
    mode: str = "llm"
    beam: int = 1
    nbest: int = 1
    batch_size: Optional[int] = None
    max_batch_seconds: Optional[float] = None
    max_new_tokens: Optional[int] = None  # None: bounded by the input length
    nj: int = 1
    use_image: bool = True
    use_video: bool = True
    device: str = "cpu"
    tag: Optional[str] = None
    wer: bool = False
    rescore: Optional[str] = None  # "ct2"
    lm_weight: float = 0.5
    whisper: Optional[Path] = None
    part: Optional[tuple[int, int]] = None  # (k, N): this process decodes DATA/split{N}/k
    threads: Optional[int] = None  # torch threads in this process

    def validate(self) -> None:
        if self.mode not in MODES:
            raise XllmError(f"--mode must be one of {', '.join(MODES)}, not '{self.mode}'")
        if self.beam < 1:
            raise XllmError(f"--beam must be at least 1, not {self.beam}")
        if self.nbest < 1:
            raise XllmError(f"--nbest must be at least 1, not {self.nbest}")
        if self.nbest > self.beam:
            raise XllmError(f"--nbest {self.nbest} needs --beam of at least {self.nbest} (n-best lists come from beam search)")
        if self.batch_size is not None and self.max_batch_seconds is not None:
            raise XllmError("give either --batch-size or --max-batch-seconds, not both")
        if self.batch_size is not None and self.batch_size < 1:
            raise XllmError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.max_batch_seconds is not None and not self.max_batch_seconds > 0:
            raise XllmError(f"--max-batch-seconds must be positive, not {self.max_batch_seconds}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise XllmError(f"--max-new-tokens must be at least 1, not {self.max_new_tokens}")
        if self.nj < 1:
            raise XllmError(f"--nj must be at least 1, not {self.nj}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise XllmError(f"--device must be cpu or cuda, not '{self.device}'")
        if self.rescore not in (None, "ct2"):
            raise XllmError(f"--rescore supports only 'ct2', not '{self.rescore}'")
        if self.rescore and self.mode != "llm":
            raise XllmError("--rescore needs --mode llm (it rescores the LLM's n-best lists)")
        if self.rescore and self.nbest < 2:
            raise XllmError("--rescore ct2 needs an n-best list: give --beam N --nbest N with N >= 2")
        if self.whisper is not None and (self.mode != "llm" or self.rescore):
            raise XllmError("--whisper runs the Whisper baseline alone: drop --mode/--rescore")
        if self.tag is not None and (not self.tag or "/" in self.tag or self.tag.startswith(".")):
            raise XllmError(f"--tag must be a plain name, not '{self.tag}'")


def parse_part(text: str) -> tuple[int, int]:
    """``"k/N"`` -> (k, N) with 1 <= k <= N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise XllmError(f"--part must look like k/N (e.g. 2/4), not '{text}'") from None
    if not 1 <= k <= n:
        raise XllmError(f"--part {text}: need 1 <= k <= N")
    return k, n


def set_name(data: Path) -> str:
    """The set's name is the data directory's basename (``data/test`` -> ``test``)."""
    return Path(os.path.abspath(data)).name


def resolve_stage(opts: DecodeOptions) -> int:
    """The stage whose model decodes: as given, else the latest trained one (llm) or 1 (nar)."""
    if opts.stage is not None:
        if opts.stage not in (1, 2, 3):
            raise XllmError(f"--stage must be 1, 2 or 3 (a stage with a model), not {opts.stage}")
        if opts.mode == "llm" and opts.stage == 1:
            raise XllmError("the stage-1 model has no trained LLM adapter: use --mode nar with --stage 1, or --stage 2/3")
        return opts.stage
    if opts.mode == "nar":
        return 1
    from ..training.checkpoint import stage_model_dir

    for stage in (3, 2):
        if (stage_model_dir(opts.exp, stage) / "config.yaml").is_file():
            return stage
    raise XllmError(f"{opts.exp}: no trained stage 2 or 3 model to decode with (train one, or give --stage / --mode nar)")


def decode_tag(opts: DecodeOptions, stage: int | None) -> str:
    """``stage3_llm_beam1`` / ``stage1_nar`` / ``whisper``, plus ``_noimage``, ``_ct2rescore_lmW``."""
    if opts.tag:
        return opts.tag
    if opts.whisper is not None:
        return "whisper"
    tag = f"stage{stage}_{opts.mode}"
    if opts.mode == "llm":
        tag += f"_beam{opts.beam}"
    if not opts.use_image:
        tag += "_noimage"
    if not opts.use_video:
        tag += "_novideo"
    if opts.rescore:
        tag += f"_{opts.rescore}rescore_lm{opts.lm_weight:g}"
    return tag


def decode_dir_for(opts: DecodeOptions, stage: int | None) -> Path:
    return Path(opts.exp) / f"decode_{set_name(opts.data)}_{decode_tag(opts, stage)}"


# ----------------------------------------------------------------------------- batches


def make_batches(
    utts: Sequence[Any], batch_size: int | None, max_batch_seconds: float | None, duration: Callable[[Any], float]
) -> list[list[Any]]:
    """Groups of utterances sorted by duration, longest first.

    ``max_batch_seconds`` bounds the padded size (batch length x longest
    utterance), which is what memory follows; a single longer utterance still
    gets a batch of its own.
    """
    ordered = sorted(utts, key=lambda u: (-duration(u), c_sort_key(u.utt_id)))
    if max_batch_seconds is None:
        size = batch_size or DEFAULT_BATCH_SIZE
        return [list(ordered[i : i + size]) for i in range(0, len(ordered), size)]
    batches: list[list[Any]] = []
    current: list[Any] = []
    for u in ordered:
        longest = duration(current[0]) if current else duration(u)
        if current and (len(current) + 1) * longest > max_batch_seconds:
            batches.append(current)
            current = []
        current.append(u)
    if current:
        batches.append(current)
    return batches


class Decoder(Protocol):
    """What the decode loop needs from a system (X-LLM, NAR, Whisper)."""

    def batches(self, utts: list[Any]) -> Iterator[Any]:
        """Batches with ``.utt_ids`` and ``.durations`` in decoding order."""

    def decode(self, batch: Any) -> list[NBest]:
        """An n-best list per utterance of the batch, best first."""


# ----------------------------------------------------------------------------- partial results


def read_partial(path: Path) -> dict[str, dict]:
    """Utterances already decoded by a killed run; a torn last line is ignored."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            done[record["utt"]] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return done


def _append_partial(f, batch: Any, results: list[NBest], durations: list[float]) -> None:
    for utt, nbest, dur in zip(batch.utt_ids, results, durations):
        f.write(json.dumps({"utt": utt, "nbest": [[t, s] for t, s in nbest], "dur": dur}, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


# ----------------------------------------------------------------------------- one job


@dataclass
class PartResult:
    out_dir: Path
    utterances: int
    decoded_now: int  # utterances decoded by this run (the rest came from a resumed partial file)
    decode_seconds: float
    audio_seconds: float


def _durations_of(batch: Any) -> list[float]:
    durations = getattr(batch, "durations", None)
    return [float(d or 0.0) for d in durations] if durations is not None else [0.0] * len(batch.utt_ids)


def decode_utterances(
    decoder_factory: Callable[[], Decoder],
    utts: list[Any],
    out_dir: Path,
    show_progress: bool = True,
    description: str = "decode",
    fingerprint: dict | None = None,
) -> PartResult:
    """Decode ``utts`` into ``out_dir`` (``hyp``, ``nbest.jsonl``, ``timing.json``), resuming a partial run.

    The decoder is built only when something is left to decode, so a rerun of a
    finished-but-unmerged job costs nothing. Partial results of another model or
    other options (``fingerprint``) are discarded.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    partial_path = out_dir / PARTIAL
    wanted = {u.utt_id for u in utts}
    if fingerprint is not None and not fingerprint_matches(out_dir, fingerprint):
        if partial_path.is_file():
            log.info(f"{partial_path}: from another model or other options: decoding from the start")
            partial_path.unlink()
        (out_dir / "hyp").unlink(missing_ok=True)  # never leave a stale "finished" marker
        atomic_write_text(out_dir / FINGERPRINT, json.dumps(fingerprint, indent=1) + "\n")
    done = {k: v for k, v in read_partial(partial_path).items() if k in wanted}
    todo = [u for u in utts if u.utt_id not in done]
    if done:
        log.info(f"resuming: {len(done)} of {len(utts)} utterances already decoded ({partial_path})")
    # Rewrite the partial file with the records we keep (drops a torn last line).
    with atomic_write(partial_path) as f:
        for utt in sorted(done, key=c_sort_key):
            f.write(json.dumps(done[utt], ensure_ascii=False) + "\n")

    decode_seconds = 0.0
    audio_seconds = 0.0
    decoded_now = 0
    if todo:
        decoder = decoder_factory()
        with open(partial_path, "a", encoding="utf-8") as f, progress_bar("utt") as bar:
            task = bar.add_task(description, total=len(utts), completed=len(done), visible=show_progress)
            started = time.perf_counter()
            for batch in decoder.batches(todo):
                results = decoder.decode(batch)
                if len(results) != len(batch.utt_ids):
                    raise RuntimeError(f"decoder returned {len(results)} results for {len(batch.utt_ids)} utterances")
                durations = _durations_of(batch)
                _append_partial(f, batch, results, durations)
                for utt, nbest, dur in zip(batch.utt_ids, results, durations):
                    done[utt] = {"utt": utt, "nbest": [[t, s] for t, s in nbest], "dur": dur}
                audio_seconds += sum(durations)
                decoded_now += len(batch.utt_ids)
                bar.advance(task, len(batch.utt_ids))
                log.debug(f"batch of {len(batch.utt_ids)}: {batch.utt_ids[0]} ... done")
            decode_seconds = time.perf_counter() - started
    missing = wanted - set(done)
    if missing:
        raise RuntimeError(f"decoder skipped {len(missing)} utterances, e.g. {sorted(missing)[0]}")
    write_results(out_dir, {u: done[u]["nbest"] for u in wanted})
    atomic_write_text(
        out_dir / TIMING,
        json.dumps(
            {"utterances": len(utts), "decoded_now": decoded_now, "decode_seconds": round(decode_seconds, 4),
             "audio_seconds": round(audio_seconds, 4)},
            indent=1,
        ) + "\n",
    )
    partial_path.unlink(missing_ok=True)
    return PartResult(out_dir, len(utts), decoded_now, decode_seconds, audio_seconds)


def write_results(out_dir: Path, nbests: dict[str, Sequence]) -> None:
    """``nbest.jsonl`` then ``hyp`` (1-best, Kaldi text); ``hyp`` last: it marks the job finished."""
    keys = sorted(nbests, key=c_sort_key)
    with atomic_write(out_dir / NBEST) as f:
        for k in keys:
            f.write(json.dumps({"utt": k, "nbest": [[t, s] for t, s in nbests[k]]}, ensure_ascii=False) + "\n")
    write_hyp(out_dir / "hyp", {k: (nbests[k][0][0] if nbests[k] else "") for k in keys})


def write_hyp(path: Path, hyps: dict[str, str]) -> None:
    """Kaldi text: ``utt text`` (an empty hypothesis leaves just the key); C-sorted, atomic."""
    with atomic_write(path) as f:
        for k in sorted(hyps, key=c_sort_key):
            text = " ".join(hyps[k].split())
            f.write(f"{k} {text}\n" if text else f"{k}\n")


def read_hyp(path: Path) -> dict[str, str]:
    hyps: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=1)
        if parts:
            hyps[parts[0]] = parts[1] if len(parts) > 1 else ""
    return hyps


def read_nbest(path: Path) -> dict[str, NBest]:
    out: dict[str, NBest] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        out[record["utt"]] = [(t, float(s)) for t, s in record["nbest"]]
    return out


def read_timing(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


FINGERPRINT = "fingerprint.json"  # what produced the results in a directory (model file, options)


def decode_fingerprint(opts: "DecodeOptions", stage: int | None) -> dict:
    """What decides the hypotheses: the model file (path, size, mtime) and the search options.

    Results (a finished part, a partial file) are reused only when it matches, so a
    retrained model or a different beam never reuses stale hypotheses. The batch
    size is left out: it does not change the results.
    """
    if opts.whisper is not None:
        model_file = Path(opts.whisper) / "model.bin"
    else:
        from ..training.checkpoint import stage_model_dir

        model_file = stage_model_dir(opts.exp, stage) / "model.safetensors"
    try:
        st = model_file.stat()
        model = [str(model_file.resolve()), st.st_size, st.st_mtime_ns]
    except OSError:
        model = [str(model_file), None, None]
    return {"model": model, "mode": opts.mode, "beam": opts.beam, "nbest": opts.nbest,
            "max_new_tokens": opts.max_new_tokens, "use_image": opts.use_image, "use_video": opts.use_video}


def fingerprint_matches(out_dir: Path, fingerprint: dict | None) -> bool:
    if fingerprint is None:
        return True
    try:
        return json.loads((Path(out_dir) / FINGERPRINT).read_text(encoding="utf-8")) == fingerprint
    except (OSError, json.JSONDecodeError):
        return False


def results_complete(out_dir: Path, utt_ids, fingerprint: dict | None = None) -> bool:
    """``hyp`` and ``nbest.jsonl`` exist, cover exactly ``utt_ids`` and come from the same model and options."""
    out_dir = Path(out_dir)
    if not ((out_dir / "hyp").is_file() and (out_dir / NBEST).is_file()):
        return False
    try:
        same = set(read_hyp(out_dir / "hyp")) == set(utt_ids)
    except (OSError, UnicodeDecodeError):
        return False
    return same and fingerprint_matches(out_dir, fingerprint)


# ----------------------------------------------------------------------------- the whole job


@dataclass
class DecodeSummary:
    decode_dir: Path
    utterances: int
    decode_seconds: float
    audio_seconds: float
    result_lines: list[str] = field(default_factory=list)

    @property
    def rtf(self) -> float | None:
        return self.decode_seconds / self.audio_seconds if self.audio_seconds > 0 else None


def check_inputs(opts: DecodeOptions):
    """Fail early, with one line, on what the user can fix; returns the loaded DataDir."""
    from ..data.datadir import DataDir

    opts.validate()
    if not Path(opts.exp).is_dir():
        raise XllmError(f"{opts.exp}: experiment directory not found")
    if not Path(opts.data).is_dir():
        raise XllmError(f"{opts.data}: data directory not found")
    data = DataDir.load(opts.data)
    if opts.wer and data.text is None:
        raise XllmError(f"{Path(opts.data) / 'text'}: file not found; --wer needs reference transcripts")
    if opts.whisper is not None and not Path(opts.whisper).is_dir():
        raise XllmError(f"{opts.whisper}: Whisper CTranslate2 model directory not found")
    if len(data) == 0:
        raise XllmError(f"{opts.data}: no utterances")
    return data


def run_decode(opts: DecodeOptions, decoder_factory: Callable[[DecodeOptions, int | None], Decoder] | None = None,
               launcher=None) -> DecodeSummary:
    """``xllm decode``. ``decoder_factory`` and ``launcher`` are seams for tests (fake models)."""
    from . import parallel

    data = check_inputs(opts)
    stage = None if opts.whisper is not None else resolve_stage(opts)
    factory = decoder_factory or build_decoder
    out = decode_dir_for(opts, stage)

    if opts.part is not None:  # a worker of --nj: decode one split, nothing else
        k, n = opts.part
        part_data = parallel.part_data_dir(opts.data, out, k, n)
        part_out = parallel.part_out_dir(out, k, n)
        setup_logging(part_out / "decode.log")
        log.info(f"decoding part {k}/{n}: {part_data} -> {part_out}")
        _set_threads(opts)
        from ..data.datadir import DataDir

        utts = DataDir.load(part_data).utterances()
        decode_utterances(lambda: factory(opts, stage), utts, part_out, show_progress=False,
                          fingerprint=decode_fingerprint(opts, stage))
        return DecodeSummary(part_out, len(utts), 0.0, 0.0)

    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out / "decode.log")
    log.info(f"decode {opts.data} -> {out} (stage {stage}, mode {opts.mode}, beam {opts.beam}, nj {opts.nj})")
    fingerprint = decode_fingerprint(opts, stage)
    if opts.nj > 1:
        result = parallel.decode_parallel(opts, data, out, fingerprint, launcher=launcher)
    elif results_complete(out, data.utt_ids(), fingerprint):
        log.info(f"{out / 'hyp'}: already decoded with this model and these options: scoring only "
                 f"(delete it to decode again)")
        result = PartResult(out, len(data), 0, 0.0, 0.0)
    else:
        _set_threads(opts)
        result = decode_utterances(lambda: factory(opts, stage), data.utterances(), out, fingerprint=fingerprint)
    summary = DecodeSummary(out, result.utterances, result.decode_seconds, result.audio_seconds)
    summary.result_lines = finish(opts, data, out)
    if summary.rtf is not None:
        log.info(f"RTF {summary.rtf:.4f} (decode {summary.decode_seconds:.2f} s / audio {summary.audio_seconds:.2f} s, "
                 f"{result.decoded_now / max(summary.decode_seconds, 1e-9):.1f} utt/s)")
    elif result.decoded_now == 0:
        log.info("nothing left to decode: all utterances were decoded by an earlier run")
    log.info(f"hypotheses in {out / 'hyp'}")
    return summary


def _set_threads(opts: DecodeOptions) -> None:
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)


# ----------------------------------------------------------------------------- scoring


def score_unit(refs: dict[str, str]) -> str:
    """CER for text written without spaces between words (Chinese, Japanese), WER otherwise."""
    cjk = spaced = 0
    for text in refs.values():
        for ch in text:
            o = ord(ch)
            if 0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF:
                cjk += 1
            elif not ch.isspace():
                spaced += 1
    return "char" if cjk >= spaced else "word"


def finish(opts: DecodeOptions, data, out: Path) -> list[str]:
    """Rescore (optional), then write ref and the scoring files; returns the result lines."""
    if opts.rescore == "ct2":
        _rescore_ct2(opts, data, out)
    if data.text is None:
        log.info("no text in the data directory: hypotheses only, no scoring")
        return []
    from ..scoring import result_lines, score_and_write

    hyps = read_hyp(out / "hyp")
    refs = {u: data.text[u] for u in hyps if u in data.text}
    # "auto": CER for text without spaces between words (Chinese), WER for
    # space-delimited text, MER for a mix.
    result = score_and_write(out, refs, hyps, unit="auto", utt2spk=dict(data.utt2spk))
    lines = result_lines(result, label=str(out))
    for line in lines:
        log.info(line)
    if opts.wer:
        for line in lines:
            print(line, flush=True)
    return lines


def _rescore_ct2(opts: DecodeOptions, data, out: Path) -> None:
    """Re-rank each n-best list with the experiment's CTranslate2 LLM (``xllm export ct2``).

    The first-pass 1-best stays in ``hyp.first_pass``; ``hyp`` gets the re-ranked best.
    """
    from .ct2 import rescore_nbest

    ct2_dir = Path(opts.exp) / "ct2_llm"
    if not ct2_dir.is_dir():
        raise XllmError(f"{ct2_dir}: no CTranslate2 LLM; export it first: xllm export ct2 --exp {opts.exp}")
    nbests = read_nbest(out / NBEST)
    first_pass = out / "hyp.first_pass"
    write_hyp(first_pass, {u: (n[0][0] if n else "") for u, n in nbests.items()})
    utts = sorted(nbests, key=c_sort_key)
    prompts = [(data.prompt or {}).get(u, "") for u in utts]
    # tokenizer None: the copy that `xllm export ct2` put beside the converted LLM
    best = rescore_nbest(ct2_dir, None, prompts, [nbests[u] for u in utts], lm_weight=opts.lm_weight,
                         device=opts.device.split(":")[0])
    write_hyp(out / "hyp", {u: text for u, (text, _score) in zip(utts, best)})
    changed = sum(1 for u, (text, _) in zip(utts, best) if nbests[u] and text != nbests[u][0][0])
    log.info(f"rescored {len(utts)} n-best lists with {ct2_dir} (lm weight {opts.lm_weight:g}): {changed} changed")


# ----------------------------------------------------------------------------- the systems


def build_decoder(opts: DecodeOptions, stage: int | None) -> Decoder:
    """The real decoders; imported lazily (torch, transformers, ctranslate2)."""
    if opts.whisper is not None:
        return WhisperDecoder(opts, _whisper_language(opts))
    return XllmDecoder(opts, stage)


def _whisper_language(opts: DecodeOptions) -> str:
    """Whisper needs the language: Chinese when the references are written without spaces, else English."""
    from ..data.datadir import DataDir

    text = DataDir.load(opts.data).text
    language = "zh" if not text or score_unit(text) == "char" else "en"
    log.info(f"Whisper language: {language}")
    return language


class XllmDecoder:
    """The X-LLM model of one stage: LLM generation from the soft prompts, or the NAR first pass."""

    def __init__(self, opts: DecodeOptions, stage: int) -> None:
        self.opts = opts
        self.bundle = load_for_decoding(Path(opts.exp), stage, opts.device)

    def batches(self, utts: list[Any]) -> Iterator[Any]:
        groups = make_batches(utts, self.opts.batch_size, self.opts.max_batch_seconds, self.bundle.duration)
        yield from self.bundle.iter_batches(groups, use_image=self.opts.use_image, use_video=self.opts.use_video)

    def decode(self, batch: Any) -> list[NBest]:
        import torch

        model = self.bundle.model
        batch = batch.to(self.bundle.device)
        # inference_mode: no autograd bookkeeping at all (a few % faster than no_grad)
        with torch.inference_mode():
            if self.opts.mode == "nar":
                return [[(text, 0.0)] for text in model.nar_decode(batch)]
            return model.generate(
                batch,
                max_new_tokens=token_limits(batch, self.opts.max_new_tokens),
                num_beams=self.opts.beam,
                num_return_sequences=self.opts.nbest,
                use_image=self.opts.use_image,
                use_video=self.opts.use_video,
            )


TOKENS_PER_SECOND = 25.0  # generous: fast English read char by char is ~15 characters/s


def token_limits(batch: Any, requested: int | None) -> list[int]:
    """Each utterance's max_new_tokens: ``--max-new-tokens``, else bounded by its own duration.

    The bound is per utterance, not per batch, so that a hypothesis that never
    ends (an untrained or confused model) is cut at the same length whatever the
    batch it was decoded in: greedy results do not depend on the batch size.
    """
    if requested is not None:
        return [int(requested)] * len(batch.utt_ids)
    durations = batch.durations or [0.0] * len(batch.utt_ids)
    return [int(math.ceil(float(d) * TOKENS_PER_SECOND)) + 10 for d in durations]


class WhisperDecoder:
    """A CTranslate2 Whisper model directory as a baseline system (same decode directory format)."""

    def __init__(self, opts: DecodeOptions, language: str) -> None:
        from .whisper_ct2 import WhisperCT2

        self.opts = opts
        device = opts.device.split(":")[0]
        extra = {"max_length": opts.max_new_tokens} if opts.max_new_tokens else {}
        self.model = WhisperCT2(opts.whisper, language=language, device=device,
                                compute_type="int8" if device == "cpu" else "float16", beam_size=opts.beam, **extra)

    def batches(self, utts: list[Any]) -> Iterator[Any]:
        groups = make_batches(utts, self.opts.batch_size, self.opts.max_batch_seconds, utt_duration)
        yield from prefetch(_audio_batch(g) for g in groups)

    def decode(self, batch: Any) -> list[NBest]:
        texts = self.model.transcribe(batch.waves, batch_size=len(batch.waves))
        return [[(t, 0.0)] for t in texts]


@dataclass
class AudioBatch:
    utt_ids: list[str]
    durations: list[float]
    waves: list[Any]


def _audio_batch(group: list[Any]) -> AudioBatch:
    from ..data.audio import load_utterance

    waves = [load_utterance(u) for u in group]
    return AudioBatch([u.utt_id for u in group], [len(w) / 16000 for w in waves], waves)


def utt_duration(u: Any) -> float:
    """Seconds of an utterance: utt2dur/segments, else the audio file's header."""
    if u.duration is not None:
        return float(u.duration)
    if u.start is not None and u.end is not None:
        return float(u.end - u.start)
    from ..data.audio import audio_duration

    try:
        u.duration = float(audio_duration(u.path))
    except Exception:
        u.duration = 0.0
    return u.duration


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask under Slurm or taskset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Prepare the next batches in a background thread while the model decodes this one.

    Feature extraction and audio decoding (ffmpeg, numpy, torch ops) release the
    GIL, so this overlaps data loading with decoding without worker processes.
    An exception in the thread is raised in the consumer.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((True, item))
            q.put((True, done))
        except BaseException as e:  # handed to the consumer
            q.put((False, e))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


# ----------------------------------------------------------------------------- model + data for decoding


@dataclass
class DecodeBundle:
    """A loaded model with the feature pipeline it was trained with (the data pipeline's dataset + collate)."""

    model: Any
    extractor: Any  # FeatureExtractor: wave (samples,) -> (frames, dim)
    image_transform: Any  # PIL image -> (3, H, W), or None without an image interface
    num_frames: int  # video frames per clip
    device: str
    llm_dtype: Any = None  # torch.bfloat16 on GPU
    sample_rate: int = 16000

    def duration(self, u: Any) -> float:
        return utt_duration(u)

    @property
    def has_vision(self) -> bool:
        return self.image_transform is not None and getattr(self.model, "qformer", None) is not None

    # -- batches from data directories
    def iter_batches(self, groups: list[list[Any]], use_image: bool = True, use_video: bool = True) -> Iterator[Any]:
        """Batches in the order of ``groups``, the next one prepared in a background thread where that pays.

        It pays on a GPU, and on CPU when torch leaves a core free (``--threads``). When
        torch's threads take every core, a loader thread beside them slows decoding down
        (their OpenMP workers wait for a descheduled peer; bench/RESULTS.md, decode_throughput).
        """
        from ..data.dataset import DatasetOptions, SpeechDataset, collate

        utts = [u for g in groups for u in g]
        dataset = SpeechDataset(
            utts, self.extractor, self.image_transform if self.has_vision else None, train=False,
            options=DatasetOptions(use_images=use_image, use_video=use_video, num_frames=self.num_frames),
        )
        bounds, start = [], 0
        for g in groups:
            bounds.append((start, start + len(g)))
            start += len(g)
        batches = (collate([dataset[i] for i in range(a, b)]) for a, b in bounds)
        return prefetch(batches) if self._spare_cpu() else batches

    def _spare_cpu(self) -> bool:
        import torch

        return self.device != "cpu" or torch.get_num_threads() < available_cores()

    # -- batches from audio in memory (transcribe)
    def batch_from_waves(self, waves: list[Any], ids: list[str], image: Any = None, video: Any = None) -> Any:
        """Collate in-memory waves, each with the same image (3, H, W) / video (N, 3, H, W) when given."""
        import torch
        from ..data.dataset import collate

        items = []
        for utt_id, wave in zip(ids, waves):
            item = {"utt_id": utt_id, "text": None, "prompt": None, "duration": len(wave) / self.sample_rate,
                    "feats": self.extractor(torch.as_tensor(wave, dtype=torch.float32))}
            if image is not None:
                item["image"] = image
            if video is not None:
                item["video"] = video
            items.append(item)
        return collate(items)

    def load_image(self, path: Path) -> Any:
        from ..data.images import load_image

        return load_image(path, self.image_transform) if self.has_vision else None

    def load_video(self, path: Path) -> Any:
        """(N, 3, H, W) frames over the whole file, or None for audio-only files / models without vision."""
        if not self.has_vision:
            return None
        from ..data.images import load_video

        try:
            return load_video(path, self.num_frames, self.image_transform)
        except XllmError:  # no video stream
            return None


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise XllmError(f"{path}: cannot read ({type(e).__name__})") from None
    return data if isinstance(data, dict) else {}


def load_for_decoding(exp: Path, stage: int, device: str = "cpu") -> DecodeBundle:
    """Load the stage's model (eval mode) and its feature pipeline.

    On GPU the LLM runs in bf16; the trained interfaces keep fp32 weights.
    """
    import torch
    from ..data.features import build_feature_extractor, build_image_transform
    from ..models.xllm import load_model
    from ..training.checkpoint import stage_dir, stage_model_dir

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise XllmError("--device cuda: no CUDA device is available (use --device cpu)")
    model_dir = stage_model_dir(exp, stage)
    if not (model_dir / "config.yaml").is_file():
        raise XllmError(f"{model_dir}: no trained model for stage {stage} (train it: xllm train --stage {stage} ...)")
    model_cfg = _read_yaml(model_dir / "config.yaml")
    model_cfg = model_cfg.get("model", model_cfg)
    recipe_path = stage_dir(exp, stage) / "config.yaml"
    recipe = _read_yaml(recipe_path) if recipe_path.is_file() else {}
    features_cfg = recipe.get("features") or {}
    cmvn = Path(exp) / "cmvn.json"
    extractor = build_feature_extractor(model_cfg.get("speech_encoder") or {}, features_cfg,
                                        cmvn_path=cmvn if cmvn.is_file() else None)
    vision_cfg = model_cfg.get("vision_encoder")
    image_transform = build_image_transform(vision_cfg) if vision_cfg else None
    num_frames = _num_frames(recipe, stage)

    try:  # transformers' weight-loading bars would clutter decode.log and the progress display
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    model = load_model(model_dir, device=device)
    model.eval()
    llm_dtype = None
    if device.startswith("cuda"):
        # The LLM is most of the compute and memory: bf16. The interfaces (C-Former with
        # its CIF integration, adapters) stay fp32 as in training; encoders keep the
        # dtype the model config gives them (``model.dtype`` for pretrained ones).
        llm_dtype = torch.bfloat16
        model.llm.to(llm_dtype)
    log.info(f"model {model_dir} on {device}{' (LLM in bf16)' if llm_dtype is not None else ''}")
    return DecodeBundle(model=model, extractor=extractor, image_transform=image_transform, num_frames=num_frames,
                        device=device, llm_dtype=llm_dtype)


def _num_frames(recipe: dict, stage: int) -> int:
    """Video frames per clip as in training: the stage's ``data.num_frames``, else the recipe's, else 8."""
    for section in (recipe.get(f"stage{stage}") or {}, recipe):
        data = section.get("data") if isinstance(section, dict) else None
        if isinstance(data, dict) and data.get("num_frames"):
            return int(data["num_frames"])
    return 8

