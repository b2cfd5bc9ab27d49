"""Choosing utterances of a data directory: select, subset, split, and combining several.

Values are copied verbatim (relative paths stay relative), and the result keeps
only the recordings its utterances use (docs/data-dir.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

from ..errors import XllmError
from .layout import RECO2DUR, TEXT, UTT2DUR

if TYPE_CHECKING:  # pragma: no cover
    from .datadir import DataDir


def select(dd: "DataDir", utts: Iterable[str]) -> "DataDir":
    """A DataDir with only ``utts`` (and the recordings they use); values copied verbatim."""
    keep = set(utts) & set(dd.utt2spk)
    recs = {dd.recording_of(u) for u in keep}

    def pick(table, keys):
        return None if table is None else {k: v for k, v in table.items() if k in keys}

    return type(dd)(
        wav=pick(dd.wav, recs),
        utt2spk=pick(dd.utt2spk, keep),
        text=pick(dd.text, keep),
        segments=pick(dd.segments, keep),
        utt2dur=pick(dd.utt2dur, keep),
        reco2dur=pick(dd.reco2dur, recs),
        image=pick(dd.image, keep),
        video=pick(dd.video, keep),
        prompt=pick(dd.prompt, keep),
    )


def subset(
    dd: "DataDir",
    first: int | None = None,
    last: int | None = None,
    utt_list: Iterable[str] | None = None,
    spk_list: Iterable[str] | None = None,
) -> "DataDir":
    """Exactly one of: the first/last N utterances (C order), listed utterances, listed speakers."""
    given = [x is not None for x in (first, last, utt_list, spk_list)]
    if sum(given) != 1:
        raise XllmError("subset needs exactly one of --first, --last, --utt-list, --spk-list")
    ids = dd.utt_ids()
    if first is not None or last is not None:
        n = first if first is not None else last
        if n < 0:
            raise XllmError(f"subset size must be >= 0, got {n}")
        return select(dd, ids[:n] if first is not None else ids[len(ids) - n :])
    if utt_list is not None:
        return select(dd, utt_list)
    speakers = set(spk_list)
    return select(dd, (u for u in ids if dd.utt2spk[u] in speakers))


def split(dd: "DataDir", n: int, per_spk: bool = False) -> list["DataDir"]:
    """``n`` contiguous parts (C order): balanced utterance counts, or whole speakers with ``per_spk``."""
    if n < 1:
        raise XllmError(f"cannot split into {n} parts: need at least 1")
    ids = dd.utt_ids()
    if not per_spk:
        if n > len(ids):
            raise XllmError(f"cannot split {len(ids)} utterances into {n} parts")
        return [select(dd, ids[k * len(ids) // n : (k + 1) * len(ids) // n]) for k in range(n)]
    spk2utt = dd.speakers()
    speakers = list(spk2utt)
    if n > len(speakers):
        raise XllmError(f"cannot split {len(speakers)} speakers into {n} parts (--per-spk keeps speakers whole)")
    # Cut the speaker list where the running utterance count is nearest to
    # k/n of the total, keeping at least one speaker per part.
    counts = [len(spk2utt[s]) for s in speakers]
    cumulative = [0]
    for c in counts:
        cumulative.append(cumulative[-1] + c)
    total = cumulative[-1]
    cuts = [0]
    for k in range(1, n):
        lo, hi = cuts[-1] + 1, len(speakers) - (n - k)
        target = k * total / n
        best = min(range(lo, hi + 1), key=lambda i: (abs(cumulative[i] - target), i))
        cuts.append(best)
    cuts.append(len(speakers))
    parts = []
    for a, b in zip(cuts, cuts[1:]):
        chosen = set(speakers[a:b])
        parts.append(select(dd, (u for u in ids if dd.utt2spk[u] in chosen)))
    return parts


def combine(
    cls: type["DataDir"], dirs: Sequence["DataDir"], names: Sequence[str] | None = None
) -> tuple["DataDir", list[str]]:
    """Merge data dirs into a ``cls``; returns the result and warnings (see :meth:`DataDir.combine`)."""
    names = (
        [str(d.path) if d.path is not None else f"#{i + 1}" for i, d in enumerate(dirs)]
        if names is None
        else list(names)
    )
    warnings: list[str] = []
    out = cls()
    owner: dict[str, str] = {}
    rec_owner: dict[str, str] = {}
    for d, name in zip(dirs, names):
        for utt in d.utt2spk:
            if utt in owner:
                raise XllmError(f"duplicate utterance id '{utt}' in {owner[utt]} and {name}")
            owner[utt] = name
        for rec, value in d.wav.items():
            if rec in out.wav and out.wav[rec] != value:
                raise XllmError(f"recording '{rec}' has different paths in {rec_owner[rec]} and {name}")
            out.wav[rec] = value
            rec_owner.setdefault(rec, name)
        out.utt2spk.update(d.utt2spk)
    for attr, file in (("text", TEXT), ("utt2dur", UTT2DUR), ("reco2dur", RECO2DUR)):
        tables = [getattr(d, attr) for d in dirs]
        if all(t is not None for t in tables):
            setattr(out, attr, {k: v for t in tables for k, v in t.items()})
        elif any(t is not None for t in tables):
            warnings.append(f"{file} is missing in some directories; the combined directory has none")
    for attr in ("image", "video", "prompt"):
        tables = [getattr(d, attr) for d in dirs if getattr(d, attr) is not None]
        if tables:
            setattr(out, attr, {k: v for t in tables for k, v in t.items()})
    if any(d.segments is not None for d in dirs):
        out.segments = {}
        for d, name in zip(dirs, names):
            if d.segments is not None:
                out.segments.update(d.segments)
                continue
            for utt in d.utt2spk:
                dur = d.duration_of(utt)
                if dur is None:
                    raise XllmError(
                        f"{name}: has no segments and no duration for '{utt}' while other directories have "
                        "segments; write utt2dur first"
                    )
                out.segments[utt] = (utt, 0.0, dur)
    return out, warnings
