"""Chromium's own EventSource on /sse/experience across a gateway SIGKILL and restart on the same port."""
from __future__ import annotations

import pytest

from harness.chaos.ssebrowser import chromium, run_sse_restart
from tests.helpers import missing_tool


@pytest.fixture(autouse=True)
def needs_chromium() -> None:
    """Skipped without Chromium; under CI=true a failure."""
    if chromium() is None:
        missing_tool("chromium is not installed and `make test` could not install it (apt-get install chromium)")


async def test_browser_eventsource_gets_every_event_once_in_order_across_a_gateway_kill_after_a_quiet_start() -> None:
    report = await run_sse_restart(pages=2, down_events=2, after_events=2)
    print("\n".join(report.lines()))
    assert len(report.reconnect_ms) == 2, "every page's EventSource came back by itself"
    assert report.expected == 2 * 4, "both pages were due the 4 moves: 2 while the gateway was down, 2 after"
    assert report.lost == 0 and report.duplicated == 0 and report.out_of_order == 0
    assert report.received == report.expected
