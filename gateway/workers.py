"""Every core: `GAIA_GATEWAY_WORKERS` gateway processes on one port (SO_REUSEPORT), one supervisor.

A Python process uses one core. With N workers the kernel spreads new connections over N
processes listening on the same port; each worker is a whole gateway (its own NATS connection,
sessions, gateway id `<id>-w<i>`), so nothing is shared between them but kb and NATS, where
presence and the per-user session limit already live (docs/scaling.md). The supervisor only
starts the workers, passes SIGTERM/SIGINT on (each worker closes its sessions with 1001), and
starts again a worker that died; it serves nothing itself.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

log = logging.getLogger(__name__)
RESTART_DELAY_S = 1.0
QUICK_DEATHS = 3  # a worker that dies this many times within QUICK_S of starting: give up (bad config, busy port)
QUICK_S = 5.0


class WorkerSupervisor:
    """Starts `count` gateway workers on one port and keeps them running until told to stop."""

    def __init__(self, count: int, argv: list[str], gateway_id: str, stop_timeout_s: float) -> None:
        self.count = count
        self.argv = argv
        self.gateway_id = gateway_id
        self.stop_timeout_s = stop_timeout_s
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.quick_deaths = 0
        self.stopping = False

    def command(self, index: int) -> list[str]:
        """How worker `index` is started: this gateway's arguments, its own id, one process, reuse_port."""
        return [sys.executable, "-m", "gateway", *self.argv, "--id", f"{self.gateway_id}-w{index}", "--reuse-port"]

    def start(self, index: int) -> None:
        env = {**os.environ, "GAIA_GATEWAY_WORKERS": "1"}
        self.procs[index] = subprocess.Popen(self.command(index), env=env)
        self.started_at[index] = time.monotonic()
        log.info("worker %d started (pid %d)", index, self.procs[index].pid)

    def run(self) -> int:
        """Start every worker, restart those that die, stop them all on SIGTERM/SIGINT; the exit code."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for index in range(self.count):
            self.start(index)
        while not self.stopping:
            if not self._restart_dead():
                self.stop()
                return 1
            time.sleep(0.2)
        return self._wait_all()

    def _restart_dead(self) -> bool:
        """Start again each worker that exited; False when they keep dying right after starting."""
        for index, proc in list(self.procs.items()):
            if self.stopping or proc.poll() is None:
                continue
            quick = time.monotonic() - self.started_at[index] < QUICK_S
            self.quick_deaths = self.quick_deaths + 1 if quick else 0
            log.warning("worker %d exited with %s%s", index, proc.returncode,
                        " right after starting" if quick else "")
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
