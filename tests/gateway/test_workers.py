"""Every core: gateway workers sharing one port, and per-user limits that hold across processes."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from typing import Any

import aiohttp
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app as create_gateway
from gateway.keys import NATS as GW_NATS
from harness.client.ws import GaiaClient
from harness.system.procs import free_port, kb_and_gateway, service_env, stop_process, wait_for_port, wait_healthy
from kb.app import create_app as create_kb
from kb.keys import NATS as KB_NATS
from shared.auth import issue_token
from shared.config import Settings
from shared.schemas.errors import CloseCode
from tests.helpers import EXPERIENCE, eventually


@pytest.fixture
async def two_gateways(aiohttp_server: Any, settings: Any, nats_server: Any) -> list[str]:
    """Two gateway processes' worth of apps on one kb, each user allowed two sessions: their base URLs."""
    limited = replace(settings, max_connections_per_user=2)
    kb = await aiohttp_server(create_kb(limited))
    assert await kb.app[KB_NATS].wait_ready(10)
    gw_settings = replace(limited, kb_url=str(kb.make_url("")).rstrip("/"), nats_user="gateway",
                          nats_password=nats_server.passwords["gateway"])
    bases = []
    for name in ("gwa", "gwb"):
        server = await aiohttp_server(create_gateway(gw_settings, name))
        assert await server.app[GW_NATS].wait_ready(10)
        bases.append(str(server.make_url("")).rstrip("/"))
    return bases


async def test_a_users_session_limit_holds_across_gateway_processes(two_gateways: list[str], settings: Any) -> None:
    first, second = two_gateways
    token = issue_token(settings, "alice")
    opened = [GaiaClient(first, token, EXPERIENCE), GaiaClient(first, token, EXPERIENCE)]
    for client in opened:
        await client.connect()
        await client.next("area_of_interest")
    third = GaiaClient(second, token, EXPERIENCE)  # another process: its own registry has no alice
    await third.connect()
    await eventually(lambda: third.close_code is not None)
    assert third.close_code == CloseCode.TOO_MANY_SESSIONS
    # A resume asks kb for no snapshot: the presence report counts it, and kb refuses it there.
    resuming = GaiaClient(second, token, EXPERIENCE)
    await resuming.connect(last_seq=0)
    await eventually(lambda: resuming.close_code is not None)
    assert resuming.close_code == CloseCode.TOO_MANY_SESSIONS
    await opened[0].close()  # one of the two leaves: room for one more, on either process
    await eventually(lambda: _connects(second, token))
    await opened[1].close()


async def _connects(base: str, token: str) -> bool:
    client = GaiaClient(base, token, EXPERIENCE)
    await client.connect()
    try:
        await client.next("area_of_interest", timeout=5)
        return True
    except Exception:  # noqa: BLE001 - refused while kb still counts the left session
        return False
    finally:
        await client.close()


async def test_workers_share_one_port_and_close_their_sessions_with_1001_on_sigterm(
        nats_server: Any, tmp_path: Any, settings: Any) -> None:
    kb, gateway = kb_and_gateway(nats_server, tmp_path, gateway_workers="2")
    try:
        await wait_healthy(kb.url)
        await wait_healthy(gateway.url)
        seen: set[str] = set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async def both_answered() -> bool:
                """One more request on a new connection: the kernel spreads them over the listening workers."""
                async with http.get(f"{gateway.url}/health") as resp:
                    seen.add((await resp.json())["gateway_id"])
                return len(seen) == 2
            # The first worker to listen answers wait_healthy; the other may still be starting.
            await eventually(both_answered, timeout=30, interval=0.01)
        assert all(g.endswith(("-w0", "-w1")) for g in seen)
        clients = [GaiaClient(gateway.url, issue_token(settings, f"p{i}"), EXPERIENCE) for i in range(6)]
        for client in clients:
            await client.connect()
            await client.next("area_of_interest")
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, gateway.proc.wait, 30)
        assert gateway.proc.returncode == 0
        for client in clients:
            await eventually(lambda: client.close_code is not None)
            assert client.close_code == CloseCode.GOING_AWAY
    finally:
        gateway.stop()
        kb.stop()


async def test_a_worker_that_dies_is_started_again_and_the_port_keeps_serving(nats_server: Any, tmp_path: Any) -> None:
    kb, gateway = kb_and_gateway(nats_server, tmp_path, gateway_workers="2")
    try:
        await wait_healthy(kb.url)
        await wait_healthy(gateway.url)
        assert gateway.proc is not None
        supervisor = psutil.Process(gateway.proc.pid)
        await eventually(lambda: len(supervisor.children()) == 2)
        victim = supervisor.children()[0]
        victim.kill()  # a crash, as far as the supervisor can tell
        await eventually(lambda: len(supervisor.children()) == 2 and victim.pid not in
                         {c.pid for c in supervisor.children()}, timeout=15)
        await wait_healthy(gateway.url)
        assert gateway.proc.poll() is None  # the supervisor itself stayed up
    finally:
        gateway.stop()
        kb.stop()


def test_a_supervisor_refuses_a_port_something_already_listens_on(nats_server: Any, tmp_path: Any) -> None:
    """Workers left from a supervisor that was SIGKILLed would share the port (SO_REUSEPORT) with new ones
    nobody manages: a supervisor started again refuses the port instead (as it does another program's)."""
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as a worker of ours listens
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        proc = subprocess.run([sys.executable, "-m", "gateway", "--port", str(port)],
                              env=_gateway_env(nats_server, tmp_path), timeout=60, capture_output=True, text=True)
    finally:
        squatter.close()
    assert proc.returncode == 1
    assert "already in use" in proc.stderr and "worker 0 started" not in proc.stderr


def test_workers_that_keep_dying_as_they_start_stop_the_supervisor_with_an_error(nats_server: Any,
                                                                                 tmp_path: Any) -> None:
    # An address this machine does not have (TEST-NET-1): the supervisor starts, no worker can bind.
    proc = subprocess.run([sys.executable, "-m", "gateway", "--host", "192.0.2.1", "--port", str(free_port())],
                          env=_gateway_env(nats_server, tmp_path), timeout=60, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "keep dying as they start" in proc.stderr


async def test_workers_die_with_their_supervisor(nats_server: Any, tmp_path: Any) -> None:
    """SIGKILL to the supervisor alone: its workers get SIGTERM (PR_SET_PDEATHSIG), close and exit."""
    kb, gateway = kb_and_gateway(nats_server, tmp_path, gateway_workers="2")
    try:
        assert gateway.proc is not None
        supervisor = psutil.Process(gateway.proc.pid)
        await eventually(lambda: len(supervisor.children()) == 2, timeout=30)
        children = supervisor.children()
        supervisor.kill()
        loop = asyncio.get_running_loop()
        _, alive = await loop.run_in_executor(None, lambda: psutil.wait_procs(children, timeout=20))
        assert not alive, "workers outlived their supervisor"
    finally:
        gateway.stop()
        kb.stop()


def _gateway_env(nats_server: Any, tmp_path: Any) -> dict[str, str]:
    env = service_env(nats_server.url, free_port(), str(tmp_path / "kb.sqlite3"), gateway_workers="2")
    return {**os.environ, **env, "GAIA_NATS_USER": "gateway", "GAIA_NATS_PASSWORD": nats_server.passwords["gateway"]}


async def test_narrator_slots_and_metrics_count_over_every_worker(nats_server: Any, tmp_path: Any) -> None:
    """GAIA_NARRATOR_MAX_INFLIGHT=1 holds over two workers (the stand-in never has two stories open), and a
    scrape of either worker counts the stories of both (prometheus-client's multiprocess files)."""
    model_port = free_port()
    model = subprocess.Popen([sys.executable, "-m", "harness.bench.floors.pacedllm", "--port", str(model_port),
                              "--first-token-s", "0.2", "--tokens-per-s", "40"])
    kb, gateway = kb_and_gateway(nats_server, tmp_path, gateway_workers="2", narrator_model="paced",
                                 narrator_url=f"http://127.0.0.1:{model_port}/v1", narrator_max_inflight="1",
                                 narrator_first_token_s="60", narrator_answer_s="60",
                                 narrator_sentences="0")  # whole answers: each ends before the next is asked
    chats = 10
    try:
        wait_for_port(model_port, proc=model)
        await wait_healthy(gateway.url)
        settings = Settings()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async def chat(i: int) -> dict[str, Any]:  # each on a connection of its own: the kernel spreads them
                async with http.post(f"{gateway.url}/chat/unified", headers={
                        "Authorization": f"Bearer {issue_token(settings, f'w{i}')}"},
                        json={"message": "look around", "experience": EXPERIENCE, "stream": False}) as resp:
                    return dict(await resp.json())
            answers = await asyncio.gather(*(chat(i) for i in range(chats)))
            assert [a["narrator"] for a in answers] == ["model"] * chats, answers
            async with http.get(f"http://127.0.0.1:{model_port}/stats") as resp:
                assert (await resp.json())["most_at_once"] == 1
            for _ in range(4):  # whichever worker answers the scrape
                async with http.get(f"{gateway.url}/metrics", headers=gateway.admin_headers) as resp:
                    samples = {s.name + str(sorted(s.labels.items())): s.value
                               for family in text_string_to_metric_families(await resp.text()) for s in family.samples}
                narrated = {k: v for k, v in samples.items() if "narrator" in k}
                assert narrated.get("gaia_gateway_narrator_answers_total[('narrator', 'model'), ('reason', '')]") == \
                    chats, narrated
                assert samples["gaia_gateway_narrator_requests_in_flight[]"] == 0
    finally:
        gateway.stop()
        kb.stop()
        stop_process(model)
