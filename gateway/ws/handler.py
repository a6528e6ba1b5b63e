"""GET /ws/experience: the edge's checks, the upgrade, then the socket handed to a Session."""
from __future__ import annotations

import logging
import uuid

from aiohttp import web

from gateway.edge.admission import parse_cursor
from gateway.keys import CHAT, EDGE, GATEWAY_ID, KB, METRICS, NATS, PRESENCE, REGISTRY, SETTINGS, STREAMS, TICKS
from gateway.ws.session import Session, SessionDeps
from gateway.ws.socket import GatewayWebSocket
from shared.auth import TokenError
from shared.config import Settings
from shared.schemas.errors import CloseCode, ErrorCode
from shared.service.problems import refuse

log = logging.getLogger(__name__)


def session_deps(app: web.Application) -> SessionDeps:
    """The shared pieces every session uses."""
    return SessionDeps(app[SETTINGS], app[KB], app[NATS], app[STREAMS], app[REGISTRY], app[PRESENCE], app[METRICS],
                       app[CHAT], app[TICKS])


async def ws_experience(request: web.Request) -> web.StreamResponse:
    """The primary client endpoint: one persistent session per socket."""
    edge = request.app[EDGE]
    if not edge.origin_allowed(request):
        raise refuse(web.HTTPForbidden, "forbidden", "origin not allowed")
    edge.check_handshake_rate(request)
    edge.refuse_crowded_address(request)
    with edge.counted_connection(request):  # counted from the handshake on, so a burst cannot slip past the cap
        return await _accept(request, request.app[SETTINGS])


async def _accept(request: web.Request, settings: Settings) -> web.StreamResponse:
    """Upgrade, authenticate, check, then serve the session until it ends.

    After the upgrade every refusal is a close code: a browser's WebSocket cannot read an HTTP error.
    """
    ws = GatewayWebSocket(heartbeat=settings.heartbeat_s, max_msg_size=settings.max_frame_bytes)
    if not ws.can_prepare(request).ok:
        raise refuse(web.HTTPBadRequest, ErrorCode.INVALID_MESSAGE, "this endpoint expects a WebSocket upgrade")
    await ws.prepare(request)
    conn_id = f"{request.app[GATEWAY_ID]}-{uuid.uuid4().hex[:12]}"
    try:
        identity = await request.app[EDGE].identify(request, allow_query=True)
    except TokenError as exc:
        log.info("[%s] rejected: %s", conn_id, exc)
        await ws.close(code=CloseCode.UNAUTHORIZED, message=b"unauthorized")
        return ws
    experience = request.query.get("experience", "")
    if await request.app[EDGE].experience_refusal(experience, request.app[KB]) is not None:
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
