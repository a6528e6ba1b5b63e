"""One chat pipeline for both transports: a line of text -> a kb action -> its events -> the narrative.

The SSE route (`POST /chat/unified`) and the WebSocket (`{"type": "chat"}`) are thin adapters over
`run_chat`; each supplies a `ChatSink` that knows how its transport shows events and chunks. The
narrative source is a `Narrator`: the built-in intent parser here, or any other implementation
(docs/protocol.md describes how an OpenAI-compatible endpoint would plug in).
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Protocol

from gateway.chat.intents import parse_intent
from gateway.kbclient import KbClient, KbRejected, KbUnavailable
from shared.schemas import chat as chat_schema
from shared.schemas.errors import ErrorCode

log = logging.getLogger(__name__)
EVENT_WAIT_S = 2.0  # how long the narrative waits for its action's world_update
PRONOUNS = ("it", "that", "this", "them", "the thing")
PLACE_WORDS = ("there", "that place")


class Narrator(Protocol):
    """Turns a chat line into an action, and the action's result into narrative text."""

    model: str

    def action_for(self, message: str) -> dict[str, Any]: ...

    def narrative(self, result: dict[str, Any]) -> AsyncIterator[str]: ...


class IntentNarrator:
    """The embedded default: rules for what was meant, kb's own message as the narrative."""

    model = chat_schema.MODEL

    def action_for(self, message: str) -> dict[str, Any]:
        return parse_intent(message)

    async def narrative(self, result: dict[str, Any]) -> AsyncIterator[str]:
        for piece in chat_schema.narrative_chunks(result["message"]):
            yield piece


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


@dataclass
class ChatService:
    """What every chat of this gateway shares."""

    kb: KbClient
    narrator: Narrator = field(default_factory=IntentNarrator)
    book: ConversationBook = field(default_factory=ConversationBook)

    async def run(self, user_id: str, experience: str, message: str, conversation_id: str, trace_id: str,
                  sink: ChatSink) -> ChatOutcome:
        """Act, wait for the action's own world_update to reach the client, then stream the narrative."""
        started = time.perf_counter()
        talk = self.book.get(user_id, conversation_id, time.monotonic())
        args = resolve(self.narrator.action_for(message), talk)
        try:
            result = await self.kb.act(experience, user_id, args, trace_id)
        except KbUnavailable as exc:
            log.warning("[%s] chat action %s: %s", trace_id, args["action"], exc)
            return self._failed(args, started, ErrorCode.KB_UNAVAILABLE, "the world service is unavailable; try again")
        except KbRejected as exc:
            return self._failed(args, started, exc.body.get("error", ErrorCode.INVALID_MESSAGE), str(exc),
                                exc.body.get("details"))
        remember(talk, message, args, result)
        if result["changes"] and not await sink.events_through(result["snapshot_version"], EVENT_WAIT_S):
            log.warning("[%s] world_update v%d not seen within %.1fs", trace_id, result["snapshot_version"],
                        EVENT_WAIT_S)
        first: float | None = None
        async for piece in self.narrator.narrative(result):
            first = first or time.perf_counter()
            await sink.chunk(piece)
        now = time.perf_counter()
        return ChatOutcome(args["action"], bool(result["success"]), ((first or now) - started) * 1000,
                           (now - started) * 1000, result.get("snapshot_version"))

    @staticmethod
    def _failed(args: dict[str, Any], started: float, code: str, message: str, details: Any = None) -> ChatOutcome:
        elapsed = (time.perf_counter() - started) * 1000
        return ChatOutcome(args.get("action"), False, elapsed, elapsed, None, (code, message), details)
