"""Options that several commands share, defined once so that their help reads the same."""

from __future__ import annotations

import typer

TRUST_REMOTE_CODE_HELP = (
    "Allow model folders to run their own Python code (transformers' trust_remote_code). "
    "Never taken from a recipe or an experiment's config.yaml."
)


def trust_remote_code_option() -> bool:
    """``--trust-remote-code``: pass the value to :func:`xllm_cli.trust.allow_remote_code`."""
    return typer.Option(False, "--trust-remote-code", help=TRUST_REMOTE_CODE_HELP)
