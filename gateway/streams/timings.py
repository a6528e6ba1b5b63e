"""Where an event's time goes inside one gateway process: a few stamps per event, never one per log line.

For each stream sequence the process keeps kb's commit time (the event's own `timestamp`), when the
first copy's message reached this process, and the first and last socket write of its copies, in
wall-clock seconds so a benchmark on the same machine can line them up with its own clocks. A
bounded dict (the newest `size` events) read by `GET /debug/event-timings`; a copy costs a prefix
test and a count (a run of copies is stamped once, at the end of the event loop's turn).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.streams.frameformat import event_head, event_seq

TIMINGS_SIZE = 4096
COMMITTED, RECEIVED, FIRST_WRITE, LAST_WRITE, WRITES = range(5)


class EventTimings:
    """Per-event stamps of one gateway process: committed, received, first and last write, writes."""

    __slots__ = ("size", "_events", "_head", "_stamps", "_unsettled", "_settling")

    def __init__(self, size: int = TIMINGS_SIZE) -> None:
        self.size = size
        self._events: dict[int, list[float]] = {}
        # The event being written, as its frames start, and its stamps: a broadcast's copies are written
        # one after another in one turn of the event loop, so a copy costs a prefix test and a count,
        # and the run's last write is stamped once, when the turn ends (`_settle`).
        self._head = b"-"
        self._stamps: list[float] | None = None
        self._unsettled = 0  # copies of that event written since its last stamp
        self._settling = False

    def received(self, seq: int, event: dict[str, Any]) -> None:
        """The first copy of `seq` reached this process (validated now)."""
        committed = event.get("timestamp")
        self._events[seq] = [committed / 1000 if isinstance(committed, (int, float)) else 0.0, time.time(),
                             0.0, 0.0, 0]
        if len(self._events) > self.size:
            del self._events[next(iter(self._events))]

    def wrote(self, frame: bytes) -> None:
        """One frame was handed to its socket now; an event's copy moves that event's stamps."""
        if self._unsettled and frame.startswith(self._head):
            self._unsettled += 1
            return
        seq = event_seq(frame)
        if seq is not None:
            self._begin(seq)

    def wrote_all(self, frames: list[bytes]) -> None:
        """Frames handed to one socket together, in one write: each event's stamps move to that instant."""
        now = time.time()
        self._settle(now)
        events = self._events
        for frame in frames:
            seq = event_seq(frame)
            if seq is not None:
                stamps = events.get(seq)
                if stamps is not None:
                    stamps[FIRST_WRITE] = stamps[FIRST_WRITE] or now
                    stamps[LAST_WRITE] = now
                    stamps[WRITES] += 1
        self._head = b"-"  # the next single write starts a run of its own

    def _begin(self, seq: int) -> None:
        """A run of copies of `seq` starts now: the previous run is stamped, this one at the turn's end."""
        self._settle()
        stamps = self._events.get(seq)
        self._head, self._stamps, self._unsettled = event_head(seq), stamps, 1
        if stamps is not None and not stamps[FIRST_WRITE]:
            stamps[FIRST_WRITE] = time.time()
        if not self._settling:
            try:
                asyncio.get_running_loop().call_soon(self._settle)
                self._settling = True
            except RuntimeError:  # no loop (a unit test): stamped at once
                self._settle()

    def _settle(self, now: float = 0.0) -> None:
        """Stamp the run being written: its last write is now, its copies are counted."""
        self._settling = False
        stamps = self._stamps
        if self._unsettled and stamps is not None:
            stamps[LAST_WRITE] = now or time.time()
            stamps[WRITES] += self._unsettled
        self._unsettled = 0

    def recent(self, after: int = 0) -> list[list[float]]:
        """`[seq, committed, received, first_write, last_write, writes]` of every kept event after `after`."""
        return [[seq, *stamps] for seq, stamps in self._events.items() if seq > after]
