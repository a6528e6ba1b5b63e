"""Beyond one machine: a 3-node NATS cluster (R3), two gateways; nodes and gateways die, nothing is lost."""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
import nats
import pytest

from harness.checks.verify import EXPERIENCE, RunReport, check, settle
from harness.client.player import SimPlayer
from harness.system.cluster import ClusterSystem
from shared.auth import issue_token
from shared.config import Settings
from tests.helpers import eventually


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., ClusterSystem]]:
    """cluster(**options) -> a ClusterSystem under tmp_path, stopped (and removed) afterwards."""
    made: list[ClusterSystem] = []

    def make(**options: Any) -> ClusterSystem:
        made.append(ClusterSystem(tmp_path / "cluster", **options))
        return made[-1]
    yield make
    for system in made:
        system.stop()
    if os.environ.get("GAIA_KEEP_LOGS") is None:  # set it to read the processes' logs after a failure
        shutil.rmtree(tmp_path / "cluster", ignore_errors=True)


async def played(sims: list[SimPlayer], actions: int, timeout: float = 30.0) -> None:
    """Until every player has made `actions` more actions than now: a fault lands mid-play, not at a moment guessed."""
    goal = [sim.stats.actions + actions for sim in sims]
    await eventually(lambda: all(sim.stats.actions >= g for sim, g in zip(sims, goal, strict=True)), timeout=timeout)


def seen_from(sims: list[SimPlayer], actors: set[str]) -> int:
    """How many non-empty world_updates by `actors` the given players received."""
    return sum(1 for sim in sims for f in sim.client.frames
               if f.get("type") == "world_update" and f["changes"] and f["actor_id"] in actors)


async def test_two_gateways_on_a_nats_cluster_lose_nothing_when_a_node_and_a_gateway_die(cluster) -> None:
    system = cluster(gateways=2, kbs=1)
    await system.start()
    settings = Settings.from_env()
    a, b = system.gateway_urls
    rng = random.Random(5)
    sims_a = [SimPlayer([a, b], issue_token(settings, f"on-a{i}"), EXPERIENCE, random.Random(rng.random()))
              for i in range(2)]
    sims_b = [SimPlayer([b, a], issue_token(settings, f"on-b{i}"), EXPERIENCE, random.Random(rng.random()))
              for i in range(2)]
    sims = sims_a + sims_b
    until = time.monotonic() + 14
    play = [asyncio.create_task(s.run(until)) for s in sims]
    await played(sims, 3)  # everyone connected and acting, however slow the machine
    system.kill_node(0)  # the first URL every client and service was given
    await played(sims, 3)  # everyone acting again through the surviving nodes
    system.kill_service(system.gateways[0])  # gateway A's players must move to B
    await asyncio.gather(*play)
    await settle(system, sims)
    report = RunReport(players=len(sims), duration_s=14, faults=["nats node n1", "gateway A"])
    await check(system, sims, report)
    print("\n".join(report.lines()))

    assert report.expected > 0 and report.delivered >= report.expected
    assert report.lost == 0 and report.duplicated == 0 and report.out_of_order == 0
    assert report.diverged == 0, "every player's world equals kb's at the end"
    assert sum(s.stats.reconnects for s in sims_a) >= len(sims_a), "gateway A's players reconnected"
    assert seen_from(sims_b, {"on-a0", "on-a1"}) > 0 and seen_from(sims_a, {"on-b0", "on-b1"}) > 0

    nc = await nats.connect(system.nats_url.split(","))
    info = await nc.jetstream().stream_info(settings.stream_name)
    await nc.close()
    assert info.config.num_replicas == 3 and info.cluster is not None
    for sim in sims:
        await sim.client.close()


async def owner_of(system: ClusterSystem, experience: str = EXPERIENCE) -> list[int]:
    """Indexes of the kb processes whose /health says they own the world."""
    owners = []
    async with aiohttp.ClientSession() as http:
        for i, kb in enumerate(system.kbs):
            if kb.proc is None or kb.proc.poll() is not None:
                continue
            async with http.get(f"{kb.url}/health") as resp:
                if experience in (await resp.json())["owns"]:
                    owners.append(i)
    return owners


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_two_kb_processes_serialize_each_world_and_hand_it_over_when_the_owner_dies(cluster, store) -> None:
    """On PostgreSQL the two kb share nothing but the database server, as on two hosts: the new owner
    continues from the rows and the outbox the dead one left there."""
    system = cluster(gateways=2, kbs=2, postgres=store == "postgres", kb_lease_ttl_s="2", kb_clock_tick_s="1")
    await system.start()
    for _ in range(50):
        if len(await owner_of(system)) == 1:
            break
        await asyncio.sleep(0.1)
    owners = await owner_of(system)
    assert len(owners) == 1, f"exactly one kb writes the world, got {owners}"
    settings = Settings.from_env()
    a, b = system.gateway_urls

    # A race through two different kb processes: one winner, one clear failure.
    racers = [SimPlayer([url], issue_token(settings, f"racer{i}"), EXPERIENCE, random.Random(i))
              for i, url in enumerate((a, b))]
    for racer in racers:
        await racer.ensure_connected(time.monotonic() + 10)
        assert (await racer.client.act("go", destination="main_room"))["success"]
    answers = await asyncio.gather(*(r.client.act("collect_item", instance_id="dream_bottle_1") for r in racers))
    assert sorted(ans["success"] for ans in answers) == [False, True]

    rng = random.Random(9)
    sims = racers + [SimPlayer([url, other], issue_token(settings, f"kbhop{i}"), EXPERIENCE,
                               random.Random(rng.random())) for i, (url, other) in enumerate(((a, b), (b, a)))]
    until = time.monotonic() + 12
    play = [asyncio.create_task(s.run(until)) for s in sims]
    await played(sims, 3)  # everyone connected and acting, however slow the machine
    system.kill_service(system.kbs[owners[0]])
    await asyncio.gather(*play)
    assert await owner_of(system) == [1 - owners[0]], "the surviving kb took the world over"
    await settle(system, sims)
    report = RunReport(players=len(sims), duration_s=12, faults=[f"kb{owners[0] + 1} (the owner)"])
    await check(system, sims, report)
    print("\n".join(report.lines()), [s.stats.errors for s in sims],
          f"slowest action {max(max(s.stats.latencies_ms) for s in sims):.0f} ms (the hand-over)")
    assert report.lost == 0 and report.duplicated == 0 and report.out_of_order == 0
    assert report.diverged == 0, "every player's world equals the new owner's"
    assert sum(s.stats.succeeded for s in sims) > 0
    clock_events = [f for s in sims for f in s.client.frames
                    if f.get("type") == "world_update" and f["actor_id"] == "world" and f["changes"]]
    assert clock_events, "the world clock ran (on whichever kb owned the world)"
    for sim in sims:
        await sim.client.close()


@pytest.mark.timeout(300)
async def test_cluster_chaos_short_form_loses_nothing_through_process_database_and_network_faults() -> None:
    """`gaia-harness chaos --cluster` in short: the stream leader, the world's owner, PostgreSQL and a gateway
    die mid-play (and, where namespaces can be made, the leader is cut off); the strict checks must all pass."""
    from harness.chaos.cluster import run_cluster_chaos
    from harness.chaos.clusterreport import lines, table
    from harness.system.netlab import available
    faults = ["leader-kill", "kb-owner-kill", "postgres-restart", "gateway-kill"]
    if available() is None:
        faults.append("partition")
    report = await run_cluster_chaos(players=4, sse=2, seed=3, faults=faults, quiet_s=2.0)
    print("\n".join([*lines(report), *table(report)]))
    assert [f.name for f in report.faults] == faults
    assert report.run is not None and report.run.expected > 0 and report.run.lost == 0
    assert report.run.duplicated == 0 and report.run.out_of_order == 0 and report.run.diverged == 0
    assert report.ledger is not None and report.ledger.acknowledged > 0 and report.ledger.ok, report.ledger
    assert report.ledger.commits_checked > 0
    assert report.chains is not None and report.chains.expected > 0 and not report.chains.lost
    assert all(f.next_commit_s is not None and f.live_again_s is not None and f.healed_live_s is not None
               for f in report.faults), "every fault was followed by a commit and every chain came back"
    assert report.ok
