"""Where an event's time goes inside one gateway process: a few stamps per event, never one per log line.

For each stream sequence the process keeps kb's commit time (the event's own `timestamp`), when the
first copy's message reached this process, and the first and last socket write of its copies, in
wall-clock seconds so a benchmark on the same machine can line them up with its own clocks. A
bounded dict (the newest `size` events) read by `GET /debug/event-timings`; a copy costs one dict
lookup and one clock read.
"""
from __future__ import annotations

import time
from typing import Any

TIMINGS_SIZE = 4096
COMMITTED, RECEIVED, FIRST_WRITE, LAST_WRITE, WRITES = range(5)


def frame_seq(frame: bytes) -> int:
    """The `seq` an event frame (`{"seq":N,...`) starts with."""
    return int(frame[7:frame.index(b",", 7)])


class EventTimings:
    """Per-event stamps of one gateway process: committed, received, first and last write, writes."""

    __slots__ = ("size", "_events")

    def __init__(self, size: int = TIMINGS_SIZE) -> None:
        self.size = size
        self._events: dict[int, list[float]] = {}

    def received(self, seq: int, event: dict[str, Any]) -> None:
        """The first copy of `seq` reached this process (validated now)."""
        committed = event.get("timestamp")
        self._events[seq] = [committed / 1000 if isinstance(committed, (int, float)) else 0.0, time.time(),
                             0.0, 0.0, 0]
        if len(self._events) > self.size:
            del self._events[next(iter(self._events))]

    def wrote(self, frame: bytes) -> None:
        """One frame was handed to its socket now; an event's copy moves that event's stamps."""
        if frame.startswith(b'{"seq":'):
            self._stamp(frame_seq(frame), time.time(), 1)

    def wrote_all(self, frames: list[bytes]) -> None:
        """Frames handed to one socket together, now."""
        now = time.time()
        for frame in frames:
            if frame.startswith(b'{"seq":'):
                self._stamp(frame_seq(frame), now, 1)

    def _stamp(self, seq: int, now: float, writes: int) -> None:
        stamps = self._events.get(seq)
        if stamps is None:
            return
        if not stamps[FIRST_WRITE]:
            stamps[FIRST_WRITE] = now
        stamps[LAST_WRITE] = now
        stamps[WRITES] += writes

    def recent(self, after: int = 0) -> list[list[float]]:
        """`[seq, committed, received, first_write, last_write, writes]` of every kept event after `after`."""
        return [[seq, *stamps] for seq, stamps in self._events.items() if seq > after]
