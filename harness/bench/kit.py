"""What the benchmark's phases share: CPU quiet and metering, connecting players, publishing broadcasts."""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, TypeVar

import aiohttp
import nats
import orjson
import psutil

from harness.bench.clients import Arrivals, GatewayListener
from harness.report import Phase, pct, process_settings, tail
from harness.rounds import Rounds
from harness.system.local import LocalSystem
from shared.auth import issue_token
from shared.config import Settings
from shared.service.gcpacer import GcPacer
from shared.subjects import experience_updates

EXPERIENCE = "wylding-woods"
T = TypeVar("T")
log = logging.getLogger(__name__)
# The phase under way: every phase waits for quiet and checks deliveries its own way, through the functions
# below, and its section must say when that failed, so they mark the phase here rather than each caller.
CURRENT: list[Phase] = []


def run_load(main: Coroutine[Any, Any, T]) -> T:
    """Run a load generator the way the services run: on uvloop, full collections paced by growth.

    A client holding 10,000 sockets on asyncio's own loop, with CPython's default collector,
    spends a core before the servers it measures do, and the figures would be its own.
    """
    every_s = Settings.from_env().gc_full_every_s

    async def paced() -> T:
        if every_s <= 0:  # GAIA_GC_FULL_EVERY_S=0: CPython's own collector, as in the services
            return await main
        pacer = GcPacer(every_s=every_s)
        pacer.install()
        task = asyncio.create_task(pacer.run(), name="gc-pacer")
        try:
            return await main
        finally:
            task.cancel()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(paced())
    return uvloop.run(paced())


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


async def cpu_quiet(procs: list[psutil.Process], limit: float = 0.05, window: float = 0.5,
                    timeout: float = 120.0) -> bool:
    """Wait until every process uses less than `limit` of a core over `window` seconds; False (said
    on stdout, in the log and on the phase's section, whose verdicts then read "unquiet") when it gave up
    after `timeout`."""
    deadline = time.monotonic() + timeout
    shares: list[float] = []
    while time.monotonic() < deadline:
        before = [cpu_seconds(p) for p in procs]
        await asyncio.sleep(window)
        shares = [(cpu_seconds(p) - b) / window for p, b in zip(procs, before)]
        if all(share < limit for share in shares):
            return True
    if CURRENT:
        CURRENT[-1].unquiet += 1
    busy = ", ".join(f"pid {p.pid} ({p.name()}) at {share:.0%}" for p, share in zip(procs, shares) if share >= limit)
    print(f"  cpu_quiet: gave up after {timeout:.0f} s, still busy: {busy}")
    log.warning("cpu_quiet gave up after %.0f s: %s", timeout, busy)
    return False


def ws_url(system: LocalSystem, token: str) -> str:
    return system.gateway_url.replace("http", "ws", 1) + f"/ws/experience?experience={EXPERIENCE}&token={token}"


async def connect_many(http: aiohttp.ClientSession, system: LocalSystem, prefix: str, count: int,
                       in_flight: int = 50) -> list[GatewayListener]:
    """Connect `count` listeners, at most `in_flight` connecting at once (a new one starts as soon as
    one has its snapshot), each having received its snapshot."""
    settings = Settings.from_env()
    listeners = [GatewayListener(http, ws_url(system, issue_token(settings, f"{prefix}{i}"))) for i in range(count)]
    slots = asyncio.Semaphore(in_flight)

    async def connect(listener: GatewayListener) -> None:
        async with slots:
            await listener.start()
    await asyncio.gather(*(connect(l) for l in listeners))
    return listeners


def event_payload(version: int, only: list[str] | None = None) -> bytes:
    """A world_update as kb publishes it: its one change seen by everyone, or (`only`) by those players."""
    return orjson.dumps({"type": "world_update", "version": "0.4", "experience": EXPERIENCE,
                         "actor_id": "bench", "base_version": version - 1, "snapshot_version": version,
                         "timestamp": int(time.time() * 1000),
                         "changes": [{"operation": "update", "area_id": None, "path": "environment.weather",
                                      "value": "drizzle"}], "audience": [None if only is None else {"only": only}],
                         "metadata": {"source": "bench", "trace_id": ""}})


async def publish_broadcasts(nats_url: str, count: int, rate: float, first: int = 10**6,
                             make: Callable[[int], bytes] = event_payload,
                             sent: dict[int, float] | None = None) -> float:
    """Publish `count` events (`make(version)`) into the stream at `rate` per second; returns when it started.

    `sent`, if given, gets each version's publish time (perf_counter).
    """
    nc = await nats.connect(nats_url)
    payloads = [make(first + v) for v in range(count)]
    started = time.perf_counter()
    for index, payload in enumerate(payloads):
        if sent is not None:
            sent[first + index] = time.perf_counter()
        await nc.publish(experience_updates(EXPERIENCE), payload)
        due = started + (index + 1) / rate
        if due > time.perf_counter():
            await nc.flush()
            await asyncio.sleep(due - time.perf_counter())
    await nc.flush()
    await nc.close()
    return started


async def toggle_item(actor: GatewayListener, actions: int, item: str, place: str, gap_s: float,
                      clock: Callable[[], float] = time.perf_counter) -> list[tuple[int, float]]:
    """Collect and drop `item` at `place` in turn; (snapshot_version, sent at by `clock`) of each change;
    the item put back at the end."""
    sent, holding = [], False
    for i in range(actions):
        started = clock()
        answer = await actor.act(f"{item}{i}{time.monotonic_ns()}", "drop_item" if holding else "collect_item",
                                 instance_id=item, destination=place)
        if answer.get("success"):
            sent.append((answer["snapshot_version"], started))
            holding = not holding
        await asyncio.sleep(gap_s)
    if holding:
        await actor.act(f"back{time.monotonic_ns()}", "drop_item", instance_id=item, destination=place)
    return sent


async def wait_all(listeners: list[Any], total: int, timeout: float) -> int:
    """Wait until the listeners received `total` events (or the timeout); returns how many they got."""
    deadline = time.monotonic() + timeout
    while sum(l.arrivals.count for l in listeners) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return sum(l.arrivals.count for l in listeners)


@dataclass
class Run:
    """Everything one run produces: figures for verdicts, phases for the page, failures that fail it."""

    figures: dict[str, float] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    latency: dict[int, list[float]] = field(default_factory=dict)
    rounds: Rounds = field(default_factory=Rounds)  # headline ratios, one value per round: verdicts on the median
    _seen: set[str] = field(default_factory=set)  # figures that existed when the phase under way began

    def phase(self, name: str, system: LocalSystem | None = None, extra: str = "") -> Phase:
        """A new phase whose settings are read from its gateway's real environment; the one before it gets
        the figures measured since it began."""
        self.close_phase()
        settings = process_settings({**os.environ, **system.gateway.env}) if system is not None else "none"
        if system is not None and not system.nats.sync_always:
            settings += "; nats-server without `sync_interval: always` (no fsync per write)"
        phase = Phase(name, settings + (f"; {extra}" if extra else ""))
        self.phases.append(phase)
        self._seen = set(self.figures) | set(self.rounds.values)
        CURRENT[:] = [phase]
        return phase

    def close_phase(self) -> None:
        """The phase under way measured every figure and rounds key that appeared since it began."""
        if self.phases:
            self.phases[-1].figures |= (set(self.figures) | set(self.rounds.values)) - self._seen
        self._seen = set(self.figures) | set(self.rounds.values)

    def count_missing(self, label: str, expected: int, got: int) -> None:
        """Deliveries a phase waited for and got: counted on its section, a failure when short."""
        count_missing(self.failures, label, expected, expected - got)

    @property
    def missing(self) -> int:
        return sum(p.missing for p in self.phases)


def count_missing(failures: list[str], label: str, expected: int, missing: int) -> None:
    """`missing` of `expected` deliveries never arrived: counted on the phase under way, a failure if any."""
    if CURRENT:
        CURRENT[-1].expected += expected
        CURRENT[-1].missing += missing
    if missing:
        failures.append(f"{label}: {missing} of {expected} deliveries never arrived")


async def drive_actions(actor: GatewayListener, actions: int, gap_s: float) -> list[tuple[int, float]]:
    """Collect and drop the quill in turn; (snapshot_version, sent_at) of each change, quill put back."""
    await actor.act("go", "go", destination="main_room")
    return await toggle_item(actor, actions, "feather_quill_1", "display_table", gap_s)


async def all_arrived(sent: list[tuple[int, float]], arrivals: list[Arrivals], timeout: float = 30.0) -> int:
    """Wait until every listener has every sent version; returns how many copies are still missing."""
    deadline = time.monotonic() + timeout
    while True:
        missing = sum(1 for v, _ in sent for a in arrivals if v not in a.by_version)
        if not missing or time.monotonic() > deadline:
            return missing
        await asyncio.sleep(0.05)


def latencies(sent: list[tuple[int, float]], arrivals: list[Arrivals]) -> list[float]:
    """Milliseconds from sending the action to each listener's copy of its event."""
    return [(a.by_version[v] - started) * 1000 for v, started in sent for a in arrivals if v in a.by_version]


def latency_row(label: str, values: list[float]) -> str:
    return f"| {label} | {pct(values, 50):.1f} | {tail(values)} | {len(values)} |"
