"""An event frame's bytes: it starts `{"seq":N,`, so a frame tells what it is without being decoded.

Stream events (world_update, presence) are the only frames that start with their `seq`: the gateway
writes that head once per event (streams/frames.py, streams/timings.py) and reads it back per copy
(the event timings) and per rewind (ws/writer.py, ws/session.py) with these functions, and
nowhere else. `event_seq` runs per copy: no decoding, the prefix a literal (no global lookup).
"""
from __future__ import annotations


def event_head(seq: int) -> bytes:
    """How every frame of the event at stream sequence `seq` starts."""
    return b'{"seq":%d,' % seq


def is_event(frame: bytes) -> bool:
    """True for an event frame, its `seq` unread: a rewind tests a whole queue, where parsing costs 4x."""
    return frame[:7] == b'{"seq":'


def event_seq(frame: bytes) -> int | None:
    """The `seq` an event frame starts with; None for any other frame (answers, snapshots, errors)."""
    if frame[:7] == b'{"seq":':  # a slice compared: faster than startswith's method call
        return int(frame[7:frame.index(b",", 7)])
    return None
