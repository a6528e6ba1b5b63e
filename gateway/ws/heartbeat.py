"""Heartbeat: a client silent for `every_s` gets a ping; no answer within half that, and it is gone.

aiohttp's own heartbeat counts any byte received as a sign of life, so a client that never reads
could keep its socket (and what the gateway queues for it) forever by sending unsolicited pongs.
Here only a finished message, or the pong that echoes our ping's random payload, counts.
"""
from __future__ import annotations

import asyncio
import os
from typing import Callable


class Heartbeat:
    """One timer per socket: the next check, rescheduled lazily (never per message)."""

    __slots__ = ("every_s", "send_ping", "on_lost", "_loop", "_alive_at", "_token", "_token_due", "_timer")

    def __init__(self, every_s: float, send_ping: Callable[[bytes], None], on_lost: Callable[[], None]) -> None:
        self.every_s = every_s
        self.send_ping = send_ping  # writes a ping frame with this payload
        self.on_lost = on_lost  # our ping went unanswered
        self._loop = asyncio.get_running_loop()
        self._alive_at = self._loop.time()
        self._token: bytes | None = None  # the payload of the ping that waits for its pong...
        self._token_due = 0.0  # ...until then
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(self._alive_at + every_s, self._check)

    def alive(self) -> None:
        """A finished message from the client."""
        self._alive_at = self._loop.time()
        self._token = None

    def pong(self, payload: bytes) -> None:
        """A pong from the client: a sign of life only if it answers our ping."""
        if self._token is not None and payload == self._token:
            self.alive()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        now = self._loop.time()
        if self._token is not None:
            if now >= self._token_due:  # our ping went unanswered
                self._timer = None
                self.on_lost()
                return
            due = self._token_due
        else:
            due = self._alive_at + self.every_s
            if now >= due:  # silent for a whole period: ask
                self._token = os.urandom(8)
                self._token_due = due = now + self.every_s / 2
                self.send_ping(self._token)
        self._timer = self._loop.call_at(due, self._check)
