"""`python -m gateway`'s server: aiohttp's `web.run_app` for one TCP listener, with the edge's count of
unfinished requests on its connections (gateway/edge/pending.py) and a header-read timeout.

run_app makes its AppRunner out of reach, and the count needs the runner's `web.Server`, so this is
run_app's own sequence (runner, site, sleep, cleanup; SIGINT/SIGTERM end it through GracefulExit)
with one step added.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import psutil
from aiohttp import web

from gateway.keys import PENDING, SETTINGS

log = logging.getLogger(__name__)


def serve(app: web.Application, host: str, port: int, loop: asyncio.AbstractEventLoop,
          reuse_port: bool | None = None) -> None:
    """Run the app on host:port until SIGINT/SIGTERM, then shut it down (sessions told 1001)."""
    settings = app[SETTINGS]

    async def run() -> None:
        # keepalive_timeout runs from a connection's start too: it is the time the request's headers
        # have to arrive (aiohttp closes a connection still waiting then), and an idle keep-alive's.
        runner = web.AppRunner(app, handle_signals=True, access_log=None, shutdown_timeout=settings.shutdown_timeout_s,
                               keepalive_timeout=settings.http_header_timeout_s)
        await runner.setup()
        try:
            assert runner.server is not None
            app[PENDING].install(runner.server)
            site = web.TCPSite(runner, host, port, backlog=settings.listen_backlog, reuse_port=reuse_port)
            await site.start()
            # One line per start: a restart's time to listen, apart from its clients' time to come back.
            log.info("listening on %s:%d, %.2f s after the process started", host, port,
                     time.time() - psutil.Process().create_time())
            while True:
                await asyncio.sleep(3600)
        finally:
            await runner.cleanup()

    main = loop.create_task(run())
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
