"""JSON responses and error bodies, one shape for both services: {"error", "message", "details"?}."""
from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson (list positions in validation errors become string keys)."""
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status=status,
                        content_type="application/json")


def error_body(error: str, message: str, details: Any = None) -> dict[str, Any]:
    """The error body every HTTP error of ours carries."""
    body: dict[str, Any] = {"error": error, "message": message}
    if details is not None:
        body["details"] = details
    return body


def problem(status: int, error: str, message: str, details: Any = None) -> web.Response:
    """A JSON error response."""
    return json_response(error_body(error, message, details), status)


def refuse(exc_class: type[web.HTTPException], error: str, message: str) -> web.HTTPException:
    """An aiohttp HTTP exception (to raise before a handshake) with the same JSON error body."""
    return exc_class(text=orjson.dumps(error_body(error, message)).decode(), content_type="application/json")
