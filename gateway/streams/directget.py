"""Batched direct gets: a short catch-up read straight from the stream, with no consumer.

A catch-up consumer is JetStream state; on a clustered stream creating and deleting one is a
meta-leader (Raft) operation each, which a reconnect storm of thousands of sessions turns into a
queue. A batched direct get (`$JS.API.DIRECT.GET.<stream>` with `next_by_subj` and `batch`,
nats-server 2.11 and later) is answered by any replica of a stream that allows direct access and
leaves nothing behind. Every reply of this process arrives on one wildcard reply subscription
(`<inbox>.*`), so a read adds no subscription of its own. Reply tokens are random, and a reply
that is not a stored message of the subject asked for (an answer someone else aimed at our inbox)
is dropped and reported, never appended.
"""
from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Callable

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from gateway.streams.headers import stored_problem

END_OF_BATCH = "204"
NOT_FOUND = "404"
REPLY_PENDING_MSGS = 100_000
REPLY_PENDING_BYTES = 256 * 1024 * 1024


class DirectReadError(Exception):
    """A batch read that did not come back whole (timeout, an error status or a broken chain)."""


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """One stored message: its stream sequence, how many later ones match the subject, its payload."""

    seq: int
    pending: int
    data: bytes


class _Batch:
    """The replies to one request, in arrival order, until the end-of-batch (or not-found) status."""

    __slots__ = ("subject", "msgs", "done", "error")

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.msgs: list[StoredMsg] = []
        self.done = asyncio.get_running_loop().create_future()
        self.error: str | None = None


class DirectReader:
    """Reads runs of one subject's stored messages through one shared reply subscription."""

    def __init__(self, stream: str, on_foreign: Callable[[str, str, str], None]) -> None:
        self.stream = stream
        self.on_foreign = on_foreign  # (path, subject, why) of a reply that is not ours
        self.requests = 0
        self._nc: NATS | None = None
        self._sub: Subscription | None = None
        self._prefix = ""
        self._batches: dict[str, _Batch] = {}

    async def read(self, nc: NATS, subject: str, from_seq: int, batch: int, max_bytes: int,
                   timeout: float = 5.0) -> list[StoredMsg]:
        """Up to `batch` messages on `subject` from `from_seq` on ([] when there is none)."""
        await self._ensure_sub(nc)
        token = secrets.token_hex(8)  # unguessable: nobody else can aim an answer at a read in flight
        waiting = self._batches[token] = _Batch(subject)
        request = orjson.dumps({"seq": from_seq, "next_by_subj": subject, "batch": batch, "max_bytes": max_bytes})
        self.requests += 1
        try:
            await nc.publish(f"$JS.API.DIRECT.GET.{self.stream}", request, reply=f"{self._prefix}.{token}")
            await asyncio.wait_for(asyncio.shield(waiting.done), timeout)
        except asyncio.TimeoutError as exc:
            raise DirectReadError(f"no end of batch within {timeout:.0f}s") from exc
        finally:
            self._batches.pop(token, None)
        if waiting.error is not None:
            raise DirectReadError(waiting.error)
        return waiting.msgs

    async def _ensure_sub(self, nc: NATS) -> None:
        """One reply subscription per connection (nats-py restores it after a reconnect)."""
        if self._nc is nc and self._sub is not None:
            return
        self._nc, self._prefix = nc, nc.new_inbox()
        self._sub = await nc.subscribe(f"{self._prefix}.*", cb=self._on_reply, pending_msgs_limit=REPLY_PENDING_MSGS,
                                       pending_bytes_limit=REPLY_PENDING_BYTES)

    async def _on_reply(self, msg: Msg) -> None:
        waiting = self._batches.get(msg.subject[len(self._prefix) + 1:])
        if waiting is None or waiting.done.done():
            return  # an answer to a request that timed out
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None:
            problem = stored_problem(headers, self.stream, waiting.subject)
            if problem:
                self.on_foreign("direct", msg.subject, problem)
                return
            self._add(waiting, headers, msg.data)
        else:
            if status not in (END_OF_BATCH, NOT_FOUND):
                waiting.error = f"direct get failed: {status} {headers.get('Description', '')}".strip()
            waiting.done.set_result(None)

    @staticmethod
    def _add(waiting: _Batch, headers: dict[str, str], data: bytes) -> None:
        """Append one reply; a reply that does not follow the previous one (lost on the way) fails the batch."""
        seq = int(headers["Nats-Sequence"])
        previous = int(headers.get("Nats-Last-Sequence") or 0)
        if previous != (waiting.msgs[-1].seq if waiting.msgs else 0):
            waiting.error = f"direct get batch broken before seq {seq}"
            waiting.done.set_result(None)
            return
        waiting.msgs.append(StoredMsg(seq, int(headers.get("Nats-Num-Pending") or 0), data))

    async def close(self) -> None:
        """Drop the reply subscription and fail what still waits."""
        for waiting in self._batches.values():
            if not waiting.done.done():
                waiting.error = "closed"
                waiting.done.set_result(None)
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may already be gone
                pass
