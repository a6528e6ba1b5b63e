"""A service leaves a NATS node through which its stream has no quorum, instead of waiting on it.

Found by `gaia-harness chaos --cluster`: a node cut off from the other two (or frozen) keeps its
clients; kb's publishes and the gateways' reads through it go nowhere until it heals (a frozen
node is noticed by nats-py only after three missed 5-second pings).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from harness.system.cluster import ClusterSystem
from shared.config import Settings
from shared.natsconn import NatsLink
from tests.helpers import eventually


@pytest.fixture
def nodes(tmp_path: Path):
    """The three nats-server nodes of a ClusterSystem, started alone; stopped afterwards."""
    system = ClusterSystem(tmp_path / "cluster", gateways=0, kbs=0)
    for node in system.nodes:
        node.start()
    yield system
    for node in system.nodes:
        if node.proc is not None and node.proc.poll() is None:
            system.pause_node(system.nodes.index(node), False)
    system.stop()
    shutil.rmtree(tmp_path / "cluster", ignore_errors=True)


async def test_cluster_link_moves_off_a_frozen_node_within_the_stranded_time(nodes: ClusterSystem) -> None:
    settings = Settings(nats_url=",".join(n.url for n in nodes.nodes), stream_replicas=3, nats_stranded_s=3.0,
                        nats_user="kb", nats_password=nodes.passwords["kb"])
    link = NatsLink(settings, "kb-quorum-test")
    link.start()
    try:
        assert await link.wait_ready(30), "the R3 stream was created"
        assert link.nc is not None and link.nc.connected_url is not None
        first = link.nc.connected_url.port
        frozen = next(i for i, n in enumerate(nodes.nodes) if n.port == first)
        await eventually(link._has_quorum, timeout=15)  # every replica heard from before the fault
        nodes.pause_node(frozen, True)
        paused_at = time.monotonic()

        def moved() -> bool:
            url = link.nc.connected_url if link.nc is not None and link.nc.is_connected else None
            return url is not None and url.port != first
        await eventually(moved, timeout=12)  # nats-py's own ping check alone needs 15-20 s
        assert link.server_moves == 1
        print(f"moved off the frozen node after {time.monotonic() - paused_at:.1f} s")
        await eventually(lambda: link.jetstream_ok, timeout=20)  # a new leader, if the frozen one led
    finally:
        await link.close()
