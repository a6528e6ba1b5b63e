"""A session's bounded send queue: put never waits; the writer takes everything waiting at once.

(Not kb/outbox.py, kb's transactional publisher: this one lives and dies with one client.)
"""
from __future__ import annotations

import asyncio
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class SendQueue(Generic[T]):
    """FIFO of encoded frames with a hard bound in frames and, given `max_bytes`, in bytes; a full queue
    means the client is too slow."""

    # Slots: thousands of these live at once; no per-instance dict saves about a kilobyte each.
    __slots__ = ("limit", "max_bytes", "bytes", "_frames", "_waiter")

    def __init__(self, limit: int, max_bytes: int = 0) -> None:
        self.limit = limit
        self.max_bytes = max_bytes  # 0: frames only (items that are not bytes, SSE's)
        self.bytes = 0  # of the frames queued, when max_bytes is set
        self._frames: list[T] = []  # a list, not a deque: an idle session's empty deque costs 0.6 KB
        # The writer's wake-up: one future while it waits (an asyncio.Event would keep a deque of
        # waiters for the session's whole life, about 0.8 KB each).
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def writer_idle(self) -> bool:
        """True while the writer waits for frames (nothing queued, nothing being sent)."""
        return self._waiter is not None and not self._frames

    @property
    def writer_waiting(self) -> bool:
        """True while the writer waits for frames (so it is not in the middle of sending any)."""
        return self._waiter is not None

    def put(self, frame: T, wake: bool = True, held: int = 0) -> bool:
        """Queue a frame; False (and nothing queued) when a bound is reached. `held`: bytes of this
        client's still waiting elsewhere (the socket's transport), counted against `max_bytes` too; a
        frame larger than the room left is still taken by an empty queue, so the bound is
        `max_bytes` plus one frame. Without `wake` the writer is not woken: the frame waits for
        `wake` or `take_now` (a send tick)."""
        if len(self._frames) >= self.limit:
            return False
        if self.max_bytes:
            size = len(frame)  # type: ignore[arg-type]  # max_bytes is given for bytes only
            if held + self.bytes + size > self.max_bytes and (self._frames or held > self.max_bytes):
                return False
            self.bytes += size
        self._frames.append(frame)
        if wake:
            self.wake()
        return True

    def wake(self) -> None:
        """Let a waiting writer take what is queued."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take_now(self) -> list[T]:
        """Everything queued, at once (the caller writes it; the queue is left empty)."""
        frames, self._frames = self._frames, []
        self.bytes = 0
        return frames

    @property
    def frames(self) -> list[T]:
        """What is queued, oldest first (read only)."""
        return self._frames

    def drop(self, unwanted: Callable[[T], bool]) -> int:
        """Remove the queued frames `unwanted` picks; how many went."""
        kept = [frame for frame in self._frames if not unwanted(frame)]
        dropped, self._frames = len(self._frames) - len(kept), kept
        if self.max_bytes:
            self.bytes = sum(map(len, kept))  # type: ignore[arg-type]
        return dropped

    async def take(self) -> list[T]:
        """Wait for frames, then return all of them (so the writer can send them back to back)."""
        while not self._frames:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frames, self._frames = self._frames, []
        self.bytes = 0
        return frames
