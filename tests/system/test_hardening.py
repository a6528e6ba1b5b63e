"""The last mile of issue 30: secrets at rest, JWT secrets, forwarded-for lines, SSE opens in the handshake bucket."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from gateway.app import create_app as create_gateway
from gateway.keys import NATS as GW_NATS
from harness.system.devstack import write_credentials
from harness.system.privatefiles import write_private
from harness.system.procs import NatsServer, free_port
from tests.helpers import EXPERIENCE

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_make_runs_credentials_are_0600_in_0700_folders_even_over_an_older_run(tmp_path: Path) -> None:
    """A run folder left 0755 with a 0644 credentials file by an older run is made private again."""
    root = tmp_path / ".run"
    folder = root / "9000"
    (folder / "nats").mkdir(parents=True)
    for made in (root, folder, folder / "nats"):
        made.chmod(0o755)
    (folder / "nats-credentials.json").write_text("{}")
    (folder / "nats-credentials.json").chmod(0o644)
    passwords = write_credentials(folder, root)
    assert set(passwords) == {"kb", "gateway"}
    assert mode(folder / "nats-credentials.json") == 0o600
    assert [mode(f) for f in (root, folder, folder / "nats")] == [0o700] * 3


def test_nats_servers_config_with_the_passwords_is_0600_in_a_0700_folder(tmp_path: Path) -> None:
    """The config nats-server reads holds every user's password (make run, tests, the harness)."""
    store = tmp_path / "run" / "nats"
    store.mkdir(parents=True)
    store.chmod(0o755)
    server = NatsServer(store_dir=str(store)).start()
    try:
        conf = store / "nats.conf"
        assert server.passwords["kb"] in conf.read_text()
        assert mode(conf) == 0o600 and mode(store) == 0o700
    finally:
        server.cleanup()


def test_write_private_never_leaves_a_secret_readable_by_others(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_private(tmp_path / "a" / "secret", "s3cret")
    finally:
        os.umask(old)
    assert path.read_text() == "s3cret" and mode(path) == 0o600 and mode(path.parent) == 0o700


def start_service(module: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m module` with only these GAIA_ variables (it must refuse before serving)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    return subprocess.run([sys.executable, "-m", module, "--port", str(free_port())], timeout=30, text=True,
                          capture_output=True, cwd=tmp_path, env={**clean, "GAIA_KB_API_KEY": "k" * 40, **env})


@pytest.mark.parametrize("module", ["gateway", "kb"])
@pytest.mark.parametrize("secret", ["a", "secret", "x" * 31])
def test_a_short_hs256_secret_is_refused_outside_dev(module: str, secret: str, tmp_path: Path) -> None:
    done = start_service(module, tmp_path, GAIA_JWT_SECRET=secret)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"GAIA_JWT_SECRET has {len(secret)} bytes; HS256 needs at least 32" in done.stderr


@pytest.mark.parametrize("module", ["gateway", "kb"])
@pytest.mark.parametrize("env", ["", "dev"])
def test_an_empty_jwt_secret_is_a_clear_configuration_error_even_in_dev(module: str, env: str, tmp_path: Path) -> None:
    done = start_service(module, tmp_path, GAIA_JWT_SECRET="", GAIA_ENV=env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "GAIA_JWT_SECRET is empty" in done.stderr


@pytest.mark.parametrize("module", ["gateway", "kb"])
@pytest.mark.parametrize("key", ["k", "replace-me", "x" * 31])
def test_a_short_kb_api_key_is_refused_outside_dev(module: str, key: str, tmp_path: Path) -> None:
    """The service key is a shared secret like the JWT's: deploy/'s `replace-me` or a one-letter key never serves."""
    done = start_service(module, tmp_path, GAIA_JWT_SECRET="s" * 40, GAIA_KB_API_KEY=key)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"GAIA_KB_API_KEY has {len(key)} bytes; it needs at least 32" in done.stderr


async def test_every_forwarded_for_line_is_read_right_to_left_as_one_list(aiohttp_server, gateway_settings,
                                                                          token) -> None:
    """A proxy that adds its own X-Forwarded-For line (HAProxy) after the client's: the client's
    line is further left, so changing it does not give the client a fresh address for the limits."""
    settings = replace(gateway_settings, trusted_proxies=("127.0.0.1",), handshakes_per_ip_per_s=0.001,
                       handshake_burst=2)
    server = await aiohttp_server(create_gateway(settings, "gwlines"))
    assert await server.app[GW_NATS].wait_ready(10)
    url = str(server.make_url("/ws/experience")).replace("http", "ws", 1) + f"?experience={EXPERIENCE}"

    async def status(made_up: str, real: str) -> int:
        headers = CIMultiDict([("X-Forwarded-For", made_up), ("X-Forwarded-For", real)])
        async with aiohttp.ClientSession() as http:
            try:
                async with http.ws_connect(f"{url}&token={token('p')}", headers=headers):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
    assert [await status(f"6.6.6.{i}", "203.0.113.7") for i in range(3)] == [101, 101, 429]
    assert await status("6.6.6.9", "203.0.113.8") == 101  # the next client behind the proxy is its own address


async def test_sse_opens_draw_on_the_same_handshake_bucket_as_websockets(aiohttp_server, gateway_settings,
                                                                         token) -> None:
    settings = replace(gateway_settings, handshakes_per_ip_per_s=0.001, handshake_burst=3)
    server = await aiohttp_server(create_gateway(settings, "gwsse"))
    assert await server.app[GW_NATS].wait_ready(10)
    ws = str(server.make_url("/ws/experience")).replace("http", "ws", 1)
    ws += f"?experience={EXPERIENCE}&token={token('a')}"
    sse = server.make_url(f"/sse/experience?experience={EXPERIENCE}&token={token('b')}")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws):
            pass
        statuses = []
        for _ in range(3):
            async with http.get(sse) as resp:
                statuses.append(resp.status)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws)
    assert statuses == [200, 200, 429] and refused.value.status == 429


def test_every_limit_says_where_it_counts_and_the_docs_show_it() -> None:
    """Each limit setting is listed with its scope (per session, per process, everywhere); the table in
    docs/security.md is the rendered one; deploy/ runs the worker count the table's figures assume."""
    import re
    from dataclasses import fields

    from gateway.edge.scopes import LIMIT_SCOPES, SHIPPED_WORKERS
    from shared.config import Settings
    from tools.docs import with_limits_table
    not_gateway_limits = {"jwt_max_lifetime_s", "narrator_max_tokens", "stream_max_age_s", "stream_max_consumers",
                          "nats_max_pings_out"}  # a NATS client setting, no client's budget
    limits = {f.name for f in fields(Settings)
              if re.search(r"(^max_|_max_|_burst$|_per_s$|concurrency|queue_size)", f.name)} - not_gateway_limits
    assert limits <= set(LIMIT_SCOPES)
    docs = ROOT / "docs" / "security.md"
    assert with_limits_table(docs.read_text()) == docs.read_text(), "run `make docs`"
    for name, (_, scope) in LIMIT_SCOPES.items():
        assert re.search(rf"\| `GAIA_{name.upper()}` \|[^\n]*\| {scope} \|", docs.read_text()), name
    config = (ROOT / "shared" / "config.py").read_text().splitlines()
    for name, (_, scope) in LIMIT_SCOPES.items():  # and next to the setting itself
        at = next(i for i, line in enumerate(config) if line.startswith(f"    {name}:"))
        if scope == "per gateway process":
            assert re.search(r"per (gateway )?process", " ".join(config[at - 1:at + 1]), re.IGNORECASE), name
    shipped = [(ROOT / "deploy" / name).read_text() for name in
               ("docker-compose.yml", "systemd/gaia.env", "k8s/30-gateway.yaml")]
    for text in shipped:
        assert re.search(rf"GAIA_GATEWAY_WORKERS\W+(value: )?\"?{SHIPPED_WORKERS}\b", text), text[:200]
