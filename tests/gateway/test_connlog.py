"""Session lines (gateway/connlog.py): every session's line at INFO up to the rate, then DEBUG and one count."""
from __future__ import annotations

import logging

import pytest

from gateway.connlog import SessionLines


def test_lines_beyond_the_rate_go_to_debug_and_are_counted_once_the_window_ends(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("gateway.connlog.time.monotonic", lambda: now[0])
    lines = SessionLines(window_s=10, lines=3)
    caplog.set_level(logging.DEBUG, logger="gateway.ws.session")
    for i in range(5):
        lines.line("opened", "[c%d] open", i)
    lines.line("closed", "[c0] closed")
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert info == ["[c0] open", "[c1] open", "[c2] open"]
    assert debug == ["[c3] open", "[c4] open", "[c0] closed"]  # every line still there, at DEBUG
    now[0] += 10
    caplog.clear()
    lines.line("opened", "[c5] open")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "2 more sessions opened and 1 closed in the last 10 s (their lines at DEBUG)", "[c5] open"]
