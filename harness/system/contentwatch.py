"""`make run`'s content watcher: a changed experience is reloaded in kb, or one line says why not.

It looks at the content files of every served experience twice a second (their bytes, not their
times: an editor's save that changes nothing reloads nothing). kb checks the content and migrates the
world (POST /experiences/{experience}/reload, kb/reload.py); its players get a fresh snapshot.
"""
from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp

from kb.world.content import FILES, available_experiences

POLL_S = 0.5  # a poll of a few small files; what a developer waits at most after saving
Reload = Callable[[str], Awaitable[tuple[int, dict[str, Any]]]]


def digest(folder: Path) -> str:
    """The content files' bytes as one digest ("" for a file that cannot be read)."""
    parts = []
    for name in FILES:
        try:
            parts.append(hashlib.sha256((folder / name).read_bytes()).hexdigest())
        except OSError:
            parts.append("")
    return ":".join(parts)


def line(experience: str, status: int, answer: dict[str, Any]) -> str:
    """What one reload did, in one line."""
    if status == 200 and answer.get("notes") == ["unchanged"]:
        return f"{experience}: content saved, nothing in it changed"
    if status == 200:
        notes = "; ".join(answer.get("notes") or []) or "nothing else changed"
        return (f"{experience}: reloaded, world v{answer['from_version']} -> v{answer['version']} "
                f"(players get a snapshot): {notes}")
    problems = (answer.get("details") or {}).get("problems") or [answer.get("message", f"kb answered {status}")]
    more = f" (and {len(problems) - 1} more: gaia-kb check {(answer.get('details') or {}).get('folder', '')})" \
        if len(problems) > 1 else ""
    return f"{experience}: not reloaded: {problems[0]}{more}"


class ContentWatch:
    """The experiences of some data folders, each reloaded through `reload` when its files change."""

    def __init__(self, data_dirs: list[Path], reload: Reload, say: Callable[[str], None]) -> None:
        self.reload = reload
        self.say = say
        self.folders = {name: root / name for root in data_dirs for name in available_experiences(root)}
        self.seen = {name: digest(folder) for name, folder in self.folders.items()}

    async def scan(self) -> list[str]:
        """Reload every experience whose files changed since the last scan; the lines said."""
        said = []
        for name, folder in self.folders.items():
            now = digest(folder)
            if now == self.seen[name]:
                continue
            self.seen[name] = now
            try:
                status, answer = await self.reload(name)
                said.append(line(name, status, answer))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                said.append(f"{name}: not reloaded: kb did not answer ({type(exc).__name__})")
        for text in said:
            self.say(text)
        return said

    async def run(self, stop: asyncio.Event) -> None:
        """Scan until `stop` is set."""
        while not stop.is_set():
            await self.scan()
            try:
                await asyncio.wait_for(stop.wait(), POLL_S)
            except TimeoutError:
                pass


def kb_reloader(http: aiohttp.ClientSession, kb_url: str, api_key: str) -> Reload:
    """`reload` for a kb at `kb_url`: its status and JSON answer."""
    async def reload(experience: str) -> tuple[int, dict[str, Any]]:
        async with http.post(f"{kb_url}/experiences/{experience}/reload", headers={"X-API-Key": api_key}) as resp:
            return resp.status, await resp.json()
    return reload
