"""Edit-distance scoring of hypotheses against references (CER/WER/SER).

Texts are normalised and tokenised first (``normalize.py``); the alignment of the
token sequences is jiwer's (rapidfuzz Levenshtein, unit costs), so the error total
of an utterance is its minimum edit distance, as in Kaldi's ``compute-wer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..console import log
from ..data.tables import c_sort_key
from .normalize import NormalizeOptions, UNITS, metric_name, tokenize

# One aligned position: (op, ref token or None, hyp token or None); op in C S I D.
AlignOp = tuple[str, "str | None", "str | None"]


@dataclass
class Counts:
    """Error counts over a set of utterances."""

    n: int = 0            # reference units
    correct: int = 0
    subs: int = 0
    dels: int = 0
    ins: int = 0
    sentences: int = 0
    sentence_errors: int = 0

    @property
    def errors(self) -> int:
        return self.subs + self.dels + self.ins

    @property
    def rate(self) -> float:
        """Error rate in percent. With no reference units: 0 errors -> 0.00, else errors / 1."""
        return 100.0 * self.errors / max(self.n, 1)

    @property
    def ser(self) -> float:
        """Sentence error rate in percent (utterances with at least one error)."""
        return 100.0 * self.sentence_errors / max(self.sentences, 1)

    def add(self, other: "Counts") -> None:
        self.n += other.n
        self.correct += other.correct
        self.subs += other.subs
        self.dels += other.dels
        self.ins += other.ins
        self.sentences += other.sentences
        self.sentence_errors += other.sentence_errors


@dataclass
class UttScore:
    """One utterance: its tokens, the alignment and the counts."""

    utt: str
    spk: str
    ref_tokens: list[str]
    hyp_tokens: list[str]
    ops: list[AlignOp]
    counts: Counts
    missing: bool = False  # no hypothesis was given: scored as all deletions


@dataclass
class ScoreResult:
    """Everything ``score_texts`` found; the writers turn it into a decode directory."""

    metric: str                   # CER | WER | MER
    unit: str                     # char | word | auto
    normalize: NormalizeOptions
    totals: Counts
    utts: list[UttScore]          # in C order of utterance id
    per_speaker: dict[str, Counts]
    missing: list[str] = field(default_factory=list)   # refs without a hypothesis
    extra: list[str] = field(default_factory=list)     # hyps without a reference (ignored)
    raw_refs: dict[str, str] = field(default_factory=dict)
    raw_hyps: dict[str, str] = field(default_factory=dict)


def default_speaker(utt: str) -> str:
    """Speaker of an utterance without utt2spk: the id up to the first '-' or '_' (Kaldi's
    speaker-prefix rule), or the whole id when it has neither."""
    cut = [i for i in (utt.find("-"), utt.find("_")) if i > 0]
    return utt[: min(cut)] if cut else utt


def _align(refs: list[list[str]], hyps: list[list[str]]) -> list[list[AlignOp]]:
    """Align each pair with jiwer on space-joined, pre-tokenised strings."""
    import jiwer

    if not refs:
        return []
    split = jiwer.transforms.ReduceToListOfListOfWords()
    out = jiwer.process_words(
        [" ".join(r) for r in refs], [" ".join(h) for h in hyps],
        reference_transform=split, hypothesis_transform=split,
    )
    result: list[list[AlignOp]] = []
    for ref, hyp, chunks in zip(refs, hyps, out.alignments):
        ops: list[AlignOp] = []
        for c in chunks:
            if c.type == "equal":
                ops.extend(("C", ref[i], hyp[j]) for i, j in zip(range(c.ref_start_idx, c.ref_end_idx),
                                                                range(c.hyp_start_idx, c.hyp_end_idx)))
            elif c.type == "substitute":
                ops.extend(("S", ref[i], hyp[j]) for i, j in zip(range(c.ref_start_idx, c.ref_end_idx),
                                                                range(c.hyp_start_idx, c.hyp_end_idx)))
            elif c.type == "delete":
                ops.extend(("D", ref[i], None) for i in range(c.ref_start_idx, c.ref_end_idx))
            else:  # insert
                ops.extend(("I", None, hyp[j]) for j in range(c.hyp_start_idx, c.hyp_end_idx))
        result.append(ops)
    return result


def _counts(ops: list[AlignOp], n_ref: int) -> Counts:
    c = Counts(n=n_ref, sentences=1)
    for op, _, _ in ops:
        if op == "C":
            c.correct += 1
        elif op == "S":
            c.subs += 1
        elif op == "D":
            c.dels += 1
        else:
            c.ins += 1
    c.sentence_errors = int(c.errors > 0)
    return c


def score_texts(
    refs: dict[str, str],
    hyps: dict[str, str],
    unit: str = "char",
    normalize: NormalizeOptions | None = None,
    utt2spk: dict[str, str] | None = None,
) -> ScoreResult:
    """Score hypotheses against references, utterance by utterance.

    The references define the set: a reference without a hypothesis is scored as
    all deletions (with a warning); hypotheses without a reference are ignored
    (with a warning). ``utt2spk`` groups utterances for the per-speaker breakdown;
    without it the speaker is :func:`default_speaker` of the utterance id.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
    normalize = normalize or NormalizeOptions()
    utt_ids = sorted(refs, key=c_sort_key)
    missing = [u for u in utt_ids if u not in hyps]
    extra = sorted((u for u in hyps if u not in refs), key=c_sort_key)
    if missing:
        log.warning(f"{len(missing)} reference utterance(s) have no hypothesis, scored as deletions "
                    f"(first: {missing[0]})")
    if extra:
        log.warning(f"{len(extra)} hypothesis utterance(s) have no reference, ignored (first: {extra[0]})")

    ref_toks = [tokenize(refs[u], unit, normalize) for u in utt_ids]
    hyp_toks = [tokenize(hyps.get(u, ""), unit, normalize) for u in utt_ids]
    alignments = _align(ref_toks, hyp_toks)

    totals = Counts()
    per_speaker: dict[str, Counts] = {}
    utts: list[UttScore] = []
    missing_set = set(missing)
    for utt, r, h, ops in zip(utt_ids, ref_toks, hyp_toks, alignments):
        spk = (utt2spk or {}).get(utt) or default_speaker(utt)
        counts = _counts(ops, len(r))
        totals.add(counts)
        per_speaker.setdefault(spk, Counts()).add(counts)
        utts.append(UttScore(utt, spk, r, h, ops, counts, missing=utt in missing_set))
    per_speaker = dict(sorted(per_speaker.items(), key=lambda kv: c_sort_key(kv[0])))
    return ScoreResult(
        metric=metric_name(unit, ref_toks), unit=unit, normalize=normalize, totals=totals,
        utts=utts, per_speaker=per_speaker, missing=missing, extra=extra,
        raw_refs={u: refs[u] for u in utt_ids}, raw_hyps={u: hyps[u] for u in utt_ids if u in hyps},
    )
