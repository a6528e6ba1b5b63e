"""The narrator's Prometheus metrics: first token, tokens/s, answers by outcome, requests in flight and queued.

With several gateway workers these are prometheus-client's multiprocess metrics (the supervisor gives
its workers PROMETHEUS_MULTIPROC_DIR, gateway/workers.py): every worker writes its own file and a
scrape of any worker reads them all (gateway/metrics.py), counters and histograms summed over every
worker that ever ran, the gauges over the live ones.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
QUEUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
RATE_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 400)


class NarratorMetrics:
    """Registered in the gateway's own registry (served at GET /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.first_token = Histogram(
            "gaia_gateway_narrator_first_token_seconds", "From the model request to its first narrative token",
            buckets=FIRST_TOKEN_BUCKETS, registry=registry)
        self.tokens_per_s = Histogram(
            "gaia_gateway_narrator_tokens_per_second", "Streamed tokens per second after the first, per answer",
            buckets=RATE_BUCKETS, registry=registry)
        self.answers = Counter(
            "gaia_gateway_narrator_answers", "Narratives by who wrote them (model, builtin, fallback) and why",
            ["narrator", "reason"], registry=registry)
        self.proposals = Counter(
            "gaia_gateway_narrator_proposals", "Actions asked of the model for lines the intent parser did not know",
            ["outcome"], registry=registry)
        self.in_flight = Gauge(
            "gaia_gateway_narrator_requests_in_flight", "Model requests open right now (every worker)",
            registry=registry, multiprocess_mode="livesum")
        self.queued = Gauge(
            "gaia_gateway_narrator_requests_queued", "Model requests waiting for a slot right now (every worker)",
            registry=registry, multiprocess_mode="livesum")
        self.queue_seconds = Histogram(
            "gaia_gateway_narrator_queue_seconds", "Time a model request waited for a slot (taken or not)",
            buckets=QUEUE_BUCKETS, registry=registry)
