"""The model endpoint as this gateway knows it: checked at start, shown in /health, its key's refusal remembered.

At start (and every `GAIA_NARRATOR_CHECK_S` while it is not `ok`) the gateway lists the endpoint's
models with its key; once they answer, one request of a single token reads the prompt's shared
prefix (gateway/chat/prompt.py), so the first player's story does not pay for it (a cold prefix costs
SmolLM2 on two shared cores about 3 s). A refused key (401/403) is `model_auth`: one error line, and from then on chats
tell kb's message at once with that reason instead of asking the model and logging per chat. A
request's own outcome updates the status too (a key revoked while running, a server that came back).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import openai
from openai import AsyncOpenAI

from gateway.chat.narration import AUTH, ERROR, TIMEOUT, UNAVAILABLE, reason_for

log = logging.getLogger(__name__)
OK, UNCHECKED = "ok", "unchecked"


def model_reason(exc: BaseException) -> str:
    """The `chat_done` reason for a failed request to the model's endpoint (the openai client's errors)."""
    if isinstance(exc, openai.APITimeoutError):
        return TIMEOUT
    if isinstance(exc, openai.APIConnectionError):
        return UNAVAILABLE
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return AUTH
    if isinstance(exc, openai.APIStatusError) and exc.status_code in (429, 502, 503, 504):
        return UNAVAILABLE
    return reason_for(exc)


def shown_url(url: str) -> str:
    """The endpoint without credentials or query (what /health may show)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


class Endpoint:
    """The endpoint's status: `ok`, `model_auth`, `model_unavailable`, `model_error` or `unchecked`."""

    def __init__(self, client: AsyncOpenAI, model: str, url: str, check_s: float, timeout_s: float,
                 warm: list[dict[str, str]] | None = None) -> None:
        self.client = client
        self.warm = warm
        self.model = model
        self.url = shown_url(url)
        self.check_s = check_s
        self.timeout_s = timeout_s
        self.status = UNCHECKED
        self.detail = ""
        self.checked_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def refused(self) -> bool:
        """The endpoint refused our key: asking it again per chat would only fail again."""
        return self.status == AUTH

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="narrator-endpoint-check")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        await self.check()
        while True:
            await asyncio.sleep(self.check_s)
            if self.status != OK:
                await self.check()

    async def check(self) -> str:
        """List the endpoint's models with our key; the status it leaves."""
        try:
            async with asyncio.timeout(self.timeout_s):
                listed = await self.client.models.list()
            names = [m.id for m in listed.data]
        except openai.NotFoundError:  # some servers have no /models: reachable, and the key was not refused
            names = []
        except Exception as exc:  # noqa: BLE001 - every failure is a status, never a crash at start
            self._set(model_reason(exc) if isinstance(exc, (openai.OpenAIError, TimeoutError)) else ERROR,
                      type(exc).__name__)
            return self.status
        if names and self.model not in names and self.status != OK:
            log.warning("the narrator's model %r is not among the endpoint's (%d listed); requests name it anyway",
                        self.model, len(names))
        if self.status != OK and self.warm:
            await self._warm_up()
        self._set(OK, "")
        return self.status

    async def _warm_up(self) -> None:
        """One token on the shared prefix: the server's prompt cache holds it for the stories to come."""
        messages: Any = self.warm
        try:
            async with asyncio.timeout(30.0):
                await self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=1,
                                                          temperature=0.0)
        except Exception as exc:  # noqa: BLE001 - only a head start: the stories work without it
            log.info("the narrator endpoint's warm-up did not answer (%s)", type(exc).__name__)

    def answered(self) -> None:
        """A request was served."""
        if self.status != OK:
            self._set(OK, "")

    def failed(self, exc: BaseException) -> None:
        """A request failed: an auth refusal or an unreachable server is the endpoint's status."""
        reason = model_reason(exc)
        if reason in (AUTH, UNAVAILABLE):
            self._set(reason, type(exc).__name__)

    def _set(self, status: str, detail: str) -> None:
        self.checked_at = time.monotonic()
        if status == self.status:
            return
        self.status, self.detail = status, detail
        if status == AUTH:
            log.error("the narrator endpoint %s refused the API key (model_auth): stories are kb's messages until "
                      "GAIA_NARRATOR_API_KEY is fixed", self.url)
        elif status == OK:
            log.info("the narrator endpoint %s answers (model %s)", self.url, self.model)
        else:
            log.warning("the narrator endpoint %s: %s (%s); stories fall back to kb's messages while it lasts",
                        self.url, status, detail)

    def health(self) -> dict[str, Any]:
        """What /health shows of the narrator."""
        ago = None if self.checked_at is None else round(time.monotonic() - self.checked_at, 1)
        return {"kind": "model", "model": self.model, "endpoint": self.url, "status": self.status,
                "checked_s_ago": ago}
