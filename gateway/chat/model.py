"""The model narrator: any OpenAI-compatible chat-completions endpoint, through the `openai` async client."""
from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Any, Awaitable, TypeVar

import openai
from openai import AsyncOpenAI

from gateway.chat import prompt, tools
from gateway.chat.narration import FALLBACK, SHUTDOWN, UNAVAILABLE, Narration, Shutdown, reason_for
from gateway.chat.narratormetrics import NarratorMetrics
from gateway.chat.prompt import Scene
from shared.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
NO_KEY = "unused"  # servers without keys (llama.cpp, vLLM, Ollama) ignore it; the client needs a value


class ModelNarrator:
    """Streams narratives and asks for actions; a bounded number of requests per process and per user."""

    def __init__(self, settings: Settings, metrics: NarratorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model = settings.narrator_model or "default"
        self.actions = settings.narrator_actions
        self.proposes = bool(settings.narrator_tools)
        self.sees = True
        # The key goes to the client only (its Authorization header); it is never logged here.
        self.client = AsyncOpenAI(
            base_url=settings.narrator_url, api_key=settings.narrator_api_key or NO_KEY, max_retries=0,
            timeout=openai.Timeout(settings.narrator_answer_s, connect=min(2.0, settings.narrator_answer_s)))
        self.extra_body: dict[str, Any] = json.loads(settings.narrator_extra_body or "{}")
        # One INFO line per model request from the HTTP library is noise next to our own log lines.
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.in_flight = 0
        self.per_user: Counter[str] = Counter()
        self.live: set[Narration] = set()
        self.stopping = asyncio.Event()

    async def close(self) -> None:
        await self.client.close()

    def stop(self) -> None:
        """Gateway shutdown: every narrative in flight ends now with kb's message (reason `shutdown`)."""
        self.stopping.set()
        for narration in list(self.live):
            narration.stop()

    def _take(self, user_id: str) -> bool:
        """A request slot for this user, or False when the process or the user is at the cap."""
        if (self.in_flight >= self.settings.narrator_max_inflight
                or self.per_user[user_id] >= self.settings.narrator_max_per_user):
            return False
        self.in_flight += 1
        self.per_user[user_id] += 1
        self.metrics.in_flight.inc()
        return True

    def _give_back(self, user_id: str) -> None:
        self.in_flight -= 1
        self.per_user[user_id] -= 1
        if self.per_user[user_id] <= 0:
            del self.per_user[user_id]
        self.metrics.in_flight.dec()

    def fallback(self, text: str, reason: str) -> Narration:
        """A narrative that is kb's message (or "nothing happens"), counted with its reason."""
        return Narration.fixed(text, FALLBACK, reason, self.metrics)

    def narrate(self, scene: Scene, fallback_text: str) -> Narration:
        """The narrative of `scene`, streamed from the model; kb's `fallback_text` if the model cannot."""
        if self.stopping.is_set():
            return self.fallback(fallback_text, SHUTDOWN)
        if not self._take(scene.user_id):
            log.warning("narrator busy (%d in flight): kb's message instead", self.in_flight)
            return self.fallback(fallback_text, UNAVAILABLE)
        narration = Narration(fallback_text, self.metrics)
        self.live.add(narration)

        def release() -> None:
            self.live.discard(narration)
            self._give_back(scene.user_id)

        narration.read(lambda n: self._stream(n, prompt.narrate_messages(scene)),
                       self.settings.narrator_first_token_s, self.settings.narrator_answer_s, release,
                       self.settings.narrator_flush_ms / 1000)
        return narration

    async def _stream(self, narration: Narration, messages: Any) -> None:
        """Put the answer's text pieces into the narration's queue as they arrive."""
        stream = await self.client.chat.completions.create(
            model=self.model, messages=messages, stream=True,
            max_tokens=self.settings.narrator_max_tokens, temperature=self.settings.narrator_temperature,
            extra_body=self.extra_body or None)
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    narration.queue.put_nowait(chunk.choices[0].delta.content)

    async def propose(self, scene: Scene) -> tuple[dict[str, Any] | None, str | None]:
        """(the action the model proposes for an unparsed line or None for nonsense, the failure reason or None)."""
        if self.stopping.is_set():
            return None, SHUTDOWN
        if not self._take(scene.user_id):
            return None, UNAVAILABLE
        try:
            messages: Any = prompt.propose_messages(scene)
            offered: Any = [tools.act_tool(self.actions)]
            choice: Any = tools.forced_choice()
            answer = await self._until_stopped(self.client.chat.completions.create(
                model=self.model, messages=messages, tools=offered, tool_choice=choice,
                max_tokens=tools.MAX_TOKENS, temperature=0.0), self.settings.narrator_answer_s)
        except (openai.OpenAIError, TimeoutError, Shutdown) as exc:
            reason = reason_for(exc)
            log.warning("model proposed no action (%s): %s", reason, type(exc).__name__)
            self.metrics.proposals.labels(reason).inc()
            return None, reason
        finally:
            self._give_back(scene.user_id)
        message = answer.choices[0].message if answer.choices else None
        calls = (message.tool_calls or []) if message else []
        function = getattr(calls[0], "function", None) if calls else None
        action = tools.proposal(function.arguments if function else (message.content if message else None),
                                self.actions)
        self.metrics.proposals.labels("action" if action else "nonsense").inc()
        return action, None

    async def _until_stopped(self, request: Awaitable[T], timeout: float) -> T:
        """`request` within `timeout`, or Shutdown as soon as the gateway stops."""
        task = asyncio.ensure_future(request)
        stopped = asyncio.ensure_future(self.stopping.wait())
        try:
            done, _ = await asyncio.wait({task, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            raise Shutdown() if stopped in done else TimeoutError()
        finally:
            for pending in (task, stopped):
                pending.cancel()
