"""The narrator's Prometheus metrics: time to first token, tokens per second, answers by outcome, in flight."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
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
            "gaia_gateway_narrator_requests_in_flight", "Model requests open right now", registry=registry)
