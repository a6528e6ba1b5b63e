"""The Unity package's C# client, compiled with Mono and played against the real gateway, kb and nats-server."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from kb.keys import WORLDS
from tests.conftest import EXPERIENCE, eventually, outbox_drained

PACKAGE = Path(__file__).resolve().parent.parent / "clients" / "unity"
MCS, MONO = shutil.which("mcs"), shutil.which("mono")
pytestmark = pytest.mark.skipif(
    MCS is None or MONO is None,
    reason="Mono is not installed and `make test` could not install it (apt-get install mono-devel "
           "libnewtonsoft-json-cil-dev)")


def newtonsoft() -> list[str]:
    """The compiler flag referencing Debian's Newtonsoft.Json (what Unity's newtonsoft-json package provides)."""
    found = subprocess.run(["pkg-config", "--libs", "newtonsoft-json"], capture_output=True, text=True)
    if found.returncode == 0 and found.stdout.strip():
        return found.stdout.split()
    dll = next(Path("/usr/lib/cli").glob("Newtonsoft.Json*/Newtonsoft.Json.dll"), None)
    assert dll is not None, "libnewtonsoft-json-cil-dev is not installed"
    return [f"-r:{dll}"]


@pytest.fixture(scope="module")
def unity_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's Runtime/ sources and the console player, compiled as Unity would compile them (C# 7)."""
    out = tmp_path_factory.mktemp("unity") / "EndToEnd.exe"
    sources = sorted(str(p) for p in (PACKAGE / "Runtime").glob("*.cs")) + [str(PACKAGE / "Tests~" / "Console" / "EndToEnd.cs")]
    built = subprocess.run([MCS, "-langversion:7", "-nologo", "-warnaserror+", f"-out:{out}", "-r:System.Net.Http",
                            *newtonsoft(), *sources], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    for dll in Path("/usr/lib/cli").glob("Newtonsoft.Json*/Newtonsoft.Json.dll"):
        shutil.copy(dll, out.parent)  # beside the program, as Unity ships it
        break
    return out


class CSharpPlayer:
    """The running console program: its JSON lines out, our lines in."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def step(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert line, f"the C# player ended before {name!r}: {await self.proc.stderr.read()!r}"
        frame = orjson.loads(line)
        assert frame["step"] == name, frame
        return frame

    async def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n".encode())
        await self.proc.stdin.drain()


async def test_unity_client_joins_walks_collects_sees_others_resumes_and_stops_on_a_bad_token(
        unity_program: Path, gateway_server, kb_server, players, token) -> None:
    world = kb_server.app[WORLDS][EXPERIENCE]
    bob = await players("bob")
    proc = await asyncio.create_subprocess_exec(
        MONO, str(unity_program), str(gateway_server.make_url("")).rstrip("/"), token("unity"), "not-a-token",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    unity = CSharpPlayer(proc)
    try:
        joined = await unity.step("joined")
        assert joined["user_id"] == "unity" and joined["roster"] == {"bob": "entrance", "unity": "entrance"}

        collected = await unity.step("collected")
        assert collected["go"] is True and collected["take"] is True and collected["area"] == "main_room"
        assert collected["inventory"] == ["dream_bottle_1"], "the local world applied its own delta"

        await unity.step("ready_for_other")  # bob walks in and takes the other bottle
        assert (await bob.act("go", destination="main_room"))["success"]
        assert (await bob.act("collect_item", instance_id="dream_bottle_2"))["success"]
        await unity.say(str(world.world["version"]))
        saw = await unity.step("saw_other")
        assert saw["shelf_2"] == 0 and saw["bob_area"] == "main_room" and saw["moves"] >= 1

        dropped = await unity.step("dropped")
        assert dropped["close"] == 1006 and dropped["last_seq"] > 0
        assert (await bob.act("drop_item", instance_id="dream_bottle_2"))["success"]  # while unity is away
        assert (await bob.act("go", destination="counter"))["success"]
        await outbox_drained(kb_server)
        await unity.say(str(world.world["version"]))
        resumed = await unity.step("resumed")
        assert resumed["replayed"] >= 3, "bob's drop, his step and his move, replayed after the cursor"
        assert resumed["from_seq"] == dropped["last_seq"] + 1 and resumed["in_order"] is True
        assert resumed["version"] == world.world["version"] and resumed["gaps"] == 0 and resumed["snapshots"] == 1

        chain = await unity.step("chain")
        assert chain == {**chain, "hole": "Gap", "stale": "AlreadyHad", "gaps": 1}
        fetched = await unity.step("get_state")
        assert fetched["snapshots"] == 1 and fetched["version"] == world.world["version"]
        ping = await unity.step("ping")
        assert 0 < ping["rtt_ms"] < 5000
        bad = await unity.step("bad_token")
        assert bad["auth_required"] == 4401 and "4401" in bad["refused"] and bad["retried"] is False
        await unity.step("done")
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await eventually(lambda: "unity" not in kb_server.app[__import__("kb.keys").keys.PRESENCE].present_users(EXPERIENCE))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_unity_package_layout_is_what_the_package_manager_installs() -> None:
    manifest = orjson.loads((PACKAGE / "package.json").read_bytes())
    assert manifest["name"] == "com.gaia.realtime" and manifest["unity"] == "2021.3"
    assert "com.unity.nuget.newtonsoft-json" in manifest["dependencies"]
    for sample in manifest["samples"]:
        assert (PACKAGE / sample["path"]).is_dir() and list((PACKAGE / sample["path"]).glob("*.cs"))
    asmdef = orjson.loads((PACKAGE / "Runtime" / "Gaia.Realtime.asmdef").read_bytes())
    assert asmdef["name"] == "Gaia.Realtime" and asmdef["precompiledReferences"] == ["Newtonsoft.Json.dll"]
    assert asmdef["noEngineReferences"] is True, "the core runs outside Unity too"
    for doc in ("README.md", "CHANGELOG.md", "LICENSE.md"):
        assert (PACKAGE / doc).is_file()
    assert "UnityEngine" not in "".join(p.read_text() for p in (PACKAGE / "Runtime").glob("*.cs"))
