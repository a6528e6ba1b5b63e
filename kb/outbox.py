"""The publisher task: drains the outbox to JetStream with Nats-Msg-Id de-duplication."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Callable

from nats.js.errors import NotFoundError

from kb.stores import OutboxRow, Store
from shared.config import Settings
from shared.natsconn import NatsLink
from shared.service.tasks import raise_if_cancelled, wait_event

log = logging.getLogger(__name__)
BATCH = 512
PRUNE_EVERY_S = 60.0
# How long a publish waits for JetStream's ack, and the longest pause between failed rounds. One sent to a
# leader that had just been paused or cut off is never answered: its 5 s wait, and a backoff of up to 2 s
# after it, kept the stream still for seconds after the new leader was elected. An ack takes milliseconds;
# one that is late only sends the rest again (Nats-Msg-Id keeps that exactly-once). After a failed round
# one row goes first, alone: a stream still without a leader is not sent a whole batch twice a second.
ACK_TIMEOUT_S = 2.0
BACKOFF_MAX_S = 0.5


def now_ms() -> int:
    """Wall-clock milliseconds (the shell's clock; rules get it passed in)."""
    return int(time.time() * 1000)


class OutboxPublisher:
    """Publishes committed events in commit order; a row is done only when JetStream acknowledged it."""

    def __init__(self, store: Store, link: NatsLink, settings: Settings) -> None:
        self.store = store
        self.link = link
        self.settings = settings
        self.published = 0
        self.republished = 0
        self.forged = 0  # duplicate acks for messages that were not ours
        self._wake = asyncio.Event()
        self._last_prune = 0.0
        self._failing = False  # the last round failed: the next one tries a single row first
        # Lease mode: the subjects of the worlds this process owns (two publishers of one row race, and
        # JetStream's answer to the loser, "duplicate message id is in process", stalls it 5 s).
        self.subjects: Callable[[], list[str]] | None = None
        link.on_connect(self.recover_lost_tail)

    def notify(self) -> None:
        """Something was committed: publish soon."""
        self._wake.set()

    async def run(self) -> None:
        """Forever: wait for work (or a 1 s poll), publish what is pending, prune old rows."""
        backoff = 0.1
        while True:
            await wait_event(self._wake, 1.0)
            self._wake.clear()
            if not self.link.jetstream_ok:
                continue
            try:
                await self._drain()
                await self._prune_now_and_then()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the rows, retry later
                raise_if_cancelled()
                self._failing = True
                log.warning("outbox publish failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                self._wake.set()

    async def _drain(self) -> None:
        while True:
            rows = await self.store.unpublished(1 if self._failing else BATCH,
                                                None if self.subjects is None else self.subjects())
            if not rows:
                return
            acks = await self._publish(rows)
            await self.store.mark_published(acks, now_ms())
            self.published += len(acks)
            if len(acks) < len(rows):
                raise ConnectionError(f"{len(rows) - len(acks)} events not acknowledged")
            self._failing = False

    async def _publish(self, rows: list[OutboxRow]) -> list[tuple[int, int]]:
        """Pipeline a batch; stop at the first unacknowledged row so order is kept on retry."""
        js = self.link.js
        assert js is not None
        futures = [await js.publish_async(r.subject, r.payload, headers={"Nats-Msg-Id": r.msg_id}) for r in rows]
        acks: list[tuple[int, int]] = []
        try:
            for row, fut in zip(rows, futures, strict=True):
                ack = await asyncio.wait_for(fut, timeout=ACK_TIMEOUT_S)
                if ack.duplicate and not await self._stored_is(ack.seq, row.payload):
                    await self._forged(row, ack.seq)
                    break  # this row and the rest go again, in order
                acks.append((row.id, ack.seq))
        except Exception as exc:  # noqa: BLE001 - the rest is retried
            log.warning("publish of %s not acknowledged: %s", rows[len(acks)].msg_id, type(exc).__name__)
        finally:
            for fut in futures[len(acks):]:
                fut.cancel()
        return acks

    async def _stored_is(self, seq: int, payload: bytes) -> bool:
        """Is the stream's message at `seq` ours? (A duplicate ack only says its id was seen.)"""
        assert self.link.js is not None
        stored = await self.link.js.get_msg(self.settings.stream_name, seq, direct=True)
        return stored.data == payload

    async def _forged(self, row: OutboxRow, seq: int) -> None:
        """Someone else published under our message id: an alarm, and our event goes under a new id."""
        self.forged += 1
        log.error("ALARM: stream message %d carries our message id %s but not our event: a forged publish "
                  "on the bus; re-publishing ours under a new id", seq, row.msg_id)
        await self.store.rename(row.id, f"{row.msg_id}:{secrets.token_hex(8)}")

    async def recover_lost_tail(self) -> None:
        """After a (re)connect: re-publish acknowledged events the bus no longer has.

        JetStream acknowledges before fsync unless configured otherwise, so a crashed server can
        come back without its last writes. Rows kept for `kb_outbox_keep_s` whose recorded stream
        sequence is beyond the stream's last sequence are queued again; Nats-Msg-Id keeps it exactly-once.
        """
        js = self.link.js
        if js is None:
            return
        try:
            info = await js.stream_info(self.settings.stream_name)
        except NotFoundError:
            return
        since = now_ms() - int(self.settings.kb_outbox_keep_s * 1000)
        lost = await self.store.published_since(info.state.last_seq, since)
        if lost:
            log.warning("stream lost %d acknowledged events (last_seq=%d); re-publishing",
                        len(lost), info.state.last_seq)
            await self.store.mark_unpublished([r.id for r in lost])
            self.republished += len(lost)
        self.notify()

    async def _prune_now_and_then(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = time.monotonic()
        gone = await self.store.prune(now_ms() - int(self.settings.kb_outbox_keep_s * 1000))
        if gone:
            log.debug("pruned %d published outbox rows", gone)
