"""Never lose an event: resume by cursor, resync when the cursor is gone, crash-proof bus, clean shutdown."""
from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import nats
import pytest

from harness.checks.verify import subject_seqs
from harness.client.ws import GaiaClient
from harness.system.procs import NatsServer, kb_and_gateway, wait_healthy
from shared.auth import issue_token
from shared.config import Settings
from shared.natsconn import connect_tool
from tests.helpers import EXPERIENCE, outbox_drained


@pytest.mark.also_with_send_tick
async def test_in_socket_resume_replays_exactly_what_followed_the_cursor(players, kb_server) -> None:
    alice = await players("alice")
    await outbox_drained(kb_server)  # her own join is in the stream before her steps
    for place in ("main_room", "counter", "main_room"):
        await alice.act("go", destination=place)
    await outbox_drained(kb_server)
    while len(alice.seqs) < 3:
        await alice.next("world_update")
    first, *rest = alice.seqs
    await alice.send({"type": "resume", "last_seq": first})
    resumed = await alice.next("resumed")
    # Each step is followed in the stream by a `move` about alice, which she does not get: the
    # replay passes it, so it ends one past her last world_update.
    assert resumed == {"type": "resumed", "from_seq": first + 1, "to_seq": rest[-1] + 1, "replayed": 2}
    assert alice.seqs[-2:] == rest


async def test_cursor_older_than_the_stream_gets_resync_and_a_fresh_snapshot(players, kb_server, settings, nats_server) -> None:
    alice = await players("alice")
    await alice.act("go", destination="main_room")
    await alice.next("world_update")
    cursor = alice.last_seq
    await alice.close()
    await players("alice")  # keep alice present so the next events are hers
    for place in ("counter", "main_room"):
        async with aiohttp.ClientSession(headers={"X-API-Key": settings.kb_api_key}) as http:
            await http.post(str(kb_server.make_url(f"/experiences/{EXPERIENCE}/actions")),
                            json={"user_id": "alice", "action": "go", "destination": place})
    await outbox_drained(kb_server)
    nc = await nats.connect(nats_server.url_as("operator"))
    last = (await nc.jetstream().stream_info(settings.stream_name)).state.last_seq
    await nc.jetstream().purge_stream(settings.stream_name, seq=last)  # retention ran out for older events
    await nc.close()
    back = await players("alice", last_seq=cursor, wait_state=False)
    assert (await back.next("resync_required"))["reason"]
    view = await back.next("area_of_interest")
    assert view["snapshot_version"] == 3 and view["player"]["current_area"] == "main_room"


async def test_cursor_from_the_future_gets_resync(players) -> None:
    alice = await players("alice", last_seq=10**12, wait_state=False)
    await alice.next("resync_required")
    assert (await alice.next("area_of_interest"))["snapshot_version"] == 0


async def test_bad_last_seq_closes_4400(gateway_server, token) -> None:
    url = str(gateway_server.make_url("/ws/experience")).replace("http", "ws", 1)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{url}?experience={EXPERIENCE}&token={token('a')}&last_seq=-3") as ws:
            msg = await ws.receive()
            assert msg.data == 4400


async def test_sigkilled_nats_server_loses_no_acknowledged_event(tmp_path) -> None:
    """fsync before ack (sync_interval: always): what JetStream acknowledged survives SIGKILL."""
    server = NatsServer(store_dir=str(tmp_path / "nats")).start()
    try:
        nc = await connect_tool(server.url_as("kb"))
        js = nc.jetstream()
        await js.add_stream(name="WORLD_UPDATES", subjects=["world.updates.>"], allow_direct=True)
        acked = [(await js.publish("world.updates.user.z", b'{"n": %d}' % i)).seq for i in range(200)]
        await nc.close()
        server.kill()
        server.start()
        assert await subject_seqs(server.url_as("gateway"), "WORLD_UPDATES", "world.updates.user.z") == acked
    finally:
        server.cleanup()


async def test_sigterm_drains_the_gateway_sessions_get_1001_and_it_exits_promptly(tmp_path) -> None:
    server = NatsServer(store_dir=str(tmp_path / "nats")).start()
    kb, gateway = kb_and_gateway(server, tmp_path)
    try:
        await wait_healthy(gateway.url)
        clients = [GaiaClient(gateway.url, issue_token(Settings(), f"u{i}"), EXPERIENCE) for i in range(3)]
        for client in clients:
            await client.connect()
            await client.next("area_of_interest")
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(c.wait_closed() for c in clients))
        assert codes == [1001, 1001, 1001]
        await asyncio.get_running_loop().run_in_executor(None, gateway.proc.wait, 15)
        assert gateway.proc.returncode == 0 and time.monotonic() - started < 12
        gateway.start()  # and a client comes back with its cursor
        await clients[0].connect(last_seq=clients[0].last_seq)
        for client in clients:
            await client.close()
    finally:
        gateway.stop()
        kb.stop()
        server.cleanup()


@pytest.mark.also_with_send_tick
async def test_a_resume_that_missed_nothing_gets_resumed_and_no_snapshot(players, kb_server) -> None:
    alice = await players("alice")
    await outbox_drained(kb_server)  # her own join is in the stream before her step
    await alice.act("collect_item", instance_id="umbrella_1")  # a step that moves nobody
    await outbox_drained(kb_server)
    await alice.next("world_update")
    views = len([f for f in alice.frames if f["type"] == "area_of_interest"])
    await alice.send({"type": "resume", "last_seq": alice.last_seq})
    assert await alice.next("resumed") == {"type": "resumed", "from_seq": alice.last_seq + 1,
                                           "to_seq": alice.last_seq, "replayed": 0}
    # A snapshot is sent before any event that follows it: once her next step's world_update has
    # arrived, a snapshot the resume had asked for would have arrived before it.
    step = await alice.act("drop_item", instance_id="umbrella_1")
    assert step["success"], step
    await alice.reached(step["snapshot_version"])
    assert len([f for f in alice.frames if f["type"] == "area_of_interest"]) == views
