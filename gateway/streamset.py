"""Every open stream of a gateway process: opened, checked after a NATS reconnect and swept together."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Awaitable

from nats.js import api as js_api
from nats.js.errors import NotFoundError

from gateway.directget import DirectReader, StoredMsg
from gateway.stream import StreamSink, UserStream
from gateway.validation import EventValidator
from shared.config import Settings
from shared.natsconn import NatsLink
from shared.singleflight import SingleFlight
from shared.tasks import raise_if_cancelled

log = logging.getLogger(__name__)
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


class StreamSet:
    """Every open stream of this gateway: checked together after a reconnect and by a periodic sweep."""

    def __init__(self, link: NatsLink, settings: Settings) -> None:
        self.link = link
        self.settings = settings
        self.streams: set[UserStream] = set()
        self.validator = EventValidator()
        self.direct = DirectReader(settings.stream_name)
        self._reads: SingleFlight[tuple[str, int, int], list[StoredMsg]] = SingleFlight()
        self.stats = StreamStats()
        # Bounds the JetStream requests of catch-ups at once: a storm of resumes queues here.
        self.catchup_slots = asyncio.Semaphore(settings.catchup_concurrency)
        self._swept_last: dict[str, int] = {}
        self._lasts: SingleFlight[str, int] = SingleFlight(join_while_running=False)
        link.on_connect(self.check_all)

    def new(self, user_id: str, experience: str, label: str, sink: StreamSink) -> UserStream:
        """A stream for one client (not yet open), registered for reconnect checks."""
        stream = UserStream(self, user_id, experience, label, sink)
        self.streams.add(stream)
        return stream

    async def discard(self, stream: UserStream) -> None:
        """Close a stream and forget it."""
        self.streams.discard(stream)
        await stream.close()

    def catchup_config(self, subject: str, cursor: int) -> js_api.ConsumerConfig:
        """A pull consumer for one catch-up: memory only, no acks, gone soon if its gateway dies."""
        return js_api.ConsumerConfig(
            filter_subject=subject, deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=cursor + 1,
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
        return msg.seq or 0

    async def check_all(self) -> None:
        """After NATS (re)connects: streams behind their subject catch up, oldest cursor first, bounded."""
        streams = sorted(self.streams, key=lambda s: s.cursor if s.cursor is not None else -1)
        if streams:
            log.info("checking %d streams after nats connect", len(streams))
        lasts = await self._subject_lasts({s.subject for s in streams})
        for stream in streams:
            try:
                if stream.needs_open:
                    await stream.ensure_open()
                elif stream.subject in lasts:
                    stream.check(lasts[stream.subject])
            except Exception as exc:  # noqa: BLE001 - the sweeper tries again
                raise_if_cancelled()
                log.warning("[%s] stream check failed: %s", stream.label, type(exc).__name__)

    async def _subject_lasts(self, subjects: set[str]) -> dict[str, int]:
        """One direct get per experience, however many sessions watch it."""
        lasts: dict[str, int] = {}
        for subject in subjects:
            try:
                lasts[subject] = await self.subject_last(subject)
            except Exception as exc:  # noqa: BLE001 - skipped this round
                raise_if_cancelled()
                log.warning("last sequence of %s unknown: %s", subject, type(exc).__name__)
        return lasts

    async def sweep_forever(self) -> None:
        """Catch a lost tail: a stream still below what its subject held one sweep ago missed something.

        A gap shows on the next live message; this finds the gap no later message reveals (the last
        message of a quiet world dropped on a reconnect or a slow-consumer cut).
        """
        while True:
            await asyncio.sleep(self.settings.stream_sweep_s)
            if not self.link.jetstream_ok:
                continue
            try:
                await self._sweep_once()
            except Exception:  # noqa: BLE001 - the next sweep tries again
                raise_if_cancelled()
                log.exception("stream sweep failed; going on")

    async def _sweep_once(self) -> None:
        before, self._swept_last = self._swept_last, await self._subject_lasts(
            {s.subject for s in self.streams})
        by_subject: dict[str, list[UserStream]] = defaultdict(list)
        for stream in self.streams:
            by_subject[stream.subject].append(stream)
        for subject, streams in by_subject.items():
            for stream in streams:
                if stream.needs_open:
                    await self._quietly(stream.ensure_open())
                elif subject in before:
                    stream.check(before[subject])

    async def _quietly(self, coro: Any) -> None:
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - tried again next sweep
            raise_if_cancelled()
            log.warning("stream reopen failed: %s", type(exc).__name__)

    @property
    def catching_up(self) -> int:
        """Streams replaying through a consumer right now (for /metrics)."""
        return sum(1 for s in self.streams if s.catching_up)
