"""JSON responses shared by kb's handlers."""
from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson (list positions in validation errors become string keys)."""
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status=status,
                        content_type="application/json")


def problem(status: int, error: str, message: str, details: Any = None) -> web.Response:
    """A JSON error body: {"error", "message", "details"?}."""
    body: dict[str, Any] = {"error": error, "message": message}
    if details is not None:
        body["details"] = details
    return json_response(body, status)
