"""The soak's samples over time, its targets and verdicts, and the table it writes into docs/reliability.md."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.streams.frames import CACHE_SIZE as VALIDATOR_CACHE
from harness.checks.loss import LEAVE_MARGIN_S
from harness.report import machine, pct, replace_section, tail
from harness.soak.worlds import WorldChecks
from harness.system.local import LocalSystem

RSS_GROWTH = 1.10  # after the settle, each process within 10% of its RSS after warm-up
FD_SLACK = 10  # file descriptors a process may hold above its baseline after the settle (log files, pools)
SLOW_CLOSE_SHARE = 0.005
ACTION_P99_MS = 250.0
GATEWAY_CORES = 0.7  # issue 33: the game-like mix with the gateway under this share of one core
FINAL_RESUMES = 100  # chains resuming at once at the end (bounded, like a client fleet's backoff)


@dataclass
class Sample:
    """One look at the system: memory and descriptors per process, NATS and gateway figures."""

    t: float
    online: int | None
    rss_mb: dict[str, float]
    fds: dict[str, int]
    nats_mem_mb: float
    slow_consumers: int
    subscriptions: int
    consumers: int
    sessions: int
    world_version: float
    present: float
    stream_messages: int = 0


async def _json(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as resp:
        return await resp.json(content_type=None)


async def _kb_figures(http: aiohttp.ClientSession, kb_url: str) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families
    async with http.get(f"{kb_url}/metrics") as resp:
        text = await resp.text()
    version = present = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "gaia_kb_world_version":
                version = s.value
            elif s.name == "gaia_kb_present_users":
                present = s.value
    return version, present


async def delivered_copies(system: LocalSystem) -> float:
    """Event copies the gateway has handed to its sessions so far (every transport), from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{system.gateway_url}/metrics", headers=system.admin_headers) as resp:
            text = await resp.text()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "gaia_gateway_events_delivered_total")


async def sample(system: LocalSystem, t: float, online: int | None = None) -> Sample:
    """RSS and fds of nats-server, kb and gateway; NATS varz/jsz; gateway sessions; kb world version."""
    names = ("nats", "kb", "gateway")
    procs = dict(zip(names, system.server_procs()))
    async with aiohttp.ClientSession() as http:
        varz = await _json(http, f"{system.nats.monitor_url}/varz")
        jsz = await _json(http, f"{system.nats.monitor_url}/jsz")
        health = await _json(http, f"{system.gateway_url}/health")
        version, present = await _kb_figures(http, system.kb_url)
    return Sample(t=t, online=online,
                  rss_mb={n: p.memory_info().rss / 2**20 for n, p in procs.items()},
                  fds={n: p.num_fds() for n, p in procs.items()},
                  nats_mem_mb=varz.get("mem", 0) / 2**20, slow_consumers=varz.get("slow_consumers", 0),
                  subscriptions=varz.get("subscriptions", 0), consumers=jsz.get("consumers", 0),
                  sessions=int(health.get("sessions", {}).get("total", 0)),
                  world_version=version, present=present, stream_messages=int(jsz.get("messages", 0)))


@dataclass
class SoakReport:
    """Everything the soak counted, and the verdicts computed from it."""

    config: Any
    baseline: Sample | None = None
    warm: Sample | None = None
    settled: Sample | None = None
    final: Sample | None = None
    samples: list[Sample] = field(default_factory=list)
    sessions: int = 0
    connect_failures: int = 0
    close_codes: list[int] = field(default_factory=list)
    gateway_closes: dict[str, Any] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    chat_latencies_ms: list[float] = field(default_factory=list)
    chats_done: int = 0
    chats_failed: int = 0
    sse_events: int = 0
    sse_cut: int = 0
    published: int = 0
    chains: int = 0
    expected: int = 0
    delivered: int = 0
    replaced: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    resyncs: int = 0
    needless_resyncs: int = 0
    replays: int = 0
    resumes: int = 0  # resumes with last_seq during the churn
    churn_replays: int = 0  # of them served by a replay (counted before the final resumes)
    churn_resyncs: int = 0
    resync_examples: list[str] = field(default_factory=list)
    final_resumes: int = 0
    final_resume_failures: int = 0
    final_resume_s: float = 0.0
    behind_at_end: int = 0
    lost_examples: list[str] = field(default_factory=list)
    settings: str = ""  # the system's settings that differ from the shipped defaults, read from its environment
    eventless: int = 0  # chains that got a snapshot and no event, checked up to the stream position they left at
    mean_message_bytes: int = 0
    nats_probe_mb: float = 0.0  # peak RSS of a scratch nats-server given this run's messages
    nats_probe_messages: int = 0
    cpu_share: dict[str, float] = field(default_factory=dict)  # cores used over the play, by process
    frames_sent: float = 0.0  # event copies delivered and action answers over the play
    worlds: WorldChecks | None = None  # a sample of players: worlds against kb, resync snapshots against the stream
    play_s: float = 0.0  # how long the play (every player online, churning) lasted

    def gateway_us_per_frame(self) -> float:
        """The gateway's CPU per frame sent over the play (us)."""
        return self.cpu_share.get("gateway", 0.0) * self.play_s / max(self.frames_sent, 1.0) * 1e6

    @property
    def checked_share(self) -> float:
        """Share of the events owed that were checked one by one (the rest a due resync forgave)."""
        return self.expected / max(1, self.expected + self.replaced)

    @property
    def slow_closes(self) -> int:
        return self.close_codes.count(4408)

    def bus_cuts(self) -> float:
        """Times nats-server cut a connection as a slow consumer, plus the gateway's NATS reconnects."""
        assert self.baseline is not None and self.final is not None
        return (self.final.slow_consumers - self.baseline.slow_consumers) + self.gateway_closes.get("nats_reconnects", 0)

    def verdicts(self) -> list[tuple[str, str, bool]]:
        """(target, measured, met) for every target of the soak."""
        assert self.warm is not None and self.settled is not None and self.baseline is not None
        share = self.slow_closes / max(1, self.sessions)
        p99 = pct(self.latencies_ms, 99)
        rows = [
            (f"4408 closes <= {SLOW_CLOSE_SHARE:.1%} of sessions",
             f"{self.slow_closes} of {self.sessions} ({share:.2%})", share <= SLOW_CLOSE_SHARE),
            ("NATS connections cut as slow consumers, gateway NATS reconnects: 0", f"{self.bus_cuts():.0f}",
             self.bus_cuts() == 0),
            (f"action p99 <= {ACTION_P99_MS:.0f} ms (from 1,000 samples or more)",
             f"{tail(self.latencies_ms)} ms (n={len(self.latencies_ms)})",
             p99 <= ACTION_P99_MS and len(self.latencies_ms) >= 1000),
            ("nothing lost, duplicated or out of order; every chain caught up at the end",
             f"lost {self.lost} (checked one by one: {self.checked_share:.1%} of the events owed), duplicated "
             f"{self.duplicated}, out of order {self.out_of_order}, behind {self.behind_at_end}",
             self.lost == self.duplicated == self.out_of_order == self.behind_at_end == 0 and self.expected > 0),
            ("every resync due (cursor more than GAIA_RESYNC_AFTER_EVENTS behind, or not held by the stream)",
             f"{self.resyncs - self.needless_resyncs} of {self.resyncs} due", self.needless_resyncs == 0),
            ("most resumes during the churn are replays",
             f"{self.churn_replays} replays, {self.churn_resyncs} resyncs over {self.resumes} resumes during the "
             f"churn", self.churn_replays > self.churn_resyncs),
        ]
        if self.worlds is not None:
            rows.append(("a sample of players' worlds equal kb's at the end; their resync snapshots equal the world "
                         "the stream yields at their versions", self.worlds.line(), self.worlds.ok))
        if self.cpu_share:
            rows.append((f"gateway under {GATEWAY_CORES:g} of a core over the play",
                         f"{self.cpu_share['gateway']:.2f} of a core", self.cpu_share["gateway"] < GATEWAY_CORES))
        for name in ("gateway", "kb"):
            warm, after = self.warm.rss_mb[name], self.settled.rss_mb[name]
            rows.append((f"{name} RSS after the settle <= {RSS_GROWTH:.2f} x after warm-up",
                         f"{after:.1f} MB vs {warm:.1f} MB ({after / warm:.2f} x)", after <= warm * RSS_GROWTH))
        warm, after = self.warm.rss_mb["nats"], self.settled.rss_mb["nats"]
        bound = max(warm, self.nats_probe_mb)
        rows.append((f"nats RSS after the settle <= {RSS_GROWTH:.2f} x the larger of: after warm-up, or the peak RSS "
                     "of a scratch nats-server (fsync on) given this run's own message count at its mean size",
                     f"{after:.1f} MB vs {warm:.1f} MB after warm-up, scratch server {self.nats_probe_mb:.1f} MB "
                     f"({self.nats_probe_messages:,} messages of {self.mean_message_bytes} B)",
                     after <= bound * RSS_GROWTH))
        leaks = [f"{n} fds {self.settled.fds[n]} (baseline {self.baseline.fds[n]})"
                 for n in self.settled.fds if self.settled.fds[n] > self.baseline.fds[n] + FD_SLACK]
        rows.append(("after the settle: no session, no consumer, fds within baseline + 10",
                     f"sessions {self.settled.sessions}, consumers {self.settled.consumers}, "
                     f"subscriptions {self.settled.subscriptions} (baseline {self.baseline.subscriptions})"
                     + ("; " + ", ".join(leaks) if leaks else ""),
                     self.settled.sessions == 0 and self.settled.consumers == 0 and not leaks))
        return rows

    @property
    def ok(self) -> bool:
        return all(met for _, _, met in self.verdicts())

    def lines(self) -> list[str]:
        c = self.config
        codes = {code: self.close_codes.count(code) for code in sorted(set(self.close_codes))}
        return [
            f"{c.players} players online, churn {c.churn}/s out (half clean, half dropped) and in (half resuming "
            f"with last_seq), one action per {c.act_every_s:g} s each, {c.sse} SSE streams, {c.chats_per_s:g} chat/s, "
            f"{c.duration_s:.0f} s, warm-up at least {c.warmup_s:.0f} s and until the stream holds as many "
            f"events as the gateway's bounded event cache ({VALIDATOR_CACHE:,}; it was warm at "
            f"{self.warm.t if self.warm else float('nan'):.0f} s), settle {c.settle_s:.0f} s, seed {c.seed}",
            f"settings that differ from the shipped defaults: {self.settings or 'none'}",
            f"sessions opened {self.sessions} (failed {self.connect_failures}); chains checked {self.chains} "
            f"({self.eventless} of them left before their first event: checked up to the events stored "
            f"{LEAVE_MARGIN_S:g} s before they left); "
            f"close codes seen by clients {codes}; gateway's count {self.gateway_closes.get('codes', {})}",
            f"actions {len(self.latencies_ms)}: p50 {pct(self.latencies_ms, 50):.1f} ms, "
            f"{tail(self.latencies_ms)} ms, max {max(self.latencies_ms, default=0):.0f} ms; "
            f"chats {self.chats_done} done, {self.chats_failed} failed (p50 {pct(self.chat_latencies_ms, 50):.0f} ms); "
            f"SSE events {self.sse_events}, SSE streams cut {self.sse_cut}",
            "CPU over the play (cores): " + ", ".join(f"{name} {share:.2f}" for name, share in self.cpu_share.items())
            + f"; frames sent {self.frames_sent:,.0f} (event copies and action answers), the gateway's CPU per frame "
              f"sent {self.gateway_us_per_frame():.0f} us",
            f"stream messages {self.published}; owed to chains since their first snapshot "
            f"{self.expected + self.replaced}: checked one by one {self.expected} ({self.checked_share:.1%}), "
            f"delivered {self.delivered}; forgiven by the snapshot after a due resync {self.replaced}; "
            f"lost {self.lost}, duplicated {self.duplicated}, out of order {self.out_of_order}",
            f"resumes with last_seq during the churn {self.resumes}: replayed from the stream {self.churn_replays}, "
            f"resynced {self.churn_resyncs}; with the {self.final_resumes} final resumes, replayed {self.replays}, "
            f"resynced {self.resyncs} (not due: {self.needless_resyncs})"
            + (f"; for example {'; '.join(self.resync_examples)}" if self.resync_examples else ""),
            f"after the settle, every chain resumed with its cursor ({self.final_resumes} resumes, "
            f"{self.final_resume_failures} failed, {self.final_resume_s:.1f} s, at most {FINAL_RESUMES} at once); "
            f"behind the stream's end afterwards: {self.behind_at_end}",
            *[f"lost, for example: {example}" for example in self.lost_examples],
        ]

    def table(self) -> list[str]:
        """Samples over time: sessions, memory, descriptors, NATS."""
        rows = ["| t (s) | online | gateway sessions | RSS gateway / kb / nats (MB) | fds gateway / kb / nats | "
                "NATS mem (MB) | subscriptions | consumers | slow consumers | world version | present |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        picked = [self.baseline, *self.samples[::max(1, len(self.samples) // 12)], self.settled]
        for s in picked:
            if s is None:
                continue
            rows.append(f"| {s.t:.0f} | {'' if s.online is None else s.online} | {s.sessions} | "
                        f"{s.rss_mb['gateway']:.1f} / {s.rss_mb['kb']:.1f} / {s.rss_mb['nats']:.1f} | "
                        f"{s.fds['gateway']} / {s.fds['kb']} / {s.fds['nats']} | {s.nats_mem_mb:.1f} | "
                        f"{s.subscriptions} | {s.consumers} | {s.slow_consumers} | {s.world_version:.0f} | "
                        f"{s.present:.0f} |")
        return rows


def write_report(report: SoakReport, path: Path, command: str) -> None:
    """Replace the soak section of docs/reliability.md with this run's figures and verdicts."""
    start, end = "<!-- soak:start -->", "<!-- soak:end -->"
    verdicts = ["| target | measured | verdict |", "|---|---|---|",
                *[f"| {name} | {value} | {'met' if met else '**not met**'} |" for name, value, met in report.verdicts()]]
    body = "\n".join([start, f"Last run: `{command}` on {time.strftime('%Y-%m-%d')}, {machine()}; "
                      f"servers and clients on this one machine.", "",
                      *[f"- {line}" for line in report.lines()], "", *verdicts, "",
                      "Samples (the first row before any player, the last after everyone left and the settle, "
                      "before the chains resume for the loss check):", "",
                      *report.table(), end])
    path.write_text(replace_section(path.read_text() if path.exists() else "", body, start, end))
