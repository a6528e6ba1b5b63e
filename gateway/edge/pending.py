"""Connections still waiting for their first request's headers, counted per client address.

A connection that never finishes its request line and headers has no request, so no middleware or
limit of the edge ever sees it; it held a descriptor until aiohttp's keep-alive timer ended it
(75 s; issue 38 measured 3,000 of them from one address holding ~1,500 descriptors per worker
for 71-81 s). The gateway's server now ends such a connection after `GAIA_HTTP_HEADER_TIMEOUT_S`
(aiohttp's keep-alive timeout, which also runs from the connection's start), and this count
closes a connection at once when its address already holds `GAIA_MAX_PENDING_REQUESTS_PER_ADDRESS`
unfinished ones. The address is the TCP peer's (no header has been read yet), so trusted proxies
are not counted: they forward whole requests, and every client behind them shares their address.

Hooked on aiohttp's `web.Server` (gateway/serve.py installs it): its `connection_made`,
`connection_lost` and `request_factory`, the last called once a request's headers are parsed (with
the connection's handler third; `check_aiohttp_internals` in gateway/ws/socket.py checks the three
at start, aiohttp being pinned to 3.14).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from aiohttp import web

from gateway.edge.addresses import Network, trusted

log = logging.getLogger(__name__)
WARN_EVERY_S = 60.0


class PendingRequests:
    """Unfinished first requests per client address, with a cap."""

    def __init__(self, cap: int, proxies: tuple[Network, ...] = ()) -> None:
        self.cap = cap
        self.proxies = proxies
        self.by_address: Counter[str] = Counter()
        self.refused = 0  # connections closed at once for their address's unfinished requests
        self._pending: dict[Any, str] = {}  # request handler (one per connection) -> its address
        self._warned_at = -WARN_EVERY_S

    def install(self, server: web.Server) -> None:
        """Count the connections `server` makes: each is pending until its first request is parsed."""
        made, lost, make_request = server.connection_made, server.connection_lost, server.request_factory

        def connection_made(handler: Any, transport: Any) -> None:
            made(handler, transport)
            self.opened(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self.finished(handler)
            lost(handler, exc)

        def request_factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any, *rest: Any) -> Any:
            self.finished(protocol)
            return make_request(message, payload, protocol, writer, task, *rest)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        server.request_factory = request_factory

    def opened(self, handler: Any, transport: Any) -> None:
        """A new connection: counted, or closed at once when its address holds the cap already."""
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None
        if address is None or trusted(address, self.proxies):
            return
        if self.by_address[address] >= self.cap:
            self.refused += 1
            # After aiohttp's handler started (it is being set up now): cut off here, its start would
            # find the connection already gone and fail with a traceback.
            asyncio.get_running_loop().call_soon(transport.abort)
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_S:  # one line a minute, not one per connection
                self._warned_at = now
                log.warning("%s holds %d connections without a finished request; closing more at once "
                            "(%d so far; GAIA_MAX_PENDING_REQUESTS_PER_ADDRESS)", address, self.cap, self.refused)
            return
        self.by_address[address] += 1
        self._pending[handler] = address

    def finished(self, handler: Any) -> None:
        """The connection's first request arrived, or the connection is gone."""
        address = self._pending.pop(handler, None)
        if address is not None:
            self.by_address[address] -= 1
            if self.by_address[address] <= 0:
                del self.by_address[address]

    @property
    def pending(self) -> int:
        return len(self._pending)
