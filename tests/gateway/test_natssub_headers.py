"""The copies of one message that reach a client's direct subscriptions share their parsed headers."""
from __future__ import annotations

from typing import Any

import nats
from nats.aio.msg import Msg

from gateway.streams.natssub import subscribe_direct
from tests.helpers import eventually


async def test_copies_share_one_parse_of_their_headers_and_new_headers_are_parsed_anew(nats_server: Any) -> None:
    nc = await nats.connect(nats_server.url_as("operator"))
    got: list[list[Msg]] = [[], [], []]
    for box in got:
        await subscribe_direct(nc, "t.headers", box.append)
    await nc.publish("t.headers", b"one", headers={"Nats-Sequence": "1", "X": "a"})
    await nc.publish("t.headers", b"two", headers={"Nats-Sequence": "2", "X": "a"})
    await nc.publish("t.headers", b"bare")
    await nc.flush()
    await eventually(lambda: all(len(box) == 3 for box in got))
    for position, (data, seq) in enumerate(((b"one", "1"), (b"two", "2"))):
        copies = [box[position] for box in got]
        assert all(m.data == data and m.headers == {"Nats-Sequence": seq, "X": "a"} for m in copies)
        assert all(m.headers is copies[0].headers for m in copies), "one parse for every copy"
    assert got[0][0].headers is not got[0][1].headers
    assert all(box[2].headers is None for box in got)
    await nc.drain()
