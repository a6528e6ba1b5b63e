"""A resume the gateway cannot serve at once (NATS away, or the stream's first reads failing, as on a
cluster right after a gateway restart) is answered with `resumed` when the stream opens later.

Before: the sweeper's reopen caught the client up but never said `resumed`, so a client waiting for
it (the restart bench's waits 60 s) gave up and reconnected: the occasional 62 s cluster restart.
"""
from __future__ import annotations

import aiohttp

from harness.client.ws import GaiaClient
from tests.helpers import eventually


async def degraded(gateway_server) -> bool:
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway_server.make_url("/health")) as resp:
            return (await resp.json())["status"] == "degraded"


async def test_a_resume_while_nats_is_away_gets_resumed_and_what_it_missed_once_nats_returns(
        players, nats_server, gateway_server) -> None:
    alice = await players("alice")
    bob = await players("bob")
    assert (await bob.act("go", destination="main_room"))["success"]
    await alice.next("world_update", timeout=10)
    cursor = alice.last_seq
    assert cursor is not None
    await alice.drop()

    nats_server.stop()
    await eventually(lambda: degraded(gateway_server))
    assert (await bob.act("go", destination="entrance"))["success"]  # committed; waits in kb's outbox
    again = GaiaClient(alice.base_url, alice.token, alice.experience)
    await again.connect(last_seq=cursor)  # accepted while the stream cannot open
    nats_server.start()

    resumed = await again.next("resumed", timeout=20)
    assert resumed["from_seq"] == cursor + 1, resumed
    missed = await again.next("world_update", timeout=20)  # replayed, or live once kb's outbox drains
    assert missed["seq"] > cursor and missed["actor_id"] == "bob", again.frames
    assert (await bob.act("go", destination="main_room"))["success"]
    live = await again.next("world_update", timeout=10)
    assert live["seq"] > missed["seq"]
    assert again.seqs == sorted(set(again.seqs))
    assert not [f for f in again.frames if f.get("type") in ("area_of_interest", "resync_required")], \
        "a replay, not a fresh snapshot"
    await again.close()
