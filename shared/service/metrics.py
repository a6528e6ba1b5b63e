"""Prometheus plumbing shared by both services: one registry per app, values read at scrape time."""
from __future__ import annotations

from typing import Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# Round trips from a fast local kb (a few ms) to a kb timeout (seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StateCollector(Collector):
    """Metrics mirrored from the app's own state when Prometheus scrapes (no second set of counters)."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        return list(self.read())


def new_registry(read: Callable[[], Iterable[Metric]]) -> CollectorRegistry:
    """A registry of this app's own (never the process-global default one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(read))
    return registry


def metrics_response(registry: CollectorRegistry) -> web.Response:
    """GET /metrics: the text exposition format."""
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
