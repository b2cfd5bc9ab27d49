"""Whether Python code shipped inside a model folder may run (transformers' ``trust_remote_code``).

A model directory can carry its own modelling code, and loading it with
``trust_remote_code=True`` executes that code. Only the person at the command line
may allow that, for the one process that got ``--trust-remote-code``; a value in a
recipe or in an experiment's saved ``config.yaml`` never does, because those files
travel with experiments and downloads. A config that asks for remote code without
the flag is refused with a one-line error instead of silently loading something else.
"""

from __future__ import annotations

from .errors import XllmError

_allowed = False


def allow_remote_code(allowed: bool) -> None:
    """Set by the CLI layer from ``--trust-remote-code`` (default: not allowed)."""
    global _allowed
    _allowed = bool(allowed)


def remote_code_allowed() -> bool:
    return _allowed


def trust_remote_code_for(path: str, requested: bool) -> bool:
    """The ``trust_remote_code`` value to pass to transformers when loading ``path``.

    ``requested`` is what the config says (``model.llm.trust_remote_code``). Asking
    without the command-line flag is an error naming the folder and the way out.
    """
    if requested and not _allowed:
        raise XllmError(
            f"{path}: the config sets trust_remote_code, which would run Python code from this folder; "
            "rerun with --trust-remote-code if you trust it"
        )
    return _allowed
