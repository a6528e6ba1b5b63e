"""Gone means gone after a gateway restart: what every game's roster shows once gateway processes were SIGKILLed.

Real processes: kb, and a gateway supervisor with two workers. After each kill (one worker, every
worker, the whole gateway, the supervisor alone) a player who resumes and then closes cleanly leaves
every roster at once, and a player whose phone vanished leaves after the grace counted from the
restart: not after the dead process's renewals time out (GAIA_PRESENCE_RENEW_S x 3 = 45 s, then the
grace), which is what a player saw before incarnations (kb/presence.py, shared/incarnations.py).
"""
from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import psutil
import pytest

from harness.client.ws import GaiaClient
from harness.system.procs import ServiceProcess, kb_and_gateway, wait_healthy
from shared.auth import issue_token
from shared.config import Settings
from tests.helpers import EXPERIENCE, eventually

GRACE_S = 4.0
FAULTS = ("one_worker", "every_worker", "whole_gateway", "supervisor_alone")


def workers(gateway: ServiceProcess) -> dict[int, psutil.Process]:
    """The supervisor's workers by index (from their `--id <slot>-w<index>`)."""
    assert gateway.proc is not None
    found = {}
    for child in psutil.Process(gateway.proc.pid).children():
        with_id = child.cmdline()
        found[int(with_id[with_id.index("--id") + 1].rsplit("-w", 1)[1])] = child
    return found


def worker_of(client: GaiaClient) -> int:
    """The worker a client's session is on: its connection id starts with the worker's gateway id."""
    assert client.connected is not None
    return int(client.connected["connection_id"].rsplit("-", 1)[0].rsplit("-w", 1)[1])


async def kb_roster(kb: ServiceProcess, key: str, viewer: str) -> set[str]:
    """Who kb lists as present, as a snapshot (`get_state`) shows it."""
    async with aiohttp.ClientSession(headers={"X-API-Key": key}) as http:
        async with http.get(f"{kb.url}/experiences/{EXPERIENCE}/players/{viewer}/state") as resp:
            assert resp.status == 200, await resp.text()
            return {p["user_id"] for p in (await resp.json())["players"]}


async def on_one_worker(gateway: ServiceProcess, settings: Settings) -> tuple[GaiaClient, GaiaClient]:
    """A closer and a vanisher whose sessions share one worker (the kernel spreads connects over both)."""
    closer = GaiaClient(gateway.url, issue_token(settings, "closer"), EXPERIENCE)
    await closer.connect()
    await closer.next("area_of_interest")
    for _ in range(50):
        vanisher = GaiaClient(gateway.url, issue_token(settings, "vanisher"), EXPERIENCE)
        await vanisher.connect()
        await vanisher.next("area_of_interest")
        if worker_of(vanisher) == worker_of(closer):
            return closer, vanisher
        await vanisher.close()
    raise AssertionError("50 connects never reached the closer's worker")


async def kill(fault: str, gateway: ServiceProcess, on: int) -> list[psutil.Process]:
    """Inject the fault; the processes that must be gone before the gateway serves again."""
    assert gateway.proc is not None
    supervisor, running = psutil.Process(gateway.proc.pid), workers(gateway)
    victims = {"one_worker": [running[on]], "every_worker": list(running.values()),
               "whole_gateway": [supervisor, *running.values()], "supervisor_alone": [supervisor]}[fault]
    for proc in victims:
        proc.kill()
    return [supervisor, *running.values()] if fault in ("whole_gateway", "supervisor_alone") else victims


async def back_up(fault: str, gateway: ServiceProcess, gone: list[psutil.Process]) -> None:
    """Wait until the killed processes are gone (no orphan), start the supervisor again if it died, and
    until both workers serve."""
    loop = asyncio.get_running_loop()
    _, alive = await loop.run_in_executor(None, lambda: psutil.wait_procs(gone, timeout=20))
    assert not alive, f"orphans outlived their supervisor: {[p.pid for p in alive]}"
    if fault in ("whole_gateway", "supervisor_alone"):
        assert gateway.proc is not None
        gateway.proc.wait(5)
        await loop.run_in_executor(None, gateway.start)
    await eventually(lambda: len(workers(gateway)) == 2 and {w.pid for w in workers(gateway).values()}.isdisjoint(
        p.pid for p in gone), timeout=30)
    await wait_healthy(gateway.url)


@pytest.mark.parametrize("fault", FAULTS)
async def test_unity_roster_after_a_gateway_kill_a_clean_close_leaves_at_once_a_vanished_phone_after_the_grace(
        fault: str, nats_server: Any, tmp_path: Any) -> None:
    kb, gateway = kb_and_gateway(nats_server, tmp_path, gateway_workers="2", presence_grace_s=str(GRACE_S))
    settings = Settings.from_env(gateway.env)
    closer = vanisher = observer = None
    try:
        await wait_healthy(kb.url)
        await eventually(lambda: len(workers(gateway)) == 2, timeout=30)
        await wait_healthy(gateway.url)
        closer, vanisher = await on_one_worker(gateway, settings)
        await eventually(lambda: _listed(kb, settings, {"closer", "vanisher"}))  # once the presence window ends
        gone = await kill(fault, gateway, worker_of(closer))
        await back_up(fault, gateway, gone)
        await closer.connect(last_seq=closer.last_seq, wait_for="connected")
        observer = GaiaClient(gateway.url, issue_token(settings, "observer"), EXPERIENCE)
        await observer.connect()
        await observer.next("area_of_interest")
        await closer.close()
        # Before incarnations both stayed for the 45 s the dead process's renewals took to time out.
        await eventually(lambda: _absent(kb, settings, observer, "closer"), timeout=3)
        await eventually(lambda: _absent(kb, settings, observer, "vanisher"), timeout=GRACE_S + 8)
    finally:
        for client in (closer, vanisher, observer):
            if client is not None:
                await client.close()
        gateway.stop()
        kb.stop()


async def _listed(kb: ServiceProcess, settings: Settings, users: set[str]) -> bool:
    return users <= await kb_roster(kb, settings.kb_api_key, "closer")


async def _absent(kb: ServiceProcess, settings: Settings, observer: GaiaClient, user: str) -> bool:
    """Gone from kb's snapshot and from what the observer's game shows."""
    return user not in await kb_roster(kb, settings.kb_api_key, "observer") and user not in observer.roster
