"""``xllm prep mini``: synthesize the embedded mini corpus (speech, pictures, clips)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def add_to(prep_app: typer.Typer) -> None:
    prep_app.command("mini")(mini)


def mini(
    data: Path = typer.Argument(..., metavar="DATA", help="Output folder: DATA/{train,dev,test,train_img,test_img,test_img_noisy,video} data directories, DATA/lm_text/text, DATA/local/ (lexicon, held-out combinations, drowned-word spans), log DATA/prep_mini.log."),
    audio_dir: Optional[Path] = typer.Option(None, "--audio-dir", metavar="DIR", help="Where the wav/png/mp4 files go (default: DATA/audio). Paths in the data directories are absolute."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same sentences, speakers, noise and pictures (audio identical given the same espeak-ng)."),
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Worker processes synthesizing audio."),
    lang: str = typer.Option("zh", "--lang", metavar="zh|en", help="Language: zh (Mandarin, espeak-ng cmn-latn-pinyin) or en (English, espeak-ng American and British voices: lower-case words, no punctuation, numbers in words). With one seed the en corpus translates the zh one sentence by sentence, with the same pictures."),
    scale: float = typer.Option(1.0, "--scale", hidden=True, help="Multiply every set size (tests use 0.05)."),
    backend: str = typer.Option("auto", "--espeak", hidden=True, help="espeak-ng back end: auto (the espeak-ng program if on PATH, else the espeakng-loader library), binary, library."),
) -> None:
    """Synthesize the mini corpus: Mandarin (or English) smart-home commands spoken by espeak-ng.

    About 70 distinct characters in 12 sentence templates (colours, objects,
    counts, temperatures, times, dates, rooms), 12 espeak voices as speakers,
    140-200 wpm, noise at 15-30 dB SNR, 16 kHz mono wav. Test and dev sentences
    are slot combinations never seen in training or in lm_text. train_img and
    test_img pair each utterance with a 96x96 PNG of what it names (colour,
    object, count); test_img_noisy drowns exactly that word in noise, so only
    the picture can tell it (30% of train_img is drowned the same way, so that a
    model learns to look). video has 20 MP4 clips (moving picture + speech).

    --lang en writes the same sets in English (96 distinct words, e.g.
    "there are three red cups on the table"), for a pretrained English LLM
    whose tokenizer splits Chinese characters into several tokens; DATA/local
    then has words.txt instead of the pinyin lexicon.

    Deterministic and resumable: a rerun with the same arguments reuses the
    finished files (named by a digest of their settings). Needs ffmpeg and
    espeak-ng (Debian package, or pip's espeakng-loader). About 80 CPU-seconds:
    under a minute on 2 idle cores.

    Examples: xllm prep mini data --jobs 2;  xllm prep mini data_en --lang en
    """
    from rich.table import Table

    from ..console import console, setup_logging
    from ..corpora.mini import MiniOptions, prepare_mini

    setup_logging(data / "prep_mini.log")
    opts = MiniOptions(seed=seed, scale=scale, jobs=jobs, audio_dir=audio_dir, backend=backend, lang=lang)
    report = prepare_mini(data, opts)
    table = Table(title=f"mini corpus in {data}")
    for column in ("set", "utterances", "speakers", "hours", f"distinct {report.unit}"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name, s in report.sets.items():
        table.add_row(name, f"{s['utterances']:,}", str(s["speakers"] or "-"),
                      f"{s['hours']:.3f}" if s["hours"] else "-", str(s["units"]))
    console.print(table)
    console.print(f"{report.made:,} utterances synthesized, {report.reused:,} reused "
                  f"(espeak-ng {report.backend}) in {report.seconds:.1f} s")
