"""Shipped configs are accepted by the real nats-server and keep fsync-before-ack on."""
from __future__ import annotations

import subprocess
from pathlib import Path

from harness.procs import nats_server_binary

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_every_shipped_nats_config_parses_and_syncs_always() -> None:
    configs = sorted(DEPLOY.glob("nats/*.conf"))
    assert configs
    for conf in configs:
        result = subprocess.run([nats_server_binary(), "-c", str(conf), "-t"], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "sync_interval: always" in conf.read_text()
