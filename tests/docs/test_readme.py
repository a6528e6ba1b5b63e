"""The README's examples, run as written, top to bottom, against a real system (processes on free ports)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from harness.system.local import LocalSystem
from shared.auth import issue_token
from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def block_after(marker: str, language: str) -> str:
    """The first fenced block of `language` after the line containing `marker`."""
    tail = README[README.index(marker):]
    found = re.search(rf"```{language}\n(.*?)```", tail, re.S)
    assert found, f"no {language} block after {marker!r}"
    return found.group(1)


@pytest.fixture
async def system():
    running = await LocalSystem().start()
    yield running
    running.stop()


async def test_the_readme_examples_work_as_written_on_a_fresh_world(system, tmp_path: Path) -> None:
    url = system.gateway_url
    here = lambda text: text.replace("http://127.0.0.1:8000", url).replace("ws://127.0.0.1:8000", url.replace("http", "ws"))  # noqa: E731
    token = issue_token(Settings.from_env(), "player1")

    # The WebSocket lines, sent one per line, as a websocat user would.
    socket_url = re.search(r"`(ws://127\.0\.0\.1:8000/ws/experience\?[^`]+)`", README).group(1)
    async with aiohttp.ClientSession() as http, http.ws_connect(here(socket_url).replace("$TOKEN", token)) as ws:
        lines = block_after("then send, one per line", "json").strip().splitlines()
        for line in lines:
            await ws.send_str(line)
        answers = []
        async for msg in ws:
            frame = orjson.loads(msg.data)
            if frame["type"] == "action_response":
                answers.append(frame)
            if len(answers) == len(lines):
                break
    assert [a["success"] for a in answers] == [True, True], answers

    # The SSE commands, with curl; the persistent stream is cut after two seconds.
    commands = block_after("Legacy SSE, with the same token", "sh").replace("\\\n", " ").strip().splitlines()
    outputs = []
    env = {**os.environ, "TOKEN": token}
    for command in commands:
        if "/sse/experience" in command:
            command = command.replace("curl -N", "curl -N --max-time 2")
        done = subprocess.run(["bash", "-c", here(command)], env=env, capture_output=True, text=True, timeout=30)
        outputs.append(done.stdout)
    go, take, stream = outputs
    assert "[DONE]" in go and "[DONE]" in take
    assert "There is no" not in take and '"operation":"remove"' in take.replace(" ", ""), take
    assert stream.startswith("id: "), stream

    # The Python client example, as a script.
    script = tmp_path / "example.py"
    script.write_text(here(block_after("### The Python client library", "python")))
    done = subprocess.run([sys.executable, str(script)], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "'instance_id': 'dream_bottle_3'" in done.stdout, done.stdout  # collected in the Back Room
    assert "You put the dream bottle on" in done.stdout, done.stdout  # the narrated drop
