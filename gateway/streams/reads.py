"""What a connection's stream reads besides its subscription: the subject's end, stored runs, settings.

One object per gateway process, handed to every stream: the stream needs no more of the process
than this (no StreamSet, no session), and every read here is shared by the sessions that ask the
same at once.
"""
from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable

from nats.js import api as js_api
from nats.js.errors import NotFoundError

from gateway.singleflight import SingleFlight
from gateway.streams.directget import DirectReader, DirectReadError, StoredMsg
from gateway.streams.foreign import ForeignMessages
from gateway.streams.frames import EventValidator
from gateway.streams.headers import LiveVerdicts
from shared.config import Settings
from shared.natsconn import NatsLink
from shared.service.tasks import raise_if_cancelled

DIRECT_BATCH_BYTES = 1024 * 1024  # one direct get answers at most this much (at least one message)


@dataclass
class StreamStats:
    """Events handed to sessions (by transport), invalid events, gaps and catch-ups, over the process's life."""

    delivered: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    gaps: int = 0
    catchups: int = 0
    consumers: int = 0  # catch-ups that needed a consumer (longer than catchup_direct_max)
    resyncs: int = 0


class StreamReads:
    """The reads and counters every stream of this process shares."""

    def __init__(self, link: NatsLink, settings: Settings) -> None:
        self.link = link
        self.settings = settings
        self.validator = EventValidator()
        self.live = LiveVerdicts(settings.stream_name)
        self.foreign = ForeignMessages()
        self.direct = DirectReader(settings.stream_name, self.foreign.drop)
        self.stats = StreamStats()
        # Bounds the JetStream requests of catch-ups at once: a storm of resumes queues here.
        self.catchup_slots = asyncio.Semaphore(settings.catchup_concurrency)
        self._reads: SingleFlight[tuple[str, int, int], list[StoredMsg]] = SingleFlight()
        self._lasts: SingleFlight[str, int] = SingleFlight(join_while_running=False)

    def catchup_config(self, subject: str, cursor: int) -> js_api.ConsumerConfig:
        """A pull consumer for one catch-up: memory only, no acks, gone soon if its gateway dies.

        Named, so that the create request's subject carries its name and filter
        (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`): the only form the gateway's NATS user may use.
        """
        return js_api.ConsumerConfig(
            name=f"catchup-{secrets.token_hex(8)}", filter_subject=subject,
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=cursor + 1,
            ack_policy=js_api.AckPolicy.NONE, mem_storage=True, num_replicas=1,
            inactive_threshold=self.settings.catchup_inactive_s)

    async def delete_consumer(self, name: str) -> None:
        """Delete a catch-up consumer now; if NATS is away its inactive threshold removes it."""
        if self.link.js is None or not self.link.connected:
            return
        try:
            await asyncio.wait_for(self.link.js.delete_consumer(self.settings.stream_name, name), 2.0)
        except Exception:  # noqa: BLE001 - gone already, or NATS away
            raise_if_cancelled()

    def read_direct(self, subject: str, from_seq: int, batch: int) -> Awaitable[list[StoredMsg]]:
        """Stored messages on a subject from a sequence on, by batched direct get.

        Sessions asking the same while it is on its way share the answer: after a gateway restart
        thousands resume from the same cursor, and one read serves them all.
        """
        return self._reads.ask((subject, from_seq, batch), lambda: self._read_direct(subject, from_seq, batch))

    async def _read_direct(self, subject: str, from_seq: int, batch: int) -> list[StoredMsg]:
        assert self.link.nc is not None
        async with self.catchup_slots:
            return await self.direct.read(self.link.nc, subject, from_seq, batch, DIRECT_BATCH_BYTES)

    def subject_last(self, subject: str) -> Awaitable[int]:
        """Stream sequence of the newest message on a subject (0 if none), by direct get.

        Everyone who asks within one turn of the event loop shares one request, sent after all of
        their subscriptions: a connect storm of one experience costs one request per turn, not one
        per session, and each asker still gets an answer read after its own SUB.
        """
        return self._lasts.ask(subject, lambda: self._read_last(subject))

    async def leader_last(self, subject: str) -> int:
        """The same, asked of the stream's leader: a replica answering a direct get may lag behind."""
        return await self._read_last(subject, direct=False)

    async def _read_last(self, subject: str, direct: bool = True) -> int:
        assert self.link.js is not None
        try:
            msg = await self.link.js.get_last_msg(self.settings.stream_name, subject, direct=direct)
        except NotFoundError:
            return 0
        if msg.subject != subject:  # an answer someone else aimed at our request
            self.foreign.drop("last", subject, f"the last message of {str(msg.subject)[:80]!r}")
            raise DirectReadError(f"the last message of {subject} came back about another subject")
        return msg.seq or 0
