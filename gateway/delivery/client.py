"""What a WebSocket session and an SSE stream share: a stream feeding a snapshot gate feeding a send queue."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine, Generic, TypeVar

from gateway.delivery.gate import SnapshotGate, resumed_frame
from gateway.delivery.sendqueue import SendQueue
from gateway.streams.stream import ConnectionStream, open_stream

log = logging.getLogger(__name__)
T = TypeVar("T")


class StreamClient(Generic[T]):
    """A client fed by one stream: resume and resync answered through the gate, replay paced by the queue.

    Subclasses set `queue`, `gate` and `stream`, and pass stream events to the gate in their own
    `on_event` (the hot path: one call, no wrapping). `T` is what the queue holds for the transport.
    """

    # Slots: thousands of these live at once; no per-instance dict saves about a kilobyte each.
    __slots__ = ("conn_id", "user_id", "experience", "queue", "gate", "stream", "_tasks")

    transport = "other"
    conn_id: str
    user_id: str
    experience: str
    queue: SendQueue[T]
    gate: SnapshotGate[T]
    stream: ConnectionStream
    _tasks: set[asyncio.Task[Any]]

    def as_item(self, frame: bytes) -> T:
        """A frame that is not a stream event, in the form the queue holds."""
        raise NotImplementedError

    def on_replayed(self, from_seq: int, to_seq: int, replayed: int) -> None:
        """Replay met the live stream (the chain is exact, so no snapshot is needed): say so."""
        self.gate.in_order(self.as_item(resumed_frame(from_seq, to_seq, replayed)))

    def on_resync(self, reason: str) -> None:
        """The client's cursor cannot be served (gone, too far behind, stream restarted): a fresh snapshot."""
        self.spawn(self.gate.resync(reason))

    def room(self) -> int:
        """Frames a catch-up may queue now: it fills at most half the queue, leaving the rest to live traffic."""
        return self.queue.limit // 2 - len(self.queue) - self.gate.held

    async def open_at(self, cursor: int | None) -> None:
        """Open the stream (from the client's cursor, if any) with events held until it is open."""
        with self.gate.holding():
            await open_stream(self.stream, cursor)

    async def open_with_snapshot(self) -> None:
        """Open at the subject's end, then queue a fresh snapshot, with events held across both: one that
        arrives while the stream opens (stored just after the end was read) follows the snapshot instead
        of reaching a client that has no world yet."""
        with self.gate.holding():
            await self.open_at(None)
            await self.gate.send_view()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a request concurrently so a slow kb never blocks pings or events.

        The coroutine is the task itself (no wrapper): cancelled before it starts, at shutdown, it
        is closed properly instead of warning that it was never awaited.
        """
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        log.error("[%s] unexpected error", self.conn_id, exc_info=task.exception())
        self.after_failure()

    def after_failure(self) -> None:
        """A request failed unexpectedly (logged): the stream goes on; a transport may tell the client."""

    def cancel_tasks(self) -> None:
        """Cancel every request still running (the client is gone)."""
        for task in list(self._tasks):
            task.cancel()
