"""kb's HTTP handlers: the API the gateway calls (service key required) and /health."""
from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiohttp import web
from marshmallow import Schema, ValidationError

from kb.apidocs import document
from kb.keys import METRICS, NATS, OWNERSHIP, PRESENCE, PUBLISHER, SETTINGS, STORE, WORLDS
from kb.leaseforward import forward_presence, local_world_or_forward
from kb.worldservice import TooManySessions
from shared.auth import same_secret
from shared.schemas.errors import ErrorCode
from shared.schemas.kbapi import ActionRequestSchema, PresenceUpdateSchema, ViewsRequestSchema
from shared.schemas.messages import ACTIONS
from shared.service.metrics import metrics_response
from shared.service.problems import json_response, problem
from shared.subjects import BadSubjectToken, check_token

log = logging.getLogger(__name__)
_ACTION = ActionRequestSchema()
_PRESENCE = PresenceUpdateSchema()
_VIEWS = ViewsRequestSchema()
MAX_BODY = 64 * 1024
PUBLIC_PATHS = ("/health", "/metrics", "/openapi.json")  # no secrets there; scrapers and docs need no key
MAX_PRESENCE_BODY = 8 * 1024 * 1024  # a gateway renewing thousands of sessions at once


@web.middleware
async def service_key_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every route but /health needs the gateway's X-API-Key."""
    if request.path not in PUBLIC_PATHS and not same_secret(request.headers.get("X-API-Key"),
                                                    request.app[SETTINGS].kb_api_key):
        return problem(401, "unauthorized", "missing or wrong X-API-Key")
    return await handler(request)


async def _load_body(request: web.Request, schema: Schema, limit: int = MAX_BODY) -> dict[str, Any] | web.Response:
    """Parse and validate a JSON body; a Response is returned for the client's mistakes."""
    if request.content_length is not None and request.content_length > limit:
        return problem(413, "too_large", f"body over {limit} bytes")
    raw = await request.read()
    if len(raw) > limit:
        return problem(413, "too_large", f"body over {limit} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return problem(400, "invalid_json", f"body is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return problem(422, "invalid_message", "body must be a JSON object")
    try:
        return schema.load(data)
    except ValidationError as exc:
        return problem(422, "invalid_message", "body does not match its schema", exc.messages)


async def post_action(request: web.Request) -> web.Response:
    """POST /experiences/{experience}/actions: apply one action for the user the gateway names."""
    world = await local_world_or_forward(request)
    if isinstance(world, web.Response):
        return world
    body = await _load_body(request, _ACTION)
    if isinstance(body, web.Response):
        return body
    if body["action"] not in ACTIONS:
        return problem(422, "unknown_action", f"unknown action {body['action'][:64]!r}",
                       {"action": [f"must be one of {', '.join(ACTIONS)}"]})
    if not world.offers(body["action"]):  # an action another experience added
        return problem(422, "unknown_action", f"{world.experience} has no action {body['action']!r}",
                       {"action": [f"not offered by {world.experience} (its zone.json `actions`)"]})
    user_id, trace_id = body.pop("user_id"), body.pop("trace_id")
    if user_id in world.reserved_ids():
        return _reserved(user_id)
    metrics, started = request.app[METRICS], time.perf_counter()
    result = await world.act(user_id, body, trace_id)
    metrics.action_seconds.labels(body["action"]).observe(time.perf_counter() - started)
    metrics.actions.labels(body["action"], "committed" if result["success"] else "refused").inc()
    return json_response(result)


async def get_player_state(request: web.Request) -> web.Response:
    """GET /experiences/{experience}/players/{user_id}/state[?session_id=&gateway_id=]: area_of_interest.

    With a session id the session also becomes present, atomically with the snapshot.
    """
    world = await local_world_or_forward(request)
    if isinstance(world, web.Response):
        return world
    user_id = request.match_info["user_id"]
    try:
        check_token(user_id)
    except BadSubjectToken:
        return problem(422, "invalid_message", "not a valid user id")
    if user_id in world.reserved_ids():
        return _reserved(user_id)
    session_id, gateway_id = request.query.get("session_id"), request.query.get("gateway_id", "unknown")
    if not session_id:
        await world.ensure_player(user_id)
        return json_response(world.view(user_id))
    if len(session_id) > 128 or len(gateway_id) > 128:
        return problem(422, "invalid_message", "session_id and gateway_id are at most 128 characters")
    try:
        view = await world.join_and_view(user_id, session_id, gateway_id, time.time(),
                                         request.app[SETTINGS].max_connections_per_user)
    except TooManySessions as exc:
        return problem(429, ErrorCode.TOO_MANY_SESSIONS, str(exc))
    return json_response(view)  # the presence sweep persists the join within a second


async def post_views(request: web.Request) -> web.Response:
    """POST /experiences/{experience}/views: the snapshots of many sessions at once, each joining as
    GET .../state with a session id does; `{"views": [...]}` in the order asked, an entry
    `{"error": "too_many_sessions", ...}` for a session its user has no room for.

    A gateway sends the sessions that connected within one turn of its event loop: a connect storm
    costs kb one request per batch, not one per player.
    """
    world = await local_world_or_forward(request)
    if isinstance(world, web.Response):
        return world
    body = await _load_body(request, _VIEWS, MAX_PRESENCE_BODY)
    if isinstance(body, web.Response):
        return body
    reserved = world.reserved_ids()
    if taken := sorted({s["user_id"] for s in body["sessions"]} & reserved):
        return _reserved(taken[0])
    views = await world.join_and_view_many(body["sessions"], time.time(),
                                           request.app[SETTINGS].max_connections_per_user)
    return json_response({"views": views})


async def post_presence(request: web.Request) -> web.Response:
    """POST /presence: a gateway reports sessions that joined, left, dropped or are still alive."""
    body = await _load_body(request, _PRESENCE, MAX_PRESENCE_BODY)
    if isinstance(body, web.Response):
        return body
    routed = await forward_presence(request, body)
    if isinstance(routed, web.Response):
        return routed
    body, present, refused = routed
    body, ignored = _playable(body, request.app[WORLDS])
    book, worlds, now = request.app[PRESENCE], request.app[WORLDS], time.time()
    gateway, limit = body["gateway_id"], request.app[SETTINGS].max_connections_per_user
    if ended := book.gateway_started(gateway, now):
        log.info("gateway %s started again: %d sessions of its earlier incarnation enter their grace", gateway, ended)
    changes = []
    for s in body["join"]:
        # A session resumed on a gateway (no snapshot asked) is counted here: past the per-user
        # limit it is refused, and its gateway closes it (4409).
        if book.over_limit(s["session_id"], s["user_id"], s["experience"], limit):
            refused.append(s["session_id"])
            continue
        changes += book.join(s["session_id"], s["user_id"], s["experience"], gateway, now)
    for s in body["alive"]:
        changes += book.alive(s["session_id"], s["user_id"], s["experience"], gateway, now)
    for s in body["leave"]:
        changes += book.leave(s["session_id"])
    for s in body["drop"]:
        changes += book.drop(s["session_id"], now)
    for experience in {c.experience for c in changes}:
        if experience in worlds:
            await worlds[experience].announce([c for c in changes if c.experience == experience])
    # How many are present, not who: the whole sorted roster per report made a connect storm of
    # 10,000 players cost kb O(n log n) per batch of joins (a fifth of its CPU, measured).
    present.update({e: book.present_count(e) for e in {s["experience"] for k in ("join", "alive") for s in body[k]}})
    return json_response({"present": present, "refused": refused, **({"ignored": ignored} if ignored else {})})


def _playable(body: dict[str, Any], worlds: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The report without sessions of experiences this kb does not serve or of reserved user ids; how many went.

    Such a session is a gateway's bug or a forged report: announcing it would tell every player of a
    world about someone who cannot be there.
    """
    reserved = {e: w.reserved_ids() for e, w in worlds.items()}
    kept, ignored = dict(body), 0
    for kind in ("join", "alive", "leave", "drop"):
        kept[kind] = [s for s in body[kind]
                      if s["experience"] in worlds and s["user_id"] not in reserved[s["experience"]]]
        ignored += len(body[kind]) - len(kept[kind])
    if ignored:
        log.warning("presence report from %s: %d sessions of unknown experiences or reserved ids ignored",
                    body["gateway_id"], ignored)
    return kept, ignored


def _reserved(user_id: str) -> web.Response:
    return problem(403, ErrorCode.RESERVED_USER_ID, f"{user_id[:64]!r} is reserved for the world and its NPCs")


async def health(request: web.Request) -> web.Response:
    """GET /health: healthy when NATS and JetStream are up; degraded (still serving) otherwise."""
    link = request.app[NATS]
    nats_status = link.status()
    return json_response({
        "status": "healthy" if nats_status["jetstream"] else "degraded",
        "service": "kb",
        "nats": nats_status,
        "outbox": {"pending": await request.app[STORE].outbox_depth(),
                   "published": request.app[PUBLISHER].published,
                   "republished": request.app[PUBLISHER].republished},
        "experiences": {e: w.world["version"] for e, w in request.app[WORLDS].items()},
        "owns": request.app[OWNERSHIP].owned(),
        "reserved_user_ids": sorted({i for w in request.app[WORLDS].values() for i in w.reserved_ids()}),
        "actions": {e: list(w.content.actions) for e, w in request.app[WORLDS].items()},  # added ones offered
    })


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    kb_metrics = request.app[METRICS]
    kb_metrics.outbox_pending = await request.app[STORE].outbox_depth()
    return metrics_response(kb_metrics.registry)


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: this service's API, generated from the schemas."""
    return web.Response(text=document("openapi-kb.json"), content_type="application/json")
