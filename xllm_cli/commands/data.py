"""``xllm data``: inspect and transform Kaldi-style data directories (docs/data-dir.md).

Results (``OK`` lines, ``info``) go to stdout; problems and notes to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import XllmError
from ._help import example_last

data_app = typer.Typer(
    help=(
        "Inspect and transform Kaldi-style data directories (wav.scp, text, utt2spk, spk2utt, "
        "segments, utt2dur, image.scp, video.scp, prompt)."
    ),
    epilog="Example: xllm data validate data/train --check-audio",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _err(line: str) -> None:
    print(line, file=sys.stderr)


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        _err(f"warning: {w}")


@data_app.command("validate")
def validate_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Data directory to check."),
    check_audio: bool = typer.Option(
        False,
        "--check-audio",
        help="Also decode every audio file in full (slow). Without it the headers are still read: readable, not "
        "truncated, sample rate 8-48 kHz, duration > 0 and < 1 h, agrees with utt2dur/reco2dur.",
    ),
    no_warn: bool = typer.Option(
        False, "--no-warn", help="Do not print warnings (e.g. speaker id not a prefix of the utterance id)."
    ),
) -> None:
    """Check a data directory as Kaldi's validate_data_dir.sh does.

    Checks sorted unique keys, utt2spk/spk2utt agreement (and Kaldi's speaker-then-
    utterance sort order), audio for every utterance, segment bounds, UTF-8 without a
    BOM, non-empty transcripts, image/video/prompt keys, that referenced files exist
    and every audio header (warning about files Kaldi or lhotse cannot read as is). Prints each problem as FILE:LINE: PROBLEM on stderr and
    exits 1 when there is any error; prints "DIR: OK (N utterances)" otherwise.

    Example: xllm data validate data/train --check-audio
    """
    from ..data.validate import validate_datadir
    from ..errors import require_dir

    require_dir(directory, "data directory")
    report = validate_datadir(directory, check_audio=check_audio)
    for line in report.errors:
        _err(line)
    if not no_warn:
        for line in report.warnings:
            _err(line)
    if not report.ok:
        raise XllmError(
            f"{directory}: {len(report.errors)} error(s) (fix with: xllm data fix {directory}, or edit the files)"
        )
    print(f"{directory}: OK ({report.num_utterances} utterances)")


@data_app.command("fix")
def fix_cmd(directory: Path = typer.Argument(..., metavar="DIR", help="Data directory to repair in place.")) -> None:
    """Repair a data directory in place, like Kaldi's fix_data_dir.sh.

    Sorts every file, skips malformed lines, drops utterances missing from a required
    file (utt2spk, text, segments, wav.scp) or with a bad segment, drops recordings
    no utterance uses, regenerates spk2utt and strips a UTF-8 BOM. The original
    files are kept in DIR/.backup.N/ (a new N each run).

    Example: xllm data fix data/train
    """
    from ..data.datadir import DataDir
    from ..data.datadir_ops import fix_datadir

    notes, backup = fix_datadir(directory)
    for note in notes:
        _err(f"{directory}: {note}")
    print(f"{directory}: fixed ({len(DataDir.load(directory))} utterances kept, {len(notes)} change(s); originals in {backup})")


@data_app.command("sort")
def sort_cmd(directory: Path = typer.Argument(..., metavar="DIR", help="Data directory to sort in place.")) -> None:
    """Sort every file of a data directory by key in C (byte) order, in place.

    Only the order changes (spk2utt's utterance lists are sorted too); use 'fix' to
    also drop inconsistent lines.

    Example: xllm data sort data/train
    """
    from ..data.datadir_ops import sort_datadir

    changed = sort_datadir(directory)
    print(f"{directory}: sorted {', '.join(changed)}" if changed else f"{directory}: already sorted")


@data_app.command("split")
def split_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Data directory to split."),
    num_parts: int = typer.Argument(
        ..., metavar="N", help="Number of parts N (written to DIR/splitN/1 .. DIR/splitN/N)."
    ),
    per_spk: bool = typer.Option(
        False, "--per-spk", help="Keep each speaker's utterances in one part (balanced by utterance count)."
    ),
) -> None:
    """Split a data directory into N contiguous parts, like Kaldi's split_data.sh.

    By default parts have utterance counts that differ by at most one; with --per-spk
    whole speakers go to one part.

    Example: xllm data split data/test 8 --per-spk
    """
    from ..data.datadir import DataDir
    from ..data.datadir_ops import split_datadir

    parts = split_datadir(directory, num_parts, per_spk=per_spk)
    sizes = [len(DataDir.load(p)) for p in parts]
    print(
        f"{directory}: split into {len(parts)} parts under {directory / f'split{num_parts}'} (utterances: {' '.join(map(str, sizes))})"
    )


@data_app.command("subset")
def subset_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Source data directory."),
    out: Path = typer.Argument(..., metavar="OUT", help="Output data directory."),
    first: Optional[int] = typer.Option(
        None, "--first", metavar="N", help="Keep the first N utterances (C-sorted ids)."
    ),
    last: Optional[int] = typer.Option(None, "--last", metavar="N", help="Keep the last N utterances."),
    utt_list: Optional[Path] = typer.Option(
        None, "--utt-list", metavar="FILE", help="Keep utterances listed in FILE (first field of each line)."
    ),
    spk_list: Optional[Path] = typer.Option(
        None, "--spk-list", metavar="FILE", help="Keep all utterances of the speakers listed in FILE."
    ),
) -> None:
    """Write a subset of a data directory; give exactly one selection option.

    Example: xllm data subset data/train data/train_1k --first 1000
    """
    from ..data.datadir_ops import subset_datadir

    sub, warnings = subset_datadir(directory, out, first=first, last=last, utt_list=utt_list, spk_list=spk_list)
    _warn(warnings)
    print(f"{out}: {len(sub)} utterances")


@data_app.command("combine")
def combine_cmd(
    out: Path = typer.Argument(..., metavar="OUT", help="Output data directory."),
    directories: List[Path] = typer.Argument(..., metavar="DIR", help="Source data directories."),
) -> None:
    """Combine several data directories into one, like Kaldi's combine_data.sh.

    Utterance ids must be unique across the sources (a duplicate is an error naming
    both directories). text and utt2dur are kept only when every source has them.

    Example: xllm data combine data/train_all data/train data/train_img
    """
    from ..data.datadir_ops import combine_datadirs

    combined, warnings = combine_datadirs(out, directories)
    _warn(warnings)
    print(f"{out}: {len(combined)} utterances from {len(directories)} directories")


@data_app.command("info")
def info_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Data directory to describe."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
) -> None:
    """Summarise a data directory: utterances, speakers, recordings, hours, duration statistics.

    Durations come from utt2dur (else segments, else reco2dur); percentiles are in
    seconds. Also says whether text, images, video and prompts are present.

    Example: xllm data info data/train --json
    """
    from ..data.datadir import DataDir

    info = DataDir.load(directory).info()
    if as_json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    def fmt(value) -> str:
        return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

    table = Table(title=str(directory), show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    for key in ("utterances", "speakers", "recordings"):
        table.add_row(key, str(info[key]))
    hours = info["total_hours"]
    table.add_row("total duration", "-" if hours is None else f"{hours:.2f} h ({hours * 3600:.1f} s)")
    if info["durations_known"] != info["utterances"]:
        table.add_row("durations known", str(info["durations_known"]))
    for key, value in (info["duration_seconds"] or {}).items():
        table.add_row(f"duration {key} (s)", fmt(value))
    table.add_row("segments", "yes" if info["segments"] else "no")
    for key in ("text", "images", "video", "prompts"):
        table.add_row(key, f"{info[key]} utterances" if info[key] else "no")
    Console().print(table)


example_last(data_app)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
