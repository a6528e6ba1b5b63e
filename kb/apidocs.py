"""kb's API document: OpenAPI 3.1 of its HTTP routes, from the schemas."""
from __future__ import annotations

import functools
from typing import Any

from shared.apidocs import JSON, common_paths, new_spec, problem_responses, query, ref, render, schema_name
from shared.schemas.errors import ErrorCode
from shared.schemas.kbapi import ActionRequestSchema, ActionResultSchema, PresenceUpdateSchema, ViewsRequestSchema
from shared.schemas.messages import SERVER_MESSAGES

DOCUMENTS = {"openapi-kb.json": lambda: openapi_kb()}


def openapi_kb() -> dict[str, Any]:
    """kb's HTTP API (called by gateways with X-API-Key)."""
    spec = new_spec("GAIA kb", "The world service. Every route but /health and /openapi.json needs X-API-Key.")
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
        "requestBody": {"required": True, "content": {JSON: {"schema": ref("ActionRequest")}}},
        "responses": {"200": {"description": "committed or refused",
                              "content": {JSON: {"schema": ref("ActionResult")}}},
                      **problem_responses(400, 401, 404, 413, 422, 503)}}})
    spec.path("/experiences/{experience}/players/{user_id}/state", parameters=[
        exp, {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}], operations={"get": {
            "summary": "The player's area_of_interest; with session_id the session also becomes present",
            "security": secured,
            "parameters": [query("session_id", "gateway session joining now", {"type": "string", "maxLength": 128}),
                           query("gateway_id", "the reporting gateway", {"type": "string", "maxLength": 128})],
            "responses": {"200": {"description": "snapshot", "content": {JSON: {"schema": ref("AreaOfInterest")}}},
                          **problem_responses(401, 404, 422, 503)}}})
    spec.path("/experiences/{experience}/views", parameters=[exp], operations={"post": {
        "summary": "Snapshots of several sessions at once, each joining presence (a gateway's batch per loop turn)",
        "security": secured,
        "requestBody": {"required": True, "content": {JSON: {"schema": ref("ViewsRequest")}}},
        "responses": {"200": {"description": "a view per session, in order: an area_of_interest or a refusal",
                              "content": {JSON: {"schema": {"type": "object", "properties": {"views": {
                                  "type": "array", "items": {"oneOf": [ref("AreaOfInterest"), {
                                      "type": "object", "properties": {"error": {"const": ErrorCode.TOO_MANY_SESSIONS},
                                                                       "message": {"type": "string"}}}]}}}}}}},
                      **problem_responses(401, 404, 413, 422, 503)}}})
    spec.path("/experiences/{experience}/reload", parameters=[exp], operations={"post": {
        "summary": "Development (GAIA_ENV=dev): read the experience's content again; valid, the world adopts it "
                   "in one version step that skips a version (every client asks for a snapshot)",
        "security": secured,
        "responses": {"200": {"description": "the versions before and after, and what the migration changed",
                              "content": {JSON: {"schema": {"type": "object", "properties": {
                                  "experience": {"type": "string"}, "from_version": {"type": "integer"},
                                  "version": {"type": "integer"},
                                  "notes": {"type": "array", "items": {"type": "string"}}}}}}},
                      "403": {"description": "not a development kb: production adopts content when kb starts",
                              "content": {JSON: {"schema": ref("Problem")}}},
                      "422": {"description": "invalid_content: nothing changed; details.problems lists every "
                                             "problem (file: JSON path: what)",
                              "content": {JSON: {"schema": ref("Problem")}}},
                      **problem_responses(401, 404, 503)}}})
    spec.path("/presence", operations={"post": {
        "summary": "A gateway reports sessions that joined, left, dropped or are alive", "security": secured,
        "requestBody": {"required": True, "content": {JSON: {"schema": ref("PresenceUpdate")}}},
        "responses": {"200": {"description": "how many users are present per reported experience, and the joins "
                                             "refused (their user has the most sessions allowed)",
                              "content": {JSON: {"schema": {"type": "object", "properties": {
                                  "present": {"type": "object", "additionalProperties": {"type": "integer"}},
                                  "refused": {"type": "array", "items": {"type": "string"}}}}}}},
            **problem_responses(400, 401, 413, 422, 503)}}})
    common_paths(spec, "kb")
    return spec.to_dict()


@functools.cache
def document(name: str = "openapi-kb.json") -> str:
    """kb's document as served text (built on first request, then kept)."""
    return render(DOCUMENTS[name]())
