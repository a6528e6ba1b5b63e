"""The Unity package's C# client, compiled with Mono, played like a game against real nats-server, kb and gateway."""
from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import aiohttp
import orjson
import pytest

from harness.system.local import LocalSystem
from harness.system.netproxy import SilentProxy
from harness.system.procs import free_port
from shared.auth import issue_token
from shared.config import Settings

PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "unity"
MCS, MONO = shutil.which("mcs"), shutil.which("mono")
NEEDS_MONO = ("Mono is not installed and `make test` could not install it "
              "(apt-get install mono-devel libnewtonsoft-json-cil-dev)")
mono = pytest.mark.skipif((MCS is None or MONO is None) and os.environ.get("CI") != "true", reason=NEEDS_MONO)


def newtonsoft() -> Path:
    """Debian's Newtonsoft.Json (what Unity's com.unity.nuget.newtonsoft-json provides)."""
    dll = next(Path("/usr/lib/cli").glob("Newtonsoft.Json*/Newtonsoft.Json.dll"), None)
    assert dll is not None, "libnewtonsoft-json-cil-dev is not installed"
    return dll


@pytest.fixture(scope="module")
def unity_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's Runtime/ sources and the console game, compiled as Unity would (C# 7, warnings are errors)."""
    assert MCS and MONO, NEEDS_MONO  # under CI=true a missing Mono fails here instead of skipping
    out = tmp_path_factory.mktemp("unity") / "ConsoleGame.exe"
    sources = [*sorted(str(p) for p in (PACKAGE / "Runtime").glob("*.cs")),
               str(PACKAGE / "Tests~" / "Console" / "ConsoleGame.cs")]
    built = subprocess.run([MCS, "-langversion:7", "-nologo", "-warnaserror+", f"-out:{out}", "-r:System.Net.Http",
                            f"-r:{newtonsoft()}", *sources], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    shutil.copy(newtonsoft(), out.parent)  # beside the program, as Unity ships it
    return out


class ConsoleGame:
    """The running C# game: one JSON command per line in, one JSON answer per command out."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.numbers = itertools.count(1)
        self.answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, program: Path) -> "ConsoleGame":
        proc = await asyncio.create_subprocess_exec(MONO, str(program), stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            answer = orjson.loads(line)
            future = self.answers.pop(answer["n"], None)
            if future is not None and not future.done():
                future.set_result(answer)
        for future in self.answers.values():
            future.set_exception(AssertionError(f"the game ended: {await self.proc.stderr.read()!r}"))

    async def cmd(self, cmd: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        """Run one command in the game; its answer (an `error` in it fails the test)."""
        n = next(self.numbers)
        self.answers[n] = asyncio.get_running_loop().create_future()
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps({"n": n, "cmd": cmd, **args}) + b"\n")
        await self.proc.stdin.drain()
        answer = await asyncio.wait_for(self.answers[n], timeout)
        assert "error" not in answer or cmd == "chat", f"{cmd}: {answer['error']}"
        return answer

    async def until(self, player: str, check: Callable[[dict[str, Any]], bool], what: str,
                    timeout: float = 20.0) -> dict[str, Any]:
        """Poll the player's status (one command per game frame or so) until check(status) holds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await self.cmd("status", player=player)
            if check(status):
                return status
            assert asyncio.get_running_loop().time() < deadline, f"{player}: {what} not within {timeout}s: {status}"
            await asyncio.sleep(0.05)

    async def in_sync(self, step: str, *players: str) -> None:
        """Every player's local world equals a fresh get_state, and no frame saw an exception from the package."""
        for player in players:
            compared = await self.cmd("compare", player=player)
            assert compared["equal"], f"after {step}, {player}'s world differs: {compared}"
        frames = await self.cmd("frames")
        assert frames["frame_exceptions"] == [], f"after {step}: {frames['frame_exceptions']}"

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.reader.cancel()


async def sessions(system: LocalSystem) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{system.gateway_url}/health") as resp:
        return int((await resp.json())["sessions"]["total"])


def token(user: str) -> str:
    return issue_token(Settings(), user)


@mono
async def test_unity_package_without_a_server_npc_changes_odd_ids_read_only_roster_failures_and_a_down_gateway(
        unity_program: Path) -> None:
    game = await ConsoleGame.start(unity_program)
    try:
        units = await game.cmd("units", down_url=f"http://127.0.0.1:{free_port()}")
        assert units["npc_move"] == "Applied" and units["npc_area"] == "a.b", "an area_id and no spot_id: a path update"
        assert units["npc_areas_changed"] == ["a.b", "hall"], "AreaChanged for the area left and the area entered"
        assert units["odd_ids"] == "1,0,0,0", "dots, brackets and nulls in ids are plain keys"
        assert units["roster_write"] == "NotSupportedException"
        assert units["unknown_change"] == "Failed" and units["after_failure"] == "Gap", "no more until a snapshot"
        assert units["view_players"] == ["bob", "me"], "View['players'] follows presence"
        assert units["act_unconnected"] == "GaiaConnectionException"
        assert units["connect_down"].startswith("GaiaConnectionException"), units["connect_down"]
        assert units["connect_cancelled"] is True
        assert (await game.cmd("frames"))["frame_exceptions"] == []
    finally:
        await game.stop()


@mono
async def test_unity_game_plays_a_living_world_through_a_silent_network_a_throwing_handler_and_a_gateway_restart(
        unity_program: Path, tmp_path: Path) -> None:
    system = await LocalSystem(work=tmp_path, kb_clock_tick_s="0.5", presence_grace_s="30", heartbeat_s="4").start()
    proxy = await SilentProxy(system.gw_port).start()
    game = await ConsoleGame.start(unity_program)
    try:
        await game.cmd("new", player="ann", url=system.gateway_url, token=token("ann"), ping_ms=1000, pong_ms=3000,
                       backoff_ms=300, timeout_ms=8000, seam=True)  # ann's socket is the game's own transport
        await game.cmd("new", player="cal", url=proxy.url, token=token("cal"), ping_ms=1000, pong_ms=3000,
                       backoff_ms=1500, timeout_ms=8000)  # cal's phone is behind the proxy
        ann = await game.cmd("connect", player="ann")
        await game.cmd("connect", player="cal")
        await game.until("ann", lambda s: set(s["roster"]) == {"ann", "cal"}, "cal in ann's roster")
        await game.in_sync("joining", "ann", "cal")

        # The world clock runs: NPCs walk and the weather turns, as deltas with an area and no spot.
        lived = await game.until("ann", lambda s: s["updates_by"].get("world", 0) >= 6 and len(s["weathers"]) >= 2,
                                 "clock deltas")
        assert set(lived["results"]) <= {"Applied", "AlreadyHad"}, lived["results"]
        assert lived["area_changes"], "AreaChanged raised for NPC moves"
        await game.in_sync("the clock's deltas", "ann", "cal")

        # Chat: the world change is applied before the first chunk of the narrative.
        went = await game.cmd("act", player="ann", action="go", args={"destination": "main_room"})
        assert went["response"]["success"]
        chat = await game.cmd("chat", player="ann", message="take dream bottle")
        assert chat["action"] == "collect_item" and chat["success"] is True and chat["chunks"] >= 1 and chat["text"]
        assert any(i.startswith("dream_bottle") for i in chat["first_inventory"]), chat
        await game.in_sync("a chat", "ann", "cal")

        # A game handler that throws: reported, nothing escapes Drain(), the request it was answering completes.
        await game.cmd("throw_once", player="ann")
        bottle = chat["first_inventory"][0]
        dropped = await game.cmd("act", player="ann", action="drop_item", args={"instance_id": bottle})
        assert dropped["response"]["success"]
        bug = ["a game bug in a WorldUpdated handler"]
        await game.until("ann", lambda s: s["handler_failures"] == bug, "the handler's failure reported")
        await game.in_sync("a throwing handler", "ann", "cal")

        # A loading hitch: the main thread blocks; the answer is matched on the socket thread meanwhile.
        blocked = await game.cmd("act_blocked", player="ann", ms=7000)
        assert blocked == {**blocked, "answered_while_blocked": True, "faulted": False}

        # A second ConnectAsync on an open client opens nothing.
        again = await game.cmd("connect", player="ann")
        assert again["connection_id"] == ann["connection_id"] and await sessions(system) == 2
        await game.in_sync("a blocked main thread and a second ConnectAsync", "ann", "cal")

        # The phone's network goes silent. First only its sends are lost: the get_state its gap asks for is lost too...
        await game.cmd("skew", player="cal")
        await proxy.silence(("up",))
        await game.until("cal", lambda s: s["gaps"] >= 1, "a gap whose get_state is lost")
        # ...then nothing at all comes through: the pong deadline notices, the client resumes on a new connection.
        await proxy.silence(("down",))
        await game.cmd("act", player="ann", action="go", args={"destination": "entrance"})
        await game.until("cal", lambda s: 1006 in s["closes"], "the dead link noticed", timeout=3 + 5)
        waited = await game.cmd("act", player="cal", action="go", args={"destination": "main_room"})
        assert waited["was_open"] is False and waited["response"]["success"], "a request made while reconnecting waits"
        await game.until("cal", lambda s: s["resumes"] >= 1 and s["open"], "the resume")
        await game.in_sync("a silent network", "ann", "cal")

        # The gateway drops the silent socket (heartbeat); cal's clean close is then a leave at once, not after grace.
        await wait_for(lambda: sessions(system), 2, "the silent socket dropped by the gateway")
        assert (await game.cmd("close", player="cal"))["open"] is False
        await game.until("ann", lambda s: "cal" not in s["roster"], "cal's leave", timeout=10)
        await game.cmd("connect", player="cal")
        await game.until("ann", lambda s: "cal" in s["roster"], "cal back")
        await game.in_sync("a clean close and a return", "ann", "cal")

        # Dispose() is a clean close too: the others see a leave at once. Then cal comes back as a new client.
        await game.cmd("dispose", player="cal")
        await game.until("ann", lambda s: "cal" not in s["roster"], "cal's leave on Dispose()", timeout=10)
        await game.cmd("new", player="cal", url=proxy.url, token=token("cal"), ping_ms=1000, pong_ms=3000,
                       backoff_ms=300, timeout_ms=8000)
        await game.cmd("connect", player="cal")
        await game.until("ann", lambda s: "cal" in s["roster"], "cal back again")
        await game.until("cal", lambda s: s["last_seq"] is not None, "a resume cursor (a clock delta)")

        # The gateway is SIGKILLed and started again on the same port: both resume.
        before = {p: back_again(await game.cmd("status", player=p)) for p in ("ann", "cal")}
        await system.inject("gateway", 0.5)
        for player in ("ann", "cal"):
            await game.until(player, lambda s, p=player: back_again(s) > before[p] and s["open"], "the return",
                             timeout=30)
        await game.in_sync("a gateway restart", "ann", "cal")

        await game.cmd("close", player="cal")
        await game.in_sync("the end", "ann")

        bad = await game.cmd("bad_token", player="ann", token="not-a-token")
        assert bad == {**bad, "refused": "GaiaAuthException", "auth_required": 4401, "retried": False}
        final = await game.cmd("status", player="ann")
        seam = final["seam"]
        assert seam["opened"] >= 2 and seam["sent"] > 0 and seam["received"] > 0, "every socket came from the seam"
        assert final["failures"] == 0 and final["handler_failures"] == ["a game bug in a WorldUpdated handler"]
    except BaseException:
        for log in ("gateway.log", "kb.log"):
            print(f"--- {log} (last lines)", *(tmp_path / log).read_text().splitlines()[-40:], sep="\n")
        raise
    finally:
        await game.stop()
        await proxy.stop()
        system.stop()


def back_again(status: dict[str, Any]) -> int:
    """How often the player came back after a drop: resumed, or resynchronised by a fresh snapshot."""
    return int(status["resumes"]) + len(status["resyncs"])


async def wait_for(value: Callable[[], Any], want: Any, what: str, timeout: float = 20.0) -> None:
    """Poll an async value until it equals `want`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await value()) != want:
        assert asyncio.get_running_loop().time() < deadline, f"{what}: {got} after {timeout}s"
        await asyncio.sleep(0.1)


def unity_sees(path: Path) -> bool:
    """Unity's asset database skips names starting with '.' or ending with '~', `cvs` and `*.tmp`."""
    name = path.name
    return not (name.startswith(".") or name.endswith("~") or name.lower() == "cvs" or name.endswith(".tmp"))


def test_unity_package_imports_as_the_package_manager_reads_it() -> None:
    manifest = orjson.loads((PACKAGE / "package.json").read_bytes())
    assert manifest["name"] == "com.gaia.realtime" and manifest["unity"] == "2021.3"
    version = manifest["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    assert "com.unity.nuget.newtonsoft-json" in manifest["dependencies"]
    changelog = (PACKAGE / "CHANGELOG.md").read_text()
    assert re.findall(r"^## (\S+)", changelog, re.M)[0] == version, "the newest CHANGELOG entry is this version"
    docs = (PACKAGE.parent.parent / "docs" / "unity.md").read_text()
    assert f"#unity-v{version}" in docs and "unity-v<version>" in docs, "docs/unity.md names the tag of this version"
    for sample in manifest["samples"]:
        assert (PACKAGE / sample["path"]).is_dir() and list((PACKAGE / sample["path"]).glob("*.cs"))

    asmdef = orjson.loads((PACKAGE / "Runtime" / "Gaia.Realtime.asmdef").read_bytes())
    assert asmdef["name"] == "Gaia.Realtime" and asmdef["rootNamespace"] == "Gaia.Realtime"
    assert "`Gaia.Realtime`" in docs and "Gaia.Realtime.asmdef" in docs, "the assembly the docs tell games to reference"
    assert asmdef["precompiledReferences"] == ["Newtonsoft.Json.dll"] and asmdef["overrideReferences"] is True
    assert asmdef["noEngineReferences"] is True, "the core runs outside Unity too"
    assert "UnityEngine" not in "".join(p.read_text() for p in (PACKAGE / "Runtime").glob("*.cs"))

    # Every file and folder Unity imports (and every file of a sample, copied into Assets) has a .meta.
    assets = [p for p in PACKAGE.rglob("*") if p.suffix != ".meta" and unity_sees(p)]
    missing = [str(p.relative_to(PACKAGE)) for p in assets if not p.with_name(p.name + ".meta").is_file()]
    assert not missing, f"no .meta (Unity ignores these in a read-only package): {missing}"
    metas = sorted(PACKAGE.rglob("*.meta"))
    orphans = [str(m.relative_to(PACKAGE)) for m in metas if not m.with_name(m.name[:-5]).exists()]
    assert not orphans and not (PACKAGE.parent / "unity.meta").exists(), orphans
    guids: dict[str, str] = {}
    for meta in metas:
        text = meta.read_text()
        assert text.startswith("fileFormatVersion: 2\n"), meta
        guid = re.search(r"^guid: ([0-9a-f]{32})$", text, re.M)
        assert guid, f"{meta}: no 32-hex guid"
        assert guid[1] not in guids, f"{meta} and {guids.get(guid[1])} share a guid"
        guids[guid[1]] = str(meta)
        asset = meta.with_name(meta.name[:-5])
        importer = ("DefaultImporter" if asset.is_dir() else "PackageManifestImporter" if asset.name == "package.json"
                    else {".cs": "MonoImporter", ".asmdef": "AssemblyDefinitionImporter"}.get(asset.suffix,
                                                                                               "TextScriptImporter"))
        assert re.search(rf"^{importer}:$", text, re.M), f"{meta}: not a {importer}"
        assert ("folderAsset: yes" in text) == asset.is_dir(), meta
