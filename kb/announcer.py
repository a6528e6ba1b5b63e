"""Presence announcements coalesced per experience over a short window: churn costs frames per change,
not per player."""
from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Awaitable, Callable

from kb.events import OutboxEvent, presence_batch_event, presence_event
from kb.outbox import now_ms
from kb.presence import PresenceChange
from shared.service.tasks import raise_if_cancelled

log = logging.getLogger(__name__)
BATCH_LIMIT = 200  # changes per presence_batch frame: a frame stays a few KB however big the storm


class PresenceAnnouncer:
    """Collects join/leave changes for one experience and commits their net effect once per window.

    A user who leaves and comes back inside one window (a phone switching networks, a page
    reload) was present before and after: nobody is told. Everyone else is told once per
    window, in one `presence_batch` frame when several players changed (one `presence` frame
    when only one did), so a storm of N joins costs each player N/BATCH_LIMIT frames.
    """

    def __init__(self, experience: str, window_s: float, area_of: Callable[[str], str],
                 commit: Callable[[list[OutboxEvent], int], Awaitable[None]]) -> None:
        self.experience = experience
        self.window_s = window_s
        self._area_of = area_of
        self._commit = commit
        self._net: dict[str, tuple[bool, str]] = {}  # user -> (present before the window, last event)
        self._wake = asyncio.Event()
        self.frames = 0
        self.cancelled = 0
        self.generation = 0  # bumped whenever what has been announced, or is waiting to be, changes

    def announced(self, user_id: str, present: bool) -> bool:
        """Whether the others have been told `user_id` is present (`present`: what the book says now).

        A snapshot lists exactly these players: one who joined inside the current window is not
        listed yet (the window's join follows), so one who also left inside it is no ghost.
        """
        pending = self._net.get(user_id)
        return present if pending is None else pending[0]

    def waiting(self) -> list[str]:
        """Users with a change waiting for the end of the window."""
        return list(self._net)

    def add(self, changes: list[PresenceChange]) -> None:
        """Note changes; the next flush announces what they add up to."""
        for change in changes:
            before, _ = self._net.get(change.user_id, (change.event == "leave", ""))
            self._net[change.user_id] = (before, change.event)
        self.generation += 1
        if self._net:
            self._wake.set()

    async def run(self) -> None:
        """Flush once per window while changes come in; stops only when cancelled."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.window_s)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - the changes stay queued; the next window retries them
                raise_if_cancelled()
                log.exception("presence announcement for %s failed; retrying next window", self.experience)

    async def flush(self) -> None:
        """Commit the window's net changes (durable when this returns)."""
        self._wake.clear()
        net, self._net = self._net, {}
        self.generation += 1
        events = self.events_for(net)
        if not events:
            return
        try:
            await self._commit(events, now_ms())
        except BaseException:
            for user, entry in net.items():  # put back, unless newer changes of the same user arrived
                self._net.setdefault(user, entry)
            self.generation += 1
            self._wake.set()
            raise
        self.frames += len(events)

    def events_for(self, net: dict[str, tuple[bool, str]]) -> list[OutboxEvent]:
        """The outbox events announcing `net`: round trips dropped, the rest batched."""
        changed = [(user, event) for user, (before, event) in net.items() if before != (event == "join")]
        self.cancelled += len(net) - len(changed)
        now = now_ms()
        entries = [{"event": event, "user_id": user, "area_id": self._area_of(user)} for user, event in changed]
        if len(entries) == 1:
            only = entries[0]
            return [presence_event(experience=self.experience, user_id=only["user_id"], event=only["event"],
                                   area_id=only["area_id"], now_ms=now, nonce=secrets.token_hex(8))]
        return [presence_batch_event(experience=self.experience, changes=entries[start:start + BATCH_LIMIT],
                                     now_ms=now, nonce=secrets.token_hex(8))
                for start in range(0, len(entries), BATCH_LIMIT)]
