"""GET /ws/experience: authenticate, check limits, then hand the socket to a Session."""
from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Iterator

from aiohttp import web

from gateway.keys import ADDRESSES, CHAT, GATEWAY_ID, HANDSHAKES, KB, METRICS, NATS, PRESENCE, REGISTRY, SETTINGS, STREAMS, VERIFIER
from gateway.session import Session, SessionDeps
from gateway.websocket import GatewayWebSocket
from shared.auth import TokenError, bearer_token
from shared.config import Settings
from shared.schemas.errors import CloseCode

log = logging.getLogger(__name__)


def refuse_crowded_address(request: web.Request) -> None:
    """429 before anything is opened when one client address already holds its share of connections."""
    if request.app[ADDRESSES].count(request.remote or "?") >= request.app[SETTINGS].max_connections_per_address:
        raise web.HTTPTooManyRequests(text="too many open connections from this address")


@contextlib.contextmanager
def open_from(request: web.Request) -> Iterator[None]:
    """Count a connection against its client address for as long as it is open."""
    address = request.remote or "?"
    request.app[ADDRESSES].opened(address)
    try:
        yield
    finally:
        request.app[ADDRESSES].closed(address)


def session_deps(app: web.Application) -> SessionDeps:
    """The shared pieces every session uses."""
    return SessionDeps(app[SETTINGS], app[KB], app[NATS], app[STREAMS], app[REGISTRY], app[PRESENCE], app[METRICS],
                       app[CHAT])


def parse_cursor(raw: str | None) -> int | None:
    """A `last_seq`/`Last-Event-ID` value: a non-negative integer, or ValueError."""
    if raw is None or raw == "":
        return None
    value = int(raw)
    if value < 0 or value > 2**63 - 1:
        raise ValueError("out of range")
    return value


def origin_allowed(request: web.Request) -> bool:
    """Browsers send Origin; when allowed_origins is set, only those may connect."""
    allowed = request.app[SETTINGS].allowed_origins
    origin = request.headers.get("Origin")
    return not allowed or origin is None or origin in allowed


async def ws_experience(request: web.Request) -> web.StreamResponse:
    """The primary client endpoint: one persistent session per socket."""
    settings = request.app[SETTINGS]
    if not origin_allowed(request):
        raise web.HTTPForbidden(text="origin not allowed")
    if not request.app[HANDSHAKES].allow(request.remote or "?"):
        raise web.HTTPTooManyRequests(text="too many connection attempts; retry later")
    refuse_crowded_address(request)
    with open_from(request):  # counted from the handshake on, so a burst cannot slip past the cap
        return await _accept(request, settings)


async def _accept(request: web.Request, settings: Settings) -> web.StreamResponse:
    """Upgrade, authenticate, check, then serve the session until it ends."""
    ws = GatewayWebSocket(heartbeat=settings.heartbeat_s, max_msg_size=settings.max_frame_bytes)
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(text="this endpoint expects a WebSocket upgrade")
    await ws.prepare(request)
    conn_id = f"{request.app[GATEWAY_ID]}-{uuid.uuid4().hex[:12]}"
    token = bearer_token(request.headers.get("Authorization")) or request.query.get("token")
    try:
        identity = await request.app[VERIFIER].verify(token)
    except TokenError as exc:
        log.info("[%s] rejected: %s", conn_id, exc)
        await ws.close(code=CloseCode.UNAUTHORIZED, message=b"unauthorized")
        return ws
    experience = request.query.get("experience", "")
    if not await _experience_allowed(request, experience):
        await ws.close(code=CloseCode.FORBIDDEN, message=b"experience not allowed")
        return ws
    if request.app[REGISTRY].count_for(identity.user_id) >= settings.max_sessions_per_user:
        await ws.close(code=CloseCode.TOO_MANY_SESSIONS, message=b"too many sessions for this user")
        return ws
    try:
        last_seq = parse_cursor(request.query.get("last_seq"))
    except ValueError:
        await ws.close(code=CloseCode.BAD_REQUEST, message=b"last_seq must be a non-negative integer")
        return ws
    log.info("[%s] open user=%s experience=%s last_seq=%s", conn_id, identity.user_id, experience, last_seq)
    session = Session(ws, session_deps(request.app), identity.user_id, experience, conn_id, request.transport,
                      expires_at=identity.expires_at)
    await session.run(last_seq)
    return ws


async def _experience_allowed(request: web.Request, experience: str) -> bool:
    """Configured allow-list first; otherwise any experience kb serves (if kb can be asked)."""
    allowed = request.app[SETTINGS].allowed_experiences
    if not experience or len(experience) > 128:
        return False
    if allowed:
        return experience in allowed
    known = await request.app[KB].experiences()
    return known is None or experience in known
