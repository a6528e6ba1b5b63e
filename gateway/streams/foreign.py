"""Messages that reached a read path without being the stream's own: dropped, counted, reported rarely.

Only someone holding the gateway's NATS credentials (or kb's) can make them appear (see
streams/headers.py), and every session of an experience sees the same one: one warning per
`REPORT_EVERY_S` for the whole process, with the count since the last, never a line per session or
message and never a traceback. `gaia_gateway_stream_foreign_total{path}` counts every dropped copy.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable

log = logging.getLogger(__name__)
REPORT_EVERY_S = 60.0
PATHS = ("live", "direct", "consumer", "last")


class ForeignMessages:
    """Counts dropped foreign messages by read path and logs at most one line per interval."""

    def __init__(self, report_every_s: float = REPORT_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[str] = Counter()
        self._report_every_s = report_every_s
        self._clock = clock
        self._reported_at: float | None = None
        self._unreported = 0

    def drop(self, path: str, subject: str, why: str) -> None:
        """One message on `subject` read by `path` (live, direct, consumer, last) was not the stream's."""
        self.counts[path] += 1
        self._unreported += 1
        now = self._clock()
        if self._reported_at is not None and now - self._reported_at < self._report_every_s:
            return
        log.warning("dropped %d message(s) not from the stream since the last report (latest on %s, %s read: %s); "
                    "something else holds this gateway's NATS credentials or the server's rights are too wide",
                    self._unreported, subject, path, why)
        self._reported_at, self._unreported = now, 0
