"""The opt-in send tick (GAIA_SEND_TICK_MS): a socket's frames gathered for at most one tick, then
written together, as game servers send at their tick rate.

Without a tick every event is one write per socket, and the kernel's cost per write is most of a
delivery. With one, a socket that got ten events within a tick takes them in one write. Frames
still go through the session's bounded send queue in order (answers, chat and events alike), so
every ordering and slow-consumer rule holds; what changes is only when the queue is written.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Flushable(Protocol):
    """What a tick writes: a session's writer with frames waiting."""

    def flush(self) -> None:
        """Write what waits, now (or hand it to the writer's task when the socket pushes back)."""


class SendTicker:
    """One experience's tick: every socket with frames waiting is written in one pass, without yielding."""

    __slots__ = ("tick_s", "_due", "_handle")

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self._due: list[Flushable] = []
        self._handle: asyncio.TimerHandle | None = None

    def add(self, writer: Flushable) -> None:
        """`writer` has frames waiting: write them at the end of the current tick (started now if none runs)."""
        self._due.append(writer)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.tick_s, self.flush)

    def flush(self) -> None:
        """The tick ends: every waiting socket is written, in the order its frames first waited."""
        self._handle = None
        due, self._due = self._due, []
        for writer in due:
            try:
                writer.flush()
            except Exception:  # noqa: BLE001 - one socket's failure must not starve the others of the tick
                log.exception("send tick: a socket's flush failed")


class SendTicks:
    """This process's send ticks, one per experience; none when `GAIA_SEND_TICK_MS` is 0."""

    __slots__ = ("tick_s", "_by_experience")

    def __init__(self, tick_ms: float) -> None:
        self.tick_s = max(0.0, tick_ms) / 1000
        self._by_experience: dict[str, SendTicker] = {}

    def for_experience(self, experience: str) -> SendTicker | None:
        """The experience's ticker, or None: no tick, every frame written as soon as the socket takes it."""
        if self.tick_s <= 0:
            return None
        ticker = self._by_experience.get(experience)
        if ticker is None:
            ticker = self._by_experience[experience] = SendTicker(self.tick_s)
        return ticker
