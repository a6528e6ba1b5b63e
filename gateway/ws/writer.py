"""The writing half of a WebSocket session: frames to the socket in order, backpressure, the close."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Callable

import orjson

from gateway.delivery.sendqueue import SendQueue
from gateway.delivery.tick import SendTicker
from gateway.streams.frameformat import event_seq, is_event
from gateway.streams.timings import EventTimings
from gateway.ws.socket import GatewayWebSocket
from shared.schemas.errors import CloseCode

log = logging.getLogger(__name__)
FLUSH_BEFORE_CLOSE_S = 1.0
CLOSE_TIMEOUT_S = 2.0


class SocketWriter:
    """Writes a session's frames: straight to the socket when nothing waits, else through a bounded
    queue drained by one task; a full queue rewinds the stream once, then closes 4408.

    With a send tick (`ticker`) nothing is written at once: frames wait in the queue, in order,
    until the experience's tick writes them all in one write (`flush`).
    """

    # Slots: thousands of these live at once; no per-instance dict saves about a kilobyte each.
    __slots__ = ("ws", "queue", "conn_id", "rewind_every_s", "on_rewind", "server_close", "_transport", "_task",
                 "_closer", "_rewound_at", "timings", "ticker", "_ticked", "_abandoned", "_cut_off")

    def __init__(self, ws: GatewayWebSocket, transport: asyncio.Transport | None, conn_id: str, limit: int,
                 rewind_every_s: float, on_rewind: Callable[[int], None], timings: EventTimings | None = None,
                 ticker: SendTicker | None = None, max_bytes: int = 0) -> None:
        self.ws = ws
        # Bytes count with what the transport still holds: a client that reads nothing cannot make the
        # queue and the transport's buffer hold the bound each (gateway/delivery/sendqueue.py).
        self.queue: SendQueue[bytes] = SendQueue(limit, max_bytes)
        self.conn_id = conn_id
        self.rewind_every_s = rewind_every_s
        self.on_rewind = on_rewind  # the stream reads again from this cursor, paced by the socket
        self.server_close: int | None = None  # our close code, once we decided to close
        self._transport = transport
        self._task: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._rewound_at = -1e9
        self.timings = timings  # each write stamps its events' first and last write
        self.ticker = ticker
        self._ticked = False  # waiting for the ticker's flush
        self._abandoned = False  # closed without flushing: nothing queued is written any more
        self._cut_off = False  # closed unread: the connection ends a moment after the close frame

    def send(self, frame: dict[str, Any]) -> None:
        """Encode and queue a frame (never waits)."""
        self.push(orjson.dumps(frame))

    def push(self, data: bytes) -> None:
        """Queue an encoded frame (never waits)."""
        if self.server_close is not None:
            return
        ticker = self.ticker
        if ticker is not None:
            self._push_for_tick(ticker, data)
            return
        # Nothing queued and no write in progress: hand the frame to the socket now (a task switch
        # per frame would be most of what a session adds to a delivery).
        if self._nothing_waits() and self.ws.try_write(data):
            if self.timings is not None:
                self.timings.wrote(data)
            return
        if self.queue.put(data, held=self._held()) or self._rewind(data):
            if self._task is None:
                self._task = asyncio.create_task(self._write_loop(), name=f"writer-{self.conn_id}")
            return
        self._full()

    def _held(self) -> int:
        """Bytes the transport still holds for this client (counted against the queue's byte bound)."""
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None and self.queue.max_bytes else 0

    def _full(self) -> None:
        log.warning("[%s] slow consumer: send queue full (%d frames, %d bytes with the socket's) again; closing "
                    "4408", self.conn_id, len(self.queue), self.queue.bytes + self._held())
        self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")

    def _push_for_tick(self, ticker: SendTicker, data: bytes) -> None:
        """Queue without waking the writer; the tick writes it (the same bound and rewind rules)."""
        if self.queue.put(data, wake=False, held=self._held()) or self._rewind(data):
            if not self._ticked:
                self._ticked = True
                ticker.add(self)
            return
        self._full()

    def flush(self) -> None:
        """The send tick: everything queued goes in one write if the socket takes it now; otherwise the
        writer's task sends it, paced by the socket (a task in the middle of a send takes it next)."""
        self._ticked = False
        if self._abandoned or not len(self.queue):
            return
        task = self._task
        if task is None or self.queue.writer_waiting:
            frames = self.queue.frames
            if self.ws.try_write_all(frames):
                self.queue.take_now()
                if self.timings is not None:
                    self.timings.wrote_all(frames)
                return
        if task is None:
            self._task = asyncio.create_task(self._write_loop(), name=f"writer-{self.conn_id}")
        else:
            self.queue.wake()

    def _nothing_waits(self) -> bool:
        """True when a frame written now cannot overtake one queued or being sent."""
        return self.queue.writer_idle if self._task is not None else not len(self.queue)

    def _rewind(self, data: bytes) -> bool:
        """A full queue: drop the events waiting in it and let the stream read them again, paced by
        the socket (or a snapshot if that is too far). Once per `GAIA_REWIND_EVERY_S`; full again
        within that time (or full of answers, not events) means too slow to keep."""
        now = time.monotonic()
        data_seq = event_seq(data)
        first = next((seq for seq in map(event_seq, self.queue.frames) if seq is not None), data_seq)
        if first is None or now - self._rewound_at < self.rewind_every_s:
            return False
        self._rewound_at = now
        dropped = self.queue.drop(is_event)
        if data_seq is None:
            self.queue.put(data, held=self._held())
        log.info("[%s] send queue full: %d events dropped, read again from the stream", self.conn_id, dropped)
        self.on_rewind(first - 1)
        return True

    async def _write_loop(self) -> None:
        """The only writer, started the first time a frame has to wait (the socket was busy).

        Most idle sessions never need one, and hold no task (nor its frame and wake-up future);
        a session that needed one keeps it, so bursts cost no task creation each. The batch is let
        go before waiting again, so no sent frame (a snapshot is about 8 KB) stays referenced.
        """
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            while True:
                frames = await self.queue.take()
                await self.ws.send_texts(frames)
                if self.timings is not None:
                    self.timings.wrote_all(frames)
                del frames

    def close_soon(self, code: int, reason: str, flush: bool = False) -> None:
        """Close from outside the reader; with flush, frames already queued (the errors) go first.

        A slow consumer is closed without flushing: its queue is what it cannot take.
        """
        if self.server_close is not None:
            return
        self.server_close = code
        self._abandoned = not flush
        if not flush and self._task is not None:
            self._task.cancel()
        self._closer = asyncio.create_task(self._close_ws(code, reason, flush))

    def close_unread(self, code: int, reason: str) -> None:
        """Close without reading any further or waiting (a client that broke its budget; shutdown): what is
        queued goes before the close frame only if the socket takes it at once (gateway/ws/socket.py)."""
        if self.server_close is None:
            self.server_close = code
        self._abandoned = self._cut_off = True
        if self._task is not None:
            self._task.cancel()
        frames = self.queue.take_now()
        if frames:
            self.ws.try_write_all(frames)
        self.ws.close_unread(code, reason)

    async def _close_ws(self, code: int, reason: str, flush: bool = False) -> None:
        """Send the close frame if the socket will take it; otherwise drop the connection."""
        closed = False
        deadline = time.monotonic() + FLUSH_BEFORE_CLOSE_S
        while flush and len(self.queue) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), timeout=CLOSE_TIMEOUT_S)
            closed = True
        except Exception as exc:  # noqa: BLE001 - whatever stopped the close, the connection must go
            log.info("[%s] close %d did not complete (%s)", self.conn_id, code, type(exc).__name__)
        finally:
            # A client that reads nothing never takes our close frame: abort so the reader ends.
            if not closed and self._transport is not None:
                self._transport.abort()

    async def finish(self) -> None:
        """Stop the writing task, let a close under way end, and close the socket if it is still open."""
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._closer is not None:
            await asyncio.gather(self._closer, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), timeout=CLOSE_TIMEOUT_S)
        if self._cut_off:
            await self.ws.until_cut_off()
