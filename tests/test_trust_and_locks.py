"""Remote code needs the command-line flag; one writer per locked directory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from xllm_cli import trust
from xllm_cli.errors import XllmError
from xllm_cli.locks import exclusive


def test_config_asking_for_remote_code_without_the_flag_is_refused():
    trust.allow_remote_code(False)
    with pytest.raises(XllmError, match=r"/models/x: the config sets trust_remote_code.*--trust-remote-code"):
        trust.trust_remote_code_for("/models/x", requested=True)
    assert trust.trust_remote_code_for("/models/x", requested=False) is False


def test_the_flag_grants_remote_code():
    try:
        trust.allow_remote_code(True)
        assert trust.trust_remote_code_for("/models/x", requested=True) is True
    finally:
        trust.allow_remote_code(False)


def test_second_holder_is_told_who_holds_the_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from xllm_cli.locks import exclusive
            with exclusive({str(tmp_path)!r}, "stage 1"):
                print("held", flush=True)
                time.sleep(30)
        """)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(XllmError, match=rf"{tmp_path}: stage 1 is in use by pid {holder.pid} on "):
            with exclusive(tmp_path, "stage 1"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive(tmp_path, "stage 1"):  # a killed holder leaves no stale lock
        pass


def test_ct2_export_runs_a_folders_code_only_with_the_flag(monkeypatch, tmp_path):
    import ctranslate2

    from xllm_cli.decoding import ct2

    seen = []

    def spy_init(self, model_name_or_path, **kwargs):
        seen.append(kwargs["trust_remote_code"])

    monkeypatch.setattr(ctranslate2.converters.TransformersConverter, "__init__", spy_init)
    try:
        ct2._converter(tmp_path, [])
        trust.allow_remote_code(True)
        ct2._converter(tmp_path, [])
    finally:
        trust.allow_remote_code(False)
    assert seen == [False, True]
