"""Copies of one message read once: a NATS parser that hands a run of identical deliveries one Msg.

nats-server sends a message once per matching subscription, so a process holding a thousand
subscriptions on one subject (the gateway: one per session, the product's design) reads a thousand
copies that differ only in their subscription id. nats-py parses each alike: a regular expression,
two copies of the bytes, a coroutine, a header parse and a `Msg` per copy. `CopyParser` reads the
control line and compares the bytes with the previous copy's, in place; a copy equal to it goes to
its `DirectSubscription` as the same `Msg`, already parsed. Anything else (another kind of
subscription, an operation that is not a message, a message at least a subscription's pending
limit) goes through nats-py's own code unchanged.

A shared `Msg` is read-only to its handlers, and its `sid` is the first copy's. Built on nats-py's
Parser internals (`buf`, `state`, `reset`, the client's `_subs`, `_process_msg`, `_build_message`,
`_process_headers`), so setup.cfg pins nats-py's minor version and `check_nats_internals` names what
moved.
"""
from __future__ import annotations

import re
from typing import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.protocol import parser as nats_parser
from nats.protocol.parser import Parser

from gateway.streams.natssub import DirectSubscription
from shared.config import Settings

# nats-server's own form (single spaces): `MSG <subject> <sid> [reply] <size>` or
# `HMSG <subject> <sid> [reply] <header size> <size>`; anything else is nats-py's to parse.
HMSG_LINE = re.compile(rb"HMSG ([^ \r\n]+) (\d+) (?:([^ \r\n]+) )?(\d+) (\d+)\r\n")
MSG_LINE = re.compile(rb"MSG ([^ \r\n]+) (\d+) (?:([^ \r\n]+) )?()(\d+)\r\n")  # () : no header size
_MESSAGE_OPS = (b"MSG ", b"HMSG ")
_OTHER_OPS = (b"PING", b"PONG", b"INFO", b"+OK", b"-ERR")
# Read here, not imported: a nats-py without it fails check_nats_internals with its name, not an ImportError.
AWAITING_CONTROL_LINE = getattr(nats_parser, "AWAITING_CONTROL_LINE", 1)


class CopyParser(Parser):
    """nats-py's parser with a fast path for messages to direct subscriptions (see the module's note)."""

    def __init__(self, nc: NATS) -> None:
        self._resets = 0  # a reconnect may reset us while an operation awaits (nats-py's __init__ resets once)
        super().__init__(nc)
        self.copies = 0  # messages handed on as an earlier copy's Msg (a test and the bench read this)

    def reset(self) -> None:
        super().reset()
        self._forget()
        self._resets += 1

    def _forget(self) -> None:
        """No message to compare with: the next is parsed in full."""
        # A copy of the last message is `head`, any sid, then `tail` (the rest of its line, its bytes, CRLF).
        self._head = b"\n"  # matches nothing: a buffer never starts a message with a line feed
        self._tail = b""
        self._msg: Msg | None = None
        self._size = 0  # its header and payload bytes, as a pending limit counts them
        self._data_size = 0  # its payload bytes, as nats-py's statistics count them

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        buf.extend(data)
        while buf:
            if self.state != AWAITING_CONTROL_LINE:
                await super().parse()  # a payload nats-py's own parse started: it finishes it
                return
            pos, incomplete = await self._messages(buf)
            if buf is not self.buf:
                return  # reset meanwhile: what is left belongs to a connection that is gone
            del buf[:pos]
            if not buf or incomplete:
                return
            end = buf.find(b"\r\n")
            if not buf.startswith(_OTHER_OPS) or end < 0 or not await self._one_operation(end + 2):
                # A line nats-py knows in a form we do not read, or an operation not yet whole: its parse,
                # on everything left (it keeps what it cannot finish, as always).
                await super().parse()
                return

    async def _one_operation(self, size: int) -> bool:
        """PING, PONG, INFO, +OK or -ERR at the buffer's start, handled by nats-py; False if it reset us."""
        rest, resets = self.buf, self._resets
        self.buf = bytearray(rest[:size])
        del rest[:size]
        try:
            await super().parse()
        finally:
            if self._resets == resets:
                self.buf = rest
        return self._resets == resets

    async def _messages(self, buf: bytearray) -> tuple[int, bool]:
        """Dispatch every whole message from the buffer's start; (bytes used, stopped at a partial message)."""
        subs = self.nc._subs
        pos = copies = handed = handed_bytes = 0
        try:
            while True:
                # A copy of the last message: its line and bytes compared in place, nothing parsed or made.
                sub = None
                head = self._head
                if buf.startswith(head, pos):
                    sid_at = pos + len(head)
                    space = buf.find(b" ", sid_at, sid_at + 21)
                    if space > sid_at and buf.startswith(self._tail, space):
                        sub = subs.get(int(buf[sid_at:space]))
                        if type(sub) is DirectSubscription and not 0 < sub._pending_bytes_limit <= self._size:
                            pos = space + len(self._tail)
                            copies += 1
                        else:
                            sub = None
                if sub is None:
                    pos, done, sub = await self._message(buf, pos)
                    if done is not None:
                        return pos, done
                    if sub is None:
                        continue  # nats-py handled it
                handed += 1
                handed_bytes += self._data_size
                sub._received += 1
                sub.handoff.deliver(self._msg)  # type: ignore[arg-type]
        finally:
            self.copies += copies
            self.nc.stats["in_msgs"] += handed
            self.nc.stats["in_bytes"] += handed_bytes

    async def _message(self, buf: bytearray, pos: int) -> tuple[int, bool | None, DirectSubscription | None]:
        """Parse the message at `pos`: (where the next starts, None, the direct subscription to hand it to,
        or None when nats-py took it), or (pos, partial?, None) to stop."""
        line = (HMSG_LINE if buf.startswith(b"H", pos) else MSG_LINE).match(buf, pos)
        if line is None:
            return pos, buf.startswith(_MESSAGE_OPS, pos) and buf.find(b"\r\n", pos) < 0, None
        start = line.end()
        stop = start + int(line[5])
        if stop + 2 > len(buf):
            return pos, True, None
        sid, subject, reply, header_size = int(line[2]), line[1], line[3] or b"", line[4]
        raw = bytes(buf[start:stop])
        cut = int(header_size) if header_size else 0
        sub = self.nc._subs.get(sid)
        if type(sub) is DirectSubscription and not 0 < sub._pending_bytes_limit <= len(raw):
            headers = (plain_headers(raw[:cut]) or await self.nc._process_headers(raw[:cut])) if cut else None
            self._remember(buf, pos, line, self.nc._build_message(sid, subject, reply, raw[cut:], headers), raw)
            return stop + 2, None, sub
        # Any other subscription's: nats-py's own handling, bytes as it would pass them.
        await self.nc._process_msg(sid, subject, reply, raw[cut:], raw[:cut] if cut else None)
        return stop + 2, None, None

    def _remember(self, buf: bytearray, pos: int, line: re.Match[bytes], msg: Msg, raw: bytes) -> None:
        """Keep what a copy of this message looks like: its line around the sid, its bytes, its Msg."""
        self._head = bytes(buf[pos:line.end(1) + 1])
        self._tail = bytes(buf[line.end(2):line.end()]) + raw + b"\r\n"
        self._msg, self._size, self._data_size = msg, len(raw), len(msg.data)


_TOKEN = re.compile(rb"[!-9;-~]+")  # a header name: printable ASCII, no space, no colon


def plain_headers(raw: bytes) -> dict[str, str] | None:
    """nats-py's parse of a plain header block (`NATS/1.0`, then `Name: value` lines), in a few microseconds;
    None for anything else (a status line, an unusual name), which nats-py's own parse then reads."""
    if not raw.startswith(b"NATS/1.0\r\n"):
        return None
    out: dict[str, str] = {}
    for line in raw[10:].split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or _TOKEN.fullmatch(name) is None:
            return None
        out[name.decode("ascii")] = value.strip().decode("utf-8", "replace")
    return out or None


def read_copies_once(nc: NATS) -> NATS:
    """Give a client that is not yet connected the copy-reading parser; returns the client."""
    if nc.is_connected:
        raise RuntimeError("read_copies_once must be given the client before it connects")
    nc._ps = CopyParser(nc)
    return nc


def nats_client(settings: Settings) -> Callable[[], NATS]:
    """The gateway's NATS client maker: copies read once (GAIA_READ_COPIES_ONCE, on by default) or nats-py's own."""
    if settings.read_copies_once:
        return lambda: read_copies_once(NATS())
    return NATS
