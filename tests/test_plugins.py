"""XLLM_PLUGINS: every command imports the named modules first, so their registrations exist."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_every_command_imports_the_plugins(tmp_path):
    (tmp_path / "my_plugin.py").write_text(textwrap.dedent("""
        from xllm_cli.decoding.systems import SYSTEMS
        import pathlib
        pathlib.Path(__file__).with_name("imported").write_text("yes")
    """))
    env = {"XLLM_PLUGINS": "my_plugin", "PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "xllm_cli", "score", "--help"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "imported").read_text() == "yes"


def test_a_plugin_that_cannot_be_imported_is_one_line(tmp_path):
    env = {"XLLM_PLUGINS": "no_such_plugin_module", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "xllm_cli", "results", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "xllm: error: XLLM_PLUGINS: cannot import no_such_plugin_module (No module named 'no_such_plugin_module')"]
