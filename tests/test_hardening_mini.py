"""Issue 12: a ``.span`` sidecar of the mini corpus that a kill left empty or broken counts as not done."""

from __future__ import annotations

from xllm_cli.corpora.mini import _read_span


def test_read_span(tmp_path):
    span = tmp_path / "u.span"
    assert _read_span(span) == (False, None)  # missing
    for broken in ("", "[1.0", "{}", "[1, 2, 3]", '"x"'):
        span.write_text(broken)
        assert _read_span(span) == (False, None), broken
    span.write_text("null")
    assert _read_span(span) == (True, None)  # no key word: done
    span.write_text("[0.5, 1.25]")
    assert _read_span(span) == (True, [0.5, 1.25])
