"""The ``xllm`` command line: a thin Typer app; each verb lives in ``commands/``.

User errors print one line (``xllm: error: <file>:<line>: <problem>``) and exit
non-zero; ``--debug`` (or ``XLLM_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Optional

import typer

try:  # Typer >= 0.24 ships its own copy of click; older ones use click itself.
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click import ClickException

from . import __version__
from .errors import XllmError

# Verb modules in the order `xllm --help` lists them.
COMMAND_MODULES = [
    "prep",
    "data",
    "train",
    "average",
    "decode",
    "score",
    "results",
    "transcribe",
    "export",
]

app = typer.Typer(
    name="xllm",
    help=(
        "LLM-based speech recognition after X-LLM: frozen encoders, C-Former/Q-Former "
        "interfaces and a frozen causal LLM, in Kaldi/ESPnet-style recipes.\n\n"
        "Example: xllm prep mini data && xllm data info data/train"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)

_state = {"debug": os.environ.get("XLLM_DEBUG", "") not in ("", "0")}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"xllm {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """xllm: LLM-based speech recognition toolkit."""
    if debug:
        _state["debug"] = True
    from .console import setup_logging

    setup_logging(verbose=_state["debug"])  # commands with a log file call it again with the file


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"xllm_cli.commands.{_name}")
    except ModuleNotFoundError as _e:  # a verb module not written yet must not break the others
        if _e.name != f"xllm_cli.commands.{_name}":
            raise
        continue
    _module.register(app)


def _fail(message: str, code: int = 1) -> None:
    print(f"xllm: error: {message}", file=sys.stderr)
    sys.exit(code)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        _state["debug"] = True
    try:
        app(args=args, prog_name="xllm", standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except ClickException as e:  # usage errors: click's own message, exit code 2
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(1)
    except XllmError as e:
        if _state["debug"]:
            traceback.print_exc()
        _fail(str(e))
    except Exception as e:  # anything else is our bug: still one line unless debugging
        if _state["debug"]:
            traceback.print_exc()
            sys.exit(1)
        _fail(f"{type(e).__name__}: {e} (rerun with --debug for the traceback)")


if __name__ == "__main__":
    run()
