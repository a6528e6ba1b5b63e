"""Read a subject of the stream back with no more than a gateway's rights: batched direct gets, no consumer.

The checkers (harness/checks/verify.py, the tests) read what kb stored with the gateway's credentials, which
may not create a consumer of their own choosing (shared/natsauth.py): like the gateway's catch-up,
they ask for runs of stored messages by direct get and follow `Nats-Num-Pending` to the end, and on
to the newest message the stream's leader holds (a replica's answer may lag after a fault).
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Callable

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError, ServiceUnavailableError

from shared.natsconn import connect_tool

BATCH = 1000
END_STATUSES = ("204", "404", "408")
READ_ATTEMPTS = 3
LEADER_ASK_S = 2.0  # one request to the leader; unanswered, it is asked again
LEADER_PATIENCE_S = 30.0  # longer than an election or a replica's catch-up after a healed partition
LEADER_RETRY_S = 0.2


async def read_subject(nats_url: str, stream: str, subject: str,
                       each: Callable[[int, bytes, float], None], timeout: float = 10.0) -> None:
    """Call each(seq, payload, stored_at) for every message on a subject, in order, up to at least the
    newest the stream's leader held when the read began.

    Any replica answers a direct get, and one still catching up after a fault (a restart, a healed
    partition) answers with the end it has, `Nats-Num-Pending` 0 included: a check that stopped there
    would call everything after it missing. So the leader is asked for the subject's newest message
    once (a JetStream API request, busy right after faults), and direct gets read on until they reach it.
    """
    nc = await connect_tool(nats_url)
    try:
        newest = await _leader_newest(nc, stream, subject, timeout)
        last = await _read_direct(nc, stream, subject, each, timeout)
        await _read_on_to(nc, stream, subject, last, newest, each, timeout)
    finally:
        await nc.close()


async def _read_direct(nc: NATS, stream: str, subject: str, each: Callable[[int, bytes, float], None],
                       timeout: float, from_seq: int = 1) -> int:
    """Batched direct gets from `from_seq` to the end the answering replicas know; the last sequence
    read (`from_seq - 1` if none)."""
    seq, last = from_seq, from_seq - 1
    while True:
        run = await _read_run_retried(nc, stream, subject, seq, timeout)
        for msg in run:
            headers = msg.headers or {}
            last = int(headers["Nats-Sequence"])
            each(last, msg.data, _stored_at(headers.get("Nats-Time-Stamp", "")))
        if not run or int((run[-1].headers or {}).get("Nats-Num-Pending") or 0) == 0:
            return last
        seq = last + 1


async def _read_on_to(nc: NATS, stream: str, subject: str, last: int, newest: int,
                      each: Callable[[int, bytes, float], None], timeout: float) -> None:
    """Direct gets on from `last` until `newest` is read: the lagging replica catches up, or another
    answers the next request."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, LEADER_PATIENCE_S)
    while last < newest:
        if loop.time() > deadline:
            raise TimeoutError(f"direct gets of {subject} stop at {last}; the stream's leader holds {newest}")
        await asyncio.sleep(LEADER_RETRY_S)  # a retry's pause, not a wait for a state
        last = await _read_direct(nc, stream, subject, each, timeout, last + 1)


async def _leader_newest(nc: NATS, stream: str, subject: str, timeout: float) -> int:
    """The sequence of the subject's newest message as the stream's leader knows it (0: none), asked
    again for a while when no leader answers (an election after a fault answers 503, or nothing)."""
    js = nc.jetstream(timeout=min(timeout, LEADER_ASK_S))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, LEADER_PATIENCE_S)
    attempts = 0
    while True:
        attempts += 1
        try:
            return (await js.get_last_msg(stream, subject)).seq or 0
        except NotFoundError:
            return 0
        except (ServiceUnavailableError, TimeoutError) as exc:
            if loop.time() > deadline:
                raise TimeoutError(f"the leader of {stream} did not say the newest of {subject} "
                                   f"({attempts} attempts, the last: {exc!r})") from exc
            await asyncio.sleep(LEADER_RETRY_S)  # a retry's pause, not a wait for a state


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
