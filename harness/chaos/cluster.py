"""`gaia-harness chaos --cluster`: play on a 3-node NATS cluster, two gateways and two kb on PostgreSQL while
processes, the database and the network fail, one fault at a time and then overlapping; then the strict checks."""
from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.chaos.clustercheck import (
    Chain,
    ChainFindings,
    LedgerFindings,
    check_chains,
    check_ledger,
    committed,
    read_stream,
    resync_reasons,
)
from harness.chaos.faults import NEEDS_LAB, OVERLAPS, SINGLE, FaultContext, inject, whole
from harness.chaos.players import LedgerPlayer, SseWatcher, StreamObserver
from harness.checks.verify import RunReport, check, settle
from harness.client.player import SimPlayer
from harness.report import process_settings
from harness.system.cluster import ClusterSystem
from harness.system.netlab import NetLab, available
from shared.auth import issue_token
from shared.config import Settings

log = logging.getLogger(__name__)
LIVE_TIMEOUT_S = 90.0
SETTINGS = {"kb_clock_tick_s": "1", "kb_lease_ttl_s": "3"}


@dataclass
class FaultFigures:
    """One fault's figures: from its injection to the next committed action, to every player live again."""

    name: str
    done: str = ""
    started: float = 0.0
    healed: float = 0.0
    next_commit_s: float | None = None
    live_again_s: float | None = None  # from the injection until every chain had an event published after it
    healed_live_s: float | None = None  # from the heal until every chain had an event published after it
    stall_s: float = 0.0  # the longest the stream went without a world_update, from the injection until after the heal
    whole_s: float = 0.0  # from the heal until the stream and the lease bucket had leaders hearing every replica
    lagging: list[str] = field(default_factory=list)
    lost: int = 0


@dataclass
class ClusterChaosReport:
    """The whole run: per-fault figures, the players' checks and the ledger's."""

    players: int
    sse: int
    netns: bool
    faults: list[FaultFigures] = field(default_factory=list)
    run: RunReport | None = None
    ledger: LedgerFindings | None = None
    chains: ChainFindings | None = None  # WebSocket players and SSE watchers
    resyncs: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    began: float = field(default_factory=time.monotonic)
    settings: str = ""  # every GAIA_* setting the gateways and kb ran with that differs from the shipped defaults

    @property
    def lost(self) -> int:
        return (self.run.lost if self.run else 0) + (len(self.chains.lost) if self.chains else 0)

    @property
    def ok(self) -> bool:
        chains = self.chains
        return (self.run is not None and self.run.ok and self.ledger is not None and self.ledger.ok
                and chains is not None and not chains.lost and not chains.duplicated and not chains.out_of_order
                and not chains.needless
                and "unstated" not in self.resyncs
                and all(None not in (f.live_again_s, f.healed_live_s, f.next_commit_s) for f in self.faults))


@dataclass
class Cast:
    """Everyone playing: WebSocket players and SSE watchers on both gateways."""

    players: list[LedgerPlayer]
    watchers: list[SseWatcher]

    def cursors(self) -> dict[str, int]:
        out = {p.user_id: p.last_seq for p in self.players}
        out.update({w.user: w.last_seq for w in self.watchers})
        return out


def cast(system: ClusterSystem, players: int, sse: int, seed: int) -> Cast:
    """Half the players (and SSE watchers) on gateway A, half on B, each able to move to the other."""
    settings = Settings.from_env()
    rng = random.Random(seed)
    a, b = system.gateway_urls
    ws = [LedgerPlayer([a, b] if i % 2 == 0 else [b, a], issue_token(settings, f"cc{i}"), random.Random(rng.random()))
          for i in range(players)]
    watchers = [SseWatcher([a, b] if i % 2 == 0 else [b, a], issue_token(settings, f"ccsse{i}"), f"ccsse{i}")
                for i in range(sse)]
    return Cast(ws, watchers)


def first_update_after(observer: StreamObserver, since: float) -> int | None:
    """The first world_update (every chain gets those) the observer saw after `since`."""
    after = [seq for seq, at in observer.seen.items() if at > since and seq in observer.updates]
    return min(after) if after else None


def longest_silence(observer: StreamObserver, since: float, until_seq: int | None) -> float:
    """The longest gap between world_updates reaching the observer, from `since` to the arrival of `until_seq`."""
    if until_seq is None or until_seq not in observer.seen:
        return 0.0
    end = observer.seen[until_seq]
    times = sorted(t for seq, t in observer.seen.items() if seq in observer.updates and since <= t <= end)
    points = [since, *times]
    return max((b - a for a, b in zip(points, points[1:])), default=0.0)


async def measure(figures: FaultFigures, who: Cast, observer: StreamObserver, healed: asyncio.Event) -> None:
    """While the fault runs and after: the first action committed since the injection; when every chain
    had a world_update published after the injection (live again, perhaps while the fault lasts); and
    when every chain had one published after the heal."""
    deadline = time.monotonic() + LIVE_TIMEOUT_S + 60
    targets: dict[str, int | None] = {"live": None, "healed": None}
    while time.monotonic() < deadline:
        if figures.next_commit_s is None:
            commits = [a.at for p in who.players for a in p.answers
                       if a.version is not None and a.sent_at >= figures.started]
            if commits:
                figures.next_commit_s = min(commits) - figures.started
        targets["live"] = targets["live"] or first_update_after(observer, figures.started)
        if healed.is_set():
            targets["healed"] = targets["healed"] or first_update_after(observer, figures.healed)
        cursors = who.cursors()
        for name, target in targets.items():
            lagging = [user for user, cursor in cursors.items() if target is None or cursor < target]
            if name == "live" and figures.live_again_s is None and not lagging:
                figures.live_again_s = time.monotonic() - figures.started
            if name == "healed" and figures.healed_live_s is None and healed.is_set() and not lagging:
                figures.healed_live_s = time.monotonic() - figures.healed
            figures.lagging = lagging or figures.lagging
        if None not in (figures.live_again_s, figures.healed_live_s, figures.next_commit_s):
            figures.lagging = []
            figures.stall_s = longest_silence(observer, figures.started, targets["healed"])
            return
        if healed.is_set() and time.monotonic() - figures.healed > LIVE_TIMEOUT_S:
            break
        await asyncio.sleep(0.05)
    log.warning("%s: not every chain live again within %.0f s of the heal: %s", figures.name, LIVE_TIMEOUT_S,
                figures.lagging)


def plan(names: list[str] | None, overlaps: bool, lab: bool) -> tuple[list[str], list[str]]:
    """The faults to run in order (singles, then overlapping pairs), and those skipped with why."""
    chosen = names or [*SINGLE, *(OVERLAPS if overlaps else ())]
    run = [n for n in chosen if lab or not set(n.split("+")) & NEEDS_LAB]
    return run, [f"{n} (needs network namespaces)" for n in chosen if n not in run]


async def run_cluster_chaos(players: int = 4, sse: int = 2, seed: int = 7, faults: list[str] | None = None,
                            overlaps: bool = True, quiet_s: float = 3.0, netns: bool = True) -> ClusterChaosReport:
    """Start the cluster, play, inject each fault and measure it, settle, then run every check."""
    why_not = available() if netns else "not asked for"
    lab = NetLab().open() if why_not is None else None
    names, skipped = plan(faults, overlaps, lab is not None)
    report = ClusterChaosReport(players=players, sse=sse, netns=lab is not None,
                                skipped=skipped + ([f"partitions: {why_not}"] if lab is None and skipped else []))
    work = Path(tempfile.mkdtemp(prefix="gaia-clusterchaos-"))
    system = ClusterSystem(work, gateways=2, kbs=2, postgres=True,
                           node_hosts=[lab.host(i) for i in range(3)] if lab else None,
                           node_prefixes=[lab.prefix(i) for i in range(3)] if lab else None, **SETTINGS)
    # Read from the processes' own environment, so the page prints every setting (the cluster's own
    # defaults, such as GAIA_STREAM_SWEEP_S and GAIA_PRESENCE_RENEW_S, included), not only the run's.
    report.settings = (f"gateways: {process_settings(system.gateways[0].env)}; "
                       f"kb: {process_settings(system.kbs[0].env)}")
    observer = StreamObserver("")
    try:
        await system.start()
        observer.nats_url = system.nats_url
        await observer.start()
        who = cast(system, players, sse, seed)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.run(time.monotonic() + 3600)) for p in who.players]
        tasks += [asyncio.create_task(w.run(stop)) for w in who.watchers]
        await asyncio.sleep(quiet_s)
        ctx = FaultContext(system, lab, busy=lambda: any(p.in_flight for p in who.players))
        for name in names:
            figures = FaultFigures(name, started=time.monotonic())
            log.info("fault %s", name)
            healed = asyncio.Event()
            watching = asyncio.create_task(measure(figures, who, observer, healed))
            figures.done = await inject(name, ctx)
            figures.healed = time.monotonic()
            healed.set()
            figures.whole_s = await whole(system)  # the next fault meets a whole cluster, not a majority lost
            await watching
            report.faults.append(figures)
            log.info("fault %s: next commit %.1f s, live again %s s, cluster whole %.1f s after the heal", name,
                     figures.next_commit_s or -1, figures.live_again_s, figures.whole_s)
            await asyncio.sleep(quiet_s)
        for task in tasks[:len(who.players)]:
            task.cancel()
        await asyncio.gather(*tasks[:len(who.players)], return_exceptions=True)
        await settle(system, list[SimPlayer](who.players))
        await catch_up(who, observer)
        stop.set()
        await asyncio.gather(*tasks[len(who.players):], return_exceptions=True)
        await verify(system, who, observer, report)
        for player in who.players:
            await player.client.close()
        report.duration_s = time.monotonic() - report.began
        return report
    finally:
        await observer.stop()
        system.stop()
        if lab is not None:
            lab.close()
        if os.environ.get("GAIA_KEEP_LOGS") is None:  # set it to read the processes' logs afterwards
            shutil.rmtree(work, ignore_errors=True)
        else:
            log.warning("logs kept in %s", work)


async def catch_up(who: Cast, observer: StreamObserver, timeout: float = 30.0) -> None:
    """Wait until every SSE watcher has the last world_update the observer saw."""
    last = max(observer.updates, default=0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(w.last_seq < last for w in who.watchers):
        await asyncio.sleep(0.1)


async def verify(system: ClusterSystem, who: Cast, observer: StreamObserver, report: ClusterChaosReport) -> None:
    """The strict checks, and each loss charged to the fault during or after which its event was published."""
    run = RunReport(players=len(who.players), duration_s=time.monotonic() - report.began,
                    faults=[f.name for f in report.faults])
    await check(system, list[SimPlayer](who.players), run)
    report.run = run
    assert system.postgres is not None
    rows, version = await committed(system.postgres.url)
    entries = await read_stream(system.nats_url)
    report.ledger = check_ledger(entries, rows, version, who.players)
    chains = [Chain(p.user_id, p.client.frames, p.client.seqs) for p in who.players]
    chains += [Chain(w.user, w.frames, w.seqs) for w in who.watchers]
    report.chains = check_chains(entries, chains, Settings.from_env().resync_after_events)
    for chain in chains:
        for reason, count in resync_reasons(chain.frames).items():
            report.resyncs[reason] = report.resyncs.get(reason, 0) + count
    for seq in report.chains.lost:
        charge(report, observer, seq)


def charge(report: ClusterChaosReport, observer: StreamObserver, seq: int) -> None:
    """Count a lost event against the last fault injected before it was published."""
    at = observer.published_at(seq)
    owners = [f for f in report.faults if at is not None and f.started <= at]
    if owners:
        owners[-1].lost += 1



