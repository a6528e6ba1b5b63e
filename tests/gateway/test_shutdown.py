"""Shutdown is prompt every time: no background loop swallows its cancellation."""
from __future__ import annotations

import asyncio

from gateway.kbclient import KbClient
from gateway.presence import PresenceReporter
from shared.config import Settings
from shared.service.tasks import wait_event


async def test_a_wake_set_right_before_the_cancel_never_keeps_the_presence_loop_running() -> None:
    """Shutdown flushes (setting the wake event) and cancels at once: the loop must stop every time."""
    kb = KbClient(Settings(kb_url="http://127.0.0.1:9"))
    try:
        for _ in range(300):
            reporter = PresenceReporter(kb, "gw", renew_s=30.0)
            task = asyncio.create_task(reporter.run())
            await asyncio.sleep(0)
            reporter._wake.set()
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=1.0)
            assert done, "the presence loop swallowed its cancellation"
    finally:
        await kb.close()


async def test_wait_event_reports_set_and_timeout_and_passes_cancellation_on() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 1.0) is True
    waiter = asyncio.create_task(wait_event(asyncio.Event(), 10.0))
    await asyncio.sleep(0)
    waiter.cancel()
    done, _ = await asyncio.wait([waiter], timeout=1.0)
    assert done and waiter.cancelled()


async def test_sigterm_with_a_session_exits_promptly_every_time(tmp_path) -> None:
    """Five restarts in a row: each SIGTERM closes the session with 1001 and the process is gone well
    inside the 5 s that a swallowed cancellation used to cost (the bound is generous on purpose)."""
    import signal
    import time

    from harness.client.ws import GaiaClient
    from harness.system.procs import NatsServer, ServiceProcess, free_port, service_env, wait_healthy
    from shared.auth import issue_token
    from tests.helpers import EXPERIENCE

    server = NatsServer(store_dir=str(tmp_path / "nats")).start()
    kb_port, gw_port = free_port(), free_port()
    env = service_env(server.url, kb_port, str(tmp_path / "kb.sqlite3"))
    kb = ServiceProcess("kb", kb_port, env, nats_password=server.passwords["kb"]).start()
    gateway = ServiceProcess("gateway", gw_port, env, nats_password=server.passwords["gateway"])
    try:
        for _ in range(5):
            gateway.start()
            await wait_healthy(gateway.url)
            client = GaiaClient(gateway.url, issue_token(Settings(), "stayer"), EXPERIENCE)
            await client.connect()
            await client.next("area_of_interest")
            started = time.monotonic()
            gateway.proc.send_signal(signal.SIGTERM)
            assert await client.wait_closed() == 1001
            await asyncio.get_running_loop().run_in_executor(None, gateway.proc.wait, 10)
            assert gateway.proc.returncode == 0 and time.monotonic() - started < 3.0
            await client.close()
    finally:
        gateway.stop()
        kb.stop()
        server.cleanup()


async def test_shutdown_tells_every_session_1001_without_waiting_for_their_answers(
        aiohttp_server, gateway_settings, token, monkeypatch, nats_server) -> None:
    """At shutdown each session's close frame is written and its connection let go, batch after batch: no
    session waits for its client's close frame. With any wait for an answer this would hang: the clients
    here never answer, and that wait is made endless. No session sends an UNSUB of its own either: the
    subscriptions end with the connection, closed at the end."""
    from gateway.app import close_all_sessions, create_app
    from gateway.keys import NATS, REGISTRY
    from harness.client.rawws import TEXT, RawSocket
    from shared.subjects import experience_updates, live_subject
    from tests.helpers import EXPERIENCE, eventually

    monkeypatch.setattr("gateway.ws.writer.CLOSE_TIMEOUT_S", 600.0)
    monkeypatch.setattr("gateway.app.SHUTDOWN_BATCH", 7)  # 20 sessions: three batches
    server = await aiohttp_server(create_app(gateway_settings, "gwstop"))
    assert await server.app[NATS].wait_ready(10)
    base = str(server.make_url("")).rstrip("/")
    socks = [await RawSocket.open(base, token(f"stayer{i}"), EXPERIENCE) for i in range(20)]
    for sock in socks:
        opcode, payload = await sock.next_frame()
        assert opcode == TEXT and b'"connected"' in payload
    await eventually(lambda: len(server.app[REGISTRY].sessions) == 20)
    await asyncio.wait_for(close_all_sessions(server.app), 30)
    codes = await asyncio.gather(*(asyncio.wait_for(sock.close_code(), 10) for sock in socks))
    assert codes == [1001] * 20
    await eventually(lambda: not server.app[REGISTRY].sessions)  # every session ended, none answered
    live = live_subject(experience_updates(EXPERIENCE))
    assert server.app[NATS].nc is not None
    await server.app[NATS].nc.flush()  # whatever the gateway sent (an UNSUB) the server has read
    assert sum(s == live for s in await nats_server.subscriptions()) == 20, "no UNSUB per session when stopping"
    await server.close()

    async def gone() -> bool:  # the server drops them once it has seen the connection close
        return not any(s == live for s in await nats_server.subscriptions())
    await eventually(gone)
