"""GET /ws/experience: the edge's checks, the upgrade, then the socket handed to a Session."""
from __future__ import annotations

import logging
import uuid

from aiohttp import web

from gateway.connlog import LINES
from gateway.edge.admission import Refusal, parse_cursor
from gateway.keys import EDGE, GATEWAY_ID, SESSION_DEPS, SETTINGS
from gateway.ws.frameguard import FrameLimits
from gateway.ws.session import Session
from gateway.ws.socket import GatewayWebSocket
from shared.auth import Identity
from shared.config import Settings
from shared.schemas.errors import CloseCode, ErrorCode
from shared.service.problems import refuse

log = logging.getLogger(__name__)
# Refusals answered after the upgrade, as close codes: a browser's WebSocket cannot read an HTTP error.
# The checks before the token (origin, rate, address) are answered in HTTP: a flood costs no upgrade.
CLOSES = {"token": (CloseCode.UNAUTHORIZED, b"unauthorized"),
          "experience": (CloseCode.FORBIDDEN, b"experience not allowed"),
          "user": (CloseCode.TOO_MANY_SESSIONS, b"too many sessions for this user")}


async def ws_experience(request: web.Request) -> web.StreamResponse:
    """The primary client endpoint: one persistent session per socket."""
    experience = request.query.get("experience", "")
    async with request.app[EDGE].admit(request, "websocket", experience) as admitted:
        if isinstance(admitted, Refusal) and admitted.check not in CLOSES:
            return admitted.response()
        return await _accept(request, request.app[SETTINGS], admitted, experience)


async def _accept(request: web.Request, settings: Settings, admitted: Identity | Refusal,
                  experience: str) -> web.StreamResponse:
    """Upgrade, then close at once with the refusal's code, or serve the session until it ends."""
    ws = GatewayWebSocket(heartbeat=settings.heartbeat_s, max_msg_size=settings.max_frame_bytes,
                          limits=FrameLimits.from_settings(settings))
    if not ws.can_prepare(request).ok:
        raise refuse(web.HTTPBadRequest, ErrorCode.INVALID_MESSAGE, "this endpoint expects a WebSocket upgrade")
    await ws.prepare(request)
    if ws.closed:  # what came with the handshake already broke the frame budget
        return ws
    conn_id = f"{request.app[GATEWAY_ID]}-{uuid.uuid4().hex[:12]}"
    if isinstance(admitted, Refusal):
        log.info("[%s] rejected (%s): %s", conn_id, admitted.check, admitted.message)
        code, reason = CLOSES[admitted.check]
        await ws.close(code=code, message=reason)
        return ws
    identity = admitted
    try:
        last_seq = parse_cursor(request.query.get("last_seq"))
    except ValueError:
        await ws.close(code=CloseCode.BAD_REQUEST, message=b"last_seq must be a non-negative integer")
        return ws
    LINES.line("opened", "[%s] open user=%s experience=%s last_seq=%s", conn_id, identity.user_id, experience,
               last_seq)  # a line per session up to a rate (gateway/connlog.py)
    session = Session(ws, request.app[SESSION_DEPS], identity.user_id, experience, conn_id, request.transport,
                      expires_at=identity.expires_at)
    await session.run(last_seq)
    return ws
