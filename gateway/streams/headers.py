"""What a stored or republished message says about itself: its stream sequence and the one before it.

Anyone holding the gateway's NATS credentials can make the server answer a JetStream request on
any subject, a live subject or a reply inbox of ours among them (NATS checks where a client
publishes, not where the answers to it go). Such answers are the server's own but not the stream's
republish: a direct get carries no `Nats-Last-Sequence` or carries `Nats-Num-Pending`, an API
answer or a consumer's delivery no `Nats-Sequence`, and any of them may be about another subject.
The checks here tell them apart; streams/foreign.py counts and reports what they drop.
"""
from __future__ import annotations

from nats.aio.msg import Msg

ACK_PREFIX = "$JS.ACK."


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


def ack_origin(reply: str) -> tuple[str, str]:
    """(stream, consumer) named by a JetStream delivery's reply subject; ("", "") for anything else."""
    if not reply.startswith(ACK_PREFIX):
        return "", ""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return tokens[2], tokens[3]
    if len(tokens) == 12:
        return tokens[4], tokens[5]
    return "", ""


def delivery_problem(msg: Msg, stream: str, consumer: str, subject: str) -> str:
    """Why a message fetched from our catch-up consumer is not one of its deliveries ("" when it is)."""
    if ack_origin(msg.reply or "") != (stream, consumer):
        return "not a delivery of this catch-up's consumer"
    if msg.subject != subject:
        return f"a delivery about {msg.subject[:80]!r}"
    return ""


def stored_problem(headers: dict[str, str], stream: str, subject: str) -> str:
    """Why a direct-get reply is not a stored message of `subject` in `stream` ("" when it is)."""
    if headers.get("Nats-Stream") != stream:
        return "not from this stream"
    if headers.get("Nats-Subject") != subject:
        return f"about {str(headers.get('Nats-Subject'))[:80]!r}"
    if not headers.get("Nats-Sequence", "").isdigit():
        return "no Nats-Sequence"
    return ""


def republish_problem(msg: Msg, stream: str, subject: str) -> str:
    """Why a message on a live subject is not the stream's republish of `subject` ("" when it is)."""
    headers = msg.headers
    if not headers:
        return "no headers (a JetStream API answer or a consumer's delivery)"
    if "Status" in headers or "Nats-Num-Pending" in headers:
        return "a direct-get or status reply"
    problem = stored_problem(headers, stream, subject)
    if problem:
        return problem
    if not headers.get("Nats-Last-Sequence", "").isdigit():
        return "no Nats-Last-Sequence (a single direct get)"
    return ""


def live_sequences(msg: Msg) -> tuple[int, int]:
    """(stream sequence, previous sequence on the same subject) of a republished message."""
    headers = msg.headers or {}
    return int(headers["Nats-Sequence"]), int(headers.get("Nats-Last-Sequence") or 0)


class LiveVerdicts:
    """The last live message's verdict, shared by its copies: `republish_problem` and `live_sequences`
    once per message, not once per session (gateway/streams/natscopies.py hands every copy the same Msg)."""

    __slots__ = ("stream", "_msg", "_subject", "_verdict")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._msg: Msg | None = None
        self._subject = ""
        self._verdict: tuple[str, int, int] = ("", 0, 0)

    def of(self, msg: Msg, subject: str) -> tuple[str, int, int]:
        """(problem, stream sequence, previous sequence) of a live message for a stream of `subject`."""
        if msg is self._msg and subject == self._subject:
            return self._verdict
        problem = republish_problem(msg, self.stream, subject)
        seq, last = (0, 0) if problem else live_sequences(msg)
        self._msg, self._subject, self._verdict = msg, subject, (problem, seq, last)
        return self._verdict
