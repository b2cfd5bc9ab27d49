"""The ``xllm`` command line: a thin Typer app; each verb lives in ``commands/``.

User errors print one line (``xllm: error: <file>:<line>: <problem>``) and exit
non-zero; ``--debug`` (or ``XLLM_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
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
    from .plugins import load_plugins

    setup_logging(verbose=_state["debug"])  # commands with a log file call it again with the file
    load_plugins()  # registries of families, encoders and decoding systems from XLLM_PLUGINS


for _name in COMMAND_MODULES:
    importlib.import_module(f"xllm_cli.commands.{_name}").register(app)


def _fail(message: str, code: int = 1) -> None:
    print(f"xllm: error: {message}", file=sys.stderr)
    sys.exit(code)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        _state["debug"] = True
    try:
        # Without standalone mode Typer *returns* what ctx.exit()/typer.Exit(code) gave
        # (and 130 for Ctrl-C) instead of exiting: that code is the process's status.
        code = app(args=args, prog_name="xllm", standalone_mode=False)
    except typer.Exit as e:
        sys.exit(exit_status(e.exit_code))
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
    except pickle.UnpicklingError as e:  # torch.load(weights_only=True) refused a file
        if _state["debug"]:
            traceback.print_exc()
        _fail(_refused_pickle(e))
    except Exception as e:  # anything else is our bug: still one line unless debugging
        if _state["debug"]:
            traceback.print_exc()
            sys.exit(1)
        _fail(f"{type(e).__name__}: {_first_line(e)} (rerun with --debug for the traceback)")
    status = exit_status(code)
    if status == 130:
        _fail("interrupted", 130)
    if status:
        sys.exit(status)


def exit_status(code: object) -> int:
    """The process status for what a command returned or exited with.

    An int is the status (a child's ``-N``, killed by signal N, becomes ``128+N``
    as a shell reports it; ``bool`` and other values are not statuses and mean 0).
    """
    if isinstance(code, bool) or not isinstance(code, int):
        return 0
    if code < 0:
        return 128 - code
    return code if code < 256 else 1


def _refused_pickle(e: BaseException) -> str:
    """One line for a pickle ``torch.load(weights_only=True)`` refused.

    torch's own message advises ``weights_only=False``, i.e. running code from the
    file: never repeat that advice for a file that may be untrusted.
    """
    found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
    what = f" (it names {found.group(1)})" if found else ""
    return f"refused to load a pickled file that holds more than plain tensors{what}; xllm loads only tensors and plain data"


def _first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message (some, e.g. torch's, run to pages)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


if __name__ == "__main__":
    run()
