"""One owned NATS connection per process: connects in the background, ensures the stream."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import nats
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from shared.config import Settings
from shared.natsauth import inbox_prefix, redacted, user_of
from shared.service.tasks import bounded, raise_if_cancelled, stop_tasks
from shared.subjects import REPUBLISH_DEST, REPUBLISH_SOURCE, STREAM_SUBJECTS

log = logging.getLogger(__name__)
Listener = Callable[[], Awaitable[None]]
QUORUM_PROBE_S = 1.0  # how often a clustered stream's quorum is checked through this connection
PEER_SILENT_NS = 3_000_000_000  # a replica the leader has not heard from for this long does not count
QUORUM, ALONE, SILENT = "quorum", "alone", "silent"  # what a probe of the stream through this server found
ENSURE_TRY_S = 2.0  # one try at ensuring the stream after a (re)connect
ALONE_PROBES = 2  # a leader seen alone this many probes in a row (4 s and more without a majority): leave


def stream_config(settings: Settings) -> js_api.StreamConfig:
    """The WORLD_UPDATES stream as this deployment wants it."""
    return js_api.StreamConfig(
        name=settings.stream_name,
        subjects=list(STREAM_SUBJECTS),
        storage=js_api.StorageType.FILE,
        retention=js_api.RetentionPolicy.LIMITS,
        max_age=settings.stream_max_age_s,
        duplicate_window=settings.stream_duplicate_window_s,
        num_replicas=settings.stream_replicas,
        max_consumers=settings.stream_max_consumers,
        allow_direct=True,
        republish=js_api.RePublish(src=REPUBLISH_SOURCE, dest=REPUBLISH_DEST),
    )


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create WORLD_UPDATES, or bring an existing one to our config (idempotent).

    The stream's own leader is asked first: one already as wanted needs nothing of the meta leader,
    which after its node was killed is being elected for 4 to 9 s, and kb publishes nothing until
    this returns (seen as a 4.4 s stall when the killed follower led the meta group)."""
    config = stream_config(settings)
    try:
        info = await js.stream_info(settings.stream_name)
    except NotFoundError:
        pass
    else:
        have = info.config.as_dict()
        if all(have.get(key) == value for key, value in config.as_dict().items()):
            return
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


async def lease_bucket(js: JetStreamContext, bucket: str, ttl_s: float, replicas: int = 1) -> KeyValue:
    """A KV bucket whose entries expire after ttl_s (the lease store), created on first use with `replicas`
    (the stream's): with one replica, the node holding it paused or cut off stopped every lease with it
    until it came back. A bucket made with fewer is scaled up (kept as it is if this user may not)."""
    try:
        info = await js.stream_info(f"KV_{bucket}")
    except NotFoundError:
        return await js.create_key_value(bucket=bucket, ttl=ttl_s, history=1, replicas=replicas)
    if (info.config.num_replicas or 1) < replicas:
        try:
            await js.update_stream(dataclasses.replace(info.config, num_replicas=replicas))
            log.info("lease bucket %s scaled up to %d replicas", bucket, replicas)
        except Exception as exc:  # noqa: BLE001 - an older deployment's rights: works, less available
            raise_if_cancelled()
            log.warning("lease bucket %s keeps %d replica(s), fewer than the stream's %d (%s: %s)", bucket,
                        info.config.num_replicas or 1, replicas, type(exc).__name__, exc)
    return await js.key_value(bucket)


class NatsLink:
    """Owns the process's NATS connection and tells listeners when it (re)connects.

    With `manage_stream` (kb) it creates or updates WORLD_UPDATES; otherwise (gateways, whose
    credentials may not) it waits until the stream exists.
    """

    def __init__(self, settings: Settings, name: str, manage_stream: bool = True,
                 new_client: Callable[[], NATS] = NATS, drain: bool = True) -> None:
        self.settings = settings
        self.name = name
        self.manage_stream = manage_stream
        self.drain = drain  # on close: a publisher drains (what it sent is flushed); a reader just closes
        self.new_client = new_client  # the gateway's hands its copy-reading parser in here
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.jetstream_ok = False
        self.reconnects = 0
        self.errors = 0
        self._listeners: list[Listener] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self.server_moves = 0  # times this link left a server through which the stream had no quorum

    @property
    def connected(self) -> bool:
        """True while the client holds a live connection to a server."""
        return self.nc is not None and self.nc.is_connected

    def status(self) -> dict[str, bool]:
        """The `nats` block of /health."""
        return {"connected": self.connected, "jetstream": self.connected and self.jetstream_ok}

    def on_connect(self, listener: Listener) -> None:
        """Call listener after every successful connect and reconnect."""
        self._listeners.append(listener)

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until connected with the stream ensured; False on timeout."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def start(self) -> None:
        """Begin connecting in the background; the service serves meanwhile (degraded)."""
        self._task = asyncio.create_task(self._connect_until_up(), name=f"nats-connect-{self.name}")
        if (self.settings.stream_replicas > 1 and self.settings.nats_stranded_s > 0
                and len(self.settings.nats_url.split(",")) > 1):
            self._watch = asyncio.create_task(self._watch_quorum(), name=f"nats-quorum-{self.name}")

    async def _watch_quorum(self) -> None:
        """Move to another server when the stream has had no quorum through this one: a node cut off
        from the others still answers pings, so nats-py stays. Without any answer for `nats_stranded_s`
        (an election elsewhere looks the same for a while), or at once when the stream's leader answers
        through it twice in a row without having heard from a majority (the leader cut off with us,
        which no election looks like). A service that (re)connected there and cannot ensure the stream
        counts too: it used to wait for the heal."""
        since: float | None = None
        alone = 0
        while True:
            await asyncio.sleep(QUORUM_PROBE_S)
            state = QUORUM if not self.connected or self.js is None else await self._quorum()
            alone = alone + 1 if state == ALONE else 0
            if state == QUORUM:
                since = None
                continue
            now = time.monotonic()
            since = now if since is None else since
            if now - since >= self.settings.nats_stranded_s or alone >= ALONE_PROBES:
                self._leave_server(f"the stream's leader answers through it without a majority ({alone} probes)"
                                   if alone >= ALONE_PROBES else f"no stream quorum through it for {now - since:.0f} s")
                since, alone = None, 0

    async def _has_quorum(self) -> bool:
        """Does the stream's leader answer through this server, having heard from a majority of replicas?"""
        return await self._quorum() == QUORUM

    async def _quorum(self) -> str:
        """QUORUM; ALONE: the leader answered through this server without a majority heard from lately;
        SILENT: no answer (no leader, or none reachable from here)."""
        assert self.js is not None
        try:
            info = await asyncio.wait_for(self.js.stream_info(self.settings.stream_name), 2.0)
        except NotFoundError:
            return QUORUM  # no stream yet (kb creates it): nothing to be cut off from
        except Exception:  # noqa: BLE001 - no answer is the signal
            raise_if_cancelled()
            return SILENT
        cluster = info.cluster
        if cluster is None:
            return QUORUM  # not clustered: nothing to be cut off from
        if not cluster.leader:  # answered by this server alone (a cut-off follower does so for as long as
            return SILENT  # it is cut off), its peers listed as active 0 s ago: they were never heard
        if cluster.replicas is None:
            return QUORUM  # one replica: nothing to be cut off from
        heard = 1 + sum(1 for peer in cluster.replicas if not peer.offline and (peer.active or 0) < PEER_SILENT_NS)
        return QUORUM if heard * 2 > len(cluster.replicas) + 1 else ALONE

    def _leave_server(self, why: str) -> None:
        """Drop the connection under nats-py: it reconnects to the next server of its pool and
        restores every subscription there, as after a server crash."""
        nc = self.nc
        transport = getattr(nc, "_transport", None)
        where = nc.connected_url.netloc.rsplit("@", 1)[-1] if nc is not None and nc.connected_url else "?"
        log.warning("nats: leaving %s (%s); moving to another server", where, why)
        if transport is not None:
            self.server_moves += 1
            transport.close()

    async def _connect_until_up(self) -> None:
        delay = 0.1
        while True:
            try:
                nc = self.new_client()
                # Our own shuffle, then nats-py's round robin: its default shuffles the pool again on each
                # reconnect, which went straight back to the frozen or cut-off node a third of the time.
                servers = self.settings.nats_url.split(",")
                await nc.connect(
                    servers=random.sample(servers, len(servers)),
                    dont_randomize=True,
                    name=self.name,
                    **credentials(self.settings),
                    inbox_prefix=inbox_prefix(self.settings.nats_user or self.name.split("-", 1)[0]),
                    connect_timeout=2,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,  # type: ignore[arg-type]  # nats-py sleeps on a float
                    ping_interval=self.settings.nats_ping_interval_s,  # type: ignore[arg-type]  # a float sleeps
                    max_outstanding_pings=self.settings.nats_max_pings_out,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    error_cb=self._on_error,
                )
                self.nc = nc
                break
            except Exception as exc:  # noqa: BLE001 - any failure means "retry later"
                raise_if_cancelled()
                log.warning("nats connect to %s failed (%s); retrying in %.1fs",
                            redacted(self.settings.nats_url), type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.js = self.nc.jetstream(timeout=5)
        where = self.nc.connected_url.netloc.rsplit("@", 1)[-1] if self.nc.connected_url else "?"
        log.info("nats connected: %s", where)
        await self._after_connect()

    async def _after_connect(self) -> None:
        """Ensure the stream (retrying while JetStream warms up), then notify listeners."""
        assert self.js is not None
        delay = 0.1
        while self.connected:
            try:
                # Each try bounded: one asked while the stream had no leader (an election after a node was
                # paused or cut off) is never answered, and its 5 s wait held back publishing after the election.
                if self.manage_stream:
                    await asyncio.wait_for(ensure_stream(self.js, self.settings), ENSURE_TRY_S)
                else:
                    await asyncio.wait_for(self.js.stream_info(self.settings.stream_name), ENSURE_TRY_S)
                self.jetstream_ok = True
                break
            except Exception as exc:  # noqa: BLE001 - JetStream may still be recovering
                raise_if_cancelled()
                log.warning("ensure stream failed (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        if not self.jetstream_ok:
            return
        self._ready.set()
        for listener in list(self._listeners):
            try:
                await listener()
            except Exception:  # noqa: BLE001 - one listener must not stop the others
                log.exception("nats connect listener failed")

    async def _on_disconnected(self) -> None:
        self.jetstream_ok = False
        log.warning("nats disconnected")

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        log.info("nats reconnected (%d)", self.reconnects)
        asyncio.create_task(self._after_connect(), name=f"nats-after-reconnect-{self.name}")

    async def _on_error(self, exc: Exception) -> None:
        """nats-py's asynchronous errors: slow-consumer drops among them, which must be seen."""
        self.errors += 1
        log.warning("nats error: %s: %s", type(exc).__name__, exc)

    async def close(self) -> None:
        """Stop connecting; drain the connection if there is one. Bounded: never hangs shutdown."""
        if self._task is not None:
            await stop_tasks([t for t in (self._task, self._watch) if t is not None], timeout=2.0)
        if self.nc is None or self.nc.is_closed:
            return
        if not self.drain:  # the server drops this connection's subscriptions with it
            await bounded(self.nc.close(), 2.0, f"nats close ({self.name})")
            return
        timeout = self.settings.shutdown_timeout_s / 2
        if not await bounded(self.nc.drain(), timeout, f"nats drain ({self.name})"):
            # Cannot drain (e.g. mid-reconnect): close without it; the connection is gone either way.
            await bounded(self.nc.close(), 2.0, f"nats close ({self.name})")


def credentials(settings: Settings) -> dict[str, Any]:
    """nats.connect arguments for this process's NATS user: an NKey/JWT creds file, or user and password."""
    if settings.nats_creds:
        return {"user_credentials": settings.nats_creds}
    if settings.nats_user:
        return {"user": settings.nats_user, "password": settings.nats_password}
    return {}


async def connect_tool(url: str, **options: Any) -> NATS:
    """A tool's or test's connection with the credentials in `url`, replies under that user's inbox prefix."""
    return await nats.connect(url.split(","), inbox_prefix=inbox_prefix(user_of(url)), **options)


def nats_cleanup_ctx(
    settings_key: web.AppKey[Settings], link_key: web.AppKey[NatsLink], name: str, manage_stream: bool = True,
    new_client: Callable[[], NATS] = NATS, drain: bool = True,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx generator that owns a NatsLink stored under link_key."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        link = NatsLink(app[settings_key], name, manage_stream, new_client, drain)
        app[link_key] = link
        link.start()
        yield
        await link.close()

    return ctx
