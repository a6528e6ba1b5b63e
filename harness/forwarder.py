"""The floor of "one NATS subscription per WebSocket" in Python: a minimal forwarder for the benchmark.

One core subscription per socket, each message's bytes sent as one text frame: no validation,
no per-player copy, no cursor, no outbox. The gateway is judged against this.
Run: `python -m harness.forwarder --port P --nats URL`.
"""
from __future__ import annotations

import argparse
import asyncio

import nats
from aiohttp import web
from nats.aio.msg import Msg

from gateway.ws.socket import GatewayWebSocket
from shared.natssub import subscribe_direct

NC = web.AppKey("nc", nats.NATS)


async def socket(request: web.Request) -> web.WebSocketResponse:
    """GET /ws?subject=S: forward every message on S until the socket closes.

    The same primitives as the gateway, so the floor is the design's, not a library's: the
    lightest core subscription (messages handed over in the read loop's turn) and one write per
    frame straight to the socket; only when the socket pushes back do frames wait, in order.
    """
    ws = GatewayWebSocket()
    await ws.prepare(request)
    waiting: list[bytes] = []
    drainer: asyncio.Task[None] | None = None

    async def drain() -> None:
        nonlocal drainer
        try:
            while waiting:
                frames = waiting[:]
                del waiting[:]
                await ws.send_texts(frames)
        finally:
            drainer = None

    def forward(msg: Msg) -> None:
        nonlocal drainer
        if drainer is None and ws.try_write(msg.data):
            return
        waiting.append(msg.data)
        if drainer is None:
            drainer = asyncio.ensure_future(drain())

    sub = await subscribe_direct(request.app[NC], request.query["subject"], forward)
    await request.app[NC].flush()
    await ws.send_str("ready")
    try:
        async for _ in ws:
            pass
    finally:
        await sub.unsubscribe()
    return ws


def create_app(nats_url: str) -> web.Application:
    """The forwarder app: one NATS connection, one route."""
    app = web.Application()

    async def connection(app: web.Application):  # type: ignore[no-untyped-def]
        app[NC] = await nats.connect(nats_url)
        yield
        await app[NC].close()

    app.cleanup_ctx.append(connection)
    app.router.add_get("/ws", socket)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats", required=True)
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    web.run_app(create_app(args.nats), host="127.0.0.1", port=args.port, print=None, backlog=4096)


if __name__ == "__main__":
    main()
