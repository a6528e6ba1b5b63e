"""Logging setup shared by both services (plain or JSON lines), tokens never included."""
from __future__ import annotations

import logging
import os
import re

import orjson
from aiohttp.http_exceptions import HttpProcessingError

_TOKEN_RE = re.compile(r"(token=|Bearer\s+)[A-Za-z0-9._\-]+", re.IGNORECASE)


def redact(text: str) -> str:
    """Replace anything that looks like a token in a query string or header with ***."""
    return _TOKEN_RE.sub(r"\1***", text)


class RedactingFormatter(logging.Formatter):
    """Plain text lines with tokens redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, tokens redacted."""

    def format(self, record: logging.LogRecord) -> str:
        body = {"ts": record.created, "level": record.levelname, "logger": record.name,
                "message": redact(record.getMessage())}
        if record.exc_info:
            body["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(body).decode()


class RedactFilter(logging.Filter):
    """Rewrites a record's message with tokens redacted (for loggers we do not format ourselves)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class OneLineFilter(logging.Filter):
    """Folds a record's traceback into one line: for a library that logs a traceback for every retry
    of an outage it recovers from by itself (asyncpg's pool while PostgreSQL restarts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg, record.args = f"{record.getMessage()} ({type(exc).__name__}: {exc})", ()
            record.exc_info, record.exc_text = None, None
        return True


class ClientErrorFilter(logging.Filter):
    """A request the HTTP parser refused (a client's malformed request line or headers) is the client's
    mistake, not ours: one INFO line, where aiohttp logs a 12-line traceback at ERROR for each. Any
    other exception keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = " ".join(f"{record.getMessage()}: {type(exc).__name__}: {exc}".split()), ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_client_errors() -> None:
    """aiohttp's server logs every malformed request with a traceback: one line each instead."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorFilter) for f in logger.filters):
        logger.addFilter(ClientErrorFilter())


def quiet_store_retries() -> None:
    """asyncpg's pool retries a lost server with a traceback each time: one line each instead."""
    logger = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, OneLineFilter) for f in logger.filters):
        logger.addFilter(OneLineFilter())


def redact_library_loggers() -> None:
    """aiohttp's access and server loggers print request lines, query strings (tokens) included."""
    for name in ("aiohttp.access", "aiohttp.server", "aiohttp.web", "aiohttp.websocket"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactFilter) for f in logger.filters):
            logger.addFilter(RedactFilter())


def setup_logging() -> None:
    """Configure the root logger from GAIA_LOG_LEVEL and GAIA_LOG_FORMAT (text|json)."""
    handler = logging.StreamHandler()
    if os.environ.get("GAIA_LOG_FORMAT", "text") == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=os.environ.get("GAIA_LOG_LEVEL", "INFO").upper(), handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
