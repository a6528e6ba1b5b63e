"""The floor of "one NATS subscription per WebSocket" in Python: a minimal forwarder for the benchmark.

One core subscription per socket, each message's bytes sent as one text frame: no validation,
no per-player copy, no cursor, no outbox. The gateway is judged against this; with `--tick-ms` it is
the floor of the send tick too (the gateway's own ticker, one write per socket per tick). It reads NATS
with the gateway's own parser (gateway/streams/natscopies.py: a run of copies of one message read once),
so the floor has what the gateway has; `--parser nats-py` reads every copy as nats-py does, a line that
shows what the parser saves.
Run: `python -m harness.bench.floors.forwarder --port P --nats URL [--tick-ms 50] [--parser copies|nats-py]`.
"""
from __future__ import annotations

import argparse
import asyncio
from typing import AsyncIterator

import nats
from aiohttp import web
from nats.aio.msg import Msg

from gateway.delivery.tick import SendTicker
from gateway.streams.natscopies import read_copies_once
from gateway.streams.natssub import subscribe_direct
from gateway.ws.socket import GatewayWebSocket

NC = web.AppKey("nc", nats.NATS)
TICKER = web.AppKey("ticker", SendTicker)
PARSERS = ("copies", "nats-py")  # the gateway's CopyParser (the floor), or nats-py's own (what it saves)


class ForwardedSocket:
    """One socket's frames: written as they come, or with a tick gathered and written once per tick."""

    __slots__ = ("ws", "ticker", "waiting", "drainer", "due")

    def __init__(self, ws: GatewayWebSocket, ticker: SendTicker | None) -> None:
        self.ws = ws
        self.ticker = ticker
        self.waiting: list[bytes] = []
        self.drainer: asyncio.Task[None] | None = None
        self.due = False  # handed to the ticker, which calls flush at the tick's end

    def forward(self, msg: Msg) -> None:
        """A message for this socket: one write now, or queued (for the tick, or behind a busy socket)."""
        if self.ticker is None and self.drainer is None and self.ws.try_write(msg.data):
            return
        self.waiting.append(msg.data)
        if self.ticker is not None and self.drainer is None:
            if not self.due:
                self.due = True
                self.ticker.add(self)
        elif self.drainer is None:
            self.drainer = asyncio.ensure_future(self.drain())

    def flush(self) -> None:
        """The tick ends: everything waiting in one write, or paced by the socket if it pushes back."""
        self.due = False
        if self.drainer is not None or not self.waiting:
            return
        if self.ws.try_write_all(self.waiting):
            self.waiting = []
        else:
            self.drainer = asyncio.ensure_future(self.drain())

    async def drain(self) -> None:
        """Send what waits, paced by the socket."""
        try:
            while self.waiting:
                frames, self.waiting = self.waiting, []
                await self.ws.send_texts(frames)
        finally:
            self.drainer = None


async def socket(request: web.Request) -> web.WebSocketResponse:
    """GET /ws?subject=S: forward every message on S until the socket closes.

    The same primitives as the gateway, so the floor is the design's, not a library's: the
    lightest core subscription (messages handed over in the read loop's turn) and one write per
    frame straight to the socket (or, with `--tick-ms`, the gateway's send tick: one write per
    socket per tick); only when the socket pushes back do frames wait, in order.
    """
    ws = GatewayWebSocket()
    await ws.prepare(request)
    forwarded = ForwardedSocket(ws, request.app.get(TICKER))
    sub = await subscribe_direct(request.app[NC], request.query["subject"], forwarded.forward)
    await request.app[NC].flush()
    await ws.send_str("ready")
    try:
        async for _ in ws:
            pass
    finally:
        await sub.unsubscribe()
    return ws


def create_app(nats_url: str, tick_ms: float = 0, parser: str = "copies") -> web.Application:
    """The forwarder app: one NATS connection read by `parser`, one route; with `tick_ms` one send tick for
    every socket."""
    if parser not in PARSERS:
        raise ValueError(f"parser must be one of {PARSERS}, not {parser!r}")
    app = web.Application()
    if tick_ms > 0:
        app[TICKER] = SendTicker(tick_ms / 1000)

    async def connection(app: web.Application) -> AsyncIterator[None]:
        nc = nats.NATS()
        app[NC] = read_copies_once(nc) if parser == "copies" else nc
        await nc.connect(nats_url)
        yield
        await app[NC].close()

    app.cleanup_ctx.append(connection)
    app.router.add_get("/ws", socket)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--tick-ms", type=float, default=0, help="gather each socket's frames for one tick (0: off)")
    parser.add_argument("--parser", choices=PARSERS, default="copies",
                        help="copies: the gateway's parser (the floor); nats-py: nats-py's own, copy by copy")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    web.run_app(create_app(args.nats, args.tick_ms, args.parser), host="127.0.0.1", port=args.port, print=None,
                backlog=4096)


if __name__ == "__main__":
    main()
