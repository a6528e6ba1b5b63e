"""The floor of "one NATS subscription per WebSocket" in Python: a minimal forwarder for the benchmark.

One core nats-py subscription per socket, each message's bytes sent as one text frame: no
validation, no per-player copy, no cursor, no outbox. The gateway is judged against this.
Run: `python -m harness.forwarder --port P --nats URL`.
"""
from __future__ import annotations

import argparse

import nats
from aiohttp import WSMsgType, web

NC = web.AppKey("nc", nats.NATS)


async def socket(request: web.Request) -> web.WebSocketResponse:
    """GET /ws?subject=S: forward every message on S until the socket closes."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)

    async def forward(msg: nats.aio.msg.Msg) -> None:
        await ws.send_frame(msg.data, WSMsgType.TEXT)

    sub = await request.app[NC].subscribe(request.query["subject"], cb=forward)
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
