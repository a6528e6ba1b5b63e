"""Conversations: what "it" and "there" refer to, and the last turns as facts, bounded in bytes.

A client picks its conversation ids and may send lines of 2,000 characters as fast as its budget
allows, from every socket it may open. So the book is bounded three ways: conversations by count and
by age, each user's conversations together by `GAIA_CHAT_HISTORY_USER_BYTES`, and the whole process
by `GAIA_CHAT_HISTORY_BYTES` (docs/security.md). A turn keeps the line and kb's message clipped to
what a prompt shows (gateway/chat/prompt.py), never the model's prose. The bytes counted are the
text's UTF-8 length plus a fixed charge per object (sizes measured with sys.getsizeof on CPython
3.11), so the count is what the process holds, within tens of percent.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from gateway.chat.prompt import FACT_CHARS, LINE_CHARS, Turn, first_sentence

PRONOUNS = ("it", "that", "this", "them", "the thing")
PLACE_WORDS = ("there", "that place")
TURN_BYTES = 300  # a Turn, its two strings' headers and its deque slot
CONVERSATION_BYTES = 900  # a Conversation, its deque, key tuple, dict and LRU entries


@dataclass
class Conversation:
    """What a conversation's "it" and "there" refer to, and its last few turns."""

    key: tuple[str, str]
    item: str | None = None
    place: str | None = None
    turns: deque[Turn] = field(default_factory=deque)
    touched: float = 0.0
    size: int = 0  # bytes charged for it, turns included


def _turn_bytes(turn: Turn) -> int:
    return TURN_BYTES + len(turn.line.encode()) + len(turn.message.encode()) + len(turn.action or "")


def _base_bytes(talk: Conversation) -> int:
    return (CONVERSATION_BYTES + sum(len(part.encode()) for part in talk.key)
            + len((talk.item or "").encode()) + len((talk.place or "").encode()))


class ConversationBook:
    """Short histories per (user, conversation): bounded in count, age, bytes per user and bytes in all."""

    def __init__(self, limit: int = 10_000, ttl_s: float = 1800.0, turns: int = 4, user_bytes: int = 32 * 1024,
                 total_bytes: int = 16 * 1024 * 1024) -> None:
        self.limit = limit
        self.ttl_s = ttl_s
        self.turns = turns
        self.user_bytes = user_bytes
        self.total_bytes = total_bytes
        self.bytes = 0
        self._talks: OrderedDict[tuple[str, str], Conversation] = OrderedDict()
        self._users: dict[str, OrderedDict[str, Conversation]] = {}
        self._user_bytes: dict[str, int] = {}

    def get(self, user_id: str, conversation_id: str, now: float) -> Conversation:
        """The conversation (a new one when unknown or forgotten), now the most recently used."""
        key = (user_id, conversation_id)
        talk = self._talks.get(key)
        if talk is not None and now - talk.touched > self.ttl_s:
            self._drop(talk)
            talk = None
        if talk is None:
            talk = Conversation(key)
            self._talks[key] = talk
            self._users.setdefault(user_id, OrderedDict())[conversation_id] = talk
            self._charge(talk, _base_bytes(talk))
        self._talks.move_to_end(key)
        self._users[user_id].move_to_end(conversation_id)
        talk.touched = now
        self._bound(talk)
        return talk

    def remember(self, talk: Conversation, line: str, args: dict[str, Any], result: dict[str, Any]) -> None:
        """After kb answered: what "it" and "there" now mean, and the turn as facts (clipped)."""
        before = _base_bytes(talk)
        if args.get("instance_id"):
            talk.item = str(args["instance_id"])
        if args.get("action") == "go" and result.get("success"):
            talk.place = args.get("destination")
        self._charge(talk, _base_bytes(talk) - before)
        if self.turns > 0:
            turn = Turn(" ".join(line.split())[:LINE_CHARS], args.get("action"), bool(result.get("success")),
                        first_sentence(str(result.get("message", "")), FACT_CHARS))
            talk.turns.append(turn)
            self._charge(talk, _turn_bytes(turn))
            while len(talk.turns) > self.turns:
                self._charge(talk, -_turn_bytes(talk.turns.popleft()))
        if self._talks.get(talk.key) is talk:  # still in the book (not dropped while kb answered)
            self._bound(talk)

    def user_total(self, user_id: str) -> int:
        """Bytes held for this user's conversations."""
        return self._user_bytes.get(user_id, 0)

    def __len__(self) -> int:
        return len(self._talks)

    def _charge(self, talk: Conversation, size: int) -> None:
        if self._talks.get(talk.key) is not talk:
            return
        talk.size += size
        self.bytes += size
        user = talk.key[0]
        self._user_bytes[user] = self._user_bytes.get(user, 0) + size

    def _bound(self, keep: Conversation) -> None:
        """Forget the least recently used conversations (the user's own first) until every bound holds."""
        user = keep.key[0]
        mine = self._users[user]
        while self._user_bytes.get(user, 0) > self.user_bytes and len(mine) > 1:
            oldest = next(iter(mine.values()))
            self._drop(oldest if oldest is not keep else list(mine.values())[1])
        while (self.bytes > self.total_bytes or len(self._talks) > self.limit) and len(self._talks) > 1:
            oldest = next(iter(self._talks.values()))
            self._drop(oldest if oldest is not keep else list(self._talks.values())[1])
        # One conversation alone above a bound: its oldest turns go.
        while keep.turns and (self._user_bytes.get(user, 0) > self.user_bytes or self.bytes > self.total_bytes):
            self._charge(keep, -_turn_bytes(keep.turns.popleft()))

    def _drop(self, talk: Conversation) -> None:
        user, conversation_id = talk.key
        self._charge(talk, -talk.size)
        del self._talks[talk.key]
        mine = self._users[user]
        del mine[conversation_id]
        if not mine:
            del self._users[user]
            self._user_bytes.pop(user, None)


def resolve(args: dict[str, Any], talk: Conversation) -> dict[str, Any]:
    """Replace "it" and "there" with what this conversation last named."""
    out = dict(args)
    if out.get("instance_id") in PRONOUNS and talk.item:
        out["instance_id"] = talk.item
    if out.get("destination") in PLACE_WORDS and talk.place:
        out["destination"] = talk.place
    return out
