"""Session open and close lines: one INFO line each up to a rate, then DEBUG and a count said once per window.

A restart storm or a crowd joining is thousands of connects a second: a line each is a process's
CPU spent on its log (and a log no one reads). Below the rate every session has its line, as before.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger("gateway.ws.session")

WINDOW_S = 10.0
LINES_PER_WINDOW = 50  # opens and closes said at INFO in a window; the rest at DEBUG, counted


class SessionLines:
    """The per-process budget of session lines."""

    def __init__(self, window_s: float = WINDOW_S, lines: int = LINES_PER_WINDOW) -> None:
        self.window_s, self.lines = window_s, lines
        self.started = time.monotonic()
        self.said = 0
        self.quiet = {"opened": 0, "closed": 0}  # lines put at DEBUG in this window

    def line(self, kind: str, message: str, *args: object) -> None:
        """`message` at INFO while the window has room, else at DEBUG and counted under `kind`."""
        now = time.monotonic()
        if now - self.started >= self.window_s:
            if any(self.quiet.values()):
                log.info("%d more sessions opened and %d closed in the last %.0f s (their lines at DEBUG)",
                         self.quiet["opened"], self.quiet["closed"], now - self.started)
            self.started, self.said, self.quiet = now, 0, {"opened": 0, "closed": 0}
        if self.said < self.lines:
            self.said += 1
            log.info(message, *args)
        else:
            self.quiet[kind] += 1
            log.debug(message, *args)


LINES = SessionLines()
