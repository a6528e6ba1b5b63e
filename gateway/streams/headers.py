"""What a stored or republished message says about itself: its stream sequence and the one before it."""
from __future__ import annotations

from nats.aio.msg import Msg


def ack_sequences(reply: str) -> tuple[int, int, int]:
    """(stream sequence, consumer sequence, pending) from a JetStream delivery's reply subject.

    `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`, or the newer form with
    domain and account hash before the stream name and a random token at the end. Read directly:
    nats-py's `msg.metadata` builds three objects per message.
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[6]), int(tokens[8])
    return int(tokens[7]), int(tokens[8]), int(tokens[10])


def live_sequences(msg: Msg) -> tuple[int, int]:
    """(stream sequence, previous sequence on the same subject) of a republished message."""
    headers = msg.headers or {}
    return int(headers["Nats-Sequence"]), int(headers.get("Nats-Last-Sequence") or 0)
