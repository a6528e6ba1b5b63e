"""The faults of a cluster chaos run, each injected and healed on a ClusterSystem (and its NetLab)."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import aiohttp
import nats

from harness.chaos.players import connect_cluster
from harness.checks.verify import EXPERIENCE
from harness.system.cluster import ClusterSystem
from harness.system.netlab import NetLab
from shared.config import Settings
from shared.subjects import OWNER_BUCKET

log = logging.getLogger(__name__)

DOWN_S = 3.0  # how long a killed process stays down
PAUSE_S = 12.0  # SIGSTOP: longer than nats-server's longest election timeout (9 s)
CUT_S = 15.0  # a partition or a lossy link
LOSS_PERCENT = 5


@dataclass
class FaultContext:
    """What a fault acts on."""

    system: ClusterSystem
    lab: NetLab | None
    busy: Callable[[], bool] = lambda: True  # is an action in flight right now?


async def stream_leader(system: ClusterSystem) -> int:
    """Index of the node that leads the stream now (asked of any node that answers)."""
    nc = await connect_cluster(system.nats_url, connect_timeout=2, max_reconnect_attempts=2)
    try:
        for _ in range(100):
            try:
                info = await nc.jetstream(timeout=2).stream_info(Settings.from_env().stream_name)
                if info.cluster is not None and info.cluster.leader:
                    return int(info.cluster.leader.removeprefix("n")) - 1
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                log.info("no stream leader yet: %s", type(exc).__name__)
            await asyncio.sleep(0.2)
        raise RuntimeError("the stream has no leader")
    finally:
        await nc.close()


async def whole(system: ClusterSystem, timeout: float = 60.0) -> float:
    """Wait until the stream and the lease bucket each have a leader that hears every replica, and return how
    long that took: after a heal nats-server's routes come back one by one (a stale one refused as a duplicate
    until its write deadline), and a fault injected meanwhile would meet a cluster still without a majority."""
    started = time.monotonic()
    names = [Settings.from_env().stream_name, f"KV_{OWNER_BUCKET}"]
    nc = await connect_cluster(system.nats_url, connect_timeout=2, max_reconnect_attempts=-1)
    try:
        while time.monotonic() - started < timeout:
            try:
                infos = [await nc.jetstream(timeout=2).stream_info(name) for name in names]
                if all(i.cluster is not None and i.cluster.leader and all(
                        p.current and not p.offline and (p.active or 0) < 2_000_000_000
                        for p in i.cluster.replicas or []) for i in infos):
                    return time.monotonic() - started
            except (nats.errors.Error, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.2)
        log.warning("the cluster was not whole again within %.0f s", timeout)
        return time.monotonic() - started
    finally:
        await nc.close()


async def world_owner(system: ClusterSystem) -> int:
    """Index of the kb that owns the world (waits out a hand-over)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            for i, kb in enumerate(system.kbs):
                if kb.proc is None or kb.proc.poll() is not None:
                    continue
                try:
                    async with http.get(f"{kb.url}/health") as resp:
                        if EXPERIENCE in (await resp.json()).get("owns", []):
                            return i
                except aiohttp.ClientError:
                    continue
            await asyncio.sleep(0.1)
    raise RuntimeError("no kb owns the world")


async def kill_node(ctx: FaultContext, leader: bool) -> str:
    """SIGKILL the stream's leader (or a follower), restart it after DOWN_S."""
    lead = await stream_leader(ctx.system)
    index = lead if leader else (lead + 1) % len(ctx.system.nodes)
    ctx.system.kill_node(index)
    await asyncio.sleep(DOWN_S)
    await ctx.system.restart_node(index)
    return f"SIGKILL n{index + 1} ({'leader' if leader else 'follower'}), restarted after {DOWN_S:.0f} s"


async def pause_node(ctx: FaultContext) -> str:
    """SIGSTOP the stream's leader for longer than the election timeout, then SIGCONT."""
    index = await stream_leader(ctx.system)
    ctx.system.pause_node(index, True)
    try:
        await asyncio.sleep(PAUSE_S)
    finally:
        ctx.system.pause_node(index, False)
    return f"SIGSTOP n{index + 1} (leader) for {PAUSE_S:.0f} s, then SIGCONT"


async def kill_kb(ctx: FaultContext, owner: bool) -> str:
    """SIGKILL the kb that owns the world (actions in flight) or the other; restart it after DOWN_S."""
    own = await world_owner(ctx.system)
    index = own if owner else 1 - own
    kb = ctx.system.kbs[index]
    for _ in range(200):  # mid-action: while some player waits for an answer (2 s at most)
        if ctx.busy():
            break
        await asyncio.sleep(0.01)
    ctx.system.kill_service(kb)
    await asyncio.sleep(DOWN_S)
    await ctx.system.restart_service(kb)
    return f"SIGKILL kb{index + 1} ({'owner' if owner else 'not the owner'}), restarted after {DOWN_S:.0f} s"


async def restart_postgres(ctx: FaultContext) -> str:
    """PostgreSQL fast shutdown (open transactions rolled back, connections cut), started again."""
    pg = ctx.system.postgres
    assert pg is not None
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, pg.stop_server)
    await asyncio.sleep(1.0)
    await loop.run_in_executor(None, pg.start_server)
    return "PostgreSQL fast shutdown, down 1 s, started"


async def kill_gateway(ctx: FaultContext) -> str:
    """SIGKILL gateway A: its players resume on B; A is started again after DOWN_S."""
    gateway = ctx.system.gateways[0]
    ctx.system.kill_service(gateway)
    await asyncio.sleep(DOWN_S)
    await ctx.system.restart_service(gateway)
    return f"SIGKILL gateway A (its players resume on B), restarted after {DOWN_S:.0f} s"


async def partition(ctx: FaultContext) -> str:
    """The stream's leader cut off from the other two nodes (its clients still reach it), then healed."""
    assert ctx.lab is not None
    index = await stream_leader(ctx.system)
    ctx.lab.isolate(index)
    try:
        await asyncio.sleep(CUT_S)
    finally:
        ctx.lab.heal()
    return f"n{index + 1} (leader) cut off from the other two nodes for {CUT_S:.0f} s, then healed"


async def lossy_link(ctx: FaultContext) -> str:
    """5% packet loss each way between the leader and one follower for CUT_S (no netem here: no delay)."""
    assert ctx.lab is not None
    lead = await stream_leader(ctx.system)
    other = (lead + 1) % len(ctx.system.nodes)
    ctx.lab.lossy(lead, other, LOSS_PERCENT)
    try:
        await asyncio.sleep(CUT_S)
    finally:
        ctx.lab.heal()
    return f"{LOSS_PERCENT}% loss each way n{lead + 1}<->n{other + 1} for {CUT_S:.0f} s"


Inject = Callable[[FaultContext], Awaitable[str]]
SINGLE: dict[str, Inject] = {
    "leader-kill": lambda ctx: kill_node(ctx, leader=True),
    "follower-kill": lambda ctx: kill_node(ctx, leader=False),
    "leader-pause": pause_node,
    "kb-owner-kill": lambda ctx: kill_kb(ctx, owner=True),
    "kb-other-kill": lambda ctx: kill_kb(ctx, owner=False),
    "postgres-restart": restart_postgres,
    "gateway-kill": kill_gateway,
    "partition": partition,
    "lossy-link": lossy_link,
}
NEEDS_LAB = {"partition", "lossy-link"}
OVERLAPS = ("leader-kill+kb-owner-kill", "postgres-restart+gateway-kill", "partition+kb-owner-kill",
            "leader-pause+postgres-restart")


async def inject(name: str, ctx: FaultContext) -> str:
    """Run one fault, or several at once ('a+b'); returns what was done."""
    parts = name.split("+")
    done = await asyncio.gather(*(SINGLE[part](ctx) for part in parts))
    return "; ".join(done)
