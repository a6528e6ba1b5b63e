"""The bench's measuring parts: rounds and their spread, the settings a process really ran with, the handshake floor."""
from __future__ import annotations

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from harness.bench.floors.handshake import create_app
from harness.bench.kit import Run, count_missing, cpu_quiet
from harness.report import process_settings, render, verdict_rows
from harness.rounds import Rounds
from shared.auth import issue_token
from shared.config import Settings


def test_the_verdict_is_on_the_median_and_the_range_is_shown() -> None:
    rounds = Rounds()
    for value in (1.30, 1.05, 1.08):  # one noisy round must not decide it
        rounds.add("cpu_vs_forwarder", value)
    assert rounds.median("cpu_vs_forwarder") == 1.08
    assert rounds.spread("cpu_vs_forwarder") == "1.08 (min 1.05, max 1.30, 3 rounds)"
    row = next(r for r in verdict_rows({"cpu_vs_forwarder": 1.08}, rounds) if "forwarder" in r)
    assert "1.08 (min 1.05, max 1.30, 3 rounds)" in row and "| met |" in row
    rounds.add("cpu_vs_forwarder", 1.5)
    rounds.add("cpu_vs_forwarder", 1.6)
    row = next(r for r in verdict_rows({"cpu_vs_forwarder": rounds.median("cpu_vs_forwarder")}, rounds)
               if "forwarder" in r)
    assert "**not met**" in row


def test_settings_are_read_from_the_environment_a_process_ran_with() -> None:
    env = {"GAIA_PRESENCE_RENEW_S": "2", "GAIA_NATS_URL": "nats://elsewhere:1", "GAIA_ENV": "dev",
           "GAIA_HANDSHAKE_BURST": str(Settings().handshake_burst), "PATH": "/bin"}
    assert process_settings(env) == "GAIA_PRESENCE_RENEW_S=2"  # wiring and unchanged defaults left out
    assert process_settings({}) == "none"


def test_secrets_never_reach_the_page() -> None:
    env = {"GAIA_ADMIN_TOKEN": "hush", "GAIA_JWT_SECRET": "x" * 40, "GAIA_KB_API_KEY": "k" * 40,
           "GAIA_STREAM_SWEEP_S": "1"}
    assert process_settings(env) == "GAIA_STREAM_SWEEP_S=1"


class BusyProcess:
    """Stands in for a psutil.Process that never gets quiet."""

    pid = 1

    def __init__(self) -> None:
        self.used = 0.0

    def cpu_times(self) -> tuple[float, float]:
        self.used += 1.0  # a full core whenever asked
        return type("T", (), {"user": self.used, "system": 0.0})()  # type: ignore[return-value]

    def name(self) -> str:
        return "busy"


async def test_a_phase_that_never_got_quiet_says_so_and_its_verdicts_read_unquiet() -> None:
    run = Run()
    noisy = run.phase("noisy")
    assert not await cpu_quiet([BusyProcess()], window=0.01, timeout=0.05)  # type: ignore[list-item]
    run.rounds.add("cpu_vs_forwarder", 1.0)
    quiet = run.phase("quiet")
    run.rounds.add("crowd_p99_ms", 10.0)
    run.close_phase()
    assert noisy.unquiet == 1 and noisy.figures == {"cpu_vs_forwarder"}
    assert quiet.unquiet == 0 and quiet.figures == {"crowd_p99_ms"}
    page = render(run.phases, run.rounds.medians(), "bench", 1.0, [], None, run.rounds)
    forwarder = next(r for r in page.splitlines() if r.startswith("| gateway CPU per delivery / the minimal"))
    crowd = next(r for r in page.splitlines() if r.startswith("| the same as shipped"))
    assert "unquiet (met)" in forwarder and "| met |" in crowd
    assert "## noisy (unquiet)" in page and "**Unquiet**" in page


def test_missing_deliveries_are_counted_on_their_phase_and_fail_the_run() -> None:
    run = Run()
    first = run.phase("first")
    run.count_missing("line a", 100, 100)
    second = run.phase("second")
    count_missing(run.failures, "line b", 50, 3)
    assert (first.expected, first.missing, second.expected, second.missing) == (100, 0, 50, 3)
    assert run.missing == 3 and run.failures == ["line b: 3 of 50 deliveries never arrived"]
    assert "Deliveries missing: 3 of 50 counted." in second.note()


async def test_the_handshake_floor_checks_the_token_and_writes_frames_of_the_sizes_it_is_told() -> None:
    settings = Settings.from_env()
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(server.make_url("/sizes"), json={"connected": [150], "snapshot": [4000, 6000]}) as r:
                assert r.status == 200
            bad = server.make_url("/ws/experience?experience=x&token=not-a-token")
            async with http.get(bad) as refused:
                assert refused.status == 401
            for want in (4000, 6000):
                url = server.make_url(f"/ws/experience?experience=x&token={issue_token(settings, 'ann')}")
                async with http.ws_connect(url) as ws:
                    first, second = await ws.receive_str(), await ws.receive_str()
                    assert orjson.loads(first)["type"] == "connected" and len(first) == 150
                    assert orjson.loads(second)["type"] == "area_of_interest" and len(second) == want
    finally:
        await server.close()
