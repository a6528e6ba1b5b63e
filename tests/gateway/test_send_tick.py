"""The send tick on (GAIA_SEND_TICK_MS=50): every delivery guarantee holds, frames of a tick go in one write.

The guarantees' own tests run twice, as shipped and with the tick on (marked `also_with_send_tick`,
tests/conftest.py); the tests below add what only the tick does.
"""
from __future__ import annotations

import aiohttp
import pytest

from gateway.keys import STREAMS, TICKS
from shared.natsconn import connect_tool
from tests.helpers import ADMIN, EXPERIENCE, SEND_TICK_MS, broadcast, eventually


@pytest.fixture
def send_tick_ms() -> float:
    """Every gateway of this module ticks."""
    return SEND_TICK_MS


async def test_events_of_one_tick_reach_a_socket_in_order_in_one_write(players, gateway_server, nats_server) -> None:
    assert gateway_server.app[TICKS].for_experience(EXPERIENCE) is not None
    alice, bob = await players("alice"), await players("bob")
    nc = await connect_tool(nats_server.url_as("kb"))
    js = nc.jetstream()
    seqs = [(await js.publish(f"world.updates.exp.{EXPERIENCE}", broadcast(100 + i, f"n{i}"))).seq for i in range(30)]
    await nc.close()
    for client in (alice, bob):
        await eventually(lambda: seqs[-1] in client.seqs)
        assert [s for s in client.seqs if s in seqs] == seqs, "every event, once, in stream order"
        assert client.seqs == sorted(set(client.seqs)), "the whole chain in order, nothing twice"
    timings = gateway_server.app[STREAMS].reads.validator.timings.recent(seqs[0] - 1)
    by_seq = {row[0]: row for row in timings}
    assert all(by_seq[s][5] == 2 for s in seqs), "each event written once to each of the two sockets"
    # Published back to back, 30 events span at most a few ticks: each socket's writes are one per
    # tick, so many events share the exact instant of their last write.
    assert len({by_seq[s][4] for s in seqs}) < len(seqs) // 3


async def test_event_timings_endpoint_gives_each_events_stamps_in_order(players, gateway_server) -> None:
    alice, _ = await players("alice"), await players("bob")
    step = await alice.act("go", destination="main_room")
    update = await alice.next("world_update")
    assert update["snapshot_version"] == step["snapshot_version"]
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway_server.make_url("/debug/event-timings"), params={"after": update["seq"] - 1},
                            headers=ADMIN) as r:
            body = await r.json()
        async with http.get(gateway_server.make_url("/debug/event-timings"), params={"after": "x"},
                            headers=ADMIN) as bad:
            assert bad.status == 400
    row = dict(zip(body["fields"], next(e for e in body["events"] if e[0] == update["seq"])))
    assert 0 < row["committed"] <= row["received"] + 0.001  # kb's stamp has millisecond resolution
    assert row["received"] <= row["first_write"] <= row["last_write"]
    assert row["last_write"] - row["received"] < 1.0 and row["writes"] == 2
