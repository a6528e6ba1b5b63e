"""kb's Prometheus metrics: actions, outbox, publishing, worlds, presence, ownership, NATS."""
from __future__ import annotations

from typing import Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from kb.outbox import OutboxPublisher
from kb.ownership import WorldOwnership
from kb.presence import PresenceBook
from kb.worldservice import WorldService
from shared.natsconn import NatsLink
from shared.service.metrics import LATENCY_BUCKETS, new_registry


class KbMetrics:
    """One per app; state kb already keeps is read at scrape time, actions are observed as they happen."""

    def __init__(self, link: NatsLink, publisher: OutboxPublisher, presence: PresenceBook,
                 worlds: dict[str, WorldService], ownership: WorldOwnership) -> None:
        self.link, self.publisher, self.presence = link, publisher, presence
        self.worlds, self.ownership = worlds, ownership
        self.outbox_pending = 0  # read from the store by the /metrics handler just before rendering
        self.registry = new_registry(self._read)
        self.action_seconds = Histogram("gaia_kb_action_seconds", "Action handling, rules to commit", ["action"],
                                        buckets=LATENCY_BUCKETS, registry=self.registry)
        self.actions = Counter("gaia_kb_actions", "Actions by outcome (committed, refused)", ["action", "outcome"],
                               registry=self.registry)

    def _read(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("gaia_kb_outbox_pending", "Committed events not yet acknowledged by JetStream",
                                value=self.outbox_pending)
        yield CounterMetricFamily("gaia_kb_events_published", "Events acknowledged by JetStream",
                                  value=self.publisher.published)
        yield CounterMetricFamily("gaia_kb_events_republished",
                                  "Acknowledged events re-published after the bus lost them",
                                  value=self.publisher.republished)
        versions = GaugeMetricFamily("gaia_kb_world_version", "World version as this process last saw it",
                                     labels=["experience"])
        present = GaugeMetricFamily("gaia_kb_present_users", "Users present (live or in grace)", labels=["experience"])
        owned = GaugeMetricFamily("gaia_kb_world_owned", "1 if this process writes the world", labels=["experience"])
        for experience, world in self.worlds.items():
            versions.add_metric([experience], world.world["version"])
            present.add_metric([experience], len(self.presence.present_users(experience)))
            owned.add_metric([experience], int(self.ownership.owns(experience)))
        yield versions
        yield present
        yield owned
        yield CounterMetricFamily("gaia_kb_nats_reconnects", "NATS reconnects of this process",
                                  value=self.link.reconnects)
        yield GaugeMetricFamily("gaia_kb_nats_up", "1 while NATS and JetStream are reachable",
                                value=int(self.link.status()["jetstream"]))
