"""The decode job: an experiment's model over a data directory, into a decode directory.

``run_decode`` is what ``xllm decode`` calls. It

1. picks the decoding system (``systems.py``: ``--mode llm|nar``, ``--whisper``),
   the stage whose model it uses, and names the decode directory
   ``EXP/decode_<set>_<tag>`` or ``--out`` (``job.py``; docs/experiment.md);
2. holds ``DECODE/.lock`` for the whole run (``locks.py``): a second decode of
   the same directory fails at once instead of racing on its files;
3. decodes the utterances in batches sorted by length, longest first
   (``loop.py``): each finished batch is appended to ``hyp.partial.jsonl`` so
   that a killed job resumes where it stopped, and ``hyp`` is written atomically
   at the end with *every* decoded utterance (``results.py``: decoding is finished
   when ``hyp`` exists and ``fingerprint.json`` names the same model file and
   search options: a rerun then only scores); each utterance's generation is
   bounded by its own duration (``bundle.token_limits``), so greedy hypotheses do
   not depend on the batch size. Utterances that cannot be decoded (unreadable,
   empty, outside their file, longer than ``--max-duration``) are listed in
   ``skipped`` with the reason and a warning, or fail the run with ``--strict``
   (``batches.py``);
4. with ``--nj N`` runs N such jobs on ``DATA/split{N}/k`` (``parallel.py``) and
   merges them;
5. rescores the n-best lists with the exported CTranslate2 LLM (``--rescore ct2``);
6. scores when the data has a ``text`` file (``xllm score``'s options and
   defaults: unit auto, case folded, punctuation removed): ``ref``, ``hyp.trn``/``ref.trn``,
   ``per_utt``, ``per_spk`` and, last, ``result.txt`` (the "scored" marker) through
   the scoring module, which never rewrites ``hyp``; hypotheses without a
   reference are counted in ``result.txt``, not scored. Prints the result lines
   with ``--wer``, and logs the real-time factor.

The module layout is described in docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..console import log, setup_logging
from ..data.tables import c_sort_key
from ..errors import XllmError
from . import parallel
from ..locks import exclusive
from .job import decode_dir_for, decode_fingerprint, max_duration, resolve_stage
from .loop import Decoder, PartResult, decode_utterances
from .options import DecodeOptions
from .results import NBEST, SKIPPED, read_hyp, read_nbest, results_complete, write_hyp
from .systems import build_decoder


@dataclass
class DecodeSummary:
    decode_dir: Path
    utterances: int
    decode_seconds: float
    audio_seconds: float
    result_lines: list[str] = field(default_factory=list)
    skipped: int = 0  # utterances not decoded (DECODE/skipped says why)

    @property
    def rtf(self) -> float | None:
        return self.decode_seconds / self.audio_seconds if self.audio_seconds > 0 else None


def check_inputs(opts: DecodeOptions):
    """Fail early, with one line, on what the user can fix; returns the loaded DataDir."""
    from ..data.datadir import DataDir

    opts.validate()
    if opts.exp is not None and not Path(opts.exp).is_dir():
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
    data = check_inputs(opts)
    stage = resolve_stage(opts)
    factory = decoder_factory or build_decoder
    out = decode_dir_for(opts, stage)
    if opts.part is not None:  # a worker of --nj: decode one split, nothing else
        k, n = opts.part
        part_data = parallel.part_data_dir(opts.data, out, k, n)
        part_out = parallel.part_out_dir(out, k, n)
        with exclusive(part_out, f"part {k}/{n} of this decode"):
            setup_logging(part_out / "decode.log")
            log.info(f"decoding part {k}/{n}: {part_data} -> {part_out}")
            _set_threads(opts)
            from ..data.datadir import DataDir

            utts = DataDir.load(part_data).utterances()
            result = decode_utterances(lambda: factory(opts, stage), utts, part_out, show_progress=False,
                                       fingerprint=decode_fingerprint(opts, stage), max_duration=max_duration(opts),
                                       strict=opts.strict)
        return DecodeSummary(part_out, result.utterances, 0.0, 0.0, skipped=len(result.skipped))

    with exclusive(out, "this decode directory"):  # one decode per directory: two would race on its files
        return _decode_set(opts, data, stage, factory, out, launcher)


def _decode_set(opts: DecodeOptions, data, stage: int | None, factory, out: Path, launcher) -> DecodeSummary:
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
        result = decode_utterances(lambda: factory(opts, stage), data.utterances(), out, fingerprint=fingerprint,
                                   max_duration=max_duration(opts), strict=opts.strict)
    summary = DecodeSummary(out, result.utterances, result.decode_seconds, result.audio_seconds,
                            skipped=len(result.skipped))
    if result.skipped:
        first = min(result.skipped, key=c_sort_key)
        log.warning(f"{len(result.skipped)} of {len(data)} utterances not decoded, listed with the reason in "
                    f"{out / SKIPPED} (first: {first} {result.skipped[first]}); --strict makes this an error")
    summary.result_lines = finish(opts, data, out)
    if summary.rtf is not None:
        log.info(f"RTF {summary.rtf:.4f} (decode {summary.decode_seconds:.2f} s / audio {summary.audio_seconds:.2f} s, "
                 f"{result.decoded_now / max(summary.decode_seconds, 1e-9):.1f} utt/s)")
    elif result.decoded_now == 0:
        log.info("nothing left to decode: all utterances were decoded by an earlier run")
    log.info(f"hypotheses in {out / 'hyp'}")
    return summary


def _set_threads(opts: DecodeOptions) -> None:
    # The Whisper baseline hands --threads to CTranslate2 and never imports torch (its RSS stays low).
    if opts.threads and opts.whisper is None:
        import torch

        torch.set_num_threads(opts.threads)


# ----------------------------------------------------------------------------- after decoding


def finish(opts: DecodeOptions, data, out: Path) -> list[str]:
    """Rescore (optional), then write ref and the scoring files; returns the result lines."""
    if opts.rescore == "ct2":
        rescore_ct2(opts, data, out)
    if data.text is None:
        log.info("no text in the data directory: hypotheses only, no scoring")
        return []
    from ..scoring import result_lines, score_and_write

    hyps = read_hyp(out / "hyp")  # every decoded utterance; those without a reference are counted, not scored
    # xllm score's options and defaults ("auto": CER for Chinese, WER for space-delimited
    # text, MER for a mix; case folded, punctuation removed). hyp is an input: never rewritten.
    result = score_and_write(out, dict(data.text), hyps, unit=opts.unit, normalize=opts.normalize,
                             utt2spk=dict(data.utt2spk), keep=(out / "hyp",))
    lines = result_lines(result, label=str(out))
    for line in lines:
        log.info(line)
    if opts.wer:
        for line in lines:
            print(line, flush=True)
    return lines


def rescore_ct2(opts: DecodeOptions, data, out: Path) -> None:
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
