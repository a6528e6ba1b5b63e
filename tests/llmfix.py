"""The real local model for tests whose names contain `llm`: skipped when it is not installed, failed under CI."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness.llmserver import ModelServer, missing


def need_model() -> None:
    """Skip (or, with CI=true, fail) when `make llm` has not installed the model server and model."""
    lacking = missing()
    if lacking:
        why = f"the local model server is not installed ({'; '.join(lacking)}): make llm"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[ModelServer]:
    """llama-cpp-python's server with SmolLM2-135M-Instruct on a free port, for one test."""
    need_model()
    server = ModelServer(log_path=str(tmp_path / "model-server.log")).start()
    yield server
    server.stop()


def server_log(server: ModelServer) -> str:
    """What the model server printed so far."""
    return Path(server.log_path or "").read_text(errors="replace")


def narrator_env(server: Any, **extra: str) -> dict[str, str]:
    """Gateway settings (as keyword arguments for harness.procs) that point the narrator at `server`."""
    return {"narrator_url": server.url, "narrator_model": "smollm2", "narrator_temperature": "0", **extra}
