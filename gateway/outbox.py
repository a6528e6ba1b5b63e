"""A session's bounded outgoing queue: put never waits; the writer takes everything waiting at once."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class SessionOutbox(Generic[T]):
    """FIFO of encoded frames with a hard bound; a full outbox means the client is too slow."""

    # Slots: thousands of these live at once; no per-instance dict saves about a kilobyte each.
    __slots__ = ("limit", "_frames", "_ready")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._frames: deque[T] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: T) -> bool:
        """Queue a frame; False (and nothing queued) when the bound is reached."""
        if len(self._frames) >= self.limit:
            return False
        self._frames.append(frame)
        self._ready.set()
        return True

    async def take(self) -> deque[T]:
        """Wait for frames, then return all of them (so the writer can send them back to back)."""
        await self._ready.wait()
        self._ready.clear()
        frames, self._frames = self._frames, deque()
        return frames
