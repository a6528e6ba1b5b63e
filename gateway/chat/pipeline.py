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
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.chat.history import ConversationBook, resolve
from gateway.chat.intents import match_intent, parse_intent
from gateway.chat.narration import BUILTIN, NO_ACTION, Narration
from gateway.chat.narrators import IntentNarrator, Narrator
from gateway.chat.prompt import Scene
from gateway.kbclient import KbClient, KbRejected, KbUnavailable
from shared.config import Settings
from shared.schemas.errors import ErrorCode

log = logging.getLogger(__name__)
EVENT_WAIT_S = 2.0  # how long the narrative waits for its action's world_update


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


class _Failed(Exception):
    """kb could not take the chat's action: the chat ends with this error instead of a story."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


class ChatService:
    """What every chat of this gateway shares."""

    def __init__(self, kb: KbClient, narrator: Narrator | None = None, settings: Settings | None = None) -> None:
        self.kb = kb
        self.narrator: Narrator = narrator or IntentNarrator()
        self.settings = settings or Settings()
        s = self.settings
        self.book = ConversationBook(turns=s.narrator_turns if self.narrator.sees else 0,
                                     user_bytes=s.chat_history_user_bytes, total_bytes=s.chat_history_bytes)
        self.in_flight = 0
        self._idle = asyncio.Event()

    async def run(self, user_id: str, experience: str, message: str, conversation_id: str, trace_id: str,
                  sink: ChatSink) -> ChatOutcome:
        """Act, wait for the action's own world_update to reach the client, then stream the narrative.

        It always returns an outcome (a chat always ends with its chat_done or its error), whatever
        a model or kb answered; only cancellation (the client left) passes through.
        """
        self.in_flight += 1
        self._idle.clear()
        started = time.perf_counter()
        try:
            return await self._run(user_id, experience, message, conversation_id, trace_id, sink, started)
        except _Failed as failed:
            elapsed = (time.perf_counter() - started) * 1000
            return ChatOutcome(None, False, elapsed, elapsed, None, (failed.code, failed.message), failed.details)
        except Exception:  # noqa: BLE001 - logged with its trace; the client hears internal_error with the chat's id
            log.exception("[%s] chat failed unexpectedly", trace_id)
            elapsed = (time.perf_counter() - started) * 1000
            return ChatOutcome(None, False, elapsed, elapsed, None,
                               (ErrorCode.INTERNAL_ERROR, "unexpected server error"))
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
                   sink: ChatSink, started: float) -> ChatOutcome:
        talk = self.book.get(user_id, conversation_id, time.monotonic())
        scene = Scene(user_id, message, turns=list(talk.turns))
        builtin = resolve(parse_intent(message, await self.kb.added_actions(experience)), talk)
        args, failed = await self._proposed(scene, experience, builtin, started)
        result, refused = await self._act(experience, user_id, args, trace_id, builtin if failed is None else None)
        if refused:  # kb refused the model's proposal: the line went as without a model
            args, failed = builtin, NO_ACTION
        self.book.remember(talk, message, args, result)
        shown = sink.events_through(result["snapshot_version"], EVENT_WAIT_S) if result["changes"] else None
        look = self._look(experience, user_id) if self.narrator.sees and not failed else None
        seen, view = await asyncio.gather(shown or _done(True), look or _done(scene.view))
        if not seen:
            log.warning("[%s] world_update v%d not seen within %.1fs", trace_id, result["snapshot_version"],
                        EVENT_WAIT_S)
        scene.view, scene.action, scene.result = view, args, result
        narration = (self.narrator.fallback(result["message"], failed) if failed
                     else self.narrator.narrate(scene, result["message"]))  # "" or None: the model tells it
        return await self._tell(sink, started, narration, args["action"], bool(result["success"]),
                                result.get("snapshot_version"))

    async def _proposed(self, scene: Scene, experience: str, builtin: dict[str, Any],
                        started: float) -> tuple[dict[str, Any], str | None]:
        """(the action to take; why the model will not tell the story, None after its proposal, "" without one).

        A line no rule knows goes to the model for an action, within the first-token deadline; anything
        but a usable action (no answer in time, nonsense, a model failure) leaves the builtin one: the
        line is said to whoever is nearby, as without a model, and its story is kb's message.
        """
        if not self.narrator.proposes or match_intent(scene.line, await self.kb.added_actions(experience)) is not None:
            return builtin, ""
        scene.view = await self._look(experience, scene.user_id)
        action, failed = await self.narrator.propose(scene, started + self.settings.narrator_first_token_s)
        if action is None:
            return builtin, failed or NO_ACTION
        return action, None

    async def _act(self, experience: str, user_id: str, args: dict[str, Any], trace_id: str,
                   builtin: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
        """kb's answer, and True when it is to `builtin` because kb refused the model's proposal `args`
        (invalid, or against the rules: nothing changed, and the player asked for no such thing)."""
        proposed = builtin is not None and args is not builtin
        try:
            result = await self.kb.act(experience, user_id, args, trace_id)
            if not proposed or result["success"]:
                return result, False
            log.info("[%s] kb refused the model's proposal %s: %s", trace_id, args["action"], result["message"])
        except KbUnavailable as exc:
            log.warning("[%s] chat action %s: %s", trace_id, args["action"], exc)
            raise _Failed(ErrorCode.KB_UNAVAILABLE, "the world service is unavailable; try again") from exc
        except KbRejected as exc:
            if not proposed:
                raise _Failed(exc.body.get("error", ErrorCode.INVALID_MESSAGE), str(exc),
                              exc.body.get("details")) from exc
            log.info("[%s] kb rejected the model's proposal %s: %s", trace_id, args["action"], exc)
        assert builtin is not None
        result, _ = await self._act(experience, user_id, builtin, trace_id, None)
        return result, True

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


async def _done(value: Any) -> Any:
    return value
