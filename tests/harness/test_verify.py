"""The harness's checks are as strong as their names: an injected loss or divergence makes them fail."""
from __future__ import annotations

import copy
import random

import aiohttp

from harness.checks.verify import RunReport, check
from harness.client.player import SimPlayer
from shared.config import Settings
from tests.helpers import EXPERIENCE, outbox_drained


async def kb_state(target: "Running", user: str) -> dict:
    """kb's area_of_interest for a player, as it stands."""
    headers = {"X-API-Key": Settings.from_env().kb_api_key}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{target.kb_url}/experiences/{EXPERIENCE}/players/{user}/state") as resp:
            return await resp.json()


class Running:
    """The test's real system as the harness's Target."""

    def __init__(self, nats_url: str, kb_url: str, gateway_url: str) -> None:
        self.nats_url, self.kb_url, self.gateway_url = nats_url, kb_url, gateway_url


async def two_players(gateway_server, kb_server, token, nats_server) -> tuple[Running, SimPlayer, SimPlayer]:
    """Alice watches while Bob walks twice; both have everything when this returns."""
    target = Running(nats_server.url_as("gateway"), str(kb_server.make_url("")).rstrip("/"), str(gateway_server.make_url("")).rstrip("/"))
    alice, bob = (SimPlayer([target.gateway_url], token(u), EXPERIENCE, random.Random(1)) for u in ("alice", "bob"))
    for sim in (alice, bob):
        await sim.client.connect()
        await sim.client.next("area_of_interest")
    for place in ("main_room", "counter"):
        result = await bob.client.act("go", destination=place)
    await outbox_drained(kb_server)
    while alice.client.world.version < result["snapshot_version"]:
        await alice.client.next("world_update")
    return target, alice, bob


async def test_check_passes_a_clean_run_and_counts_a_loss_before_the_first_arrival(
        gateway_server, kb_server, token, nats_server) -> None:
    target, alice, bob = await two_players(gateway_server, kb_server, token, nats_server)
    clean = RunReport(players=2, duration_s=0)
    await check(target, [alice, bob], clean)
    assert clean.ok and clean.expected >= 4 and clean.lost == 0, clean.lines()
    # The fault: alice's first world_update never reached her (as if the gateway dropped it).
    first = next(f for f in alice.client.frames if f.get("type") == "world_update")
    alice.client.frames.remove(first)
    alice.client.seqs.remove(first["seq"])
    faulty = RunReport(players=2, duration_s=0)
    await check(target, [alice, bob], faulty)
    assert faulty.lost == 1 and not faulty.ok, faulty.lines()
    for sim in (alice, bob):
        await sim.client.close()


async def test_a_world_that_diverged_is_caught_before_any_refresh(gateway_server, kb_server, token, nats_server) -> None:
    target, alice, bob = await two_players(gateway_server, kb_server, token, nats_server)
    alice.client.world.view["player"]["current_area"] = "garden"  # a delta applied wrong
    report = RunReport(players=2, duration_s=0)
    await check(target, [alice, bob], report)
    assert report.diverged == 1 and not report.ok, report.lines()
    assert alice.client.world.view["player"]["current_area"] == "garden"  # nobody refreshed it to hide the fault
    for sim in (alice, bob):
        await sim.client.close()


async def test_a_needless_resync_fails_the_check(gateway_server, kb_server, token, nats_server) -> None:
    target, alice, bob = await two_players(gateway_server, kb_server, token, nats_server)
    # The fault: after her first event the gateway said resync_required and sent a snapshot instead
    # of the next event, though her cursor was one event behind and the stream held it.
    frames = alice.client.frames
    first = next(i for i, f in enumerate(frames) if f.get("type") == "world_update")
    later = [f for f in frames[first + 1:] if "seq" in f]
    for frame in later:
        frames.remove(frame)
        alice.client.seqs.remove(frame["seq"])
    view = await kb_state(target, "alice")  # kb's own snapshot, at the version of bob's last step
    assert view["snapshot_version"] == max(f["snapshot_version"] for f in later if f.get("type") == "world_update")
    frames.insert(first + 1, {"type": "resync_required", "reason": "too far behind"})
    frames.insert(first + 2, {"type": "area_of_interest", **view})
    report = RunReport(players=2, duration_s=0)
    await check(target, [alice, bob], report)
    assert report.needless == 1 and report.lost == 0 and not report.ok, report.lines()
    assert report.replaced == len(later), report.lines()
    assert report.snapshots_checked == 1 and not report.snapshot_mismatches, report.lines()
    # The same resync with a snapshot that is not the world at its version (an item kept that was taken).
    wrong = copy.deepcopy(view)
    wrong["player"]["inventory"].append({"instance_id": "phantom_1", "name": "phantom"})
    frames[first + 2] = {"type": "area_of_interest", **wrong}
    report = RunReport(players=2, duration_s=0)
    await check(target, [alice, bob], report)
    assert len(report.snapshot_mismatches) == 1 and not report.ok, report.lines()
    for sim in (alice, bob):
        await sim.client.close()


async def test_a_chain_that_lost_everything_is_caught(gateway_server, kb_server, token, nats_server) -> None:
    target, alice, bob = await two_players(gateway_server, kb_server, token, nats_server)
    events = [f for f in alice.client.frames if "seq" in f]
    for frame in events:  # she kept her snapshot and received nothing after it
        alice.client.frames.remove(frame)
    alice.client.seqs.clear()
    report = RunReport(players=2, duration_s=0)
    await check(target, [alice, bob], report)
    assert report.lost == len(events) >= 2 and not report.ok, report.lines()
    for sim in (alice, bob):
        await sim.client.close()
