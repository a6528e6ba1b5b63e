"""The imperative shell around the rules: one WorldService per experience, serialising its writes."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from kb.events import presence_event, world_update_events
from kb.outbox import OutboxPublisher, now_ms
from kb.presence import PresenceBook, PresenceChange
from kb.store import Store, VersionConflict
from kb.world import autonomy
from kb.world.content import Content
from kb.world.model import World, area_of_interest, initial_world, player_state
from kb.world.rules import Outcome, apply_action

log = logging.getLogger(__name__)
WORLD_ACTOR = "world"


class WorldService:
    """Holds one experience's current world; every change goes rules -> store (state + outbox) -> publisher."""

    def __init__(self, content: Content, store: Store, publisher: OutboxPublisher, presence: PresenceBook,
                 announce_presence: bool = True) -> None:
        self.content = content
        self.announce_presence = announce_presence
        self.store = store
        self.publisher = publisher
        self.presence = presence
        self.world: World = initial_world(content)
        self._lock = asyncio.Lock()
        self._presence_lock = asyncio.Lock()
        self._pending_presence: list[tuple[str, str, bytes]] = []

    @property
    def experience(self) -> str:
        return self.content.experience

    async def load(self) -> None:
        """Load the saved world, or save version 0 if this experience was never played."""
        saved = await self.store.load_world(self.experience)
        if saved is None:
            await self.store.commit(self.experience, 0, self.world, [], now_ms())
            saved = await self.store.load_world(self.experience)
        assert saved is not None
        self.world = saved

    async def take_over(self) -> None:
        """This process just became the world's owner: reload state and presence another kb may have changed."""
        async with self._lock:
            await self.load()
            self.presence.reload_experience(self.experience, await self.store.load_presence())

    def view(self, user_id: str) -> dict[str, Any]:
        """The player's area_of_interest at the current version."""
        return area_of_interest(self.world, self.content, user_id)

    async def join_and_view(self, user_id: str, session_id: str, gateway_id: str, now: float) -> dict[str, Any]:
        """Register a session and take its snapshot between two commits.

        Under the write lock no commit is half-done, so every change after this snapshot is
        addressed to the new player too: their version chain starts here without a hole.
        """
        async with self._lock:
            changes = self.presence.join(session_id, user_id, self.experience, gateway_id, now)
            view = self.view(user_id)
        await self.announce(changes)
        return view

    async def act(self, user_id: str, args: dict[str, Any], trace_id: str = "") -> dict[str, Any]:
        """Apply one player action; commit and publish it if it changed the world."""
        outcome = await self._commit(lambda world, now: apply_action(self.content, world, user_id, args, now),
                                     actor_id=user_id, trace_id=trace_id)
        return {"success": outcome.success, "message": outcome.message,
                "snapshot_version": self.world["version"],
                "changes": [c.change for c in outcome.changes if c.private_to in (None, user_id)]}

    async def tick(self) -> Outcome:
        """One autonomous step of the world clock, committed like any action."""
        return await self._commit(lambda world, now: autonomy.tick(self.content, world, now), actor_id=WORLD_ACTOR,
                                  trace_id="clock")

    async def _commit(self, decide: Any, *, actor_id: str, trace_id: str) -> Outcome:
        """Run a pure decision against the current world and commit its result atomically."""
        async with self._lock:
            for _attempt in range(5):
                now = now_ms()
                base = self.world
                outcome: Outcome = decide(base, now)
                if outcome.world is None:
                    return outcome
                new_world = {**outcome.world, "version": base["version"] + 1}
                outcome = Outcome(outcome.success, outcome.message, outcome.changes, new_world)
                events = world_update_events(
                    outcome, experience=self.experience, actor_id=actor_id, visibility=self.content.visibility, base_version=base["version"], now_ms=now, trace_id=trace_id)
                try:
                    await self.store.commit(self.experience, base["version"], new_world, events, now)
                except VersionConflict:
                    log.info("version conflict on %s at v%d; reloading", self.experience, base["version"])
                    await self.load()
                    continue
                self.world = new_world
                self.publisher.notify()
                return outcome
            raise VersionConflict(self.experience)

    async def announce(self, changes: list[PresenceChange]) -> None:
        """Queue one presence join/leave event per change; gateways pass it to every other player."""
        if not self.announce_presence:
            return
        events = []
        now = now_ms()
        for change in changes:
            area = player_state(self.world, self.content, change.user_id)["current_area"]
            events.append(presence_event(experience=self.experience, user_id=change.user_id, event=change.event,
                                         area_id=area, now_ms=now, nonce=str(now)))
        if events:
            await self._commit_presence(events, now)

    async def _commit_presence(self, events: list[tuple[str, str, bytes]], now: int) -> None:
        """Group commit: whoever holds the lock commits everything queued meanwhile, in one transaction.

        A caller returns once its events are durable, and a storm of joins costs one fsync per
        batch instead of one per join.
        """
        self._pending_presence += events
        async with self._presence_lock:
            batch, self._pending_presence = self._pending_presence, []
            if batch:
                await self.store.commit(self.experience, self.world["version"], None, batch, now)
                self.publisher.notify()
