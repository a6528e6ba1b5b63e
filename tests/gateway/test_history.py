"""Conversations: "it" and "there", forgotten after a while, and bounded in count and in bytes per user and
per process, whatever lines and conversation ids a client sends."""
from __future__ import annotations

from gateway.chat.history import ConversationBook, resolve
from gateway.chat.prompt import LINE_CHARS

OK = {"success": True, "message": ""}


def test_conversation_words_resolve_and_the_book_is_bounded_and_forgets() -> None:
    book = ConversationBook(limit=2, ttl_s=60)
    talk = book.get("u", "c1", now=0)
    book.remember(talk, "go to garden", {"action": "go", "destination": "garden"}, OK)
    book.remember(talk, "take quill", {"action": "collect_item", "instance_id": "quill"}, OK)
    assert resolve({"action": "drop_item", "instance_id": "it"}, talk)["instance_id"] == "quill"
    assert resolve({"action": "go", "destination": "there"}, talk)["destination"] == "garden"
    assert book.get("u", "c1", now=30) is talk and book.get("u", "c1", now=200) is not talk  # forgotten
    book.get("u", "c2", now=201), book.get("u", "c3", now=202)
    assert len(book) == 2


def test_turns_are_facts_clipped_to_what_a_prompt_shows() -> None:
    book = ConversationBook(turns=2)
    talk = book.get("u", "c", now=0)
    for i in range(5):
        book.remember(talk, f"say {i} " + "y" * 3000, {"action": "talk", "npc_id": "anyone"},
                      {"success": True, "message": f"Louisa nods {i}. " + "z" * 3000})
    assert [t.line[:5] for t in talk.turns] == ["say 3", "say 4"]
    assert all(len(t.line) <= LINE_CHARS and len(t.message) <= 200 for t in talk.turns)


def test_a_users_conversations_stay_within_their_bytes_and_the_process_within_its_own() -> None:
    book = ConversationBook(turns=4, user_bytes=8 * 1024, total_bytes=64 * 1024)
    line = "x" * 2000
    for i in range(500):  # a hostile client: a new conversation id and a maximal line every time
        talk = book.get("mallory", f"c{i}", now=i)
        book.remember(talk, line, {"action": "talk", "npc_id": "anyone"}, {"success": True, "message": line})
        assert book.user_total("mallory") <= 8 * 1024
    assert book.bytes == book.user_total("mallory") <= 8 * 1024
    for user in range(100):  # many users: the process's bound holds, the oldest go first
        talk = book.get(f"user{user}", "c", now=1000 + user)
        book.remember(talk, line, {"action": "talk", "npc_id": "anyone"}, {"success": True, "message": line})
        assert book.bytes <= 64 * 1024
    assert book.user_total("mallory") == 0 and book.user_total("user99") > 0
    assert book.bytes == sum(book.user_total(f"user{u}") for u in range(100))


def test_a_conversation_dropped_while_kb_answered_is_not_charged() -> None:
    book = ConversationBook(user_bytes=2000)
    first = book.get("u", "a", now=0)
    book.get("u", "b", now=1)
    book.get("u", "c", now=2)  # "a" is forgotten for the user's bound
    book.remember(first, "take it", {"action": "collect_item", "instance_id": "quill"}, OK)
    assert book.bytes == book.user_total("u") <= 2000
