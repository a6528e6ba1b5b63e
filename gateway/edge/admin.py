"""Who may read the operator routes (/metrics, /debug/...): `Authorization: Bearer <GAIA_ADMIN_TOKEN>`.

They tell event rates, audiences and process internals, and /debug/event-timings costs milliseconds
of CPU a call, so they are off the public listener: without the setting they answer 404 to
everyone, and with it 404 to anyone without the token (as for a route that does not exist: nothing
tells a stranger they are there). Centrifugo's model: admin endpoints behind their own secret
(docs/security.md says why a token on the one port rather than a second port).
"""
from __future__ import annotations

import hmac
from typing import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_only(token: Callable[[web.Request], str], handler: Handler) -> Handler:
    """`handler`, answered only for the admin token (compared in constant time); 404 otherwise."""
    async def guarded(request: web.Request) -> web.StreamResponse:
        expected = token(request)
        given = request.headers.get("Authorization", "")
        if not expected or not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            raise web.HTTPNotFound()
        return await handler(request)
    guarded.__doc__ = handler.__doc__
    return guarded


def admin_headers(token: str) -> dict[str, str]:
    """The header a scraper or tool sends."""
    return {"Authorization": f"Bearer {token}"}
