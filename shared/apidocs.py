"""API documents generated from the marshmallow schemas: AsyncAPI 3 (WebSocket, SSE) and OpenAPI 3.1 (HTTP).

`python -m shared.apidocs --write docs` writes them; `--check docs` exits 1 when a copy is stale.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema

from shared.schemas.chat import ChatRequestSchema
from shared.schemas.errors import CloseCode, ErrorCode
from shared.schemas.events import BroadcastWorldUpdateSchema
from shared.schemas.kbapi import ActionRequestSchema, ActionResultSchema, PresenceUpdateSchema, ViewsRequestSchema
from shared.schemas.messages import CLIENT_MESSAGES, SERVER_MESSAGES

VERSION = "0.4"
FILES = {"asyncapi.json": lambda: asyncapi(), "openapi-gateway.json": lambda: openapi_gateway(),
         "openapi-kb.json": lambda: openapi_kb()}
JSON = "application/json"


def schema_name(schema: Schema) -> str:
    """Component name of a schema: its class name without the `Schema` suffix."""
    return type(schema).__name__.removesuffix("Schema")


def _spec(title: str, description: str) -> APISpec:
    return APISpec(title=title, version=VERSION, openapi_version="3.1.0", plugins=[MarshmallowPlugin()],
                   info={"description": description})


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem_responses(*codes: int) -> dict[str, Any]:
    reasons = {400: "body is not JSON", 401: "missing or wrong key/token", 404: "unknown experience",
               413: "body too large", 422: "body does not match its schema", 503: "kb unavailable or hand-over"}
    return {str(c): {"description": reasons[c], "content": {JSON: {"schema": _ref("Problem")}}} for c in codes}


def _query(name: str, description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


CURSOR = {"type": "integer", "minimum": 0}


def openapi_kb() -> dict[str, Any]:
    """kb's HTTP API (called by gateways with X-API-Key)."""
    spec = _spec("GAIA kb", "The world service. Every route but /health and /openapi.json needs X-API-Key.")
    spec.components.security_scheme("serviceKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"})
    for schema in (ActionRequestSchema(), ActionResultSchema(), PresenceUpdateSchema(), ViewsRequestSchema(),
                   SERVER_MESSAGES["area_of_interest"]):
        spec.components.schema(schema_name(schema), schema=schema)
    spec.components.schema("Problem", {"type": "object", "required": ["error", "message"], "properties": {
        "error": {"type": "string"}, "message": {"type": "string"}, "details": {}}})
    exp = {"name": "experience", "in": "path", "required": True, "schema": {"type": "string"}}
    secured: list[dict[str, list[str]]] = [{"serviceKey": []}]
    spec.path("/experiences/{experience}/actions", parameters=[exp], operations={"post": {
        "summary": "Apply one action for the user the gateway authenticated", "security": secured,
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ActionRequest")}}},
        "responses": {"200": {"description": "committed or refused",
                              "content": {JSON: {"schema": _ref("ActionResult")}}},
                      **_problem_responses(400, 401, 404, 413, 422, 503)}}})
    spec.path("/experiences/{experience}/players/{user_id}/state", parameters=[
        exp, {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}], operations={"get": {
            "summary": "The player's area_of_interest; with session_id the session also becomes present",
            "security": secured,
            "parameters": [_query("session_id", "gateway session joining now", {"type": "string", "maxLength": 128}),
                           _query("gateway_id", "the reporting gateway", {"type": "string", "maxLength": 128})],
            "responses": {"200": {"description": "snapshot", "content": {JSON: {"schema": _ref("AreaOfInterest")}}},
                          **_problem_responses(401, 404, 422, 503)}}})
    spec.path("/experiences/{experience}/views", parameters=[exp], operations={"post": {
        "summary": "Snapshots of several sessions at once, each joining presence (a gateway's batch per loop turn)",
        "security": secured,
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ViewsRequest")}}},
        "responses": {"200": {"description": "a view per session, in order: an area_of_interest or a refusal",
                              "content": {JSON: {"schema": {"type": "object", "properties": {"views": {
                                  "type": "array", "items": {"oneOf": [_ref("AreaOfInterest"), {
                                      "type": "object", "properties": {"error": {"const": "too_many_sessions"},
                                                                       "message": {"type": "string"}}}]}}}}}}},
                      **_problem_responses(401, 404, 413, 422, 503)}}})
    spec.path("/presence", operations={"post": {
        "summary": "A gateway reports sessions that joined, left, dropped or are alive", "security": secured,
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("PresenceUpdate")}}},
        "responses": {"200": {"description": "how many users are present per reported experience, and the joins "
                                             "refused (their user has the most sessions allowed)",
                              "content": {JSON: {"schema": {"type": "object", "properties": {
                                  "present": {"type": "object", "additionalProperties": {"type": "integer"}},
                                  "refused": {"type": "array", "items": {"type": "string"}}}}}}},
            **_problem_responses(400, 401, 413, 422, 503)}}})
    _common_paths(spec, "kb")
    return spec.to_dict()


def _common_paths(spec: APISpec, service: str) -> None:
    spec.path("/health", operations={"get": {"summary": f"{service} status: NATS, JetStream and counts", "responses": {
        "200": {"description": "healthy (kb: also when degraded, it still accepts writes)",
                "content": {JSON: {"schema": {"type": "object"}}}},
        **({"503": {"description": "degraded: no JetStream; sessions kept, new clients should go elsewhere"}}
           if service == "gateway" else {})}}})
    spec.path("/metrics", operations={"get": {"summary": "Prometheus metrics", "responses": {
        "200": {"description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}})
    spec.path("/openapi.json", operations={"get": {"summary": "this document", "responses": {
        "200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}}}}})


def openapi_gateway() -> dict[str, Any]:
    """The gateway's HTTP routes; the WebSocket and SSE frames themselves are in the AsyncAPI document."""
    spec = _spec("GAIA gateway (HTTP)", "Client-facing routes. Frames on /ws/experience and the SSE streams are "
                 "described in asyncapi.json; the client contract is docs/protocol.md.")
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("ChatRequest", schema=ChatRequestSchema)
    token = _query("token", "JWT, for clients that cannot set headers (browsers' WebSocket/EventSource)",
                   {"type": "string"})
    experience = _query("experience", "experience id", {"type": "string", "maxLength": 128}, required=True)
    auth: list[dict[str, list[str]]] = [{"bearer": []}, {}]
    spec.path("/ws/experience", operations={"get": {
        "summary": "Upgrade to the persistent WebSocket session (see asyncapi.json)", "security": auth,
        "parameters": [token, experience, _query("last_seq", "resume cursor: last seq received", CURSOR)],
        "responses": {"101": {"description": "switching protocols; auth failures close with 4401"},
                      "400": {"description": "not a WebSocket request"}, "429": {"description": "handshake rate"}}}})
    spec.path("/sse/experience", operations={"get": {
        "summary": "Persistent EventSource stream of world_update and presence events, id = seq", "security": auth,
        "parameters": [token, experience, _query("last_seq", "resume cursor (or the Last-Event-ID header)", CURSOR)],
        "responses": {"200": {"description": "text/event-stream", "content": {"text/event-stream": {
            "schema": {"type": "string"}}}}, "401": {"description": "bad token"},
            "403": {"description": "experience not allowed"}, "429": {"description": "too many streams"}}}})
    spec.path("/chat/unified", operations={"post": {
        "summary": "Legacy chat: one message, streamed answer (world updates before narrative)", "security": auth,
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ChatRequest")}}},
        "responses": {"200": {"description": "text/event-stream of metadata, world_update, chat.completion.chunk, "
                              "done, [DONE]", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      "400": {"description": "bad JSON"}, "401": {"description": "bad token"},
                      "422": {"description": "schema errors"}}}})
    spec.path("/", operations={"get": {"summary": "The live page (plain HTML/JS)", "responses": {
        "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}})
    spec.path("/asyncapi.json", operations={"get": {"summary": "the AsyncAPI document", "responses": {
        "200": {"description": "AsyncAPI 3", "content": {JSON: {"schema": {"type": "object"}}}}}}})
    spec.path("/debug/event-timings", operations={"get": {
        "summary": "this process's stamps of its newest events (kb commit, received, first and last socket write)",
        "parameters": [{"name": "after", "in": "query", "required": False, "schema": {"type": "integer"}}],
        "responses": {"200": {"description": "fields and one row per event", "content": {JSON: {"schema": {
            "type": "object"}}}}, "400": {"description": "after is not a non-negative integer"}}}})
    _common_paths(spec, "gateway")
    return spec.to_dict()


def _json_schemas(messages: dict[str, Schema]) -> dict[str, Any]:
    """Marshmallow schemas -> JSON Schema components, through apispec's converter (nested ones included)."""
    spec = _spec("schemas", "")
    for schema in messages.values():
        name = schema_name(schema)
        if name not in spec.components.schemas:
            spec.components.schema(name, schema=schema)
    return spec.to_dict()["components"]["schemas"]


def asyncapi() -> dict[str, Any]:
    """The WebSocket session and the SSE streams as AsyncAPI 3 channels and operations."""
    all_messages = {**CLIENT_MESSAGES, **SERVER_MESSAGES}
    schemas = _json_schemas({**all_messages, "broadcast": BroadcastWorldUpdateSchema()})
    messages = {t: {"name": t, "title": t, "payload": _ref(schema_name(s))} for t, s in all_messages.items()}
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
            "name": "broadcast", "title": "world_update (bus form)", "payload": _ref("BroadcastWorldUpdate")}},
            "schemas": schemas},
    }


def _close_codes() -> str:
    return ", ".join(f"{v} {k.lower()}" for k, v in vars(CloseCode).items() if isinstance(v, int))


def _error_codes() -> str:
    return ", ".join(v for k, v in vars(ErrorCode).items() if k.isupper())


def render(doc: dict[str, Any]) -> str:
    """Stable JSON text (sorted keys) so a diff shows real changes only."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


@functools.cache
def document(name: str) -> str:
    """One generated document as served text (built on first request, then kept)."""
    return render(FILES[name]())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write or check the generated API documents")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="DIR")
    group.add_argument("--check", metavar="DIR")
    args = parser.parse_args(argv)
    folder = Path(args.write or args.check)
    stale = []
    for name, build in FILES.items():
        text, path = render(build()), folder / name
        if args.write:
            path.write_text(text)
            print(f"wrote {path}")
        elif not path.exists() or path.read_text() != text:
            stale.append(str(path))
    if stale:
        print("stale (run `make docs`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
