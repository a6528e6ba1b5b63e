"""The gateway's Prometheus metrics: sessions, events, send queues, actions, slow consumers, NATS."""
from __future__ import annotations

import os
import time
from typing import Iterable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.edge.pending import PendingRequests
from gateway.registry import SessionRegistry
from gateway.streams.foreign import PATHS as FOREIGN_PATHS
from gateway.streams.streamset import StreamSet
from gateway.workers import METRICS_DIR
from shared.natsconn import NatsLink
from shared.schemas.errors import CloseCode
from shared.service.metrics import LATENCY_BUCKETS, new_registry

TRANSPORTS = ("websocket", "sse", "chat")
SEEN_WINDOW_S = 3600.0  # distinct users per transport are counted over the last hour


class GatewayMetrics:
    """One per app. Counters that the app already keeps are read at scrape time; latency is observed here."""

    def __init__(self, sessions: SessionRegistry, streams: StreamSet, link: NatsLink,
                 pending: PendingRequests | None = None) -> None:
        self.sessions = sessions
        self.streams = streams
        self.link = link
        self.pending = pending
        self.registry = new_registry(self._read)
        self._chats: dict[str, int] = {"websocket": 0, "sse": 0}
        # user -> when last seen, per client transport: the migration's progress (bounded by the window).
        self._seen: dict[str, dict[str, float]] = {"websocket": {}, "sse": {}}
        self.action_seconds = Histogram(
            "gaia_gateway_action_seconds", "Action round trip through kb, by transport",
            ["transport"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.exposed = self._exposed()

    def _exposed(self) -> CollectorRegistry:
        """What GET /metrics shows. Under a supervisor of workers (PROMETHEUS_MULTIPROC_DIR set) the
        histograms, counters and gauges (the narrator's, action latency) are every worker's files, summed by
        prometheus-client's MultiProcessCollector; the figures read from app state stay this worker's own."""
        directory = os.environ.get(METRICS_DIR)
        if not directory:
            return self.registry
        exposed = new_registry(self._read)
        MultiProcessCollector(exposed, directory)
        return exposed

    def user_seen(self, transport: str, user_id: str) -> None:
        """A user opened a session or chatted over `transport` ("websocket" or "sse")."""
        seen = self._seen[transport]
        seen.pop(user_id, None)  # re-inserted at the end: the dict stays ordered by last sight
        seen[user_id] = time.monotonic()
        self._forget_old(seen)

    def chat_seen(self, transport: str, user_id: str) -> None:
        self._chats[transport] += 1
        self.user_seen(transport, user_id)

    @staticmethod
    def _forget_old(seen: dict[str, float]) -> None:
        horizon = time.monotonic() - SEEN_WINDOW_S
        while seen and next(iter(seen.values())) < horizon:
            del seen[next(iter(seen))]

    def _read(self) -> Iterable[Metric]:
        counts = self.sessions.counts()
        open_sessions = GaugeMetricFamily("gaia_gateway_sessions", "Open sessions by transport", labels=["transport"])
        for transport in ("websocket", "sse"):
            open_sessions.add_metric([transport], counts[transport])
        yield open_sessions
        delivered = CounterMetricFamily("gaia_gateway_events_delivered", "Stream events handed to sessions",
                                        labels=["transport"])
        for transport in TRANSPORTS:
            delivered.add_metric([transport], self.streams.stats.delivered.get(transport, 0))
        yield delivered
        dropped = CounterMetricFamily("gaia_gateway_events_dropped", "Events or frames not delivered",
                                      labels=["reason"])
        dropped.add_metric(["invalid"], self.streams.stats.invalid)
        dropped.add_metric(["slow_consumer"], self.sessions.frames_dropped_slow)
        yield dropped
        depths = [len(s.queue) for s in self.sessions.sessions.values() if hasattr(s, "queue")]
        depth = GaugeMetricFamily("gaia_gateway_send_queue_depth", "Frames waiting in session send queues",
                                  labels=["stat"])
        depth.add_metric(["total"], sum(depths))
        depth.add_metric(["max"], max(depths, default=0))
        yield depth
        yield CounterMetricFamily("gaia_gateway_slow_consumer_closes", "Sessions closed because they could not keep up",
                                  value=self.sessions.closes.get(("server", str(CloseCode.SLOW_CONSUMER)), 0))
        closes = CounterMetricFamily("gaia_gateway_session_closes", "Closed sessions by who closed and code, "
                                     "from a fixed set: the server's own codes; a client's 1000, 1001, 1006 (gone "
                                     "without a close frame), or other", labels=["by", "code"])
        for (by, code), n in sorted(self.sessions.closes.items()):
            closes.add_metric([by, code], n)
        yield closes
        stats = self.streams.stats
        for name, value, about in (("gaps", stats.gaps, "Gaps found by Nats-Last-Sequence or the sweeper"),
                                   ("catchups", stats.catchups, "Catch-ups from a cursor (direct gets or a consumer)"),
                                   ("catchup_consumers", stats.consumers, "Catch-ups long enough to need a consumer"),
                                   ("direct_reads", self.streams.reads.direct.requests,
                                    "Batched direct gets sent for catch-ups (shared by sessions asking the same)"),
                                   ("resyncs", stats.resyncs, "Fresh snapshots sent instead of a replay")):
            yield CounterMetricFamily(f"gaia_gateway_stream_{name}", about, value=value)
        foreign = CounterMetricFamily("gaia_gateway_stream_foreign", "Messages dropped on a read path (live, direct, "
                                      "consumer, last) for not being the stream's own: answers aimed there by "
                                      "someone holding this gateway's NATS credentials", labels=["path"])
        for path in FOREIGN_PATHS:
            foreign.add_metric([path], self.streams.reads.foreign.counts.get(path, 0))
        yield foreign
        yield GaugeMetricFamily("gaia_gateway_streams_catching_up", "Streams catching up from the stream now",
                                value=self.streams.catching_up)
        chats = CounterMetricFamily("gaia_gateway_chats", "Chat lines handled, by transport", labels=["transport"])
        users = GaugeMetricFamily("gaia_gateway_users_last_hour", "Distinct users seen in the last hour, by "
                                  "transport (SSE at 0 for long: it can be switched off)", labels=["transport"])
        for transport, seen in self._seen.items():
            self._forget_old(seen)
            chats.add_metric([transport], self._chats[transport])
            users.add_metric([transport], len(seen))
        yield chats
        yield users
        if self.pending is not None:
            yield GaugeMetricFamily("gaia_gateway_connections_pending", "Connections waiting for their first "
                                    "request's headers", value=self.pending.pending)
            yield CounterMetricFamily("gaia_gateway_connections_refused", "Connections closed at once: their address "
                                      "held GAIA_MAX_PENDING_REQUESTS_PER_ADDRESS unfinished requests",
                                      value=self.pending.refused)
        yield CounterMetricFamily("gaia_gateway_nats_reconnects", "NATS reconnects of this process",
                                  value=self.link.reconnects)
        yield GaugeMetricFamily("gaia_gateway_nats_up", "1 while NATS and JetStream are reachable",
                                value=int(self.link.status()["jetstream"]))
