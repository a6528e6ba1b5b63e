"""The transactional outbox: a crash between commit and publish loses nothing and duplicates nothing."""
from __future__ import annotations

import asyncio
import signal

import aiohttp
import nats
import orjson

from harness.checks.verify import subject_seqs
from harness.system.procs import NatsServer, ServiceProcess, free_port, service_env, wait_healthy
from kb.outbox import OutboxPublisher
from tests.helpers import EXPERIENCE, published_all


async def test_kb_killed_between_commit_and_publish_delivers_exactly_once_after_restart(tmp_path) -> None:
    nats_port = free_port()
    nats_server = NatsServer(store_dir=str(tmp_path / "nats"), port=nats_port)
    kb_port = free_port()
    env = service_env(nats_server.url, kb_port, str(tmp_path / "kb.sqlite3"))
    kb = ServiceProcess("kb", kb_port, env, log_path=str(tmp_path / "kb.log"),
                        nats_password=nats_server.passwords["kb"]).start()  # NATS not running yet
    try:
        await wait_healthy(kb.url, want="degraded")
        async with aiohttp.ClientSession(headers={"X-API-Key": "dev-kb-key"}) as http:
            async with http.post(f"{kb.url}/experiences/{EXPERIENCE}/actions",
                                 json={"user_id": "erin", "action": "go", "destination": "main_room"}) as r:
                assert (await r.json())["success"]
        kb.proc.send_signal(signal.SIGKILL)  # committed, never published
        kb.proc.wait()
        nats_server.start()
        kb = ServiceProcess("kb", kb_port, env, log_path=str(tmp_path / "kb.log"),
                            nats_password=nats_server.passwords["kb"]).start()
        health = await wait_healthy(kb.url)
        for _ in range(100):
            if health["outbox"]["pending"] == 0:
                break
            await asyncio.sleep(0.05)
            health = await wait_healthy(kb.url)
        seqs = await subject_seqs(nats_server.url_as("gateway"), "WORLD_UPDATES", "world.updates.exp.wylding-woods")
        assert len(seqs) == 1
        nc = await nats.connect(nats_server.url_as("operator"))
        event = orjson.loads((await nc.jetstream().get_msg("WORLD_UPDATES", seqs[0])).data)
        await nc.close()
        assert (event["base_version"], event["snapshot_version"]) == (0, 1)
    finally:
        kb.stop()
        nats_server.cleanup()


async def test_republishing_an_acknowledged_row_is_deduplicated_by_msg_id(outbox_parts) -> None:
    settings, store, link = outbox_parts
    publisher = OutboxPublisher(store, link, settings)
    payload = orjson.dumps({"type": "presence", "event": "join", "user_id": "x", "experience": EXPERIENCE})
    await store.commit(EXPERIENCE, 0, None, [("m-1", "world.updates.user.frank", payload)], 0)
    task = asyncio.create_task(publisher.run())
    publisher.notify()
    await published_all(store)
    rows = await store.published_since(-1, 0)
    await store.mark_unpublished([r.id for r in rows])  # as if kb died before recording the ack
    publisher.notify()
    await published_all(store)
    task.cancel()
    assert publisher.published == 2
    info = await link.js.stream_info("WORLD_UPDATES")
    assert info.state.messages == 1


async def test_lost_tail_of_the_stream_is_republished_on_reconnect(outbox_parts, nats_server) -> None:
    """If the bus comes back without events it acknowledged, kb's kept rows fill the hole."""
    settings, store, link = outbox_parts
    publisher = OutboxPublisher(store, link, settings)
    task = asyncio.create_task(publisher.run())
    payload = orjson.dumps({"type": "presence", "event": "join", "user_id": "x", "experience": EXPERIENCE})
    await store.commit(EXPERIENCE, 0, None, [(f"m-{i}", "world.updates.user.gina", payload) for i in range(3)], 0)
    publisher.notify()
    await published_all(store)
    operator = await nats.connect(nats_server.url_as("operator"))  # kb itself may not delete streams
    await operator.jetstream().delete_stream("WORLD_UPDATES")  # the server lost everything
    await operator.jetstream().add_stream(name="WORLD_UPDATES", subjects=["world.updates.>"], allow_direct=True)
    await operator.close()
    await publisher.recover_lost_tail()
    await published_all(store)
    task.cancel()
    info = await link.js.stream_info("WORLD_UPDATES")
    assert info.state.messages == 3 and publisher.republished == 3
