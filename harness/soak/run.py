"""`gaia-harness soak`: churn against one system (players leaving, dropping, returning), then loss and leak checks."""
from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil

from gateway.streams.frames import CACHE_SIZE as VALIDATOR_CACHE
from harness.bench.kit import cpu_seconds
from harness.checks.loss import Stream, StreamMessage, check_chain
from harness.checks.verify import EXPERIENCE, resync_threshold, stream_messages
from harness.report import process_settings, tail
from harness.soak.clients import Chain, ChatDriver, SseReader
from harness.soak.report import FINAL_RESUMES, Sample, SoakReport, delivered_copies, sample
from harness.soak.worlds import SAMPLE_PLAYERS, check_worlds
from harness.system.local import LocalSystem
from shared.auth import issue_token
from shared.config import Settings
from shared.subjects import experience_updates


@dataclass(frozen=True)
class SoakConfig:
    """The churn: who is online, how fast they come and go, what else runs beside them."""

    players: int = 100
    churn: int = 20  # leaves per second (half clean, half dropped) and as many joins (half resuming)
    act_every_s: float = 1.0
    sse: int = 2
    chats_per_s: float = 1.0
    duration_s: float = 180.0
    warmup_s: float = 20.0
    settle_s: float = 45.0
    seed: int = 7
    short_returns: float = 0.8  # share of resumes by a chain among the last second's leavers (a replay, not a resync)


@dataclass
class Crowd:
    """Every chain, who is online, and the per-chain action loops."""

    online: list[Chain] = field(default_factory=list)
    offline: list[Chain] = field(default_factory=list)
    chains: list[Chain] = field(default_factory=list)
    loops: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    connects: int = 0
    connect_failures: int = 0
    resumes: int = 0


class Soak:
    """One soak run against a LocalSystem it starts and stops."""

    def __init__(self, config: SoakConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.settings = Settings.from_env()
        self.system = LocalSystem(presence_renew_s="2", stream_sweep_s="1")
        self.crowd = Crowd()
        self.samples: list[Sample] = []
        self.stop = asyncio.Event()
        self._users = 0
        self._updates: dict[int, dict[str, Any]] = {}  # the stream's world_updates by version, for the snapshot check

    async def run(self) -> SoakReport:
        """Start, churn for the duration, resume everyone, check every chain, close, settle, check for leaks."""
        await self.system.start()
        report = SoakReport(config=self.config)
        report.settings = process_settings({**os.environ, **self.system.gateway.env})
        try:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                report.baseline = await sample(self.system, 0.0)
                await self._play(http, report)
                # Everyone leaves; after the settle nothing of theirs may remain. Only then do all
                # chains come back with their cursors for the loss check (a storm of its own, whose
                # memory high-water mark would otherwise hide or fake a leak).
                await self._close_everyone()
                await asyncio.sleep(self.config.settle_s)
                report.settled = await sample(self.system, time.monotonic() - self._started)
                await self._resume_everyone(http, report)
                await self._check(report)
                await self._close_everyone()
            report.gateway_closes = await self._gateway_closes()
            report.final = await sample(self.system, time.monotonic() - self._started)
            report.samples = self.samples
            report.latencies_ms = self.crowd.latencies_ms
            report.sessions = self.crowd.connects
            report.connect_failures = self.crowd.connect_failures
            report.resumes = self.crowd.resumes
            report.close_codes = [code for chain in self.crowd.chains for code in chain.close_codes]
            report.mean_message_bytes = await self._mean_message_bytes()
        finally:
            self.system.stop()
        report.nats_probe_messages = report.published
        report.nats_probe_mb = await nats_probe_peak(report.mean_message_bytes, report.published)
        return report

    async def _mean_message_bytes(self) -> int:
        import nats
        nc = await nats.connect(self.system.nats_url)
        try:
            state = (await nc.jetstream().stream_info(self.settings.stream_name)).state
        finally:
            await nc.close()
        return int(state.bytes / max(1, state.messages))

    async def _play(self, http: aiohttp.ClientSession, report: SoakReport) -> None:
        self._started = time.monotonic()
        readers = [SseReader(self.system.gateway_url, issue_token(self.settings, f"soaksse{i}"))
                   for i in range(self.config.sse)]
        chats = ChatDriver(self.system.gateway_url, self.settings)
        background = [asyncio.create_task(r.run(http, self.stop)) for r in readers]
        background.append(asyncio.create_task(self._sample_every(5.0)))
        await asyncio.gather(*(self._join(http, resume=False) for _ in range(self.config.players)))
        names = ("nats-server", "kb", "gateway")
        procs = {**dict(zip(names, self.system.server_procs(), strict=True)), "driver": psutil.Process()}
        cpu_before = {name: cpu_seconds(proc) for name, proc in procs.items()}
        copies_before, actions_before = await delivered_copies(self.system), len(self.crowd.latencies_ms)
        play_started = time.monotonic()
        until = self._started + self.config.duration_s
        next_chat = time.monotonic()
        while time.monotonic() < until:
            tick = time.monotonic()
            await self._churn(http)
            while self.config.chats_per_s > 0 and next_chat <= time.monotonic() and self.crowd.online:
                background.append(asyncio.create_task(chats.one(http, self.rng.choice(self.crowd.online).user)))
                next_chat += 1 / self.config.chats_per_s
            self._progress(tick - self._started)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            if not report.warm and tick - self._started >= self.config.warmup_s:
                # Warm means the gateway's bounded event cache is full too: its growth until then
                # is that bound being reached, not a leak.
                candidate = await sample(self.system, tick - self._started)
                if candidate.stream_messages >= VALIDATOR_CACHE:
                    report.warm = candidate
        sys.stdout.write("\n")
        played = report.play_s = time.monotonic() - play_started
        report.cpu_share = {name: (cpu_seconds(proc) - cpu_before[name]) / played for name, proc in procs.items()}
        report.frames_sent = (await delivered_copies(self.system) - copies_before
                              + len(self.crowd.latencies_ms) - actions_before)
        if report.warm is None:  # a run too short to fill the cache: the reference is its end
            report.warm = await sample(self.system, time.monotonic() - self._started)
        self.stop.set()
        for task in self.crowd.loops.values():
            task.cancel()
        await asyncio.gather(*self.crowd.loops.values(), *background, return_exceptions=True)
        self.crowd.loops.clear()
        report.sse_events = sum(r.events for r in readers)
        report.sse_cut = sum(r.cut_by_server for r in readers)
        report.chats_done, report.chats_failed = chats.done, chats.failed
        report.chat_latencies_ms = chats.latencies_ms

    async def _churn(self, http: aiohttp.ClientSession) -> None:
        """One second of churn: the closed and the leaving go offline, as many join (half resuming)."""
        crowd = self.crowd
        for chain in [c for c in crowd.online if not c.open]:
            self._offline(chain)
        leaving = self.rng.sample(crowd.online, min(self.config.churn, len(crowd.online)))
        for i, chain in enumerate(leaving):
            self._offline(chain)
        await asyncio.gather(*(chain.leave(clean=i % 2 == 0) for i, chain in enumerate(leaving)))
        wanted = max(0, self.config.players - len(crowd.online))
        joins = [self._join(http, resume=i % 2 == 1) for i in range(wanted)]
        await asyncio.gather(*joins)

    def _offline(self, chain: Chain) -> None:
        self.crowd.online.remove(chain)
        self.crowd.offline.append(chain)
        task = self.crowd.loops.pop(id(chain), None)
        if task is not None:
            task.cancel()

    async def _join(self, http: aiohttp.ClientSession, resume: bool) -> None:
        """A returning chain with its cursor, or a fresh one (a player not online now, no cursor)."""
        online_users = {c.user for c in self.crowd.online}
        returning = [c for c in self.crowd.offline if c.cursor is not None and c.user not in online_users]
        if resume and returning:
            if self.rng.random() < self.config.short_returns:  # among the latest leavers: a short absence
                returning.sort(key=lambda c: c.left_at or 0.0)
                chain = self.rng.choice(returning[-self.config.churn:])
            else:
                chain = self.rng.choice(returning)
            self.crowd.offline.remove(chain)
            self.crowd.resumes += 1
        else:
            self._users += 1
            user = f"soak{self._users % (self.config.players * 3)}"
            chain = Chain(user, issue_token(self.settings, user), keep=self._users <= SAMPLE_PLAYERS)
            self.crowd.chains.append(chain)
        self.crowd.online.append(chain)
        try:
            self.crowd.connects += 1
            await chain.connect(http, self.system.gateway_url, resume=resume)
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
            self.crowd.connect_failures += 1
            return
        self.crowd.loops[id(chain)] = asyncio.create_task(self._act_forever(chain))

    async def _act_forever(self, chain: Chain) -> None:
        rng = random.Random(self.rng.random())
        while chain.open:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * self.config.act_every_s)
            latency = await chain.act(rng)
            if latency is not None:
                self.crowd.latencies_ms.append(latency)

    async def _sample_every(self, every_s: float) -> None:
        while not self.stop.is_set():
            self.samples.append(await sample(self.system, time.monotonic() - self._started,
                                             online=len(self.crowd.online)))
            await asyncio.sleep(every_s)

    def _progress(self, elapsed: float) -> None:
        lat = self.crowd.latencies_ms[-2000:]
        closes = sum(c.close_codes.count(4408) for c in self.crowd.chains)
        sys.stdout.write(f"\r[{elapsed:5.0f}s] online {len(self.crowd.online)}, sessions {self.crowd.connects}, "
                         f"actions {len(self.crowd.latencies_ms)} (recent {tail(lat)} ms), "
                         f"4408 closes {closes}   ")
        sys.stdout.flush()

    async def _resume_everyone(self, http: aiohttp.ClientSession, report: SoakReport) -> None:
        """Every chain that received anything comes back with its cursor, a bounded number at a time."""
        gate = asyncio.Semaphore(FINAL_RESUMES)
        started = time.monotonic()

        async def back(chain: Chain) -> None:
            async with gate:
                if chain.open:
                    return
                try:
                    await chain.connect(http, self.system.gateway_url, resume=True)
                    report.final_resumes += 1
                except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                    report.final_resume_failures += 1
        report.churn_replays = sum(c.count("resumed") for c in self.crowd.chains)
        report.churn_resyncs = sum(c.count("resync_required") for c in self.crowd.chains)
        await asyncio.gather(*(back(c) for c in self.crowd.chains if c.marks and c.cursor is not None))
        end = await self._stream_end()
        last_version = max((m.version or 0 for m in self._messages if m.kind == "world_update"), default=0)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(c.open and not c.caught_up(end, last_version)
                                                  for c in self.crowd.chains):
            await asyncio.sleep(0.2)
        report.final_resume_s = time.monotonic() - started
        report.behind_at_end = sum(1 for c in self.crowd.chains
                                   if c.marks and c.cursor is not None and not c.caught_up(end, last_version))

    async def _stream_end(self) -> int:
        messages = await stream_messages(self.system.nats_url, self.settings.stream_name,
                                         experience_updates(EXPERIENCE), self._updates)
        self._messages = messages
        return messages[-1].seq if messages else 0

    async def _check(self, report: SoakReport) -> None:
        """Every chain: everything owed since its first snapshot arrived once, in order, or a due resync forgave it."""
        messages: list[StreamMessage] = self._messages
        threshold = resync_threshold(self.system)
        report.published = len(messages)
        stream = Stream(messages)
        for chain in self.crowd.chains:
            frames = chain.frames()
            if not any(f.get("type") == "area_of_interest" for f in frames):
                continue  # never connected: owed nothing
            result = check_chain(stream, frames, chain.user, threshold, left_at=chain.left_at)
            due, got = result.due, list(chain.seqs)
            report.chains += 1
            report.eventless += chain.cursor is None
            report.expected += len(due)
            report.replaced += len(result.forgiven)
            report.delivered += len(due & set(got))
            missing = sorted(due - set(got))
            report.lost += len(missing)
            if missing and len(report.lost_examples) < 5:
                kinds = {m.seq: m.kind for m in messages}
                views = [f["snapshot_version"] for f in frames if f.get("type") == "area_of_interest"]
                report.lost_examples.append(f"{chain.user}: seqs {missing[:6]} ({', '.join(kinds[q] for q in missing[:6])}); "
                                            f"received {len(got)}, first {got[:1]}, last {got[-1:]}, "
                                            f"snapshots at versions {views}")
            report.duplicated += len(got) - len(set(got))
            report.out_of_order += sum(1 for a, b in zip(got, got[1:]) if b <= a)
            report.resyncs += len(result.resyncs)
            report.needless_resyncs += len(result.needless)
            report.replays += result.replays
            for r in result.needless[:2] if len(report.resync_examples) < 4 else []:
                report.resync_examples.append(f"not due: {chain.user} at {r.cursor}, {r.why} ({r.reason})")
        # The sample's chains back at the end (resumed with their cursors, caught up): a chain that left before
        # its first event is not resumed, and its world is rightly older than kb's.
        sampled = [(c.user, c.kept) for c in self.crowd.chains if c.kept is not None and c.open]
        report.worlds = await check_worlds(self.system.kb_url, self.settings.kb_api_key, sampled, self._updates)

    async def _close_everyone(self) -> None:
        await asyncio.gather(*(c.leave(clean=True) for c in self.crowd.chains))

    async def _gateway_closes(self) -> dict[str, Any]:
        """The gateway's own count of closes by code, and its NATS reconnects (from /metrics)."""
        from prometheus_client.parser import text_string_to_metric_families
        async with aiohttp.ClientSession() as http, http.get(f"{self.system.gateway_url}/metrics",
                                                                           headers=self.system.admin_headers) as resp:
            text = await resp.text()
        out: dict[str, Any] = {"codes": {}, "nats_reconnects": 0.0}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "gaia_gateway_session_closes_total":
                    out["codes"][f"{s.labels.get('by', '?')} {s.labels.get('code', '?')}"] = s.value
                elif s.name == "gaia_gateway_nats_reconnects_total":
                    out["nats_reconnects"] = s.value
        return out


async def nats_probe_peak(message_bytes: int, count: int) -> float:
    """Peak RSS (MB) of a scratch nats-server (fsync on) while its file stream takes `count` messages
    of this size: what JetStream's file store makes a server holding this run's messages use."""
    import secrets
    import tempfile

    import nats
    import psutil

    from harness.system.procs import NatsServer
    server = NatsServer(store_dir=tempfile.mkdtemp(prefix="gaia-natscache-"), sync_always=True).start()
    peak = 0.0
    try:
        proc = psutil.Process(server.proc.pid)  # type: ignore[union-attr]
        nc = await nats.connect(server.url_as("operator"))
        js = nc.jetstream()
        await js.add_stream(name="PROBE", subjects=["probe.>"])
        payload = b"x" * message_bytes
        for start in range(0, count, 500):
            acks = [await js.publish_async("probe.w", payload, headers={"Nats-Msg-Id": secrets.token_hex(12)})
                    for _ in range(min(500, count - start))]
            await asyncio.gather(*acks)
            peak = max(peak, proc.memory_info().rss / 2**20)
        await nc.close()
    finally:
        server.stop()
        server.cleanup()
    return peak


async def run_soak(config: SoakConfig) -> SoakReport:
    """Run one soak and return its report."""
    return await Soak(config).run()
