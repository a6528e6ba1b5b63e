"""/metrics reads what the sessions already keep: the send queues' depth among them."""
from __future__ import annotations

from dataclasses import dataclass, field

from gateway.delivery.sendqueue import SendQueue
from gateway.metrics import GatewayMetrics
from gateway.registry import SessionRegistry
from gateway.streams.streamset import StreamSet
from shared.config import Settings
from shared.natsconn import NatsLink


@dataclass
class Queued:
    """A registered session with frames waiting in its send queue."""

    conn_id: str
    user_id: str = "u1"
    transport: str = "websocket"
    queue: SendQueue[bytes] = field(default_factory=lambda: SendQueue(10))

    async def shutdown(self, code: int, reason: str) -> None:
        """Nothing to close here."""


def test_send_queue_depth_is_the_total_and_the_largest_over_sessions() -> None:
    settings = Settings()
    link = NatsLink(settings, "metrics")
    sessions = SessionRegistry()
    for conn_id, frames in (("a", 3), ("b", 5)):
        session = Queued(conn_id)
        for _ in range(frames):
            session.queue.put(b"{}")
        sessions.add(session)
    metrics = GatewayMetrics(sessions, StreamSet(link, settings), link)
    values = {(s.name, s.labels.get("stat")): s.value for m in metrics.registry.collect() for s in m.samples}
    assert values[("gaia_gateway_send_queue_depth", "total")] == 8
    assert values[("gaia_gateway_send_queue_depth", "max")] == 5
