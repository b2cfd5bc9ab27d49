"""The result files of a decode directory (docs/experiment.md), read and written atomically.

Two markers, one per step: ``hyp`` (Kaldi text, the 1-best of *every* decoded
utterance) is the last file decoding writes, so it marks the decoding finished;
``result.txt`` is the last file scoring writes (``scoring/writers.py``), so it
marks the directory scored. Scoring never rewrites ``hyp``.
``nbest.jsonl`` keeps every hypothesis with its score, ``hyp.partial.jsonl`` the
utterances of a killed run (one JSON line each, appended per batch),
``skipped`` the utterances that could not be decoded (``<utt-id> <reason>``;
``batches.py``), ``timing.json`` the decode time of the last run, and
``fingerprint.json`` what produced the results (model file, search options):
results of another model or other options are never reused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from ..data.tables import c_sort_key
from ..fsutil import atomic_write, atomic_write_text

PARTIAL = "hyp.partial.jsonl"  # one JSON line per decoded utterance, appended per batch
TIMING = "timing.json"  # decode seconds, audio seconds, utterances of the last run
NBEST = "nbest.jsonl"  # {"utt": id, "nbest": [[text, score], ...]} per utterance
FINGERPRINT = "fingerprint.json"  # what produced the results in a directory (model file, options)
SKIPPED = "skipped"  # <utt-id> <reason> per utterance that could not be decoded
RESULT = "result.txt"  # written last by scoring (scoring/writers.py)

NBest = list[tuple[str, float]]


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


def partial_record(utt: str, nbest: Sequence, dur: float) -> dict:
    return {"utt": utt, "nbest": [[t, s] for t, s in nbest], "dur": dur}


def write_partial_records(f, records: Sequence[dict], sync: bool = True) -> None:
    """Append records to an open partial file; flushed and synced so that a kill loses at most a line."""
    for record in records:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    if sync:
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- hyp, n-best, timing


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


def write_timing(out_dir: Path, utterances: int, decoded_now: int, decode_seconds: float, audio_seconds: float) -> None:
    atomic_write_text(
        Path(out_dir) / TIMING,
        json.dumps(
            {"utterances": utterances, "decoded_now": decoded_now, "decode_seconds": round(decode_seconds, 4),
             "audio_seconds": round(audio_seconds, 4)},
            indent=1,
        ) + "\n",
    )


def write_skipped(out_dir: Path, skipped: dict[str, str]) -> None:
    """``skipped`` (C-sorted ``<utt-id> <reason>``) when any utterance was skipped; no stale file otherwise."""
    path = Path(out_dir) / SKIPPED
    if not skipped:
        path.unlink(missing_ok=True)
        return
    with atomic_write(path) as f:
        for k in sorted(skipped, key=c_sort_key):
            f.write(f"{k} {' '.join(skipped[k].split())}\n")


def read_skipped(out_dir: Path) -> dict[str, str]:
    path = Path(out_dir) / SKIPPED
    return read_hyp(path) if path.is_file() else {}


def read_timing(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


# ----------------------------------------------------------------------------- fingerprints


def model_fingerprint(model_file: Path, search: dict[str, Any]) -> dict:
    """The model file (path, size, mtime) followed by the search options that decide the hypotheses."""
    model_file = Path(model_file)
    try:
        st = model_file.stat()
        model = [str(model_file.resolve()), st.st_size, st.st_mtime_ns]
    except OSError:
        model = [str(model_file), None, None]
    return {"model": model, **search}


def write_fingerprint(out_dir: Path, fingerprint: dict) -> None:
    atomic_write_text(Path(out_dir) / FINGERPRINT, json.dumps(fingerprint, indent=1) + "\n")


def fingerprint_matches(out_dir: Path, fingerprint: dict | None) -> bool:
    if fingerprint is None:
        return True
    try:
        return json.loads((Path(out_dir) / FINGERPRINT).read_text(encoding="utf-8")) == fingerprint
    except (OSError, json.JSONDecodeError):
        return False


def results_complete(out_dir: Path, utt_ids, fingerprint: dict | None = None, skipped_ok: bool = False) -> bool:
    """``hyp`` and ``nbest.jsonl`` exist, cover exactly ``utt_ids`` and come from the same model and options.

    With ``skipped_ok`` the utterances listed in ``skipped`` count as covered (a
    finished part, ready to merge). Without it a directory with skipped
    utterances is not complete: a rerun checks them again (the audio may have
    been fixed, ``--max-duration`` raised) and decodes only those.
    """
    out_dir = Path(out_dir)
    if not ((out_dir / "hyp").is_file() and (out_dir / NBEST).is_file()):
        return False
    try:
        covered = set(read_hyp(out_dir / "hyp"))
        if skipped_ok:
            covered |= set(read_skipped(out_dir))
    except (OSError, UnicodeDecodeError):
        return False
    return covered == set(utt_ids) and fingerprint_matches(out_dir, fingerprint)
