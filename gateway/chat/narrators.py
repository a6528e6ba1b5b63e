"""Who writes the narrative: the embedded intent narrator (kb's own message) or a language model."""
from __future__ import annotations

import os
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

import gateway.chat.schema as chat_schema
from gateway.chat.narration import BUILTIN, FALLBACK, Narration
from gateway.chat.narratormetrics import NarratorMetrics
from gateway.chat.prompt import Scene
from gateway.chat.slots import HostSlots
from gateway.workers import SHARED_DIR, WORKER_COUNT, WORKER_INDEX
from shared.config import Settings

SLOTS_FILE = "narrator-slots"


class Narrator(Protocol):
    """Turns a committed action into narrative text; may propose an action for a line no rule knows."""

    model: str
    proposes: bool  # lines the intent parser does not know are offered to `propose`
    sees: bool  # wants the player's scene (kb's view) and the conversation's turns for its narrative

    def narrate(self, scene: Scene, fallback_text: str) -> Narration: ...

    def fallback(self, text: str, reason: str) -> Narration:
        """kb's message (or "nothing happens") standing in for the model's story, counted with its reason."""
        ...

    async def propose(self, scene: Scene, deadline: float) -> tuple[dict[str, Any] | None, str | None]: ...

    def start(self) -> None: ...

    def health(self) -> dict[str, Any]:
        """What /health shows of the narrator."""
        ...

    def stop(self) -> None: ...

    async def close(self) -> None: ...


class IntentNarrator:
    """The embedded default: the intent parser decides the action, kb's own message is the narrative."""

    model = chat_schema.MODEL
    proposes = False
    sees = False

    def narrate(self, scene: Scene, fallback_text: str) -> Narration:
        return Narration.fixed(fallback_text, BUILTIN)

    def fallback(self, text: str, reason: str) -> Narration:
        return Narration.fixed(text, FALLBACK, reason)

    async def propose(self, scene: Scene, deadline: float) -> tuple[dict[str, Any] | None, str | None]:
        return None, None

    def start(self) -> None:
        pass

    def health(self) -> dict[str, Any]:
        return {"kind": "builtin", "model": self.model}

    def stop(self) -> None:
        pass

    async def close(self) -> None:
        pass


def host_slots(settings: Settings) -> HostSlots:
    """The model slots of this host: in the file the workers' supervisor shares, else this process's own."""
    shared = os.environ.get(SHARED_DIR, "")
    index, count = os.environ.get(WORKER_INDEX, "0"), os.environ.get(WORKER_COUNT, "1")
    path = os.path.join(shared, SLOTS_FILE) if shared and os.path.isdir(shared) else None
    return HostSlots(settings.narrator_max_inflight, settings.narrator_max_per_user, path,
                     int(count) if count.isdigit() else 1, int(index) if index.isdigit() else 0)


def make_narrator(settings: Settings, registry: CollectorRegistry) -> Narrator:
    """A model narrator when GAIA_NARRATOR_URL is set, else the intent narrator."""
    if not settings.narrator_url:
        return IntentNarrator()
    # Imported here: the openai client is half of the gateway's import time (0.46 of 0.93 s), and a restart
    # storm waits for the new process to listen; a gateway without a model never loads it.
    from gateway.chat.model import ModelNarrator
    return ModelNarrator(settings, NarratorMetrics(registry), host_slots(settings))
