"""One chat pipeline for both transports: a line of text -> a kb action -> its events -> the narrative.

The SSE route (`POST /chat/unified`) and the WebSocket (`{"type": "chat"}`) are thin adapters over
`ChatService.run`; each supplies a `ChatSink` that knows how its transport shows events and chunks.
The narrative comes from a `Narrator` (gateway/chat/narrators.py): kb's own message, or a language
model that also proposes actions for lines the intent parser does not know (kb still decides them).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.chat.intents import match_intent, parse_intent
from gateway.chat.narration import BUILTIN, ERROR, Narration
from gateway.chat.narrators import IntentNarrator, Narrator
from gateway.chat.prompt import Scene
from gateway.kbclient import KbClient, KbRejected, KbUnavailable
from shared.schemas.errors import ErrorCode

log = logging.getLogger(__name__)
EVENT_WAIT_S = 2.0  # how long the narrative waits for its action's world_update
PRONOUNS = ("it", "that", "this", "them", "the thing")
PLACE_WORDS = ("there", "that place")
NOTHING_HAPPENS = "Nothing happens."


@dataclass
class Conversation:
    """What a conversation's "it" and "there" refer to, and its last few turns."""

    item: str | None = None
    place: str | None = None
    turns: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=8))
    touched: float = 0.0


class ConversationBook:
    """Short histories per (user, conversation): bounded in count, forgotten after `ttl_s` unused."""

    def __init__(self, limit: int = 10_000, ttl_s: float = 1800.0) -> None:
        self.limit = limit
        self.ttl_s = ttl_s
        self._talks: OrderedDict[tuple[str, str], Conversation] = OrderedDict()

    def get(self, user_id: str, conversation_id: str, now: float) -> Conversation:
        key = (user_id, conversation_id)
        talk = self._talks.get(key)
        if talk is None or now - talk.touched > self.ttl_s:
            talk = self._talks[key] = Conversation()
        self._talks.move_to_end(key)
        talk.touched = now
        while len(self._talks) > self.limit:
            self._talks.popitem(last=False)
        return talk

    def __len__(self) -> int:
        return len(self._talks)


def resolve(args: dict[str, Any], talk: Conversation) -> dict[str, Any]:
    """Replace "it" and "there" with what this conversation last named."""
    out = dict(args)
    if out.get("instance_id") in PRONOUNS and talk.item:
        out["instance_id"] = talk.item
    if out.get("destination") in PLACE_WORDS and talk.place:
        out["destination"] = talk.place
    return out


def remember(talk: Conversation, message: str, args: dict[str, Any], result: dict[str, Any]) -> None:
    if args.get("instance_id"):
        talk.item = args["instance_id"]
    if args.get("action") == "go" and result.get("success"):
        talk.place = args.get("destination")
    talk.turns.append((message, result.get("message", "")))


class ChatSink(Protocol):
    """How one transport shows a chat: its action's events first, then the narrative."""

    async def events_through(self, version: int, timeout: float) -> bool:
        """Return once the world_update at `version` has been handed to the client (False on timeout)."""
        ...

    async def chunk(self, delta: str) -> None: ...


@dataclass
class ChatOutcome:
    """How one chat ended."""

    action: str | None
    success: bool
    first_chunk_ms: float
    total_ms: float
    snapshot_version: int | None = None
    error: tuple[str, str] | None = None
    details: Any = None
    narrator: str = BUILTIN  # who wrote the narrative: model, builtin, or fallback (with `reason`)
    reason: str | None = None


@dataclass
class ChatService:
    """What every chat of this gateway shares."""

    kb: KbClient
    narrator: Narrator = field(default_factory=IntentNarrator)
    book: ConversationBook = field(default_factory=ConversationBook)
    turns: int = 4  # the conversation's last turns a model narrator sees
    in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, user_id: str, experience: str, message: str, conversation_id: str, trace_id: str,
                  sink: ChatSink) -> ChatOutcome:
        """Act, wait for the action's own world_update to reach the client, then stream the narrative."""
        self.in_flight += 1
        self._idle.clear()
        try:
            return await self._run(user_id, experience, message, conversation_id, trace_id, sink)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def finish(self, timeout: float) -> int:
        """Shutdown: narratives in flight end with kb's message now; wait (bounded) until their chats are done.

        Returns how many chats were still running when the time ran out.
        """
        self.narrator.stop()
        if self.in_flight:
            log.info("ending %d chats in flight for shutdown", self.in_flight)
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                log.warning("%d chats still running after %.1f s", self.in_flight, timeout)
        return self.in_flight

    async def _run(self, user_id: str, experience: str, message: str, conversation_id: str, trace_id: str,
                   sink: ChatSink) -> ChatOutcome:
        started = time.perf_counter()
        talk = self.book.get(user_id, conversation_id, time.monotonic())
        scene = Scene(user_id, message, turns=list(talk.turns)[-self.turns:] if self.turns else [])
        args = resolve(parse_intent(message), talk)
        failed: str | None = None  # the model's failure while proposing: the narrative is kb's message
        proposed = False
        if self.narrator.proposes and match_intent(message) is None:
            scene.view = await self._look(experience, user_id)
            action, failed = await self.narrator.propose(scene)
            if action is not None:
                args, proposed = action, True
            elif failed is None:  # the model answered, but not with an action
                return await self._nothing(sink, started, None, NOTHING_HAPPENS)
        try:
            result = await self.kb.act(experience, user_id, args, trace_id)
        except KbUnavailable as exc:
            log.warning("[%s] chat action %s: %s", trace_id, args["action"], exc)
            return self._failed(args, started, ErrorCode.KB_UNAVAILABLE, "the world service is unavailable; try again")
        except KbRejected as exc:
            if proposed:  # the model's proposal, refused by kb's validation
                return await self._nothing(sink, started, args["action"], f"{NOTHING_HAPPENS} {exc}")
            return self._failed(args, started, exc.body.get("error", ErrorCode.INVALID_MESSAGE), str(exc),
                                exc.body.get("details"))
        remember(talk, message, args, result)
        if proposed and not result["success"]:  # refused by the world's rules: nothing changed
            return await self._nothing(sink, started, args["action"], f"{NOTHING_HAPPENS} {result['message']}")
        shown = sink.events_through(result["snapshot_version"], EVENT_WAIT_S) if result["changes"] else None
        look = self._look(experience, user_id) if self.narrator.sees and failed is None else None
        seen, view = await asyncio.gather(shown or _done(True), look or _done(scene.view))
        if not seen:
            log.warning("[%s] world_update v%d not seen within %.1fs", trace_id, result["snapshot_version"],
                        EVENT_WAIT_S)
        scene.view, scene.action, scene.result = view, args, result
        narration = (self.narrator.fallback(result["message"], failed) if failed
                     else self.narrator.narrate(scene, result["message"]))
        outcome = await self._tell(sink, started, narration, args["action"], bool(result["success"]),
                                   result.get("snapshot_version"))
        if talk.turns and narration.narrator != BUILTIN:
            talk.turns[-1] = (message, "".join(narration.text) or result.get("message", ""))
        return outcome

    async def _look(self, experience: str, user_id: str) -> dict[str, Any] | None:
        """Where the player stands now (kb's view), for the model; None if kb cannot say."""
        try:
            return await self.kb.state(experience, user_id)
        except (KbUnavailable, KbRejected) as exc:
            log.info("no scene for the narrator: %s", exc)
            return None

    async def _tell(self, sink: ChatSink, started: float, narration: Narration, action: str | None, success: bool,
                    version: int | None) -> ChatOutcome:
        """Stream the narrative; a chat cancelled mid-way (the client left) cancels its model request."""
        first: float | None = None
        try:
            async for piece in narration:
                first = first or time.perf_counter()
                await sink.chunk(piece)
        finally:
            narration.close()
        now = time.perf_counter()
        return ChatOutcome(action, success, ((first or now) - started) * 1000, (now - started) * 1000, version,
                           narrator=narration.narrator, reason=narration.reason)

    async def _nothing(self, sink: ChatSink, started: float, action: str | None, text: str) -> ChatOutcome:
        """A model proposal that was no action, or one kb refused: the narrative says nothing happened."""
        log.info("model proposal came to nothing (%s)", action or "no action")
        return await self._tell(sink, started, self.narrator.fallback(text, ERROR), action, False, None)

    @staticmethod
    def _failed(args: dict[str, Any], started: float, code: str, message: str, details: Any = None) -> ChatOutcome:
        elapsed = (time.perf_counter() - started) * 1000
        return ChatOutcome(args.get("action"), False, elapsed, elapsed, None, (code, message), details)


async def _done(value: Any) -> Any:
    return value
