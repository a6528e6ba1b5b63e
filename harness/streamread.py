"""Read a subject of the stream back with no more than a gateway's rights: batched direct gets, no consumer.

The checkers (harness/verify.py, the tests) read what kb stored with the gateway's credentials, which
may not create a consumer of their own choosing (shared/natsauth.py): like the gateway's catch-up,
they ask for runs of stored messages by direct get and follow `Nats-Num-Pending` to the end.
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Callable

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from shared.natsconn import connect_tool

BATCH = 1000
END_STATUSES = ("204", "404", "408")
READ_ATTEMPTS = 3


async def read_subject(nats_url: str, stream: str, subject: str,
                       each: Callable[[int, bytes, float], None], timeout: float = 10.0) -> None:
    """Call each(seq, payload, stored_at) for every message on a subject, in order."""
    nc = await connect_tool(nats_url)
    try:
        seq = 1
        while True:
            run = await _read_run_retried(nc, stream, subject, seq, timeout)
            for msg in run:
                headers = msg.headers or {}
                seq = int(headers["Nats-Sequence"])
                each(seq, msg.data, _stored_at(headers.get("Nats-Time-Stamp", "")))
            if not run or int((run[-1].headers or {}).get("Nats-Num-Pending") or 0) == 0:
                return
            seq += 1
    finally:
        await nc.close()


async def _read_run_retried(nc: NATS, stream: str, subject: str, from_seq: int, timeout: float) -> list[Msg]:
    """`_read_run`, asked again when no answer came: right after a cluster's faults the replica that
    takes a direct get may be catching up and drop it; a read that never answers fails the check."""
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            return await _read_run(nc, stream, subject, from_seq, timeout)
        except TimeoutError:
            if attempt == READ_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def _read_run(nc: NATS, stream: str, subject: str, from_seq: int, timeout: float) -> list[Msg]:
    """One batched direct get: the stored messages it brings, up to its end-of-batch status."""
    inbox = nc.new_inbox()
    run: list[Msg] = []
    done = asyncio.get_running_loop().create_future()

    async def reply(msg: Msg) -> None:
        status = (msg.headers or {}).get("Status")
        if status is None:
            run.append(msg)
        elif not done.done():
            done.set_result(status)
    sub = await nc.subscribe(inbox, cb=reply)
    try:
        request = orjson.dumps({"seq": from_seq, "next_by_subj": subject, "batch": BATCH})
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", request, reply=inbox)
        status = await asyncio.wait_for(done, timeout)
    finally:
        await sub.unsubscribe()
    if status not in END_STATUSES:
        raise RuntimeError(f"direct get of {subject} from {from_seq} failed with status {status}")
    return run


def _stored_at(stamp: str) -> float:
    """Seconds since the epoch from `Nats-Time-Stamp` (RFC 3339 with nanoseconds); 0.0 when absent."""
    if not stamp:
        return 0.0
    head, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(head + "+00:00").timestamp()
    return seconds + float(f"0.{fraction or '0'}")
