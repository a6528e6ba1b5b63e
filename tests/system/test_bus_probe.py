"""An attacker holding the gateway's NATS credentials, against several experiences at once.

NATS refuses the gateway's user every subject it may not publish or subscribe to, but it cannot
refuse where an answer goes: a JetStream API request may name any reply subject, a consumer any
deliver subject. These tests aim every such answer at the live subjects and at kb's inbox and prove
that none reaches kb, none reaches a player, no session's cursor moves for it, and the gateway
says so once in its log and counts it in /metrics.
"""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from nats.aio.msg import Msg

import examples
from gateway.streams.foreign import ForeignMessages
from gateway.streams.headers import republish_problem
from harness.checks.verify import player_seqs
from harness.system.procs import NatsServer
from shared.config import Settings
from shared.natsauth import STREAM, inbox_prefix
from shared.natsconn import connect_tool
from shared.subjects import EXPERIENCE_UPDATES_PREFIX, experience_updates, live_subject
from tests.helpers import ADMIN, EXPERIENCE, eventually, outbox_drained

EXPERIENCES = (EXPERIENCE, "glade", "marsh")
DATA = Path(__file__).resolve().parents[2] / "kb" / "data" / EXPERIENCE
STUDIO = "tinkers-cellar"  # the example studio's experience, different in shape, with actions of its own


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """Three experiences (copies of one world under three names) and the studio's; a gap over 2 events is read by
    a consumer."""
    worlds = tmp_path / "worlds"
    for name in EXPERIENCES:
        shutil.copytree(DATA, worlds / name)
    shutil.copytree(examples.WORLDS / STUDIO, worlds / STUDIO)
    return replace(settings, kb_data_dir=str(worlds), catchup_direct_max=2, resync_after_events=1000,
                   presence_window_ms=1)  # each move its own event: the long gap is longer than 2


async def probe(url: str, target: str, foreign: str) -> int:
    """Ask, with the credentials in `url`, for every answer the server will send to `target`, about
    `foreign` (another experience's subject) and the whole stream; the number of requests sent."""
    errors: list[Exception] = []

    async def seen(exc: Exception) -> None:
        errors.append(exc)
    nc = await connect_tool(url, error_cb=seen)
    js_api = "$JS.API"
    every = [experience_updates(name) for name in EXPERIENCES]
    push = {"ack_policy": "none", "deliver_policy": "all", "deliver_subject": target}
    name_1, name_2 = f"probe-{secrets.token_hex(4)}", f"probe-{secrets.token_hex(4)}"
    requests: list[tuple[str, Any]] = [
        (f"{js_api}.STREAM.INFO.{STREAM}", b""),
        (f"{js_api}.DIRECT.GET.{STREAM}", {"seq": 1, "next_by_subj": "world.updates.>", "batch": 10_000}),
        (f"{js_api}.DIRECT.GET.{STREAM}", {"seq": 1, "next_by_subj": foreign, "batch": 10_000}),
        (f"{js_api}.DIRECT.GET.{STREAM}", {"multi_last": every, "batch": 100}),
        (f"{js_api}.DIRECT.GET.{STREAM}", {"last_by_subj": foreign}),
        (f"{js_api}.DIRECT.GET.{STREAM}", {"seq": 1}),
        (f"{js_api}.DIRECT.GET.{STREAM}.{foreign}", b""),
        (f"{js_api}.STREAM.MSG.GET.{STREAM}", {"last_by_subj": foreign}),
        (f"{js_api}.CONSUMER.CREATE.{STREAM}", {"stream_name": STREAM, "config": {**push, "filter_subject": foreign}}),
        (f"{js_api}.CONSUMER.CREATE.{STREAM}", {"stream_name": STREAM, "config": push}),
        (f"{js_api}.CONSUMER.CREATE.{STREAM}",
         {"stream_name": STREAM, "config": {**push, "headers_only": True, "filter_subject": foreign}}),
        # The form the gateway's user may use: named, filtered in the subject; the deliver subject is not.
        (f"{js_api}.CONSUMER.CREATE.{STREAM}.{name_1}.{foreign}",
         {"stream_name": STREAM, "config": {**push, "name": name_1, "filter_subject": foreign}}),
    ]
    for subject, body in requests:
        await nc.publish(subject, body if isinstance(body, bytes) else orjson.dumps(body), reply=target)
    # A pull consumer of its own, read with the live subject as the reply subject of every fetch.
    pull = (f"{js_api}.CONSUMER.CREATE.{STREAM}.{name_2}.{foreign}", orjson.dumps(
        {"stream_name": STREAM, "config": {"name": name_2, "filter_subject": foreign, "ack_policy": "none",
                                           "deliver_policy": "all"}}))
    if foreign.startswith(EXPERIENCE_UPDATES_PREFIX):  # the gateway's user may create it
        created = await nc.request(*pull, timeout=5)
        assert orjson.loads(created.data).get("name") == name_2, created.data
        await nc.publish(f"{js_api}.CONSUMER.MSG.NEXT.{STREAM}.{name_2}", orjson.dumps({"batch": 1000}),
                         reply=target)
    else:  # a consumer over every experience: refused by permissions
        await nc.publish(*pull, reply=target)
    # Plain publishes with that reply: refused by permissions, like any publish of the gateway's user.
    await nc.publish(target, b"{}", reply=target)
    await nc.publish(foreign, b"{}", reply=target)
    await nc.flush()
    await nc.close()
    return len(requests) + 3


async def recorder(server: NatsServer, subject: str) -> tuple[Any, list[Msg]]:
    """An operator's subscription recording every message on `subject`."""
    got: list[Msg] = []
    nc = await connect_tool(server.url_as("operator"))

    async def keep(msg: Msg) -> None:
        got.append(msg)
    await nc.subscribe(subject, cb=keep)
    await nc.flush()
    return nc, got


def as_pattern(subject: str) -> re.Pattern[str]:
    """A NATS subscription subject as a regular expression over literal subjects."""
    tokens = [r"[^.]+" if t == "*" else (r".+" if t == ">" else re.escape(t)) for t in subject.split(".")]
    return re.compile(r"\.".join(tokens))


async def metric(http: Any, url: str, name: str) -> float:
    """The sum of every sample of a metric on a /metrics page."""
    async with http.get(f"{url}/metrics", headers=ADMIN) as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


async def test_the_gateways_credentials_cannot_reach_kbs_inbox(nats_server, kb_server, players) -> None:
    """kb replies under its own prefix, which the gateway's user cannot read; answers aimed at any
    kb-looking inbox reach no subscription of kb's, and kb's own requests go on unharmed."""
    alice = await players("alice")
    errors: list[Exception] = []

    async def seen(exc: Exception) -> None:
        errors.append(exc)
    spy = await connect_tool(nats_server.url_as("gateway"), error_cb=seen)
    for subject in (inbox_prefix("kb") + ".>", "_INBOX.>", ">"):
        await spy.subscribe(subject)
    await spy.flush()
    await eventually(lambda: len([e for e in errors if "permissions violation" in str(e).lower()]) == 3)
    await spy.close()

    watch, landed = await recorder(nats_server, inbox_prefix("kb") + ".>")
    target = inbox_prefix("kb") + ".guessed.1"
    acting = asyncio.gather(*(alice.act("go", destination=d) for d in ("main_room", "entrance")))
    await probe(nats_server.url_as("gateway"), target, experience_updates(EXPERIENCE))
    assert all(answer["success"] for answer in await acting)
    await outbox_drained(kb_server)  # kb published its events: their acks came to its inbox
    await eventually(lambda: any(m.subject == target for m in landed))  # the server does deliver what was asked...
    kb_subs = [as_pattern(s) for conn in (await nats_server.connz())["connections"] if conn.get("name") == "kb"
               for s in conn.get("subscriptions_list") or []]
    assert kb_subs and all(p.pattern.startswith(re.escape(inbox_prefix("kb") + ".")) for p in kb_subs)
    assert not any(p.fullmatch(target) for p in kb_subs)  # ...where kb has no subscription
    at_kb = [m for m in landed if any(p.fullmatch(m.subject) for p in kb_subs)]
    assert at_kb and not [m for m in at_kb if m.headers or b"io.nats.jetstream.api" in m.data], at_kb  # acks only
    await watch.close()


async def test_no_read_path_hands_one_experiences_event_to_another(nats_server, kb_server, gateway_server, players,
                                                                   settings, caplog) -> None:
    """Live messages, direct-get catch-ups and consumer catch-ups of three experiences, under a
    probe aiming every answer at every live subject: each session gets exactly its experience's
    events, its cursor only ever their sequences; the gateway logs the probe once and counts it."""
    caplog.set_level(logging.INFO)
    roles = ("watch", "act", "short", "long")  # short: resumes a gap of one round, long: of three
    clients = {(role, name): await players(f"{role}-{name}", name) for role in roles for name in EXPERIENCES}
    gateway, operator = nats_server.url_as("gateway"), nats_server.url_as("operator")

    async def round_of_actions(destination: str) -> None:
        for name in EXPERIENCES:  # interleaved: each experience's events sit between the others'
            assert (await clients["act", name].act("go", destination=destination))["success"]

    async def drop_when_current(role: str) -> None:
        """Drop each experience's `role` client once it has every event so far (its gap is then exact)."""
        await outbox_drained(kb_server)
        for name in EXPERIENCES:
            owed = await player_seqs(operator, settings.stream_name, name, f"{role}-{name}")
            await eventually(lambda c=clients[role, name], o=owed: c.last_seq == o[-1])
            await clients[role, name].drop()

    async def probe_all(foreign: Any) -> None:
        for name in EXPERIENCES:
            await probe(gateway, live_subject(experience_updates(name)), foreign(name))

    await round_of_actions("main_room")
    await drop_when_current("long")
    await round_of_actions("entrance")
    await probe_all(lambda name: experience_updates(next(o for o in EXPERIENCES if o != name)))
    await drop_when_current("short")
    await round_of_actions("main_room")
    for name in EXPERIENCES:
        await clients["short", name].connect(last_seq=clients["short", name].last_seq)
    await round_of_actions("entrance")
    await probe_all(lambda name: "world.updates.>")
    for name in EXPERIENCES:
        await clients["long", name].connect(last_seq=clients["long", name].last_seq)
    await round_of_actions("main_room")  # the last events: every session must reach them

    await outbox_drained(kb_server)  # every event of the last round is in the stream
    for (role, name), client in clients.items():
        expected = await player_seqs(operator, settings.stream_name, name, f"{role}-{name}")
        try:
            await eventually(lambda c=client, e=expected: c.last_seq == e[-1])
        except AssertionError:
            raise AssertionError(f"{role}-{name} got {client.seqs}, owed {expected}") from None
        assert client.seqs == expected[expected.index(client.seqs[0]):], (role, name)
        assert not [f for f in client.frames if f.get("type") in ("error", "resync_required")], (role, name)
        assert {f.get("experience") for f in client.frames if f.get("type") == "world_update"} == {name}

    gateway_url = str(gateway_server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as http:
        assert await metric(http, gateway_url, "gaia_gateway_stream_foreign_total") > 0
        # Both catch-up paths ran while the probes' answers arrived: consumers and batched direct gets.
        assert await metric(http, gateway_url, "gaia_gateway_stream_catchups_total") >= len(EXPERIENCES)
        assert await metric(http, gateway_url, "gaia_gateway_stream_catchup_consumers_total") >= 1
        assert await metric(http, gateway_url, "gaia_gateway_stream_direct_reads_total") > 0
    foreign = [r for r in caplog.records if "not from the stream" in r.getMessage()]
    assert len(foreign) == 1, [r.getMessage() for r in foreign]  # once per interval, not per session or message
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith(("gateway", "shared"))]



async def test_authoring_players_of_two_different_experiences_play_under_the_probe_and_see_only_their_own(
        nats_server, kb_server, players, settings) -> None:
    """wylding-woods and the studio's tinkers-cellar, each played (the studio's own actions too) while a probe aims
    the other experience's stream at each live subject: each player gets exactly its experience's events."""
    woods = {role: await players(f"{role}-woods", EXPERIENCE) for role in ("act", "watch")}
    cellar = {role: await players(f"{role}-cellar", STUDIO) for role in ("act", "watch")}
    gateway, operator = nats_server.url_as("gateway"), nats_server.url_as("operator")
    steps = [(woods["act"], "go", {"destination": "main_room"}), (cellar["act"], "go", {"destination": "workshop"}),
             (woods["act"], "collect_item", {"instance_id": "dream bottle"}),
             (cellar["act"], "go", {"destination": "storeroom"}),
             (cellar["act"], "open", {"instance_id": "iron chest"}),
             (cellar["act"], "collect_item", {"instance_id": "brass gear"})]
    for n, (client, action, args) in enumerate(steps):
        assert (await client.act(action, **args))["success"], (action, args)
        if n == 2:
            await probe(gateway, live_subject(experience_updates(EXPERIENCE)), experience_updates(STUDIO))
            await probe(gateway, live_subject(experience_updates(STUDIO)), experience_updates(EXPERIENCE))
    refused = await woods["act"].act("open", instance_id="dream bottle")
    assert refused["code"] == "unknown_action", "an action one experience adds is not another's"
    await outbox_drained(kb_server)
    for name, clients in ((EXPERIENCE, woods), (STUDIO, cellar)):
        for client in clients.values():
            owed = await player_seqs(operator, settings.stream_name, name, client.user_id)
            await eventually(lambda c=client, o=owed: c.last_seq == o[-1])
            assert client.seqs == owed[owed.index(client.seqs[0]):], client.user_id
            assert {f.get("experience") for f in client.frames if f.get("type") in ("world_update", "presence")} \
                == {name}
    watch = cellar["watch"].drain("world_update")
    assert watch and all(not f["changes"] for f in watch if f["actor_id"] == "act-cellar"), \
        "the studio's world hides what lies in other areas (location visibility): the watcher on the stairs saw none"


def test_foreign_messages_are_counted_each_and_reported_once_per_interval(caplog) -> None:
    """A thousand foreign copies in one interval: a thousand in the count, one warning; the next interval one more."""
    now = [0.0]
    foreign = ForeignMessages(report_every_s=60.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING)
    for _ in range(1000):
        foreign.drop("live", "live.world.updates.exp.x", "no headers")
    now[0] = 61.0
    foreign.drop("direct", "_INBOX.gateway.x.y", "about 'world.updates.exp.y'")
    assert foreign.counts == {"live": 1000, "direct": 1}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("dropped 1 message") and lines[1].startswith("dropped 1000 message")


def test_only_the_streams_republish_of_the_subject_passes_the_live_check() -> None:
    """Each kind of answer the server sends on request is told apart from the republish it resembles."""
    subject, live = experience_updates("a"), live_subject(experience_updates("a"))
    republish = {"Nats-Stream": STREAM, "Nats-Subject": subject, "Nats-Sequence": "7", "Nats-Time-Stamp": "t",
                 "Nats-Last-Sequence": "5"}
    assert republish_problem(Msg(None, subject=live, headers=republish), STREAM, subject) == ""  # type: ignore[arg-type]
    for headers in (None, {**republish, "Nats-Num-Pending": "0"}, {"Status": "204", "Nats-Last-Sequence": "7"},
                    {k: v for k, v in republish.items() if k != "Nats-Last-Sequence"},
                    {**republish, "Nats-Subject": experience_updates("b")}, {**republish, "Nats-Stream": "KV_x"}):
        assert republish_problem(Msg(None, subject=live, headers=headers), STREAM, subject)  # type: ignore[arg-type]


async def test_a_subject_is_read_back_with_a_gateways_rights_and_no_consumer(nats_server, kb_server, players,
                                                                              settings) -> None:
    """The checkers read what kb stored as the gateway may: batched direct gets under its inbox prefix."""
    from harness.checks.streamread import read_subject
    alice = await players("alice")
    for destination in ("main_room", "entrance", "main_room"):
        assert (await alice.act("go", destination=destination))["success"]
    await outbox_drained(kb_server)
    read: list[tuple[int, bytes, float]] = []
    await read_subject(nats_server.url_as("gateway"), settings.stream_name, experience_updates(EXPERIENCE),
                       lambda seq, data, at: read.append((seq, data, at)))
    watch = await connect_tool(nats_server.url_as("operator"))
    js = watch.jetstream()
    last = await js.get_last_msg(settings.stream_name, experience_updates(EXPERIENCE))
    await watch.close()
    assert len(read) >= 3 and read[-1][0] == last.seq and [s for s, _, _ in read] == sorted({s for s, _, _ in read})
    assert all(orjson.loads(data)["experience"] == EXPERIENCE for _, data, _ in read if b"world_update" in data)
    assert all(at > 1.7e9 for _, _, at in read)
    assert await nats_server.consumer_filters() == []


async def test_a_read_whose_direct_gets_ended_early_reads_on_to_the_leaders_newest(
        nats_server, kb_server, players, settings) -> None:
    """A replica still catching up answers a direct get with the end it has (found by the cluster chaos run:
    kb's acknowledged tail looked missing); the read goes on until it reaches the leader's newest."""
    from harness.checks.streamread import _leader_newest, _read_direct, _read_on_to
    alice = await players("alice")
    for destination in ("main_room", "entrance", "main_room", "entrance"):
        assert (await alice.act("go", destination=destination))["success"]
    await outbox_drained(kb_server)
    subject = experience_updates(EXPERIENCE)
    whole: list[tuple[int, bytes, float]] = []
    nc = await connect_tool(nats_server.url_as("gateway"))
    try:
        newest = await _leader_newest(nc, settings.stream_name, subject, 10)
        await _read_direct(nc, settings.stream_name, subject, lambda *m: whole.append(m), 10)
        stale_end = whole[len(whole) // 2][0]  # what a lagging replica would have called the end
        rest: list[tuple[int, bytes, float]] = []
        await _read_on_to(nc, settings.stream_name, subject, stale_end, newest, lambda *m: rest.append(m), 10)
    finally:
        await nc.close()
    assert len(whole) >= 4 and whole[-1][0] == newest
    assert rest == [m for m in whole if m[0] > stale_end]  # the same sequences, bytes and stored times
