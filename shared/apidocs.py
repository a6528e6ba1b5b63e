"""What the services' API documents share: apispec from the marshmallow schemas, common routes, stable rendering.

Each service documents its own API (gateway/apidocs.py: AsyncAPI and the gateway's OpenAPI; kb/apidocs.py: kb's
OpenAPI) and serves it; `make docs` (tools/docs.py) writes the copies in docs/.
"""
from __future__ import annotations

import json
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema

VERSION = "0.4"
JSON = "application/json"


def schema_name(schema: Schema) -> str:
    """Component name of a schema: its class name without the `Schema` suffix."""
    return type(schema).__name__.removesuffix("Schema")


def new_spec(title: str, description: str) -> APISpec:
    return APISpec(title=title, version=VERSION, openapi_version="3.1.0", plugins=[MarshmallowPlugin()],
                   info={"description": description})


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def problem_responses(*codes: int) -> dict[str, Any]:
    reasons = {400: "body is not JSON", 401: "missing or wrong key/token", 404: "unknown experience",
               413: "body too large", 422: "body does not match its schema", 503: "kb unavailable or hand-over"}
    return {str(c): {"description": reasons[c], "content": {JSON: {"schema": ref("Problem")}}} for c in codes}


def query(name: str, description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


CURSOR = {"type": "integer", "minimum": 0}


def common_paths(spec: APISpec, service: str) -> None:
    spec.path("/health", operations={"get": {"summary": f"{service} status: NATS, JetStream and counts", "responses": {
        "200": {"description": "healthy (kb: also when degraded, it still accepts writes)",
                "content": {JSON: {"schema": {"type": "object"}}}},
        **({"503": {"description": "degraded: no JetStream; sessions kept, new clients should go elsewhere"}}
           if service == "gateway" else {})}}})
    spec.path("/metrics", operations={"get": {"summary": "Prometheus metrics", "responses": {
        "200": {"description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}})
    spec.path("/openapi.json", operations={"get": {"summary": "this document", "responses": {
        "200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}}}}})


def json_schemas(messages: dict[str, Schema]) -> dict[str, Any]:
    """Marshmallow schemas -> JSON Schema components, through apispec's converter (nested ones included)."""
    spec = new_spec("schemas", "")
    for schema in messages.values():
        name = schema_name(schema)
        if name not in spec.components.schemas:
            spec.components.schema(name, schema=schema)
    return spec.to_dict()["components"]["schemas"]


def render(doc: dict[str, Any]) -> str:
    """Stable JSON text (sorted keys) so a diff shows real changes only."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
