"""Ecosystem: API documents generated from the schemas, Prometheus metrics, structured logs."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
from openapi_spec_validator import validate as validate_openapi
from prometheus_client.parser import text_string_to_metric_families

from shared.schemas.messages import CLIENT_MESSAGES, SERVER_MESSAGES
from shared.service.logs import JsonFormatter
from tests.helpers import ADMIN, eventually
from tools import docs as generated_docs

DOCS = Path(__file__).resolve().parents[2] / "docs"


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in refs_in(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs_in(v)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_checked_in_api_documents_match_the_schemas(tmp_path: Path) -> None:
    assert generated_docs.main(["--check"]) == 0, "run `make docs`"
    (tmp_path / "security.md").write_text((DOCS / "security.md").read_text())
    assert generated_docs.main(["--write", "--docs", str(tmp_path)]) == 0
    assert generated_docs.main(["--check", "--docs", str(tmp_path)]) == 0
    stale = tmp_path / "asyncapi.json"
    stale.write_text(stale.read_text().replace('"world_update"', '"world_updated"'))
    assert generated_docs.main(["--check", "--docs", str(tmp_path)]) == 1, "a stale copy is caught"


def test_openapi_documents_are_valid_openapi() -> None:
    for name in ("openapi-kb.json", "openapi-gateway.json"):
        doc = json.loads((DOCS / name).read_text())
        validate_openapi(doc)
        for ref in refs_in(doc):
            resolve(doc, ref)


def test_asyncapi_has_every_message_of_the_protocol_and_its_refs_resolve() -> None:
    doc = json.loads((DOCS / "asyncapi.json").read_text())
    assert doc["asyncapi"].startswith("3.")
    assert set(doc["components"]["messages"]) == set(CLIENT_MESSAGES) | set(SERVER_MESSAGES) | {"broadcast"}
    for ref in refs_in(doc):
        resolve(doc, ref)
    world_update = doc["components"]["schemas"]["WorldUpdateEvent"]
    assert {"seq", "base_version", "snapshot_version", "changes", "actor_id"} <= set(world_update["properties"])


async def test_both_processes_serve_their_documents(gateway_server, kb_server) -> None:
    async with aiohttp.ClientSession() as http:
        for server, path, name in ((gateway_server, "/openapi.json", "openapi-gateway.json"),
                                   (gateway_server, "/asyncapi.json", "asyncapi.json"),
                                   (kb_server, "/openapi.json", "openapi-kb.json")):
            async with http.get(server.make_url(path)) as resp:
                assert resp.status == 200
                assert await resp.json() == json.loads((DOCS / name).read_text())


async def scrape(server: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name+labels -> value, from a real /metrics scrape."""
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/metrics"), headers=ADMIN) as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            text = await resp.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_follow_sessions_events_and_actions(players, gateway_server, kb_server) -> None:
    alice = await players("alice")
    assert (await alice.act("go", destination="main_room"))["success"]
    await alice.next("world_update")
    gw = await scrape(gateway_server)
    assert gw[("gaia_gateway_sessions", (("transport", "websocket"),))] == 1
    assert gw[("gaia_gateway_events_delivered_total", (("transport", "websocket"),))] >= 1
    assert gw[("gaia_gateway_action_seconds_count", (("transport", "websocket"),))] == 1
    assert gw[("gaia_gateway_nats_up", ())] == 1
    assert ("gaia_gateway_slow_consumer_closes_total", ()) in gw and ("gaia_gateway_nats_reconnects_total", ()) in gw
    assert gw[("gaia_gateway_send_queue_depth", (("stat", "max"),))] == 0  # nothing waits for an idle session's socket
    kb = await scrape(kb_server)
    assert kb[("gaia_kb_actions_total", (("action", "go"), ("outcome", "committed")))] == 1
    assert kb[("gaia_kb_action_seconds_count", (("action", "go"),))] == 1
    assert kb[("gaia_kb_world_version", (("experience", "wylding-woods"),))] == 1
    assert kb[("gaia_kb_events_published_total", ())] >= 1
    await alice.close()

    async def closed() -> bool:
        return (await scrape(gateway_server))[("gaia_gateway_sessions", (("transport", "websocket"),))] == 0
    await eventually(closed)


def test_json_logs_are_one_object_per_line_with_tokens_redacted() -> None:
    record = logging.LogRecord("gateway.ws", logging.INFO, __file__, 1, "open %s", ("/ws?token=abc.def.ghi",), None)
    line = JsonFormatter().format(record)
    body = json.loads(line)
    assert body["level"] == "INFO" and body["logger"] == "gateway.ws" and "abc.def" not in line
