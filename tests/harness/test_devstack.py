"""`make run` on any machine: ports from the environment, two copies side by side, a busy port refused."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import psutil

from harness.system.devstack import gateway_workers
from harness.system.procs import free_port
from tests.helpers import eventually, need_model

ROOT = Path(__file__).resolve().parents[2]


def ports() -> dict[str, str]:
    return {name: str(free_port()) for name in
            ("GAIA_GATEWAY_PORT", "GAIA_KB_PORT", "GAIA_NATS_PORT", "GAIA_NATS_MONITOR_PORT")}


def start_copy(folder: Path, chosen: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, **chosen, "PYTHONPATH": str(ROOT), "GAIA_LOG_LEVEL": "WARNING"}
    env.pop("GAIA_ENV", None)
    return subprocess.Popen([sys.executable, "-m", "harness.system.devstack", "--tick", "0"], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_running(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """Read the banner until it says the system is running; the lines read so far."""
    seen = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError(f"make run exited {proc.returncode}: {''.join(seen)} {proc.stderr.read()}")
        seen.append(line)
        if line.startswith("Press Ctrl-C"):
            return "".join(seen)
    raise AssertionError("make run did not come up: " + "".join(seen))


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


async def health(port: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as resp:
        return await resp.json()


async def metrics_as_printed(banner: str) -> int:
    """GET /metrics the way the banner's curl line says (the run's admin token): its status."""
    found = re.search(r'curl -H "Authorization: Bearer (\S+)" (http://\S+/metrics)', banner)
    assert found, banner
    async with aiohttp.ClientSession() as http:
        async with http.get(found[2], headers={"Authorization": f"Bearer {found[1]}"}) as resp:
            return resp.status


async def test_two_make_run_copies_on_chosen_ports_and_a_third_on_busy_ports_is_refused(tmp_path: Path) -> None:
    first_ports, second_ports = ports(), ports()
    first, second = start_copy(tmp_path, first_ports), start_copy(tmp_path, second_ports)
    try:
        banners = [wait_running(first), wait_running(second)]
        for chosen, banner in zip((first_ports, second_ports), banners):
            assert f"http://127.0.0.1:{chosen['GAIA_GATEWAY_PORT']}/?token=" in banner
            assert f"nats://127.0.0.1:{chosen['GAIA_NATS_PORT']}" in banner
            assert (await health(chosen["GAIA_GATEWAY_PORT"]))["status"] == "healthy"
            assert (tmp_path / ".run" / chosen["GAIA_GATEWAY_PORT"] / "gateway.log").exists()
            cores = gateway_workers()
            assert f"{cores} process(es) on its port" in banner  # one gateway process per core by default
            if cores > 1:
                assert str((await health(chosen["GAIA_GATEWAY_PORT"]))["gateway_id"]).rsplit("-w", 1)[1].isdigit()
            assert await metrics_as_printed(banner) == 200, "the banner says how to reach /metrics (GAIA_ADMIN_TOKEN)"

        third = start_copy(tmp_path, {**ports(), "GAIA_KB_PORT": first_ports["GAIA_KB_PORT"]})
        _, err = third.communicate(timeout=60)
        assert third.returncode != 0
        assert f"port {first_ports['GAIA_KB_PORT']} (GAIA_KB_PORT) is in use" in err
        for chosen, proc in ((first_ports, first), (second_ports, second)):
            assert proc.poll() is None, "the running copies are left alone"
            assert (await health(chosen["GAIA_GATEWAY_PORT"]))["status"] == "healthy"
    finally:
        codes = [stop(first), stop(second)]
    assert codes == [0, 0]


async def test_make_run_stopped_with_ctrl_c_starts_again_at_once_on_the_same_ports(tmp_path: Path) -> None:
    """A stopped run leaves its ports' connections in TIME_WAIT (the servers closed them): the port
    probe binds as the servers do, so a restart straight after is not refused as "in use"."""
    chosen = ports()
    first = start_copy(tmp_path, chosen)
    try:
        wait_running(first)
        async with aiohttp.ClientSession() as http:
            url = f"ws://127.0.0.1:{chosen['GAIA_GATEWAY_PORT']}/ws/experience?experience=wylding-woods&token=x"
            async with http.ws_connect(url) as ws:  # closed by the server (4401): TIME_WAIT on its port
                await ws.receive(timeout=10)
            assert (await health(chosen["GAIA_GATEWAY_PORT"]))["status"] == "healthy"
    finally:
        assert stop(first) == 0
    again = start_copy(tmp_path, chosen)
    try:
        wait_running(again)
        assert (await health(chosen["GAIA_GATEWAY_PORT"]))["status"] == "healthy"
    finally:
        assert stop(again) == 0


async def test_llm_make_run_llm_starts_a_dead_model_server_again_and_the_stack_stays_up(tmp_path: Path) -> None:
    need_model()
    chosen = ports()
    env = {**os.environ, **chosen, "PYTHONPATH": str(ROOT), "GAIA_LOG_LEVEL": "WARNING"}
    env.pop("GAIA_ENV", None)
    run = subprocess.Popen([sys.executable, "-m", "harness.system.devstack", "--tick", "0", "--local-model"], cwd=tmp_path,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = wait_running(run, timeout=180)
        model_url = re.search(r"model\s+(http://\S+/v1)", banner)
        assert model_url, banner
        server = next(p for p in psutil.Process(run.pid).children(recursive=True)
                      if "llama_cpp.server" in " ".join(p.cmdline()))
        server.kill()  # the model server dies
        await eventually(lambda: answers(model_url.group(1)) and not server.is_running(), timeout=180, interval=0.5)
        assert run.poll() is None  # the stack stayed up
        gateway = await health(chosen["GAIA_GATEWAY_PORT"])
        assert gateway["status"] == "healthy" and gateway["narrator"]["kind"] == "model"
    finally:
        code = stop(run)
    assert code == 0
    assert "starting it again" in (run.stderr.read() if run.stderr else "")


def answers(base: str) -> bool:
    """The model server lists its model."""
    try:
        with urllib.request.urlopen(f"{base}/models", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


