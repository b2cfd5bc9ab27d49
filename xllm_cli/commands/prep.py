"""``xllm prep``: corpora into Kaldi-style data directories (docs/data-dir.md).

Sub-commands: ``aishell``, ``aishell2``, ``dir`` (a user's own folder) here;
``mini`` and ``manifest`` come from their own modules when present.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Optional

import typer

from ._help import example_last

prep_app = typer.Typer(
    help=(
        "Prepare a corpus into Kaldi-style data directories (wav.scp, text, utt2spk, spk2utt, utt2dur), "
        "ready for `xllm data validate` and training."
    ),
    epilog="Example: xllm prep aishell /data/aishell data",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Sub-commands that live in their own modules.
for _name in ("prep_mini", "prep_manifest"):
    importlib.import_module(f"{__package__}.{_name}").add_to(prep_app)


def register(app: typer.Typer) -> None:
    example_last(prep_app)  # after every module above and below has added its commands
    app.add_typer(prep_app, name="prep")


JOBS_HELP = (
    "Threads reading audio headers. 1 is fastest on a local disk whose files are cached; "
    "more help on network or cold file systems."
)


def _run_prep(data: Path, log_name: str, corpus: Path, what: str, prepare: Callable[[], object]) -> None:
    """Check the input folder first (so a typo writes nothing), log to DATA/<log_name>,
    run ``prepare()`` and print what it wrote."""
    import time

    from ..console import log, setup_logging
    from ..errors import require_dir

    require_dir(corpus, what)
    setup_logging(data / log_name)
    log.info(f"log file: {data / log_name}")
    start = time.perf_counter()
    report = prepare()
    _summary(report, data, time.perf_counter() - start)


def _summary(report, data: Path, seconds: float) -> None:
    from ..console import console

    skipped = []
    if report.no_transcript:
        skipped.append(f"{len(report.no_transcript):,} audio files without a transcript")
    if report.no_audio:
        skipped.append(f"{len(report.no_audio):,} transcripts without audio")
    if report.empty_transcript:
        skipped.append(f"{len(report.empty_transcript):,} empty transcripts")
    if skipped:
        console.print("skipped " + " and ".join(skipped) + " (listed in the log file)")
    written = ", ".join(f"{name} ({stats.utterances:,})" for name, stats in report.sets.items())
    console.print(f"{data}: wrote {written} in {seconds:.1f} s")


@prep_app.command("aishell")
def aishell(
    corpus: Path = typer.Argument(..., metavar="CORPUS", help="Folder holding data_aishell/ (or data_aishell/ itself, or data_aishell.tgz), as distributed: per-speaker tarballs or extracted wav/{train,dev,test}/."),
    data: Path = typer.Argument(..., metavar="DATA", help="Output folder: writes DATA/train, DATA/dev, DATA/test and the log DATA/prep_aishell.log."),
    extract: bool = typer.Option(True, "--extract/--no-extract", help="Extract the per-speaker tarballs in data_aishell/wav/ (safely, in place, resumable: a marker file per tarball). --no-extract uses the extracted folders as they are."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help=JOBS_HELP),
) -> None:
    """Prepare AISHELL-1 (openslr 33): 120,098 / 14,326 / 7,176 utterances in train / dev / test.

    Utterance ids stay as in the corpus (BAC009S0002W0122), speakers are their
    prefix (BAC009S0002), transcripts lose the word-segmentation spaces, utt2dur
    comes from the wav headers. Wavs without a transcript (325 in the real
    corpus) and transcript lines without audio are reported and skipped.

    Example: xllm prep aishell /data/aishell data
    """
    from ..corpora.aishell import prepare_aishell

    _run_prep(data, "prep_aishell.log", corpus, "corpus folder",
              lambda: prepare_aishell(corpus, data, extract=extract, jobs=jobs))


@prep_app.command("aishell2")
def aishell2(
    corpus: Path = typer.Argument(..., metavar="CORPUS", help="Folder holding iOS/{data,dev,test} (each with wav.scp and trans.txt); AISHELL-2/iOS/ below it or the iOS folder itself work too."),
    data: Path = typer.Argument(..., metavar="DATA", help="Output folder: DATA/train, DATA/dev, DATA/test, and DATA/{dev,test}_{ios,android,mic} from the evaluation package; log in DATA/prep_aishell2.log."),
    eval_dir: Optional[Path] = typer.Option(None, "--eval", metavar="DIR", help="The 2018A-EVAL package, e.g. AISHELL-DEV-TEST-SET with {iOS,Android,Mic}/{dev,test}/ (default: looked for within two levels of CORPUS)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help=JOBS_HELP),
) -> None:
    """Prepare AISHELL-2 (iOS training data) and its evaluation sets on three channels.

    Folder names are matched case-insensitively; dev.tar.gz/test.tar.gz of the
    evaluation package are extracted safely when not yet unpacked. Speakers are
    the utterance-id prefix (ID0002 for ID0002W0001).

    Example: xllm prep aishell2 /data/AISHELL-2 data
    """
    from ..corpora.aishell2 import prepare_aishell2

    _run_prep(data, "prep_aishell2.log", corpus, "corpus folder",
              lambda: prepare_aishell2(corpus, data, eval_dir=eval_dir, jobs=jobs))


@prep_app.command("dir")
def own_dir(
    audio_dir: Path = typer.Argument(..., metavar="AUDIO_DIR", help="Your folder of audio files (searched recursively), each with a same-named .txt transcript beside it unless --tsv is given."),
    data: Path = typer.Argument(..., metavar="DATA", help="Output data directory, e.g. data/mine (log: DATA/prep_dir.log)."),
    tsv: Optional[Path] = typer.Option(None, "--tsv", metavar="FILE", help="Transcripts as 'path<TAB>transcript' lines instead of .txt files; relative paths start from AUDIO_DIR."),
    ext: str = typer.Option(",".join(("wav", "flac", "mp3", "ogg", "opus", "m4a")), "--ext", help="Comma-separated audio extensions to look for (without --tsv)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help=JOBS_HELP + " With --resample: processes converting audio."),
    resample: Optional[int] = typer.Option(None, "--resample", metavar="RATE", min=1, help="Convert audio that is not 16-bit mono PCM WAV at RATE (e.g. FLAC, MP3, 44.1 kHz stereo) into DATA/wav/, so that Kaldi and lhotse can read wav.scp; usually 16000. Resumable: files already converted are kept."),
) -> None:
    """Prepare your own folder of audio files with transcripts.

    Utterance ids come from the relative paths (spk1/a.wav -> spk1-a), the
    speaker from the folder (spk1; spk-1 becomes spk_1 so that Kaldi's sort order
    holds), or the id itself for files at the top. Empty transcripts are skipped
    and counted.

    Example: xllm prep dir ~/recordings data/mine --ext wav,flac --resample 16000
    """
    from ..corpora.generic import check_output_dir, prepare_dir

    if audio_dir.is_dir():
        check_output_dir(audio_dir, data)  # before the log file goes into DATA
    _run_prep(data, "prep_dir.log", audio_dir, "audio folder",
              lambda: prepare_dir(audio_dir, data, tsv=tsv, extensions=ext, jobs=jobs, resample=resample))
