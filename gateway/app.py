"""The gateway's app factory: routes, resources in cleanup_ctx, sessions closed on shutdown."""
from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from pathlib import Path
from typing import AsyncIterator

import orjson
from aiohttp import web

from gateway.apidocs import document
from gateway.chat.narrators import make_narrator
from gateway.chat.pipeline import ChatService
from gateway.delivery.tick import SendTicks
from gateway.edge.addresses import client_address_middleware, parse_networks
from gateway.edge.admin import admin_only
from gateway.edge.admission import Edge
from gateway.edge.buckets import KeyedBuckets
from gateway.edge.pending import PendingRequests
from gateway.kbclient import KbClient
from gateway.keys import (
    BACKGROUND,
    CHAT,
    CHAT_LIMITS,
    EDGE,
    GATEWAY_ID,
    KB,
    METRICS,
    NATS,
    PENDING,
    PRESENCE,
    REGISTRY,
    SESSION_DEPS,
    SETTINGS,
    STREAMS,
    TICKS,
)
from gateway.metrics import GatewayMetrics
from gateway.presence import PresenceReporter
from gateway.registry import SessionRegistry
from gateway.sessiondeps import SessionDeps
from gateway.sse.chat import chat_unified
from gateway.sse.stream import sse_experience
from gateway.streams.natscopies import nats_client
from gateway.streams.natssub import check_nats_internals
from gateway.streams.streamset import StreamSet
from gateway.ws.handler import ws_experience
from gateway.ws.session import Session
from gateway.ws.socket import check_aiohttp_internals
from shared.auth import TokenVerifier
from shared.config import Settings
from shared.incarnations import new_incarnation
from shared.natsconn import nats_cleanup_ctx
from shared.schemas.actions import load_modules
from shared.schemas.errors import CloseCode, ErrorCode
from shared.schemas.fastload import check_marshmallow_internals
from shared.service.logs import quiet_client_errors, redact_library_loggers
from shared.service.metrics import metrics_response
from shared.service.problems import refuse
from shared.service.tasks import bounded, stop_tasks

log = logging.getLogger(__name__)
SHUTDOWN_BATCH = 500  # sessions told 1001 per turn of the loop at shutdown
SEQ = re.compile(r"[0-9]{1,19}")  # a stream sequence in a query: ASCII digits, below 2**64
STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page talks only to this origin (HTTP and WebSocket) and runs only its own script.
PAGE_CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'"


async def health(request: web.Request) -> web.Response:
    """GET /health: NATS status and session counts; 503 "degraded" (sessions kept) without JetStream.

    The 503 makes it a readiness check: a load balancer sends new clients to gateways that can
    deliver events, while this one keeps its sessions and recovers by itself.
    """
    link = request.app[NATS]
    status = link.status()
    body = {"status": "healthy" if status["jetstream"] else "degraded", "service": "gateway",
            "gateway_id": request.app[GATEWAY_ID], "nats": status, "sessions": request.app[REGISTRY].counts(),
            "narrator": request.app[CHAT].narrator.health()}  # informative: a failing model never makes it 503
    return web.Response(body=orjson.dumps(body), content_type="application/json",
                        status=200 if status["jetstream"] else 503)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    return metrics_response(request.app[METRICS].exposed)


async def event_timings(request: web.Request) -> web.Response:
    """GET /debug/event-timings?after=SEQ: this process's stamps of its newest events (the latency split)."""
    after = request.query.get("after", "0")
    if not SEQ.fullmatch(after):  # ASCII digits, at most a uint64's: never int() of "²" or of 4,301 digits
        raise refuse(web.HTTPBadRequest, ErrorCode.INVALID_MESSAGE, "after must be a non-negative integer")
    rows = request.app[STREAMS].reads.validator.timings.recent(int(after))
    return web.Response(body=orjson.dumps({"fields": ["seq", "committed", "received", "first_write", "last_write",
                                                      "writes"], "events": rows}), content_type="application/json")


async def live_page(request: web.Request) -> web.FileResponse:
    """GET /: the live page (plain HTML/JS; the token is typed in, never served)."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP})


async def favicon(request: web.Request) -> web.FileResponse:
    """GET /favicon.ico: the page's icon (SVG, which every current browser takes under this name)."""
    return web.FileResponse(STATIC_DIR / "favicon.svg", headers={"Content-Type": "image/svg+xml",
                                                                "Cache-Control": "max-age=86400"})


async def api_document(request: web.Request) -> web.Response:
    """GET /openapi.json and /asyncapi.json, generated from the schemas."""
    name = "openapi-gateway.json" if request.path == "/openapi.json" else "asyncapi.json"
    return web.Response(text=document(name), content_type="application/json")


def admin_token(request: web.Request) -> str:
    """GAIA_ADMIN_TOKEN: what the operator routes answer to (empty: nobody)."""
    return request.app[SETTINGS].admin_token


def add_routes(app: web.Application) -> None:
    """Every gateway route, in one place."""
    app.router.add_get("/ws/experience", ws_experience)
    app.router.add_post("/chat/unified", chat_unified)
    app.router.add_get("/sse/experience", sse_experience)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", admin_only(admin_token, metrics))
    app.router.add_get("/debug/event-timings", admin_only(admin_token, event_timings))
    app.router.add_get("/openapi.json", api_document)
    app.router.add_get("/asyncapi.json", api_document)
    app.router.add_get("/", live_page)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_static("/static/", STATIC_DIR)


async def _kb_ctx(app: web.Application) -> AsyncIterator[None]:
    kb = KbClient(app[SETTINGS])
    app[KB] = kb
    yield
    await kb.close()


async def _chat_ctx(app: web.Application) -> AsyncIterator[None]:
    """The chat pipeline and its narrator (a model's client when GAIA_NARRATOR_URL is set)."""
    settings = app[SETTINGS]
    narrator = make_narrator(settings, app[METRICS].registry)
    app[CHAT] = ChatService(app[KB], narrator, settings)
    narrator.start()
    yield
    await narrator.close()


async def _session_deps_ctx(app: web.Application) -> AsyncIterator[None]:
    """What every WebSocket session shares, built once its parts exist (not once per connection)."""
    app[SESSION_DEPS] = SessionDeps(app[SETTINGS], app[KB], app[NATS], app[STREAMS], app[REGISTRY], app[PRESENCE],
                                    app[METRICS], app[CHAT], app[TICKS], app[STREAMS].reads.validator.timings)
    yield


async def finish_chats(app: web.Application) -> None:
    """on_shutdown, before the sessions close: every chat in flight ends with its chat_done (a model's
    narrative cut short falls back to kb's message, reason `shutdown`)."""
    await app[CHAT].finish(app[SETTINGS].shutdown_timeout_s / 2)


async def _sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[REGISTRY] = SessionRegistry()
    app[STREAMS] = StreamSet(app[NATS], settings)
    app[TICKS] = SendTicks(settings.send_tick_ms)
    # Presence names this process's incarnation of its slot: a restart ends what the last one left (kb/presence.py).
    app[PRESENCE] = PresenceReporter(app[KB], new_incarnation(app[GATEWAY_ID]), settings.presence_renew_s)
    app[PRESENCE].on_refused = lambda session_ids: refuse_sessions(app[REGISTRY], session_ids)
    app[METRICS] = GatewayMetrics(app[REGISTRY], app[STREAMS], app[NATS], app[PENDING])
    tasks = [asyncio.create_task(app[STREAMS].sweep_forever(), name="stream-sweeper"),
             asyncio.create_task(app[PRESENCE].run(), name="presence-reporter")]
    app[BACKGROUND] = tasks
    yield
    log.info("sessions gone; reporting presence")
    await bounded(app[PRESENCE].flush(), 2.0, "presence flush")
    await stop_tasks(tasks)


def refuse_sessions(registry: SessionRegistry, session_ids: list[str]) -> None:
    """kb refused these sessions (their user has the most allowed, over every gateway): close them 4409."""
    for session_id in session_ids:
        session = registry.sessions.get(session_id)
        if isinstance(session, Session):
            session.refuse("too many sessions for this user")


async def close_all_sessions(app: web.Application) -> None:
    """on_shutdown: every session is told 1001 so clients reconnect elsewhere, SHUTDOWN_BATCH at a time
    (each batch's close frames leave before the next is written: the first clients hear it at once)."""
    sessions = list(app[REGISTRY].sessions.values())
    app[STREAMS].stopping = True
    if sessions:
        log.info("closing %d sessions for shutdown", len(sessions))
    started = time.perf_counter()
    for start in range(0, len(sessions), SHUTDOWN_BATCH):
        await asyncio.gather(*(s.shutdown(CloseCode.GOING_AWAY, "server shutting down")
                               for s in sessions[start:start + SHUTDOWN_BATCH]), return_exceptions=True)
        await asyncio.sleep(0)
    if sessions:
        log.info("told %d sessions 1001 in %.1f s; %d still open", len(sessions), time.perf_counter() - started,
                 len(app[REGISTRY].sessions))


def create_app(settings: Settings, gateway_id: str | None = None) -> web.Application:
    """Build the gateway application; nothing connects until the app starts."""
    check_aiohttp_internals()
    check_nats_internals()
    check_marshmallow_internals()
    redact_library_loggers()
    quiet_client_errors()
    load_modules(settings.action_modules)  # the actions games add: frames, chat verbs, the narrator's tool (kb: rules)
    proxies = parse_networks(settings.trusted_proxies)
    app = web.Application(client_max_size=settings.max_frame_bytes, middlewares=[client_address_middleware(proxies)])
    app[SETTINGS] = settings
    app[PENDING] = PendingRequests(settings.max_pending_requests_per_address, proxies)  # on by gateway/serve.py
    app[CHAT_LIMITS] = KeyedBuckets(settings.chats_per_user_per_s, settings.chat_burst)
    app[GATEWAY_ID] = gateway_id or settings.gateway_id or f"gw{uuid.uuid4().hex[:6]}"
    app[EDGE] = Edge(settings, TokenVerifier(settings), lambda: app[KB].experiences(),  # KB: set once started
                     lambda: app[KB].reserved_user_ids())
    # Closed, not drained, at the end: the gateway only reads (and asks direct gets), nothing to flush.
    app.cleanup_ctx.append(nats_cleanup_ctx(SETTINGS, NATS, f"gateway-{app[GATEWAY_ID]}", manage_stream=False,
                                            new_client=nats_client(settings), drain=False))
    app.cleanup_ctx.append(_kb_ctx)
    app.cleanup_ctx.append(_sessions_ctx)
    app.cleanup_ctx.append(_chat_ctx)
    app.cleanup_ctx.append(_session_deps_ctx)
    app.on_shutdown.append(finish_chats)
    app.on_shutdown.append(close_all_sessions)
    add_routes(app)
    return app
