"""One chat's story as it streams: the model's sentences, each checked, or kb's message when the model cannot.

The model's text is read by a task of its own into a queue, so the deadlines and a shutdown apply to
the reader here, never to the consumer's writes. Players get the model's text a whole sentence at a
time, after the guard (gateway/chat/guard.py) passed it: a sentence that leaks or contradicts kb ends
the story in kb's message. The story stops after `sentences` sentences (the request is closed, the
model stops writing); a last sentence cut by a limit is dropped and the story says so (`model_length`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Callable

from gateway.chat import guard
from gateway.chat.guard import Facts, Sentences
from gateway.chat.narratormetrics import NarratorMetrics
from gateway.chat.schema import narrative_chunks

log = logging.getLogger(__name__)
MODEL, BUILTIN, FALLBACK = "model", "builtin", "fallback"
UNAVAILABLE, TIMEOUT, ERROR, CANCELLED, SHUTDOWN = (
    "model_unavailable", "model_timeout", "model_error", "cancelled", "shutdown")
AUTH, BUSY, LENGTH, NO_ACTION = "model_auth", "model_busy", "model_length", "model_no_action"
LEAK, CONTRADICTION = guard.LEAK, guard.CONTRADICTION
# Reasons known before any request (the endpoint refused the key, every slot is taken, the gateway stops)
# or chosen by the player: logged once where they arise, not once per chat.
QUIET = (AUTH, BUSY, SHUTDOWN, CANCELLED)
MID_STREAM_BREAK = " ... "  # between the model's sentences and kb's message


class _End:
    """The model's stream finished, with the server's finish_reason ("stop", "length", ...)."""

    def __init__(self, finish_reason: str | None = None) -> None:
        self.finish_reason = finish_reason


class Shutdown(Exception):
    """The gateway is stopping: end every narrative now."""


class Busy(Exception):
    """No model slot for this request before its deadline (or the user's share is in use)."""


class ModelFailed(Exception):
    """The model's request failed; `reason` is the `chat_done` reason its client's error maps to
    (gateway/chat/endpoint.py's `model_reason`: this module knows no client library)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def reason_for(exc: BaseException) -> str:
    """The `chat_done` reason for a model request that ended in `exc`."""
    if isinstance(exc, ModelFailed):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, Shutdown):
        return SHUTDOWN
    if isinstance(exc, Busy):
        return BUSY
    return ERROR


class Narration:
    """Async iterator of story chunks; afterwards `narrator` and `reason` say who wrote it and why.

    `close()` (always called by the chat) cancels the model request at once if it is still open.
    """

    def __init__(self, fallback_text: str, metrics: NarratorMetrics | None = None, narrator: str = MODEL,
                 reason: str | None = None, facts: Facts | None = None, sentences: int = 0) -> None:
        self.fallback_text = fallback_text
        self.metrics = metrics
        self.narrator = narrator
        self.reason = reason
        self.facts = facts
        self.sentences = sentences  # stop after this many (0: read to the end of the answer)
        self.text: list[str] = []  # the model's sentences told to the player
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.pieces = 0
        self.first_deadline = self.answer_deadline = float("inf")
        self.cut = False  # a limit cut the answer: its last sentence was dropped
        self._gate = Sentences()
        self._ready: list[str] = []
        self._ended = False
        self._chars = 0
        self._reader: asyncio.Task[None] | None = None
        self._told: deque[str] | None = None if narrator == MODEL else deque(narrative_chunks(fallback_text))
        self._on_close: list[Callable[[], None]] = []
        self._on_first: list[Callable[[float], None]] = []
        self._closed = False

    @classmethod
    def fixed(cls, text: str, narrator: str, reason: str | None = None,
              metrics: NarratorMetrics | None = None) -> "Narration":
        """A narrative that is not the model's: kb's message (builtin), or a fallback with its reason."""
        if narrator == FALLBACK and reason not in QUIET:
            log.info("story is kb's message (%s)", reason)
        return cls(text, metrics, narrator, reason)

    def read(self, answer: Callable[["Narration"], Any], first_token_s: float, answer_s: float,
             on_close: Callable[[], None], on_first: Callable[[float], None] | None = None) -> None:
        """Start reading the model's answer (`answer(self)` puts pieces, then an `_End`, into the queue)."""
        self.first_deadline = self.started + first_token_s
        self.answer_deadline = self.started + answer_s
        self._on_close.append(on_close)
        if on_first is not None:
            self._on_first.append(on_first)
        self._reader = asyncio.create_task(self._read(answer))

    async def _read(self, answer: Callable[["Narration"], Any]) -> None:
        try:
            await answer(self)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every model failure ends in kb's message
            self.queue.put_nowait(exc)

    def end(self, finish_reason: str | None) -> None:
        """The reader's last item: the answer is complete."""
        self.queue.put_nowait(_End(finish_reason))

    def stop(self) -> None:
        """The gateway is shutting down: the narrative ends with kb's message at once."""
        self.queue.put_nowait(Shutdown())

    def __aiter__(self) -> "Narration":
        return self

    async def __anext__(self) -> str:
        if self._told is not None:
            if self._told:
                return self._told.popleft()
            self.close()
            raise StopAsyncIteration
        while not self._ready:
            if self._ended:
                return self._end()
            # Until the first token its own deadline (a slot's wait included), then the whole answer's (both
            # from the request): the first sentence may take a few tokens more.
            item = await self._next(self.first_deadline if self.first_token_at is None else self.answer_deadline)
            if isinstance(item, str):
                self._piece(item)
                if bad := self._accept(self._gate.feed(item)):
                    return self._fall_back(bad)
            elif isinstance(item, _End):
                if bad := self._ended_with(item):
                    return self._fall_back(bad)
            else:
                return self._fall_back(item)
        chunk = "".join(self._ready)
        self._ready.clear()
        return chunk

    async def _next(self, deadline: float) -> Any:
        """The reader's next item, or the TimeoutError of `deadline`."""
        try:
            async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                return await self.queue.get()
        except TimeoutError as exc:
            return exc

    def _piece(self, piece: str) -> None:
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
            if self.metrics:
                self.metrics.first_token.observe(now - self.started)
            for observe in self._on_first:
                observe(now - self.started)
        self.pieces += 1
        self._chars += len(piece)
        if self._chars > guard.MAX_STORY_CHARS and not self._ended:  # a flood: what is whole so far, then stop
            self.cut = True
            self._stop_reading()

    def _accept(self, sentences: list[str]) -> str | None:
        """Check complete sentences in order; those that pass are told. The guard's finding, or None."""
        for sentence in sentences:
            if self.sentences and len(self.text) >= self.sentences:
                break
            if self.facts is not None and (bad := guard.check(sentence, self.facts, first=not self.text)):
                log.info("the guard stopped the model's story (%s): %.200r", bad, sentence)
                return bad
            self._ready.append(sentence)
            self.text.append(sentence)
            if self.sentences and len(self.text) >= self.sentences:
                self._stop_reading()  # enough: the model stops writing, its slot is free
        return None

    def _ended_with(self, end: _End) -> str | None:
        """The answer is complete: its last sentence if it is whole."""
        self._stop_reading()
        rest = self._gate.rest()
        if rest and guard.complete(rest):
            return self._accept([rest])
        self.cut = self.cut or bool(rest)  # an unfinished sentence (the token cap, a stop sequence) is dropped
        return None

    def _stop_reading(self) -> None:
        self._ended = True
        self._cancel_reader()

    def _end(self) -> str:
        """Past the last sentence: kb's message if the model told none, else StopAsyncIteration."""
        if not self.text:
            return self._fall_back(LENGTH if self.cut else ERROR, "no whole sentence")
        if self.cut:
            self.reason = LENGTH
        self._finish()
        raise StopAsyncIteration

    def _finish(self) -> None:
        if self.first_token_at is not None:
            elapsed = time.perf_counter() - self.first_token_at
            if self.metrics and self.pieces > 1 and elapsed > 0:
                self.metrics.tokens_per_s.observe((self.pieces - 1) / elapsed)
        self.close()

    def _fall_back(self, failure: BaseException | str, why: str = "") -> str:
        """kb's message from here on; the reason goes to chat_done."""
        self.reason = failure if isinstance(failure, str) else reason_for(failure)
        self.narrator = FALLBACK
        self._stop_reading()
        if self._ready:  # checked but never sent: not told
            del self.text[len(self.text) - len(self._ready):]
            self._ready.clear()
        # The model failing is worth a warning; the guard and the limits doing their job, an info line.
        level = (logging.DEBUG if self.reason in QUIET else
                 logging.INFO if self.reason in (LEAK, CONTRADICTION, LENGTH) else logging.WARNING)
        log.log(level, "narrative falls back to kb's message (%s%s): %s", self.reason,
                ", mid-story" if self.text else "", why or (failure if isinstance(failure, str) else
                                                           type(failure).__name__))
        told = "".join(self.text)
        prefix = (MID_STREAM_BREAK.lstrip() if told.endswith(" ") else MID_STREAM_BREAK) if told else ""
        self._told = deque(narrative_chunks(prefix + self.fallback_text))
        return self._told.popleft()

    def _cancel_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    def close(self) -> None:
        """End it: cancel an open model request, free its slot, count the outcome (once)."""
        if self._closed:
            return
        self._closed = True
        if self.narrator == MODEL and not self._ended and self._reader is not None and not self._reader.done():
            self.narrator, self.reason = FALLBACK, CANCELLED  # the chat went away mid-answer
        self._cancel_reader()
        for release in self._on_close:
            release()
        if self.metrics:
            self.metrics.answers.labels(self.narrator, self.reason or "").inc()
