"""One chat's narrative as it streams: the model's pieces, or kb's message when the model cannot write it."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Callable

import openai

from gateway.chat.narratormetrics import NarratorMetrics
from gateway.chat.schema import narrative_chunks

log = logging.getLogger(__name__)
MODEL, BUILTIN, FALLBACK = "model", "builtin", "fallback"
UNAVAILABLE, TIMEOUT, ERROR, CANCELLED, SHUTDOWN = (
    "model_unavailable", "model_timeout", "model_error", "cancelled", "shutdown")
MID_STREAM_BREAK = " ... "  # between the model's cut-off text and kb's message


class _End:
    """The model's stream finished."""


class Shutdown(Exception):
    """The gateway is stopping: end every narrative now."""


def reason_for(exc: BaseException) -> str:
    """The `chat_done` reason for a failed model request."""
    if isinstance(exc, (TimeoutError, openai.APITimeoutError)):
        return TIMEOUT
    if isinstance(exc, Shutdown):
        return SHUTDOWN
    if isinstance(exc, openai.APIConnectionError):
        return UNAVAILABLE
    if isinstance(exc, openai.APIStatusError) and exc.status_code in (429, 502, 503, 504):
        return UNAVAILABLE
    return ERROR


class Narration:
    """Async iterator of text pieces; afterwards `narrator` and `reason` say who wrote it and why.

    A model answer is read by a task of its own into a queue, so the first-token and whole-answer
    deadlines and a shutdown apply to the reader here, never to the consumer's own writes. `close()`
    (always called by the chat) cancels the model request at once if it is still open.
    """

    def __init__(self, fallback_text: str, metrics: NarratorMetrics | None = None, narrator: str = MODEL,
                 reason: str | None = None) -> None:
        self.fallback_text = fallback_text
        self.metrics = metrics
        self.narrator = narrator
        self.reason = reason
        self.text: list[str] = []
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.pieces = 0
        self.first_deadline = self.answer_deadline = float("inf")
        self._reader: asyncio.Task[None] | None = None
        self._held: Any = None  # an item taken while gathering a chunk, for the next call
        self.flush_s = 0.0  # after the first token, pieces gathered this long into one chunk (0: each as it comes)
        self._told: deque[str] | None = None if narrator == MODEL else deque(narrative_chunks(fallback_text))
        self._on_close: list[Callable[[], None]] = []
        self._closed = False

    @classmethod
    def fixed(cls, text: str, narrator: str, reason: str | None = None,
              metrics: NarratorMetrics | None = None) -> "Narration":
        """A narrative that is not the model's: kb's message (builtin), or a fallback with its reason."""
        return cls(text, metrics, narrator, reason)

    def read(self, answer: Callable[["Narration"], Any], first_token_s: float, answer_s: float,
             on_close: Callable[[], None], flush_s: float = 0.0) -> None:
        """Start reading the model's answer (`answer(self)` puts pieces into the queue)."""
        self.first_deadline = self.started + first_token_s
        self.flush_s = flush_s
        self.answer_deadline = self.started + answer_s
        self._on_close.append(on_close)
        self._reader = asyncio.create_task(self._read(answer))

    async def _read(self, answer: Callable[["Narration"], Any]) -> None:
        try:
            await answer(self)
            self.queue.put_nowait(_End())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every model failure ends in kb's message
            self.queue.put_nowait(exc)

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
        # Before the first token its own deadline; after it, the whole answer's (both counted from the request).
        first = self.first_token_at is None
        deadline = self.first_deadline if first else self.answer_deadline
        item = self._held if self._held is not None else await self._next(deadline)
        self._held = None
        if isinstance(item, str):
            piece = self._piece(item)
            if first or self.flush_s <= 0:
                return piece  # the first token goes out at once
            return piece + await self._more(min(deadline, time.perf_counter() + self.flush_s))
        if isinstance(item, _End):
            self._finish()
            raise StopAsyncIteration
        return self._fall_back(item)

    async def _next(self, deadline: float) -> Any:
        """The reader's next item, or the TimeoutError of `deadline`."""
        try:
            async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                return await self.queue.get()
        except TimeoutError as exc:
            return exc

    async def _more(self, until: float) -> str:
        """Further tokens arriving before `until`, joined into this chunk: one frame per flush, not per token.
        Anything else (the end, a failure) is held for the next call."""
        parts: list[str] = []
        while time.perf_counter() < until:
            item = await self._next(until)
            if isinstance(item, TimeoutError):
                break
            if not isinstance(item, str):
                self._held = item
                break
            parts.append(self._piece(item))
        return "".join(parts)

    def _piece(self, piece: str) -> str:
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
            if self.metrics:
                self.metrics.first_token.observe(now - self.started)
        self.pieces += 1
        self.text.append(piece)
        return piece

    def _finish(self) -> None:
        if self.first_token_at is None:  # an empty answer: kb's message stands in
            self._fall_back(ERROR, "the model answered nothing")
            return
        elapsed = time.perf_counter() - self.first_token_at
        if self.metrics and self.pieces > 1 and elapsed > 0:
            self.metrics.tokens_per_s.observe((self.pieces - 1) / elapsed)
        self.close()

    def _fall_back(self, failure: BaseException | str, why: str = "") -> str:
        """kb's message from here on; the reason goes to chat_done."""
        self.reason = failure if isinstance(failure, str) else reason_for(failure)
        self.narrator = FALLBACK
        log.warning("narrative falls back to kb's message (%s%s): %s", self.reason,
                    ", mid-stream" if self.text else "", why or type(failure).__name__)
        self._cancel_reader()
        prefix = MID_STREAM_BREAK if self.text else ""
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
        if self.narrator == MODEL and self._reader is not None and not self._reader.done():
            self.narrator, self.reason = FALLBACK, CANCELLED  # the chat went away mid-answer
        self._cancel_reader()
        for release in self._on_close:
            release()
        if self.metrics:
            self.metrics.answers.labels(self.narrator, self.reason or "").inc()
