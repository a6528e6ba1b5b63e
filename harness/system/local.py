"""A whole local system (nats-server, kb, gateway) as processes on fixed ports, for runs and benchmarks."""
from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

import psutil

from harness.system.procs import NatsServer, ServiceProcess, free_port, service_env, wait_healthy


class LocalSystem:
    """Each process can be killed and restarted on the same port and data directory."""

    def __init__(self, work: Path | None = None, nats_ws_port: int | None = None, sync_always: bool = True,
                 **env: str) -> None:
        self.work = work or Path(tempfile.mkdtemp(prefix="gaia-system-"))
        self.nats = NatsServer(store_dir=str(self.work / "nats"), log_path=str(self.work / "nats.log"),
                               ws_port=nats_ws_port, sync_always=sync_always)
        kb_port, self.gw_port = free_port(), free_port()
        # One machine plays every client here, so the per-IP handshake limit must not apply.
        settings = {"handshakes_per_ip_per_s": "1000000", "handshake_burst": "1000000",
                    "max_connections_per_address": "1000000", "max_pending_requests_per_address": "1000000", **env}
        self.env_settings = settings
        environ = service_env(self.nats.url, kb_port, str(self.work / "kb.sqlite3"), **settings)
        self.kb = ServiceProcess("kb", kb_port, environ, log_path=str(self.work / "kb.log"),
                                 nats_password=self.nats.passwords["kb"])
        self.gateway = ServiceProcess("gateway", self.gw_port, environ, log_path=str(self.work / "gateway.log"),
                                      nats_password=self.nats.passwords["gateway"])

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    @property
    def kb_url(self) -> str:
        return self.kb.url

    @property
    def admin_headers(self) -> dict[str, str]:
        """For the gateway's /metrics and /debug/ routes."""
        return self.gateway.admin_headers

    @property
    def nats_url(self) -> str:
        """With the operator's credentials: the harness publishes as kb would and reads the stream back."""
        return self.nats.url_as("operator")

    async def start(self) -> "LocalSystem":
        self.nats.start()
        self.kb.start()
        self.gateway.start()
        await wait_healthy(self.kb.url)
        await wait_healthy(self.gateway.url)
        return self

    def server_procs(self) -> list[psutil.Process]:
        """nats-server, kb and gateway as psutil processes (for CPU and memory figures)."""
        return [psutil.Process(p.proc.pid) for p in (self.nats, self.kb, self.gateway)]  # type: ignore[union-attr]

    def stop(self) -> None:
        for proc in (self.gateway, self.kb, self.nats):
            proc.stop()

    async def inject(self, name: str, down_s: float) -> None:
        """SIGKILL one process, keep it down a moment, start it again."""
        if name == "nats":
            self.nats.kill()
            target = self.nats.start
        else:
            proc = self.kb if name == "kb" else self.gateway
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGKILL)
            proc.proc.wait()
            target = proc.start
        await asyncio.sleep(down_s)
        await asyncio.get_running_loop().run_in_executor(None, target)
