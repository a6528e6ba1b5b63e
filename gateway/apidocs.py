"""The gateway's API documents: AsyncAPI 3 (WebSocket, SSE) and OpenAPI 3.1 (HTTP), from the schemas."""
from __future__ import annotations

import functools
from typing import Any

from apispec.ext.marshmallow import MarshmallowPlugin

from gateway.chat.schema import ChatRequestSchema
from shared.apidocs import CURSOR, JSON, VERSION, common_paths, json_schemas, new_spec, query, ref, render, schema_name
from shared.schemas import actions
from shared.schemas.errors import CloseCode, ErrorCode
from shared.schemas.events import BroadcastWorldUpdateSchema
from shared.schemas.messages import ACTION_REQUIRES, ACTIONS, CLIENT_MESSAGES, SERVER_MESSAGES

DOCUMENTS = {"asyncapi.json": lambda: asyncapi(), "openapi-gateway.json": lambda: openapi_gateway()}


def openapi_gateway() -> dict[str, Any]:
    """The gateway's HTTP routes; the WebSocket and SSE frames themselves are in the AsyncAPI document."""
    spec = new_spec("GAIA gateway (HTTP)", "Client-facing routes. Frames on /ws/experience and the SSE streams are "
                 "described in asyncapi.json; the client contract is docs/protocol.md.")
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("ChatRequest", schema=ChatRequestSchema)
    token = query("token", "JWT, for clients that cannot set headers (browsers' WebSocket/EventSource)",
                   {"type": "string"})
    experience = query("experience", "experience id", {"type": "string", "maxLength": 128}, required=True)
    auth: list[dict[str, list[str]]] = [{"bearer": []}, {}]
    spec.path("/ws/experience", operations={"get": {
        "summary": "Upgrade to the persistent WebSocket session (see asyncapi.json)", "security": auth,
        "parameters": [token, experience, query("last_seq", "resume cursor: last seq received", CURSOR)],
        "responses": {"101": {"description": "switching protocols; then a bad token closes with 4401, an experience "
                                             "not allowed with 4403, a user with too many connections with 4409"},
                      "400": {"description": "not a WebSocket request"}, "403": {"description": "origin not allowed"},
                      "429": {"description": "handshake rate, or connections per address"}}}})
    spec.path("/sse/experience", operations={"get": {
        "summary": "Persistent EventSource stream of world_update and presence events, id = seq", "security": auth,
        "parameters": [token, experience, query("last_seq", "resume cursor (or the Last-Event-ID header)", CURSOR)],
        "responses": {"200": {"description": "text/event-stream", "content": {"text/event-stream": {
            "schema": {"type": "string"}}}}, "401": {"description": "bad token"},
            "403": {"description": "origin or experience not allowed"}, "404": {"description": "unknown experience"},
            "429": {"description": "handshake rate, or connections per address or user, or SSE streams per user"}}}})
    spec.path("/chat/unified", operations={"post": {
        "summary": "Legacy chat: one message, streamed answer (world updates before narrative)", "security": auth,
        "requestBody": {"required": True, "content": {JSON: {"schema": ref("ChatRequest")}}},
        "responses": {"200": {"description": "text/event-stream of metadata, world_update, chat.completion.chunk, "
                              "done, [DONE]", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      "400": {"description": "bad JSON"}, "401": {"description": "bad token"},
                      "403": {"description": "origin or experience not allowed"},
                      "404": {"description": "unknown experience"}, "422": {"description": "schema errors"},
                      "429": {"description": "handshake rate, connections per address or user, or chats per second"}}}})
    spec.path("/", operations={"get": {"summary": "The live page (plain HTML/JS)", "responses": {
        "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}})
    spec.path("/asyncapi.json", operations={"get": {"summary": "the AsyncAPI document", "responses": {
        "200": {"description": "AsyncAPI 3", "content": {JSON: {"schema": {"type": "object"}}}}}}})
    admin = {"404": {"description": "without `Authorization: Bearer <GAIA_ADMIN_TOKEN>` (always, when that is unset)"}}
    spec.path("/debug/event-timings", operations={"get": {
        "summary": "this process's stamps of its newest events (kb commit, received, first and last socket write); "
                   "operators only (GAIA_ADMIN_TOKEN)",
        "parameters": [{"name": "after", "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}],
        "responses": {"200": {"description": "fields and one row per event", "content": {JSON: {"schema": {
            "type": "object"}}}}, "400": {"description": "after is not a non-negative integer"}, **admin}}})
    common_paths(spec, "gateway")
    text = {"text/plain": {"schema": {"type": "string"}}}
    spec.path("/metrics", operations={"get": {"summary": "Prometheus metrics; operators only (GAIA_ADMIN_TOKEN)",
                                              "responses": {"200": {"description": "text exposition format",
                                                                    "content": text}, **admin}}})
    return spec.to_dict()


def asyncapi() -> dict[str, Any]:
    """The WebSocket session and the SSE streams as AsyncAPI 3 channels and operations."""
    all_messages = {**CLIENT_MESSAGES, **SERVER_MESSAGES}
    schemas = json_schemas({**all_messages, "broadcast": BroadcastWorldUpdateSchema()})
    messages = {t: {"name": t, "title": t, "payload": ref(schema_name(s))} for t, s in all_messages.items()}
    schemas.update(action_schemas())
    messages["action"]["payload"] = {"oneOf": [ref(f"Action.{name}") for name in ACTIONS]}
    ws_query = {"type": "object", "required": ["experience"], "properties": {
        "token": {"type": "string"}, "experience": {"type": "string"}, "last_seq": CURSOR}}
    stream_types = ("world_update", "presence")

    def refs(types: Any, channel: str) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{channel}/messages/{t}"} for t in types]
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "GAIA real-time gateway", "version": VERSION, "description": (
            "One persistent WebSocket per device. Every world_update carries seq, the resume cursor "
            f"(last_seq / Last-Event-ID). Close codes: {_close_codes()}. Error codes: {_error_codes()}.")},
        "servers": {"local": {"host": "127.0.0.1:8000", "protocol": "ws", "description": "make run"},
                    "bus": {"host": "127.0.0.1:4222", "protocol": "nats",
                            "description": "kb -> gateways, JetStream stream WORLD_UPDATES (internal)"}},
        "channels": {
            "experience": {"address": "/ws/experience", "description": "the WebSocket session",
                           "messages": {t: {"$ref": f"#/components/messages/{t}"} for t in all_messages},
                           "bindings": {"ws": {"method": "GET", "query": ws_query}}},
            "sseExperience": {"address": "/sse/experience", "description": "EventSource stream (id: seq)",
                              "messages": {t: {"$ref": f"#/components/messages/{t}"} for t in stream_types}},
            "experienceUpdates": {
                "address": "world.updates.exp.{experience}", "servers": [{"$ref": "#/servers/bus"}],
                "description": "Internal: one message per commit; the gateway makes each player's copy",
                "parameters": {"experience": {"description": "experience id"}},
                "messages": {"broadcast": {"$ref": "#/components/messages/broadcast"},
                             "presence": {"$ref": "#/components/messages/presence"}}},
        },
        "operations": {
            **{f"receive_{t}": {"action": "receive", "channel": {"$ref": "#/channels/experience"},
                                "summary": f"client sends {t}", "messages": refs([t], "experience")}
               for t in CLIENT_MESSAGES},
            **{f"send_{t}": {"action": "send", "channel": {"$ref": "#/channels/experience"},
                             "summary": f"gateway sends {t}", "messages": refs([t], "experience")}
               for t in SERVER_MESSAGES},
            "send_sse_events": {"action": "send", "channel": {"$ref": "#/channels/sseExperience"},
                                "messages": refs(stream_types, "sseExperience")},
            "receive_bus_events": {"action": "receive", "channel": {"$ref": "#/channels/experienceUpdates"},
                                   "summary": "gateways read kb's broadcasts (each session's JetStream consumer)",
                                   "messages": refs(("broadcast", "presence"), "experienceUpdates")},
        },
        "components": {"messages": {**messages, "broadcast": {
            "name": "broadcast", "title": "world_update (bus form)", "payload": ref("BroadcastWorldUpdate")}},
            "schemas": schemas},
    }


def action_schemas() -> dict[str, Any]:
    """One schema per action (`Action.<name>`): the frame with that action, what it requires and its own arguments.

    The added ones (GAIA_ACTION_MODULES; `make docs` documents make run's) name the module that added them.
    """
    plugin = new_spec("arguments", "").plugins[0]
    assert isinstance(plugin, MarshmallowPlugin) and plugin.converter is not None
    found = {}
    for name in ACTIONS:
        spec = actions.ADDED.get(name)
        own = {arg: plugin.converter.field2property(f) for arg, f in (spec.arguments if spec else {}).items()}
        found[f"Action.{name}"] = {"allOf": [ref("ActionMessage"), {
            "type": "object", "description": actions.description(name), "required": ["action", *ACTION_REQUIRES[name]],
            "properties": {"action": {"const": name}, **own},
            **({"x-added-by": spec.module} if spec else {})}]}
    return found


def _close_codes() -> str:
    return ", ".join(f"{v} {k.lower()}" for k, v in vars(CloseCode).items() if isinstance(v, int))


def _error_codes() -> str:
    return ", ".join(v for k, v in vars(ErrorCode).items() if k.isupper())




@functools.cache
def document(name: str) -> str:
    """One of the gateway's documents as served text (built on first request, then kept)."""
    return render(DOCUMENTS[name]())
