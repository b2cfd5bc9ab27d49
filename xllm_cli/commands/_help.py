"""Help text of the command modules: the docstring's ``Example:`` line printed last.

Typer prints a command's description above its options, so an example kept in the
description would end up in the middle of ``--help``; as the epilog it comes last.
"""

from __future__ import annotations

import inspect

import typer


def split_example(doc: str) -> tuple[str, str | None]:
    """(description, ``Example: ...`` line or None) of a docstring, one line per paragraph.

    Typer's rich help keeps the docstring's own line breaks, so paragraphs are joined
    into single lines and left to the terminal to wrap.
    """
    paragraphs = [" ".join(line.strip() for line in p.splitlines()) for p in inspect.cleandoc(doc).split("\n\n")]
    if paragraphs[-1].startswith("Example:"):
        return "\n\n".join(paragraphs[:-1]), paragraphs[-1]
    return "\n\n".join(paragraphs), None


def help_options(callback) -> dict[str, str | None]:
    """``help=`` and ``epilog=`` for ``app.command(...)`` from the callback's docstring."""
    description, example = split_example(callback.__doc__ or "")
    return {"help": description, "epilog": example}


def example_last(app: typer.Typer) -> None:
    """Give every command of ``app`` registered without explicit help its docstring's
    description as help and its example as the epilog."""
    for command in app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            options = help_options(command.callback)
            command.help, command.epilog = options["help"], options["epilog"]
