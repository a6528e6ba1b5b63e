"""The model narrator: any OpenAI-compatible chat-completions endpoint, through the `openai` async client."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, TypeVar

import openai
from openai import AsyncOpenAI

from gateway.chat import guard, prompt, tools
from gateway.chat.endpoint import Endpoint, model_reason
from gateway.chat.narration import AUTH, BUSY, ERROR, FALLBACK, SHUTDOWN, Busy, ModelFailed, Narration, Shutdown
from gateway.chat.narratormetrics import NarratorMetrics
from gateway.chat.prompt import Scene
from gateway.chat.slots import HostSlots, ModelQueue
from shared.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
NO_KEY = "unused"  # servers without keys (llama.cpp, vLLM, Ollama) ignore it; the client needs a value
STOP = ["\n"]  # a story is one paragraph: a new line is the model starting something else (a list, a label)


class ModelNarrator:
    """Streams stories and asks for actions; requests bounded over the host's workers, queued in front."""

    def __init__(self, settings: Settings, metrics: NarratorMetrics, slots: HostSlots | None = None) -> None:
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
        self.slots = slots or HostSlots(settings.narrator_max_inflight, settings.narrator_max_per_user)
        self.queue = ModelQueue(self.slots, metrics)
        self.endpoint = Endpoint(self.client, self.model, settings.narrator_url, settings.narrator_check_s,
                                 min(5.0, settings.narrator_answer_s), prompt.warm_messages())
        self.live: set[Narration] = set()
        self.stopping = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """This process's model requests open right now."""
        return self.slots.mine()

    def start(self) -> None:
        """Check the endpoint and the key now, in the background (the gateway serves meanwhile)."""
        self.endpoint.start()

    async def close(self) -> None:
        await self.endpoint.stop()
        await self.client.close()
        self.slots.close()

    def health(self) -> dict[str, Any]:
        return {**self.endpoint.health(), "in_flight": self.slots.in_flight(), "queued": self.queue.waiting}

    def stop(self) -> None:
        """Gateway shutdown: every narrative in flight ends now with kb's message (reason `shutdown`)."""
        self.stopping.set()
        for narration in list(self.live):
            narration.stop()

    def fallback(self, text: str, reason: str) -> Narration:
        """A narrative that is kb's message (or "nothing happens"), counted with its reason."""
        return Narration.fixed(text, FALLBACK, reason, self.metrics)

    def _refusal(self) -> str | None:
        """Why no request is made at all: the gateway stops, or the endpoint refused our key."""
        if self.stopping.is_set():
            return SHUTDOWN
        return AUTH if self.endpoint.refused else None

    async def _slot(self, user_id: str, deadline: float) -> None:
        """A model slot for this request before `deadline`, or Busy."""
        if await self.queue.acquire(user_id, deadline) is not None:
            raise Busy()
        self.metrics.in_flight.inc()

    def _free(self, user_id: str) -> None:
        self.queue.release(user_id)
        self.metrics.in_flight.dec()

    def narrate(self, scene: Scene, fallback_text: str) -> Narration:
        """The story of `scene`, streamed from the model and checked; kb's `fallback_text` if it cannot be."""
        if why := self._refusal():
            return self.fallback(fallback_text, why)
        narration = Narration(fallback_text, self.metrics, facts=guard.facts_of(scene),
                              sentences=self.settings.narrator_sentences)
        self.live.add(narration)
        messages = prompt.narrate_messages(scene, self.settings.narrator_history_tokens)

        async def answer(n: Narration) -> None:
            await self._slot(scene.user_id, n.first_deadline)
            try:
                await self._stream(n, messages)
            finally:
                self._free(scene.user_id)

        narration.read(answer, self.settings.narrator_first_token_s, self.settings.narrator_answer_s,
                       lambda: self.live.discard(narration), self.queue.observed)
        return narration

    async def _stream(self, narration: Narration, messages: Any) -> None:
        """Put the answer's text pieces into the narration's queue as they arrive, then its end."""
        finish: str | None = None
        try:
            stream = await self.client.chat.completions.create(
                model=self.model, messages=messages, stream=True, stop=STOP,
                max_tokens=self.settings.narrator_max_tokens, temperature=self.settings.narrator_temperature,
                extra_body=self.extra_body or None)
            async with stream:
                async for chunk in stream:
                    choice = chunk.choices[0] if chunk.choices else None
                    if choice is None:
                        continue
                    if choice.delta is not None and isinstance(choice.delta.content, str) and choice.delta.content:
                        narration.queue.put_nowait(choice.delta.content[:guard.MAX_STORY_CHARS])
                    finish = choice.finish_reason or finish
        except (openai.OpenAIError, TimeoutError) as exc:
            self.endpoint.failed(exc)
            raise ModelFailed(model_reason(exc)) from exc
        self.endpoint.answered()
        narration.end(finish)

    async def propose(self, scene: Scene, deadline: float) -> tuple[dict[str, Any] | None, str | None]:
        """(the action the model proposes for an unparsed line, or None; the failure reason, or None).

        Bounded by `deadline` (perf_counter time: the chat's first-token deadline), queueing included.
        """
        if why := self._refusal():
            return None, why
        try:
            await self._slot(scene.user_id, deadline)
        except Busy:
            self.metrics.proposals.labels(BUSY).inc()
            return None, BUSY
        try:
            messages: Any = prompt.propose_messages(scene, self.settings.narrator_history_tokens)
            offered: Any = [tools.act_tool(self.actions)]
            choice: Any = tools.forced_choice()
            answer = await self._until_stopped(self.client.chat.completions.create(
                model=self.model, messages=messages, tools=offered, tool_choice=choice,
                max_tokens=tools.MAX_TOKENS, temperature=0.0), deadline - time.perf_counter())
            self.endpoint.answered()
            action = self._read_proposal(answer, scene)
        except (openai.OpenAIError, TimeoutError, Shutdown) as exc:
            if not isinstance(exc, (Shutdown, TimeoutError)):
                self.endpoint.failed(exc)
            return None, self._no_proposal(model_reason(exc), type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - whatever an endpoint returns, the chat goes on without it
            return None, self._no_proposal(ERROR, type(exc).__name__)
        finally:
            self._free(scene.user_id)
        self.metrics.proposals.labels("action" if action else "nonsense").inc()
        return action, None

    def _no_proposal(self, reason: str, why: str) -> str:
        if reason not in (SHUTDOWN, AUTH):
            log.warning("model proposed no action (%s): %s", reason, why)
        self.metrics.proposals.labels(reason).inc()
        return reason

    def _read_proposal(self, answer: Any, scene: Scene) -> dict[str, Any] | None:
        """The proposed action from a chat completion, held to kb's schema; other players by their labels."""
        try:
            message = answer.choices[0].message if answer.choices else None
            calls = (message.tool_calls or []) if message else []
            function = getattr(calls[0], "function", None) if calls else None
            text = function.arguments if function else (message.content if message else None)
        except (AttributeError, IndexError, TypeError):
            return None
        action = tools.proposal(text, self.actions)
        if action and "target_user_id" in action:  # the model saw "player A", never a user id
            target = scene.labels.get(action.pop("target_user_id"))
            if action["action"] == "give_item":  # the one action that names a player: a label it was shown, or none
                if target is None:
                    return None
                action["target_user_id"] = target
        return action

    async def _until_stopped(self, request: Awaitable[T], timeout: float) -> T:
        """`request` within `timeout`, or Shutdown as soon as the gateway stops."""
        task = asyncio.ensure_future(request)
        stopped = asyncio.ensure_future(self.stopping.wait())
        try:
            done, _ = await asyncio.wait({task, stopped}, timeout=max(0.0, timeout),
                                         return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            raise Shutdown() if stopped in done else TimeoutError()
        finally:
            for pending in (task, stopped):
                pending.cancel()
