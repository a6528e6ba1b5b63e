"""The floor of a connect: a minimal aiohttp WebSocket server the gateway's CPU per connect is judged against.

It verifies the same JWT the same way (shared/auth.py's TokenVerifier), then writes a `connected`
frame and an `area_of_interest` snapshot of the sizes the gateway wrote in the same run (told
through POST /sizes), and holds the socket until the client closes it. No kb, no NATS, no
presence, no stream cursor: what any WebSocket server with JWT auth pays per connect.
Run: `python -m harness.bench.floors.handshake --port P` (the JWT settings come from the GAIA_* environment).
"""
from __future__ import annotations

import argparse
import itertools
import logging
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import WSMsgType, web

from shared.auth import TokenError, TokenVerifier
from shared.config import Settings
from shared.service.gcpacer import gc_pacer_ctx
from shared.service.runtime import new_event_loop

log = logging.getLogger(__name__)

@dataclass
class FloorState:
    """The sizes to write, connect by connect, and how many connects there were since they were set."""

    connected: list[int] = field(default_factory=lambda: [100])
    snapshot: list[int] = field(default_factory=lambda: [1000])
    counter: itertools.count = field(default_factory=itertools.count)  # type: ignore[type-arg]


VERIFIER = web.AppKey("verifier", TokenVerifier)
STATE = web.AppKey("state", FloorState)


def padded(frame: dict[str, object], size: int) -> bytes:
    """The frame encoded, padded with a `pad` string to `size` bytes (never shorter than it encodes)."""
    bare = orjson.dumps({**frame, "pad": ""})
    return orjson.dumps({**frame, "pad": "x" * max(0, size - len(bare))})


async def socket(request: web.Request) -> web.StreamResponse:
    """GET /ws/experience?experience=E&token=T: verify, say `connected`, send the snapshot, hold the socket."""
    app = request.app
    try:
        identity = await app[VERIFIER].verify(request.query.get("token"))
    except TokenError as exc:
        raise web.HTTPUnauthorized(text=str(exc)) from exc
    ws = web.WebSocketResponse(heartbeat=None)
    await ws.prepare(request)
    state = app[STATE]
    k = next(state.counter)
    connected = {"type": "connected", "connection_id": f"floor-{k}", "user_id": identity.user_id,
                 "experience": request.query.get("experience", ""), "timestamp": int(time.time() * 1000)}
    await ws.send_frame(padded(connected, state.connected[k % len(state.connected)]), WSMsgType.TEXT)
    snapshot = {"type": "area_of_interest", "snapshot_version": k, "player": {"user_id": identity.user_id}}
    await ws.send_frame(padded(snapshot, state.snapshot[k % len(state.snapshot)]), WSMsgType.TEXT)
    async for _ in ws:
        pass
    return ws


async def set_sizes(request: web.Request) -> web.Response:
    """POST /sizes {"connected": [bytes...], "snapshot": [bytes...]}: the sizes to write, connect by connect."""
    body = await request.json()
    state = request.app[STATE]
    state.connected = [int(n) for n in body["connected"]] or state.connected
    state.snapshot = [int(n) for n in body["snapshot"]] or state.snapshot
    state.counter = itertools.count()
    return web.json_response({"ok": True})


def create_app(settings: Settings) -> web.Application:
    """The floor app: the token verifier, the sizes, two routes."""
    app = web.Application()
    app[VERIFIER] = TokenVerifier(settings)
    app[STATE] = FloorState()
    app.router.add_get("/ws/experience", socket)
    app.router.add_post("/sizes", set_sizes)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = Settings.from_env()
    app = create_app(settings)
    if settings.gc_full_every_s > 0:  # the gateway's runtime: its event loop and its collector pacing
        app.cleanup_ctx.append(gc_pacer_ctx(settings.gc_full_every_s))
    web.run_app(app, loop=new_event_loop(settings), host="127.0.0.1", port=args.port, access_log=None,
                backlog=settings.listen_backlog, print=None)


if __name__ == "__main__":
    main()
