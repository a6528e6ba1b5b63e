"""The gateway restart storm again, with the gateway on a 3-node NATS cluster (R3 stream, fsync on every node)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import aiohttp
import psutil

from harness.bench.capacity import bench_restart
from harness.bench.kit import connect_many, cpu_quiet
from harness.report import Phase, process_settings
from harness.rounds import Rounds
from harness.system.cluster import ClusterSystem
from harness.system.procs import NatsServer, ServiceProcess


@dataclass
class OneGatewayView:
    """A ClusterSystem seen as bench_restart expects a system: one gateway, one node to ask for counts."""

    cluster: ClusterSystem

    @property
    def gateway(self) -> ServiceProcess:
        return self.cluster.gateways[0]

    @property
    def nats(self) -> NatsServer:
        return self.cluster.nodes[0]

    @property
    def nats_url(self) -> str:
        """One node, as the operator (the bench's publisher and counts take a single URL)."""
        return self.nats.url_as("operator")

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    def server_procs(self) -> list[psutil.Process]:
        procs: list[Any] = [*self.cluster.nodes, *self.cluster.kbs, *self.cluster.gateways]
        return [psutil.Process(p.proc.pid) for p in procs if p.proc is not None]


async def bench_cluster_restart(sessions: int, figures: dict[str, float], failures: list[str], phase: Phase,
                                rounds: int = 1, spreads: Rounds | None = None) -> None:
    """`sessions` idle players on one gateway of a 3-node cluster; SIGTERM it, publish, start it: all resume,
    `rounds` times; cluster_restart_resumed_s is the median, cluster_restart_lost the sum."""
    spreads = spreads if spreads is not None else Rounds()
    lost = 0.0
    cluster = await ClusterSystem(gateways=1, kbs=1, presence_announce="0").start()
    view = OneGatewayView(cluster)
    phase.settings = process_settings({**os.environ, **view.gateway.env}) + phase.settings.removeprefix("none")
    local: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            await cpu_quiet(view.server_procs())
            listeners = []
            for start in range(0, sessions, 500):
                listeners += await connect_many(http, view, f"cl{start}_", min(500, sessions - start),  # type: ignore[arg-type]
                                                in_flight=250)
            for r in range(rounds):
                await bench_restart(http, view, listeners, local, failures, phase, r)  # type: ignore[arg-type]
                spreads.add("cluster_restart_resumed_s", local["restart_resumed_s"])
                lost += local["restart_lost"]
            for listener in listeners:
                await listener.close()
    finally:
        cluster.stop()
    figures["cluster_restart_resumed_s"] = (spreads.median("cluster_restart_resumed_s")
                                            if "cluster_restart_resumed_s" in spreads.values else float("inf"))
    figures["cluster_restart_lost"] = lost if local else float("nan")
