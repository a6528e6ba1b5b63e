"""The imperative shell around the rules: one WorldService per experience, serialising its writes."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from kb.actions import AddedActions
from kb.announcer import PresenceAnnouncer
from kb.events import OutboxEvent, presence_event, world_update_events
from kb.outbox import OutboxPublisher, now_ms
from kb.presence import PresenceBook, PresenceChange
from kb.stores import Store, VersionConflict, WorldDelta
from kb.world import autonomy
from kb.world.content import Content
from kb.world.migrate import adopt, adopt_player
from kb.world.model import TOUCHED, World, area_of_interest, initial_world, player_state
from kb.world.rules import RULES, Outcome
from shared.schemas.errors import ErrorCode

log = logging.getLogger(__name__)
WORLD_ACTOR = "world"


class TooManySessions(Exception):
    """A new session would take its user past the per-user limit (counted over every gateway)."""


class WorldService:
    """Holds one experience's current world; every change goes rules -> store (state + outbox) -> publisher."""

    def __init__(self, content: Content, store: Store, publisher: OutboxPublisher, presence: PresenceBook,
                 announce_presence: bool = True, presence_window_s: float = 0.0,
                 players_hot_s: float = 86400.0, actions: AddedActions | None = None) -> None:
        self.content = content
        self.actions = actions or AddedActions()
        self.announce_presence = announce_presence
        self.store = store
        self.publisher = publisher
        self.presence = presence
        self.world: World = initial_world(content)
        self._lock = asyncio.Lock()
        self._presence_lock = asyncio.Lock()
        self._pending_presence: list[OutboxEvent] = []
        self.announcer = PresenceAnnouncer(content.experience, presence_window_s, self.area_of, self._commit_presence)
        self._roster: tuple[tuple[int, ...], list[dict[str, str]]] = ((-1, -1), [])
        self.players_hot_s = players_hot_s
        self._seen: dict[str, float] = {}  # player -> when it last joined or acted here (wall-clock s)
        self._cold: set[str] = set()  # players saved but not in memory: the only ones worth a store read

    @property
    def experience(self) -> str:
        return self.content.experience

    async def load(self) -> None:
        """Load the saved world (players seen lately only), or save version 0 if it was never played."""
        hot_since = now_ms() - int(self.players_hot_s * 1000)
        saved = await self.store.load_world(self.experience, hot_since)
        if saved is None:
            await self.store.commit(self.experience, 0, WorldDelta.whole(self.world), [], now_ms())
            saved = await self.store.load_world(self.experience, hot_since)
        assert saved is not None
        self.world = saved
        self._seen = dict.fromkeys(saved["players"], time.time())
        self._cold = set(await self.store.cold_players(self.experience, hot_since))
        if saved.get("content_version") != self.content.fingerprint:  # a new version of the content: migrate
            notes = await self._adopt(self.content)
            log.info("%s: content %s -> %s: world v%d; %s", self.experience, saved.get("content_version") or "(older)",
                     self.content.fingerprint, self.world["version"], "; ".join(notes) or "nothing else changed")

    async def reload(self, content: Content) -> dict[str, Any]:
        """Development: adopt content read again while the world runs; what changed (clients resync on its event)."""
        async with self._lock:
            before = self.world["version"]
            if content.fingerprint == self.content.fingerprint:
                return {"experience": self.experience, "from_version": before, "version": before,
                        "notes": ["unchanged"]}
            notes = await self._adopt(content)
            return {"experience": self.experience, "from_version": before, "version": self.world["version"],
                    "notes": notes}

    async def _adopt(self, content: Content) -> list[str]:
        """Commit the world migrated to `content` as one step that skips a version, so every client asks for a
        snapshot (its next event's base_version is not its own); the caller holds the write lock or runs alone."""
        adopted: list[str] = []

        def decide(world: World, now: int) -> Outcome:
            new, notes = adopt(content, world)
            adopted[:] = notes
            return Outcome(True, f"content {content.fingerprint}", (), new)
        previous, self.content = self.content, content
        try:
            await self._decide_and_commit(decide, actor_id=WORLD_ACTOR, trace_id="content", skip=True)
        except BaseException:
            self.content = previous
            raise
        return adopted

    def offers(self, action: str) -> bool:
        """True when this experience has the action: a built-in one, or an added one its content lists."""
        return action in RULES or (action in self.content.actions and action in self.actions.rules)

    async def ensure_player(self, user_id: str) -> None:
        """Bring a player who left the hot state back from the store (no-op for hot or new players)."""
        self._seen[user_id] = time.time()
        if user_id not in self._cold:  # in memory already, or never saved (a newcomer): no store read
            return
        saved = await self.store.load_player(self.experience, user_id)
        async with self._lock:
            self._cold.discard(user_id)
            if saved is not None:  # saved under older content, maybe: its area and items under today's
                saved = adopt_player(self.content, saved)
            if saved is not None and user_id not in self.world["players"]:
                self.world = {**self.world, "players": {**self.world["players"], user_id: saved}}

    async def evict_cold(self, now: float) -> int:
        """Drop absent players not seen for `players_hot_s` from memory (their rows stay); how many went."""
        bound = now - self.players_hot_s
        cold = [u for u in self.world["players"] if self._seen.get(u, 0) < bound
                and not self.presence.is_present(self.experience, u)]
        if cold:
            async with self._lock:
                gone = set(cold)
                self.world = {**self.world, "players": {u: p for u, p in self.world["players"].items()
                                                         if u not in gone}}
                for user in gone:
                    self._seen.pop(user, None)
                self._cold |= gone
        for user in [u for u, at in self._seen.items() if at < bound and u not in self.world["players"]]:
            del self._seen[user]  # joined and left without ever acting: nothing to keep
        return len(cold)

    async def take_over(self) -> None:
        """This process just became the world's owner: reload state and presence another kb may have changed."""
        async with self._lock:
            await self.load()
            self.presence.reload_experience(self.experience, await self.store.load_presence())

    def area_of(self, user_id: str) -> str:
        """The area a player stands in (the start area for one who never acted)."""
        return str(player_state(self.world, self.content, user_id)["current_area"])

    def reserved_ids(self) -> set[str]:
        """Ids no player may have: the world's own actor and this experience's NPCs (their actions are autonomous)."""
        return {WORLD_ACTOR, *self.content.npcs}

    def view(self, user_id: str) -> dict[str, Any]:
        """The player's area_of_interest at the current version, with who is present where."""
        return area_of_interest(self.world, self.content, user_id, self.roster(user_id))

    def roster(self, user_id: str) -> list[dict[str, str]]:
        """Everyone announced as present and their area, `user_id` included; rebuilt when a version or presence changed.

        With announcements off (load tests of 10,000 sessions in one world) only the player itself
        is listed: a full roster in every snapshot of a connect storm costs O(players^2).
        """
        mine = {"user_id": user_id, "area_id": self.area_of(user_id)}
        if not self.announce_presence:
            return [mine]
        key = (self.world["version"], self.presence.generation, self.announcer.generation)
        if self._roster[0] != key:
            present = self.presence.present_users(self.experience)
            announced = self.announcer.announced
            users = sorted({u for u in present if announced(u, True)}
                           | {u for u in self.announcer.waiting() if announced(u, u in present)})
            self._roster = (key, [{"user_id": u, "area_id": self.area_of(u)} for u in users])
        roster = self._roster[1]
        if not any(entry["user_id"] == user_id for entry in roster):
            roster = sorted([*roster, mine], key=lambda entry: entry["user_id"])
        return roster

    async def join_and_view(self, user_id: str, session_id: str, gateway_id: str, now: float,
                            limit: int = 0) -> dict[str, Any]:
        """Register one session and take its snapshot (see join_and_view_many); TooManySessions past `limit`."""
        [view] = await self.join_and_view_many(
            [{"user_id": user_id, "session_id": session_id, "gateway_id": gateway_id}], now, limit)
        if "error" in view:
            raise TooManySessions(view["message"])
        return view

    async def join_and_view_many(self, sessions: list[dict[str, str]], now: float,
                                 limit: int = 0) -> list[dict[str, Any]]:
        """Register sessions and take their snapshots between two commits, in the order asked.

        Under the write lock no commit is half-done, so every change after a snapshot is addressed
        to its player too: their version chain starts there without a hole. A session whose user
        already has `limit` open sessions here (on any gateway) gets an error entry instead.
        """
        for entry in sessions:
            await self.ensure_player(entry["user_id"])
        changes: list[PresenceChange] = []
        views: list[dict[str, Any]] = []
        async with self._lock:
            for entry in sessions:
                user_id, session_id = entry["user_id"], entry["session_id"]
                if self.presence.over_limit(session_id, user_id, self.experience, limit):
                    views.append({"error": ErrorCode.TOO_MANY_SESSIONS,
                                  "message": f"at most {limit} open sessions per user"})
                    continue
                joined = self.presence.join(session_id, user_id, self.experience, entry["gateway_id"], now)
                if self.announce_presence:
                    self.announcer.add(joined)  # before the next view: it lists only announced players
                changes += joined
                views.append(self.view(user_id))
        if self.announce_presence and changes and self.announcer.window_s <= 0:
            await self.announcer.flush()
        return views

    async def act(self, user_id: str, args: dict[str, Any], trace_id: str = "") -> dict[str, Any]:
        """Apply one player action; commit and publish it if it changed the world."""
        await self.ensure_player(user_id)
        outcome = await self._commit(lambda world, now: self.actions.decide(self.content, world, user_id, args, now),
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
            return await self._decide_and_commit(decide, actor_id=actor_id, trace_id=trace_id)

    async def _decide_and_commit(self, decide: Any, *, actor_id: str, trace_id: str, skip: bool = False) -> Outcome:
        """_commit under a lock the caller holds; `skip`: the version moves by two (a content change: see _adopt)."""
        for _attempt in range(5):
            now = now_ms()
            base = self.world
            outcome: Outcome = decide(base, now)
            if outcome.world is None:
                return outcome
            step = 2 if skip else 1
            new_world = {**outcome.world, "version": base["version"] + step}
            outcome = Outcome(outcome.success, outcome.message, outcome.changes, new_world)
            events = world_update_events(
                outcome, experience=self.experience, actor_id=actor_id, visibility=self.content.visibility,
                base_version=base["version"] + step - 1, now_ms=now, trace_id=trace_id,
                whereabouts=self._whereabouts(base) if self.content.visibility == "location" else None)
            events += self._move_events(base, new_world, actor_id, now)
            try:
                await self.store.commit(self.experience, base["version"], WorldDelta.between(base, new_world),
                                        events, now)
            except VersionConflict:
                log.info("version conflict on %s at v%d; reloading", self.experience, base["version"])
                await self.load()
                continue
            new_world.pop(TOUCHED, None)
            self.world = new_world
            self.publisher.notify()
            return outcome
        raise VersionConflict(self.experience)

    def _whereabouts(self, world: World) -> dict[str, str]:
        """Every present player's area before this step (a newcomer who never acted: the start area)."""
        return {user: player_state(world, self.content, user)["current_area"]
                for user in self.presence.present_users(self.experience)}

    def _move_events(self, base: World, new: World, actor_id: str, now: int) -> list[OutboxEvent]:
        """A `presence` move in the same commit as the step that moved a present player (order kept exactly)."""
        if not self.announce_presence or not self.announcer.announced(
                actor_id, self.presence.is_present(self.experience, actor_id)):
            return []  # not announced yet: the window's join will carry the area
        before = player_state(base, self.content, actor_id)["current_area"]
        after = player_state(new, self.content, actor_id)["current_area"]
        if before == after:
            return []
        return [presence_event(experience=self.experience, user_id=actor_id, event="move", area_id=after,
                               now_ms=now, nonce=secrets.token_hex(8))]

    async def announce(self, changes: list[PresenceChange]) -> None:
        """Hand joins and leaves to the announcer: committed at the end of its window (now, if it has none)."""
        if not self.announce_presence or not changes:
            return
        self.announcer.add(changes)
        if self.announcer.window_s <= 0:
            await self.announcer.flush()

    async def _commit_presence(self, events: list[OutboxEvent], now: int) -> None:
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
