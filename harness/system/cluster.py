"""A clustered system on one machine: a 3-node nats-server cluster (R3 stream), several kb and gateways."""
from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

from harness.system.pg import PostgresServer
from harness.system.procs import NatsServer, ServiceProcess, free_port, service_env, wait_healthy
from shared.natsauth import new_passwords, url_with

NODES = 3


class ClusterSystem:
    """What deploy/ describes, as loopback processes; any part can be SIGKILLed and left down."""

    def __init__(self, work: Path | None = None, gateways: int = 2, kbs: int = 1, postgres: bool = False,
                 node_hosts: list[str] | None = None, node_prefixes: list[list[str]] | None = None,
                 **env: str) -> None:
        """`postgres=True`: the kb processes keep their worlds on a PostgreSQL server this system starts
        (as kb on several hosts would); otherwise on one shared SQLite file. `node_hosts` and
        `node_prefixes`: each node's address and command prefix (a network namespace of its own)."""
        self.work = work or Path(tempfile.mkdtemp(prefix="gaia-cluster-"))
        # Its own temporary directory: the server runs as `postgres`, which must reach it.
        self.postgres = PostgresServer() if postgres else None
        if self.postgres is not None:
            env = {**env, "kb_store": self.postgres.url}
        routes = [free_port() for _ in range(NODES)]
        self.passwords = new_passwords(operator=True)  # the same users on every node
        hosts = node_hosts or ["127.0.0.1"] * NODES
        prefixes = node_prefixes or [[] for _ in range(NODES)]
        self.nodes = [NatsServer(store_dir=str(self.work / f"nats{i + 1}"), log_path=str(self.work / f"nats{i + 1}.log"),
                                 server_name=f"n{i + 1}", cluster_port=routes[i], routes=routes,
                                 host=hosts[i], exec_prefix=prefixes[i], route_hosts=hosts,
                                 passwords=self.passwords) for i in range(NODES)]
        nats_urls = ",".join(node.url for node in self.nodes)
        kb_ports = [free_port() for _ in range(kbs)]
        # One machine plays every client here, so the per-IP handshake limit must not apply.
        settings = {"presence_grace_s": "60", "presence_renew_s": "2", "stream_sweep_s": "1",
                    "stream_replicas": str(NODES), "handshakes_per_ip_per_s": "1000000",
                    "handshake_burst": "1000000",
                    "max_connections_per_address": "1000000", "max_pending_requests_per_address": "1000000", **env}
        if kbs > 1:
            settings.setdefault("kb_ownership", "lease")
        db = str(self.work / "kb.sqlite3")
        self.kbs = [ServiceProcess("kb", port, service_env(nats_urls, port, db, kb_advertise_url=f"http://127.0.0.1:{port}",
                                                          **settings), log_path=str(self.work / f"kb{i + 1}.log"),
                                  nats_password=self.passwords["kb"])
                    for i, port in enumerate(kb_ports)]
        # Gateway i prefers kb i (mod kbs) and fails over to the others, so with two kb a request can
        # reach a kb that does not own its world (and is forwarded), or a dead kb (and moves on).
        self.gateways = []
        for i in range(gateways):
            order = kb_ports[i % kbs:] + kb_ports[:i % kbs]
            kb_urls = ",".join(f"http://127.0.0.1:{p}" for p in order)
            env_i = service_env(nats_urls, order[0], db, **{**settings, "kb_url": kb_urls})
            self.gateways.append(ServiceProcess("gateway", free_port(), env_i,
                                                log_path=str(self.work / f"gateway{i + 1}.log"),
                                                nats_password=self.passwords["gateway"]))

    @staticmethod
    def _alive(procs: list[ServiceProcess]) -> ServiceProcess:
        for proc in procs:
            if proc.proc is not None and proc.proc.poll() is None:
                return proc
        raise RuntimeError("no process of this kind is running")

    @property
    def nats_url(self) -> str:
        """Every node that is up, comma-separated, with the operator's credentials (for tools and checks)."""
        up = ",".join(n.url for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        return url_with(up, "operator", self.passwords["operator"])

    @property
    def kb_url(self) -> str:
        return self._alive(self.kbs).url

    @property
    def gateway_url(self) -> str:
        return self._alive(self.gateways).url

    @property
    def gateway_urls(self) -> list[str]:
        return [g.url for g in self.gateways]

    async def start(self) -> "ClusterSystem":
        """Start the nodes (and PostgreSQL), then kb and gateways; wait until every service reports healthy."""
        if self.postgres is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.postgres.start)
        for node in self.nodes:
            node.start()
        for proc in (*self.kbs, *self.gateways):
            proc.start()
        for proc in (*self.kbs, *self.gateways):
            await wait_healthy(proc.url, timeout=60)
        return self

    def stop(self) -> None:
        for proc in (*self.gateways, *self.kbs, *self.nodes):
            proc.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def kill_node(self, index: int) -> None:
        """SIGKILL one nats-server; the other two keep a quorum for the R3 stream."""
        self.nodes[index].kill()

    def kill_service(self, proc: ServiceProcess) -> None:
        """SIGKILL a kb or gateway, leaving it down (its clients must move elsewhere)."""
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait()

    async def restart_node(self, index: int) -> None:
        """Start a killed node again on its port and store; it catches up from the others."""
        await asyncio.get_running_loop().run_in_executor(None, self.nodes[index].start)

    async def restart_service(self, proc: ServiceProcess) -> None:
        """Start a killed kb or gateway again on its port; returns once it answers /health."""
        await asyncio.get_running_loop().run_in_executor(None, proc.start)
        await wait_healthy(proc.url, timeout=60)

    def pause_node(self, index: int, paused: bool) -> None:
        """SIGSTOP (a long GC pause, a stalled VM) or SIGCONT one nats-server."""
        proc = self.nodes[index].proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)
