"""Browsers' own EventSource across a gateway SIGKILL and restart: every event once, in order.

`gaia-harness sse-restart` runs it with several pages and writes the figures into
docs/reliability.md; `tests/gateway/test_sse_browser.py` runs it small and asserts on them.
"""
from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from harness.checks.verify import player_seqs
from harness.system.local import LocalSystem
from harness.system.procs import wait_healthy
from shared.auth import issue_token
from shared.config import Settings
from shared.subjects import experience_updates

EXPERIENCE = "wylding-woods"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PLACES = ("main_room", "counter", "main_room", "counter")
LISTEN = """([url]) => {
  window.got = []; window.opens = [];
  const es = new EventSource(url);
  es.onopen = () => window.opens.push(Date.now());
  es.onmessage = (e) => { const f = JSON.parse(e.data); window.got.push({id: e.lastEventId, type: f.type, seq: f.seq}); };
}"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class SseRestartReport:
    """What the pages received across the restart."""

    pages: int
    events_while_down: int
    expected: int = 0
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    reconnect_ms: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.duplicated == 0 and self.out_of_order == 0
                and len(self.reconnect_ms) == self.pages)

    def lines(self) -> list[str]:
        spread = (f"{min(self.reconnect_ms):.0f}-{max(self.reconnect_ms):.0f} ms" if self.reconnect_ms else "none")
        return [f"{self.pages} Chromium pages on `/sse/experience`, quiet start (no event before the kill); "
                f"gateway SIGKILLed, {self.events_while_down} events committed while it was down, restarted on "
                "the same port",
                f"reconnected {len(self.reconnect_ms)}/{self.pages}, from the kill to the browser's reopened "
                f"stream {spread}",
                f"events addressed to the pages {self.expected}, received {self.received}; lost {self.lost}, "
                f"duplicated {self.duplicated}, out of order {self.out_of_order}"]


async def act(http: aiohttp.ClientSession, system: LocalSystem, place: str) -> None:
    """Another player moves, straight through kb (the gateway may be down)."""
    async with http.post(f"{system.kb_url}/experiences/{EXPERIENCE}/actions",
                         json={"user_id": "walker", "action": "go", "destination": place}) as resp:
        assert (await resp.json())["success"], place


async def outbox_empty(http: aiohttp.ClientSession, system: LocalSystem) -> None:
    for _ in range(300):
        async with http.get(f"{system.kb_url}/health") as resp:
            if (await resp.json())["outbox"]["pending"] == 0:
                return
        await asyncio.sleep(0.1)


async def run_sse_restart(pages: int = 3, down_events: int = 2, after_events: int = 2) -> SseRestartReport:
    """Open `pages` EventSource streams, SIGKILL and restart the gateway, check what each page got."""
    from playwright.async_api import async_playwright
    settings = Settings.from_env()
    report = SseRestartReport(pages, down_events)
    system = await LocalSystem().start()
    try:
        async with async_playwright() as pw, aiohttp.ClientSession(
                headers={"X-API-Key": settings.kb_api_key}) as http:
            browser = await pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)
            tabs = []
            for i in range(pages):
                tab = await browser.new_page()
                await tab.goto(system.gateway_url + "/health")  # same origin, and no page CSP in the way
                token = issue_token(settings, f"browser{i}")
                await tab.evaluate(LISTEN, [f"/sse/experience?experience={EXPERIENCE}&token={token}"])
                await tab.wait_for_function("window.opens.length === 1")
                tabs.append(tab)
            await asyncio.sleep(settings.presence_window_ms / 1000 + 0.2)  # the pages' joins are announced
            await outbox_empty(http, system)
            start = await stream_end(system, settings)
            killed = time.time() * 1000
            system.gateway.kill()
            for place in PLACES[:down_events]:
                await act(http, system, place)
            await outbox_empty(http, system)
            await asyncio.get_running_loop().run_in_executor(None, system.gateway.start)
            await wait_healthy(system.gateway_url)
            for tab in tabs:
                await tab.wait_for_function("window.opens.length >= 2", timeout=30_000)
                report.reconnect_ms.append(await tab.evaluate("window.opens[1]") - killed)
            for place in PLACES[down_events:down_events + after_events]:
                await act(http, system, place)
            await outbox_empty(http, system)
            for i, tab in enumerate(tabs):
                due = [s for s in await player_seqs(system.nats_url, settings.stream_name, EXPERIENCE, f"browser{i}")
                       if s > start]
                await tab.wait_for_function(f"window.got.filter(f => f.seq).length >= {len(due)}", timeout=10_000)
                tally(report, due, await tab.evaluate("window.got"), start)
            await browser.close()
    finally:
        system.stop()
    return report


async def stream_end(system: LocalSystem, settings: Settings) -> int:
    """The experience subject's last sequence: where the pages' streams started."""
    import nats
    nc = await nats.connect(system.nats_url)
    try:
        return (await nc.jetstream().get_last_msg(settings.stream_name, experience_updates(EXPERIENCE))).seq
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await nc.close()


def tally(report: SseRestartReport, due: list[int], got: list[dict[str, Any]], start: int) -> None:
    """Add one page's events from `start` on (earlier ones preceded the kill) to the report."""
    seqs = [g["seq"] for g in got if g.get("seq") is not None and g["seq"] > start]
    report.expected += len(due)
    report.received += len(seqs)
    report.lost += len(set(due) - set(seqs))
    report.duplicated += len(seqs) - len(set(seqs))
    report.out_of_order += sum(1 for a, b in zip(seqs, seqs[1:]) if b <= a)


def write_report(report: SseRestartReport, path: Path, command: str) -> None:
    """Replace the EventSource section of docs/reliability.md with this run's figures."""
    from harness.report import machine, replace_section
    start, end = "<!-- sse-restart:start -->", "<!-- sse-restart:end -->"
    body = "\n".join([start, f"Last run: `{command}` on {time.strftime('%Y-%m-%d')}, {machine()}", "",
                      *[f"- {line}" for line in report.lines()], end])
    path.write_text(replace_section(path.read_text(), body, start, end))
