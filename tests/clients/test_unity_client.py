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
from aiohttp import web

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


def print_service_logs(folder: Path) -> None:
    """The last lines of the gateway's and kb's logs, for a failed game's report."""
    for log in ("gateway.log", "kb.log"):
        print(f"--- {log} (last lines)", *(folder / log).read_text().splitlines()[-40:], sep="\n")


def newtonsoft() -> Path:
    """Debian's Newtonsoft.Json (what Unity's com.unity.nuget.newtonsoft-json provides)."""
    dll = next(Path("/usr/lib/cli").glob("Newtonsoft.Json*/Newtonsoft.Json.dll"), None)
    assert dll is not None, "libnewtonsoft-json-cil-dev is not installed"
    return dll


@pytest.fixture(scope="module")
def unity_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compiled as Unity would (C# 7, warnings are errors): Runtime/ as its own assembly, Gaia.Realtime.dll (the
    asmdef's), and the console game as a separate one referencing it, so the game can use only what is public."""
    assert MCS and MONO, NEEDS_MONO  # under CI=true a missing Mono fails here instead of skipping
    folder = tmp_path_factory.mktemp("unity")
    library, out = folder / "Gaia.Realtime.dll", folder / "ConsoleGame.exe"
    common = [MCS, "-langversion:7", "-nologo", "-warnaserror+", "-r:System.Net.Http", f"-r:{newtonsoft()}"]
    runtime = sorted(str(p) for p in (PACKAGE / "Runtime").glob("*.cs"))
    built = subprocess.run([*common, "-target:library", f"-out:{library}", *runtime], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    game = str(PACKAGE / "Tests~" / "Console" / "ConsoleGame.cs")
    built = subprocess.run([*common, f"-r:{library}", f"-out:{out}", game], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    shutil.copy(newtonsoft(), folder)  # beside the program, as Unity ships it
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

        # The typed world on a LocalWorld of the game's own (as a fake client in a game's test fills it).
        assert units["typed_first_snapshot_events"] == 0, "the first snapshot is read on Replaced: no change events"
        assert units["typed_here"] == "entrance|Entrance|A bell.|main_room,garden|woven mat:key_1"
        assert units["typed_exit_names"] == ["Main Room", "?"], "an exit to an area the snapshot lacks has no AreaInfo"
        assert units["typed_npcs"] == "bob@entrance,louisa@main_room" and units["typed_npcs_here"] == "Bob"
        assert units["typed_unknown"] == "True,True,True"
        assert units["typed_environment"] == "clear|dawn|time_of_day=dawn,weather=clear"
        assert units["typed_delta_events"] == [
            "npc louisa: main_room -> entrance", "env weather: clear -> misty",
            "here entrance -> main_room"], "time_of_day set to its own value: no event"
        assert units["typed_after_delta"] == "entrance|misty|Main Room|main_room", "the roster follows the own move"
        assert units["typed_failed_events"] == "Failed 0", "a delta that failed raises nothing"
        assert units["typed_snapshot_events"] == [
            "npc bob: entrance -> ", "npc louisa: entrance -> main_room", "npc zed:  -> entrance",
            "env weather: misty -> starfall", "here main_room -> entrance"], \
            "what a later snapshot changed, against what the events last said (not a failed delta's half)"
        assert units["typed_own_world_handler"] == "a game bug in an NpcMoved handler (v10)", \
            "on a world of the game's own a handler's exception comes out of the Apply call, the delta applied"

        # Options a client cannot work with: an ArgumentException naming the option, at construction or ConnectAsync.
        bad = units["bad_options"]
        for case, option in {"null_token": "Token", "empty_token": "Token", "blank_token": "Token",
                             "null_url": "GatewayUrl", "empty_url": "GatewayUrl", "relative_url": "GatewayUrl",
                             "ftp_url": "GatewayUrl", "empty_experience": "Experience", "null_dispatcher": "Dispatcher",
                             "zero_connect_timeout": "ConnectTimeout"}.items():
            assert bad[case].startswith(f"ArgumentException {option} | GaiaClientOptions.{option} "), (case, bad[case])
        assert "stringToEscape" not in str(bad) and bad["null_options"] == "ArgumentNullException options"
        assert bad["token_nulled_before_connect"] == "ArgumentException Token", "checked again by ConnectAsync"
        assert (await game.cmd("frames"))["frame_exceptions"] == []
    finally:
        await game.stop()


@mono
async def test_unity_assembly_version_is_package_jsons(unity_program: Path) -> None:
    version = orjson.loads((PACKAGE / "package.json").read_bytes())["version"]
    game = await ConsoleGame.start(unity_program)
    try:
        seen = await game.cmd("version")
        assert seen == {**seen, "name": "Gaia.Realtime", "version": f"{version}.0", "informational": version,
                        "file": version}, f"typeof(GaiaClient).Assembly as a game sees it: {seen}"
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
                       backoff_ms=300, timeout_ms=8000, connect_ms=5000, seam=True)  # ann's socket: a game's transport
        await game.cmd("new", player="cal", url=proxy.url, token=token("cal"), ping_ms=1000, pong_ms=3000,
                       backoff_ms=1500, timeout_ms=8000, connect_ms=5000)  # cal's phone is behind the proxy
        ann = await game.cmd("connect", player="ann")
        await game.cmd("connect", player="cal")
        await game.until("ann", lambda s: set(s["roster"]) == {"ann", "cal"}, "cal in ann's roster")
        await game.in_sync("joining", "ann", "cal")

        # The world clock runs: NPCs walk and the weather turns, as deltas with an area and no spot.
        lived = await game.until("ann", lambda s: s["updates_by"].get("world", 0) >= 6 and len(s["weathers"]) >= 2,
                                 "clock deltas")
        assert set(lived["results"]) <= {"Applied", "AlreadyHad"}, lived["results"]
        assert lived["area_changes"], "AreaChanged raised for NPC moves"
        # ...which the typed world shows, with NpcMoved and EnvironmentChanged raised on the dispatcher's thread.
        lived = await game.until("ann", lambda s: s["npc_moves"] and len(s["environment_changes"]) >= 2,
                                 "NpcMoved and EnvironmentChanged")
        assert_typed_world_agrees(lived)
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
                       backoff_ms=300, timeout_ms=8000, connect_ms=5000)
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
        print_service_logs(tmp_path)
        raise
    finally:
        await game.stop()
        await proxy.stop()
        system.stop()


@mono
async def test_unity_authoring_a_game_plays_the_studios_experience_and_its_added_actions_beside_ours(
        unity_program: Path, tmp_path: Path) -> None:
    """ActAsync and ChatAsync with the actions tinkers-cellar adds (open, craft), from the C# client, while another
    player of the same game plays wylding-woods; then the studio's content is reloaded and the client resyncs."""
    import examples
    from kb.world.content import DATA_DIR
    studio = tmp_path / "studio"
    shutil.copytree(examples.WORLDS, studio)
    system = await LocalSystem(work=tmp_path, kb_data_dir=f"{DATA_DIR},{studio}",
                               action_modules=",".join(examples.ACTION_MODULES)).start()
    game = await ConsoleGame.start(unity_program)
    try:
        for player, experience in (("ann", "wylding-woods"), ("bob", "tinkers-cellar")):
            await game.cmd("new", player=player, url=system.gateway_url, token=token(player), experience=experience,
                           ping_ms=1000, pong_ms=3000, backoff_ms=300, timeout_ms=8000)
            await game.cmd("connect", player=player)
        for area in ("workshop", "storeroom"):
            assert (await game.cmd("act", player="bob", action="go", args={"destination": area}))["response"]["success"]
        opened = await game.cmd("act", player="bob", action="open", args={"instance_id": "iron chest"})
        assert opened["response"]["success"] and "Inside: a brass gear" in opened["response"]["message"]
        await game.in_sync("an added action (open) on a spot item's state", "bob")
        for item in ("brass gear", "coiled spring"):
            took = await game.cmd("act", player="bob", action="collect_item", args={"instance_id": item})
            assert took["response"]["success"]
        made = await game.cmd("act", player="bob", action="craft",
                              args={"instance_id": "brass gear", "with_id": "coiled spring"})
        assert made["response"]["success"] and (await game.cmd("status", player="bob"))["inventory"] == [
            "clockwork_beetle_c1"]
        half = await game.cmd("act", player="bob", action="craft", args={"instance_id": "clockwork beetle"})
        assert (half["response"]["type"], half["response"]["code"]) == ("error", "invalid_message")
        await game.cmd("act", player="bob", action="go", args={"destination": "workshop"})
        chat = await game.cmd("chat", player="bob", message="give the clockwork beetle to pip")
        assert (chat["action"], chat["success"]) == ("give_item", True) and "friend for my rounds" in chat["text"]
        chat = await game.cmd("chat", player="ann", message="open the door")
        assert chat["action"] == "use_item", "wylding-woods has no `open`: the built-in verb"
        await game.in_sync("two experiences side by side", "ann", "bob")
        ann = await game.cmd("status", player="ann")
        assert set(ann["roster"]) == {"ann"} and ann["area"] == "entrance"

        zone = studio / "tinkers-cellar" / "zone.json"
        zone.write_text(zone.read_text().replace("A long bench under a skylight", "A long bench, newly varnished"))
        async with aiohttp.ClientSession(headers={"X-API-Key": Settings().kb_api_key}) as http:
            async with http.post(f"{system.kb_url}/experiences/tinkers-cellar/reload") as resp:
                assert resp.status == 200, await resp.text()
        await game.until("bob", lambda s: s["gaps"] >= 1 and s["snapshots"] >= 2, "the snapshot after the reload")
        await game.in_sync("a reload", "bob")
        assert (await game.cmd("status", player="ann"))["gaps"] == 0
    except BaseException:
        print_service_logs(tmp_path)
        raise
    finally:
        await game.stop()
        system.stop()


class MuteGateway:
    """A real WebSocket server that accepts the upgrade and then says nothing (no `connected`)."""

    def __init__(self) -> None:
        self.port, self.upgraded = free_port(), 0
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "MuteGateway":
        app = web.Application()
        app.router.add_get("/ws/experience", self._socket)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.upgraded += 1
        async for _ in ws:
            pass
        return ws

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@mono
async def test_unity_first_connect_fails_at_its_deadline_when_the_upgrade_or_connected_never_comes(
        unity_program: Path) -> None:
    swallower = await SilentProxy(free_port()).start()
    await swallower.outage()  # accepts the TCP connection, reads the upgrade request, never answers
    mute = await MuteGateway().start()
    game = await ConsoleGame.start(unity_program)
    deadline_ms = 1500
    try:
        for url, phase in ((swallower.url, "no answer to the WebSocket upgrade"), (mute.url, "no `connected` frame")):
            failed = await game.cmd("connect_deadline", url=url, connect_ms=deadline_ms, timeout=15)
            assert failed["type"] == "GaiaConnectionException" and failed["inner"] == "TimeoutException", failed
            assert phase in failed["message"] and "GaiaClientOptions.ConnectTimeout" in failed["message"], failed
            assert "token=" not in failed["message"], "the URL in the message never carries the token"
            # Given up at its deadline (the coroutine sees it within a few frames; a loaded machine gets some slack).
            assert deadline_ms - 50 <= failed["elapsed_ms"] <= deadline_ms + 2500, failed
            assert failed["open"] is False
        assert len(swallower.swallowed) == 1 and swallower.swallowed[0].startswith(b"GET /ws/experience?"), \
            "the first phase: the upgrade request was sent and never answered"
        assert mute.upgraded == 1, "the second phase: the upgrade answered, `connected` never sent"
        assert (await game.cmd("frames"))["frame_exceptions"] == []
    finally:
        await game.stop()
        await swallower.stop()
        await mute.stop()


@mono
async def test_unity_reconnect_gives_up_an_attempt_lost_in_an_outage_and_is_back_within_a_deadline_and_a_backoff(
        unity_program: Path, tmp_path: Path) -> None:
    system = await LocalSystem(work=tmp_path, kb_clock_tick_s="0.5", presence_grace_s="30").start()
    proxy = await SilentProxy(system.gw_port).start()
    game = await ConsoleGame.start(unity_program)
    connect_ms, max_backoff_ms = 1500, 2000  # the console game's MaxBackoff is 2 s
    loop = asyncio.get_running_loop()
    try:
        await game.cmd("new", player="dee", url=proxy.url, token=token("dee"), ping_ms=500, pong_ms=1500,
                       backoff_ms=300, timeout_ms=8000, connect_ms=connect_ms)
        first = await game.cmd("connect", player="dee")
        await game.until("dee", lambda s: s["last_seq"] is not None, "a resume cursor (a clock delta)")

        # The network goes: the socket falls silent, and every attempt to come back is accepted and lost.
        await proxy.outage()
        await game.until("dee", lambda s: 1006 in s["closes"], "the dead link noticed", timeout=10)
        deadline = loop.time() + 15
        while len(proxy.swallowed) < 2:  # without a handshake deadline the first lost attempt waits forever
            assert loop.time() < deadline, f"one lost attempt and no other: {len(proxy.swallowed)} attempts"
            await asyncio.sleep(0.05)
        assert all(lost.startswith(b"GET /ws/experience?") and b"last_seq=" in lost for lost in proxy.swallowed), \
            "each lost attempt was a resume's upgrade"
        assert not (await game.cmd("status", player="dee"))["open"]

        # The network returns; the attempt under way when it did is lost too, and given up at its deadline.
        proxy.heal()
        healed = loop.time()
        back = await game.until("dee", lambda s: s["open"] and s["connection_id"] != first["connection_id"],
                                "back on its own", timeout=20)
        took = loop.time() - healed
        assert took <= (connect_ms + max_backoff_ms) / 1000 + 3.0, \
            f"back {took:.1f} s after the network returned (deadline {connect_ms} ms + backoff <= {max_backoff_ms} ms)"
        assert back["closes"] == [1006], "one Closed for the drop; the lost attempts raise none"
        await game.until("dee", lambda s: back_again(s) >= 1, "the resume (the clock's deltas missed meanwhile)")
        await game.in_sync("an outage whose reconnect attempts were lost", "dee")
    except BaseException:
        print_service_logs(tmp_path)
        raise
    finally:
        await game.stop()
        await proxy.stop()
        system.stop()


def assert_typed_world_agrees(status: dict[str, Any]) -> None:
    """The typed world says what View says, and the last NpcMoved of each NPC left it where it now stands."""
    typed = status["typed"]
    assert typed["npcs"] == typed["view_npcs"] and typed["npcs"], typed
    assert typed["environment"] == typed["view_environment"], typed
    assert typed["weather"] == typed["view_environment"]["weather"], typed
    assert typed["time_of_day"] == typed["view_environment"]["time_of_day"], typed
    assert typed["here"] == typed["view_here"] and typed["exits"] == typed["view_exits"] and typed["exits"], typed
    last = {move["npc"]: move["to"] for move in status["npc_moves"]}
    assert all(typed["npcs"][npc] == area for npc, area in last.items()), (last, typed["npcs"])
    moves = status["npc_moves"]
    assert all(m["from"] != m["to"] and m["from"] and m["to"] for m in moves), moves
    versions = [m["version"] for m in moves]
    assert versions == sorted(versions), "raised in world order, on the dispatcher's thread"
    assert all("=" in change and change.split("=", 1)[1] for change in status["environment_changes"])


def back_again(status: dict[str, Any]) -> int:
    """How often the player came back after a drop: resumed, or resynchronised by a fresh snapshot."""
    return int(status["resumes"]) + len(status["resyncs"])


async def wait_for(value: Callable[[], Any], want: Any, what: str, timeout: float = 20.0) -> None:
    """Poll an async value until it equals `want`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await value()) != want:
        assert asyncio.get_running_loop().time() < deadline, f"{what}: {got} after {timeout}s"
        await asyncio.sleep(0.1)


# Compile-only stand-ins for the few UnityEngine members the IMGUI sample uses (Unity is not installed here): they
# check the sample against the package's public API, not its drawing.
UNITY_ENGINE_STANDINS = """
namespace UnityEngine
{
    public class MonoBehaviour { }
    public sealed class TextAreaAttribute : System.Attribute { }
    public struct Vector2 { }
    public struct Rect { public Rect(float x, float y, float width, float height) { } }
    public static class Screen { public static int width = 0, height = 0; }
    public static class Debug { public static void LogException(System.Exception e) { } }
    public static class GUILayout
    {
        public static void BeginArea(Rect area) { }
        public static void EndArea() { }
        public static void Label(string text) { }
        public static bool Button(string text) { return false; }
        public static string TextField(string text) { return text; }
        public static Vector2 BeginScrollView(Vector2 at) { return at; }
        public static void EndScrollView() { }
    }
}
"""


@mono
def test_unity_sample_compiles_against_the_packages_public_api(unity_program: Path, tmp_path: Path) -> None:
    standins = tmp_path / "UnityEngine.cs"
    standins.write_text(UNITY_ENGINE_STANDINS)
    samples = sorted(str(p) for p in (PACKAGE / "Samples~").rglob("*.cs"))
    built = subprocess.run([MCS, "-langversion:7", "-nologo", "-warnaserror+", "-target:library",
                            f"-out:{tmp_path / 'Sample.dll'}", f"-r:{unity_program.parent / 'Gaia.Realtime.dll'}",
                            f"-r:{newtonsoft()}", str(standins), *samples], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr


# Stand-ins for the two NUnit members docs/unity.md's example uses (NUnit is not installed here), and a runner that
# calls every [Test] method: the example is compiled against Gaia.Realtime.dll as a game's test assembly would be.
NUNIT_STANDINS = """
namespace NUnit.Framework
{
    [System.AttributeUsage(System.AttributeTargets.Method)]
    public sealed class TestAttribute : System.Attribute { }

    public static class Assert
    {
        public static void AreEqual(object expected, object actual)
        {
            if (!object.Equals(expected, actual))
                throw new System.Exception("expected <" + expected + "> but was <" + actual + ">");
        }
    }
}

public static class StandInRunner
{
    public static int Main()
    {
        var failed = 0;
        foreach (var type in typeof(StandInRunner).Assembly.GetTypes())
            foreach (var method in type.GetMethods())
                if (method.GetCustomAttributes(typeof(NUnit.Framework.TestAttribute), false).Length > 0)
                {
                    try
                    {
                        method.Invoke(System.Activator.CreateInstance(type), null);
                        System.Console.WriteLine("passed " + method.Name);
                    }
                    catch (System.Reflection.TargetInvocationException e)
                    {
                        failed++;
                        System.Console.WriteLine("failed " + method.Name + ": " + e.InnerException);
                    }
                }
        return failed;
    }
}
"""


@mono
def test_unity_docs_fake_client_example_compiles_as_a_games_test_assembly_and_its_tests_pass(
        unity_program: Path, tmp_path: Path) -> None:
    docs = (PACKAGE.parent.parent / "docs" / "unity.md").read_text()
    example = next(block for block in re.findall(r"```csharp\n(.*?)```", docs, re.S) if "class FakeClient" in block)
    (tmp_path / "Example.cs").write_text(example)
    (tmp_path / "NUnit.cs").write_text(NUNIT_STANDINS)
    program = tmp_path / "ExampleTests.exe"
    built = subprocess.run([MCS, "-langversion:7", "-nologo", "-warnaserror+", f"-out:{program}",
                            f"-r:{unity_program.parent / 'Gaia.Realtime.dll'}", f"-r:{newtonsoft()}",
                            str(tmp_path / "Example.cs"), str(tmp_path / "NUnit.cs")], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    ran = subprocess.run([MONO, str(program)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "MONO_PATH": str(unity_program.parent)})
    assert ran.returncode == 0 and ran.stdout.count("passed ") == 2, ran.stdout + ran.stderr


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
