"""The soak's world checks (harness/soak/worlds.py): a sampled player's world against kb's, and an empty sample fails."""
from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from harness.soak.worlds import WorldChecks, check_worlds

VIEW = {"snapshot_version": 3, "player": {"current_area": "entrance", "inventory": []}, "areas": {}}


async def kb_answering(view: dict[str, Any]) -> TestServer:
    """A stand-in kb whose player state is `view`."""
    async def state(request: web.Request) -> web.Response:
        return web.json_response(view)
    app = web.Application()
    app.router.add_get("/experiences/{experience}/players/{user}/state", state)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_a_world_equal_to_kbs_passes_and_one_that_differs_is_named() -> None:
    frames = [{"type": "area_of_interest", **VIEW}]
    server = await kb_answering(VIEW)
    try:
        same = await check_worlds(str(server.make_url("")).rstrip("/"), "key", [("p1", frames)], {})
    finally:
        await server.close()
    assert same.ok and same.worlds == 1
    server = await kb_answering({**VIEW, "player": {"current_area": "garden", "inventory": []}})
    try:
        other = await check_worlds(str(server.make_url("")).rstrip("/"), "key", [("p1", frames)], {})
    finally:
        await server.close()
    assert not other.ok and other.diverged == ["p1: content differs at v3"]


def test_a_sample_with_no_world_compared_is_not_a_pass() -> None:
    assert not WorldChecks().ok
