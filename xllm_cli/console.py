"""Console output, log files and progress bars shared by every command.

Messages go to stderr (stdout stays free for results a user may pipe); a long
job also logs to a file so a run can be inspected after the terminal is gone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console
from rich.text import Text
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
log = logging.getLogger("xllm")


def setup_logging(log_file: str | Path | None = None, verbose: bool = False) -> logging.Logger:
    """Log to the console (rich) and, when given, append to ``log_file``."""
    log.setLevel(logging.DEBUG)
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    to_console = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    to_console.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.addHandler(to_console)
    if log_file is not None:
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        to_file.setLevel(logging.DEBUG)
        log.addHandler(to_file)
    log.propagate = False
    return log


class RateColumn(TextColumn):
    """Items per second, with a unit (``utt/s``, ``files/s``)."""

    def __init__(self, unit: str = "it") -> None:
        super().__init__("")
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        text = f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s"
        return Text(text, style="progress.data.speed")


def progress_bar(unit: str = "it", transient: bool = False) -> Progress:
    """A rich progress bar with count, rate and ETA; disabled when stderr is not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not console.is_terminal,
    )
