"""Event timings (gateway/streams/timings.py): a run of copies stamped once when the loop turn ends."""
from __future__ import annotations

import asyncio


async def test_event_timings_stamp_a_run_of_copies_once_when_the_loop_turn_ends() -> None:
    from gateway.streams.timings import FIRST_WRITE, LAST_WRITE, WRITES, EventTimings

    timings = EventTimings()
    for seq in (7, 8):
        timings.received(seq, {"timestamp": 1_000})
    frame = {seq: b'{"seq":%d,"user_id":"u","type":"world_update"}' % seq for seq in (7, 8)}
    for _ in range(3):  # three sockets take event 7, then two take event 8, in one turn
        timings.wrote(frame[7])
    timings.wrote(b'{"type":"action_response"}')  # not an event: no stamp
    timings.wrote(frame[8])
    timings.wrote(frame[8])
    stamps = {row[0]: row[1:] for row in timings.recent()}
    assert stamps[7][WRITES] == 3 and stamps[7][LAST_WRITE] >= stamps[7][FIRST_WRITE] > 0
    assert stamps[8][WRITES] == 0 and stamps[8][FIRST_WRITE] > 0  # its run is still being written
    await asyncio.sleep(0)  # the turn ends
    await asyncio.sleep(0)
    stamps = {row[0]: row[1:] for row in timings.recent()}
    assert stamps[8][WRITES] == 2 and stamps[8][LAST_WRITE] >= stamps[8][FIRST_WRITE]
    timings.wrote_all([frame[7], frame[8]])  # a send tick's one write: both events at one instant
    stamps = {row[0]: row[1:] for row in timings.recent()}
    assert (stamps[7][WRITES], stamps[8][WRITES]) == (4, 3) and stamps[7][LAST_WRITE] == stamps[8][LAST_WRITE]
