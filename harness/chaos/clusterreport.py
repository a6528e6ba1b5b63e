"""What `gaia-harness chaos --cluster` prints and writes into docs/reliability.md: one row per fault."""
from __future__ import annotations

import time
from pathlib import Path

from harness.chaos.cluster import SETTINGS, ClusterChaosReport, FaultFigures
from harness.chaos.faults import CUT_S, DOWN_S, LOSS_PERCENT, PAUSE_S
from harness.report import machine, replace_section

START, END = "<!-- chaos-cluster:start -->", "<!-- chaos-cluster:end -->"
BOUND_S = 10.0  # issue 37: the next committed action at most this long after a paused or cut-off stream leader
BOUNDED = frozenset({"leader-pause", "partition"})  # alone or with another fault


def seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}"


def bound(f: FaultFigures) -> float | None:
    """The bound on a fault's next committed action, if it has one."""
    return BOUND_S if BOUNDED & set(f.name.split("+")) else None


def bound_line(report: ClusterChaosReport) -> str:
    """Whether every bounded fault's next committed action came within its bound."""
    bounded = [f for f in report.faults if bound(f) is not None]
    missed = [f"{f.name} ({'not reached' if f.next_commit_s is None else f'{f.next_commit_s:.1f} s'})"
              for f in bounded if f.next_commit_s is None or f.next_commit_s > BOUND_S]
    return (f"bound: the next committed action at most {BOUND_S:.0f} s after a paused or cut-off stream leader "
            f"(alone or with another fault): " + (f"NOT MET by {', '.join(missed)}" if missed else
                                                   f"met by all {len(bounded)}"))


def lines(report: ClusterChaosReport) -> list[str]:
    """The run's summary: what played, what the checks found."""
    run, ledger, chains = report.run, report.ledger, report.chains
    out = [f"3 nats-server nodes (R3, fsync always{', each in its own network namespace' if report.netns else ''}), "
           f"2 gateways, 2 kb (lease mode) on one PostgreSQL; {report.players} WebSocket players and {report.sse} "
           f"SSE streams over both gateways; world clock on; {report.duration_s:.0f} s"]
    if run is not None:
        out += run.lines()
    if ledger is not None:
        out.append(f"kb's outbox: {ledger.acknowledged} events acknowledged, missing or different in the stream "
                   f"{len(ledger.missing_acked)}, never acknowledged {ledger.unpublished}; duplicated in the stream "
                   f"{len(ledger.duplicated)}; version steps broken {len(ledger.version_breaks)}; committed version "
                   f"{ledger.kb_version}, stream's last {ledger.stream_version}; {ledger.commits_checked} committed actions "
                   f"looked up: committed twice "
                   f"{len(ledger.committed_twice)}, answered but not in the stream {len(ledger.half_committed)}")
        out += [f"  {item}" for item in (ledger.missing_acked + ledger.version_breaks + ledger.committed_twice
                                         + ledger.half_committed)[:10]]
    if chains is not None:
        out.append(f"every chain (WebSocket and SSE): due {chains.expected}, delivered {chains.delivered}, forgiven by "
                   f"a due resync's snapshot {chains.replaced}; lost {len(chains.lost)}, duplicated "
                   f"{chains.duplicated}, out of order {chains.out_of_order}, resyncs not due {len(chains.needless)}")
    out.append(f"resyncs by stated reason: {report.resyncs or 'none'}")
    if report.faults:
        slowest = max(report.faults, key=lambda f: f.whole_s)
        out.append(bound_line(report))
        out.append(f"before the next fault, the cluster whole again (the stream and the lease bucket led, every "
                   f"replica heard from): at most {slowest.whole_s:.1f} s after a heal ({slowest.name})")
    if report.skipped:
        out.append(f"not run: {', '.join(report.skipped)}")
    return out


def table(report: ClusterChaosReport) -> list[str]:
    """One row per fault: what was done, time to the next committed action, to every player live, lost."""
    rows = ["| fault | what was done | next committed action (s) | bound (s) | longest the stream stood still (s) | "
            "every player live again (s) | every player live after the heal (s from the heal) | lost |",
            "|---|---|---|---|---|---|---|---|"]
    for f in report.faults:
        limit = bound(f)
        rows.append(f"| {f.name} | {f.done} | {seconds(f.next_commit_s)} | "
                    f"{'' if limit is None else f'<= {limit:.0f}'} | {f.stall_s:.1f} | "
                    f"{seconds(f.live_again_s)} | {seconds(f.healed_live_s)} | {f.lost} |")
    return rows


def write_report(report: ClusterChaosReport, path: Path, command: str) -> None:
    """Replace the cluster chaos section of docs/reliability.md with this run's figures."""
    settings = report.settings or ", ".join(f"GAIA_{k.upper()}={v}" for k, v in SETTINGS.items())
    body = "\n".join([
        START, f"Last run: `{command}` on {time.strftime('%Y-%m-%d')}, {machine()}; every process on this one "
        f"machine. Settings that differ from the shipped defaults: {settings}; killed processes down {DOWN_S:.0f} s, "
        f"SIGSTOP {PAUSE_S:.0f} s, partition and lossy link {CUT_S:.0f} s ({LOSS_PERCENT}% loss each way).", "",
        *[f"- {line}" for line in lines(report)], "", *table(report), "",
        f"Verdict: {'0 lost, 0 duplicated, 0 diverged' if report.ok else 'FAILED (see above)'}.", END])
    path.write_text(replace_section(path.read_text() if path.exists() else "", body, START, END))
