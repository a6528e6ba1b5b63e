"""Every core: `GAIA_GATEWAY_WORKERS` gateway processes on one port (SO_REUSEPORT), one supervisor.

A Python process uses one core. With N workers the kernel spreads new connections over N
processes listening on the same port; each worker is a whole gateway (its own NATS connection,
sessions, gateway id `<id>-w<i>`), so nothing is shared between them but kb and NATS, where
presence and the per-user session limit already live (docs/scaling.md). The supervisor only
starts the workers, passes SIGTERM/SIGINT on (each worker closes its sessions with 1001), and
starts again a worker that died; it serves nothing itself.

Workers die with their supervisor: on Linux each is started with PR_SET_PDEATHSIG (SIGTERM, so
its clients still get 1001), elsewhere each watches its parent (GAIA_SUPERVISOR_PID). A
supervisor started again refuses a port that something else already listens on, so it never
shares its port with workers nobody manages.

What the workers of one host do share lives in a private folder the supervisor makes
(GAIA_WORKERS_SHARED_DIR): the narrator's model slots (gateway/chat/slots.py) and
prometheus-client's multiprocess files (PROMETHEUS_MULTIPROC_DIR), so a scrape of any worker shows
the narrator's figures of them all (gateway/metrics.py).
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from types import FrameType
from typing import AsyncIterator, Callable

from aiohttp import web

from shared.config import current_env
from shared.incarnations import new_incarnation

log = logging.getLogger(__name__)
RESTART_DELAY_S = 1.0
QUICK_DEATHS = 3  # a worker that dies this many times within QUICK_S of starting: give up (bad config, busy port)
QUICK_S = 5.0


PR_SET_PDEATHSIG = 1  # linux/prctl.h
SUPERVISOR_PID = "GAIA_SUPERVISOR_PID"
SHARED_DIR = "GAIA_WORKERS_SHARED_DIR"  # the supervisor's folder for what its workers share
WORKER_INDEX, WORKER_COUNT = "GAIA_WORKER_INDEX", "GAIA_WORKER_COUNT"
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess mode
PARENT_WATCH_S = 1.0


def die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when its parent dies (Linux), and exits if it already has."""
    def arrange() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            os._exit(70)  # no supervisor-bound life: do not start an orphan-to-be
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(70)
    return arrange


def parent_watch_ctx(parent: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx for platforms without PDEATHSIG: SIGTERM to ourselves once the supervisor is gone."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async def watch() -> None:
            while os.getppid() == parent:
                await asyncio.sleep(PARENT_WATCH_S)
            log.warning("supervisor %d is gone; stopping", parent)
            os.kill(os.getpid(), signal.SIGTERM)
        task = asyncio.create_task(watch(), name="parent-watch")
        yield
        task.cancel()
    return ctx


def mark_worker_dead(pid: int, metrics_dir: str) -> None:
    """A worker is gone: its live gauges (model requests in flight, queued) leave the sums."""
    from prometheus_client import multiprocess  # the supervisor itself keeps no metrics
    multiprocess.mark_process_dead(pid, metrics_dir)


def port_taken(host: str, port: int) -> bool:
    """True if a socket already listens on (host, port), SO_REUSEPORT ones included."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as exc:  # anything but a listener (an address not ours): the workers will say it
            return exc.errno == errno.EADDRINUSE
    return False


def kb_announcer(kb_url: str, api_key: str, timeout_s: float = 2.0) -> Callable[[str], None]:
    """Tell kb a slot starts over, as a new incarnation's hello (kb/presence.py); kb away: the worker's own
    hello says it later. The supervisor has no event loop: one short blocking request."""
    def announce(slot: str) -> None:
        body = json.dumps({"gateway_id": new_incarnation(slot), "hello": True}).encode()
        request = urllib.request.Request(f"{kb_url.rstrip('/')}/presence", data=body, method="POST",
                                         headers={"Content-Type": "application/json", "X-API-Key": api_key})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s):
                pass
        except OSError as exc:
            log.warning("could not tell kb that %s starts over (%s); its new worker will", slot, exc)
    return announce


class WorkerSupervisor:
    """Starts `count` gateway workers on one port and keeps them running until told to stop."""

    def __init__(self, count: int, argv: list[str], gateway_id: str, stop_timeout_s: float,
                 announce: Callable[[str], None] = lambda slot: None) -> None:
        self.announce = announce  # tells kb a worker's slot starts over (its sessions so far are gone)
        self.count = count
        self.argv = argv
        self.gateway_id = gateway_id
        self.stop_timeout_s = stop_timeout_s
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.quick_deaths = 0
        self.stopping = False
        self.shared = ""  # the folder the workers share, made by `run`

    def slot(self, index: int) -> str:
        """Worker `index`'s gateway id, the same every time it is started."""
        return f"{self.gateway_id}-w{index}"

    def command(self, index: int) -> list[str]:
        """How worker `index` is started: this gateway's arguments, its own id, one process, reuse_port."""
        return [sys.executable, "-m", "gateway", *self.argv, "--id", self.slot(index), "--reuse-port"]

    def start(self, index: int) -> None:
        # Renamed settings under their new names: the supervisor warned of the old ones, the workers need not.
        env = {**current_env(os.environ), "GAIA_GATEWAY_WORKERS": "1", SUPERVISOR_PID: str(os.getpid()),
               WORKER_INDEX: str(index), WORKER_COUNT: str(self.count)}
        if self.shared:
            env.update({SHARED_DIR: self.shared, METRICS_DIR: os.path.join(self.shared, "metrics")})
        arrange = die_with_parent(os.getpid()) if sys.platform.startswith("linux") else None
        self.procs[index] = subprocess.Popen(self.command(index), env=env, preexec_fn=arrange)
        self.started_at[index] = time.monotonic()
        log.info("worker %d started (pid %d)", index, self.procs[index].pid)

    def run(self, host: str, port: int) -> int:
        """Start every worker, restart those that die, stop them all on SIGTERM/SIGINT; the exit code."""
        if port and port_taken(host, port):
            log.error("port %d on %s is already in use (workers of an earlier supervisor still serving?); "
                      "not starting", port, host)
            return 1
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.shared = tempfile.mkdtemp(prefix="gaia-gateway-")  # 0700: only this user's processes read it
        os.makedirs(os.path.join(self.shared, "metrics"))
        try:
            for index in range(self.count):
                self.announce(self.slot(index))  # what an earlier run of this slot left behind is gone
                self.start(index)
            while not self.stopping:
                if not self._restart_dead():
                    self.stop()
                    return 1
                time.sleep(0.2)
            return self._wait_all()
        finally:
            shutil.rmtree(self.shared, ignore_errors=True)

    def _restart_dead(self) -> bool:
        """Start again each worker that exited; False when they keep dying right after starting."""
        for index, proc in list(self.procs.items()):
            if self.stopping or proc.poll() is None:
                continue
            if self.shared:
                mark_worker_dead(proc.pid, os.path.join(self.shared, "metrics"))
            quick = time.monotonic() - self.started_at[index] < QUICK_S
            self.quick_deaths = self.quick_deaths + 1 if quick else 0
            log.warning("worker %d exited with %s%s", index, proc.returncode,
                        " right after starting" if quick else "")
            self.announce(self.slot(index))  # now, not when its replacement is up: its players may resume first
            if self.quick_deaths >= QUICK_DEATHS:
                log.error("workers keep dying as they start (%d times); stopping", self.quick_deaths)
                return False
            time.sleep(RESTART_DELAY_S)
            if self.stopping:  # told to stop while waiting: start nothing new
                return True
            self.start(index)
        return True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.procs))
            self.stop()

    def stop(self) -> None:
        """SIGTERM to every worker: each closes its sessions with 1001 and exits."""
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def _wait_all(self) -> int:
        """Wait for the workers to exit (killing any that outlive the stop timeout)."""
        deadline = time.monotonic() + self.stop_timeout_s
        for index, proc in self.procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in %.0f s; killing it", index, self.stop_timeout_s)
                proc.kill()
                proc.wait()
        return 0
