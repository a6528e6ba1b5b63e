"""Keeps snapshots and stream events in a safe order for one client, whatever its transport."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Callable, Coroutine, Generic, Iterator, TypeVar

import orjson

from gateway.kbclient import KbClient, KbUnavailable
from shared.schemas.errors import ErrorCode
from shared.schemas.messages import error_frame

log = logging.getLogger(__name__)
T = TypeVar("T")


class SnapshotGate(Generic[T]):
    """Events that arrive while an area_of_interest is being fetched wait and follow it.

    A snapshot fetched while an event is in flight could be older than that event; a client that
    got the event first and the snapshot second would roll back and never see the change again.
    Holding events from the moment the fetch starts until the snapshot is queued rules that out.
    """

    # Slots: thousands of these live at once; no per-instance dict saves about a kilobyte each.
    __slots__ = (
        "kb", "experience", "user_id", "label", "gateway_id", "limit", "emit_event", "emit_frame",
        "on_overflow", "last_snapshot", "_holds", "_held", "_waiting",
    )

    def __init__(self, kb: KbClient, experience: str, user_id: str, label: str, gateway_id: str, limit: int,
                 emit_event: Callable[[T], None], emit_frame: Callable[[dict[str, Any]], None],
                 on_overflow: Callable[[list[T]], bool]) -> None:
        self.kb = kb
        self.experience = experience
        self.user_id = user_id
        self.label = label
        self.gateway_id = gateway_id
        self.limit = limit
        self.emit_event = emit_event
        self.emit_frame = emit_frame
        self.on_overflow = on_overflow
        self.last_snapshot: int | None = None
        self._holds = 0
        self._held: list[tuple[T, bool]] = []  # (frame, is a stream event)
        self._waiting: list[tuple[int, asyncio.Future[None]]] | None = None  # chats waiting for a version

    def event(self, item: T, event: dict[str, Any]) -> None:
        """A stream event: passed on now, or held behind a snapshot being fetched."""
        if event["type"] == "world_update":
            self.last_snapshot = event["snapshot_version"]
        self._in_order(item, True)
        if self._waiting:
            self._wake_waiting()

    async def reached(self, version: int, timeout: float) -> bool:
        """Wait until the world_update at `version` (or a snapshot past it) is queued for the client.

        Whatever is queued after that, through `in_order`, reaches the client after it.
        """
        if self.last_snapshot is not None and self.last_snapshot >= version:
            return True
        entry = (version, asyncio.get_running_loop().create_future())
        self._waiting = (self._waiting or []) + [entry]
        try:
            async with asyncio.timeout(timeout):
                await entry[1]
            return True
        except TimeoutError:
            return False
        finally:
            self._waiting = [w for w in self._waiting or [] if w is not entry] or None

    def _wake_waiting(self) -> None:
        for version, future in self._waiting or []:
            if self.last_snapshot is not None and version <= self.last_snapshot and not future.done():
                future.set_result(None)

    def in_order(self, item: T) -> None:
        """Pass a frame on now, or hold it (bounded) behind a snapshot being fetched."""
        self._in_order(item, False)

    def _in_order(self, item: T, is_event: bool) -> None:
        if not self._holds:
            self.emit_event(item)
        elif len(self._held) < self.limit:
            self._held.append((item, is_event))
        else:
            self._overflow(item, is_event)

    def _overflow(self, item: T, is_event: bool) -> None:
        """Too much held: the stream events go (oldest first, to the owner, who can have the stream
        read them again, paced); answers and chat chunks stay. False from the owner: it closes."""
        dropped = [held for held, event in self._held if event] + ([item] if is_event else [])
        self._held = [(held, event) for held, event in self._held if not event]
        if self.on_overflow(dropped) and not is_event:
            self._held.append((item, False))

    @property
    def held(self) -> int:
        """Events waiting behind a snapshot."""
        return len(self._held)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Events that arrive inside the block wait, and follow in order when it ends."""
        self.hold()
        try:
            yield
        finally:
            self.release()

    def hold(self) -> None:
        """Start holding events (nested holds count); `release` lets them go once the last ends."""
        self._holds += 1

    def release(self) -> None:
        """End one hold; the last one passes on what was held, in order."""
        self._holds -= 1
        if self._holds == 0 and self._held:
            held, self._held = self._held, []
            for item, _ in held:
                self.emit_event(item)

    def resync(self, reason: str) -> Coroutine[Any, Any, None]:
        """Hold events now and say `resync_required`; the returned coroutine sends the fresh snapshot.

        Holding at once (not when the coroutine first runs) keeps every later event behind the snapshot.
        """
        self.hold()
        self.emit_frame({"type": "resync_required", "reason": reason})
        return self._resync_view()

    async def _resync_view(self) -> None:
        try:
            await self.send_view()
        finally:
            self.release()  # the hold taken by `resync` when it was called

    async def send_view(self) -> None:
        """Fetch and queue area_of_interest with events held meanwhile."""
        with self.holding():
            try:
                view = await self.kb.state(self.experience, self.user_id, self.label, self.gateway_id)
            except KbUnavailable:
                self.emit_frame(error_frame(ErrorCode.KB_UNAVAILABLE,
                                            "the world service is unavailable; retry get_state"))
                return
            self.last_snapshot = view["snapshot_version"]
            self.emit_frame(view)
            if self._waiting:
                self._wake_waiting()


def resumed_frame(from_seq: int, to_seq: int, replayed: int) -> bytes:
    """The `resumed` frame that ends a replay."""
    return orjson.dumps({"type": "resumed", "from_seq": from_seq, "to_seq": to_seq, "replayed": replayed})
