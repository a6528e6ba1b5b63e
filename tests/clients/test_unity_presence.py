"""Presence as a Unity game sees it: no ghost after a join and leave inside one window, a clean close is a leave."""
from __future__ import annotations

import time
from dataclasses import replace

import pytest

from kb.keys import WORLDS
from kb.presence import PresenceBook, PresenceChange
from shared.config import Settings
from tests.helpers import EXPERIENCE


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A presence window long enough that a test's joins and leaves all fall inside one."""
    return replace(settings, presence_window_ms=60_000)


def listed(view: dict) -> set[str]:
    return {p["user_id"] for p in view["players"]}


async def test_unity_snapshot_lists_no_one_who_joined_and_left_inside_one_window(kb_server) -> None:
    world = kb_server.app[WORLDS][EXPERIENCE]
    before = await world.join_and_view("early", "s-early", "gw", time.time())
    await world.announcer.flush()  # early's join is announced: everyone after sees early
    await world.join_and_view("ghost", "s-ghost", "gw", time.time())
    newcomer = await world.join_and_view("newcomer", "s-new", "gw", time.time())
    await world.announce(world.presence.leave("s-ghost"))  # gone inside the same window
    assert listed(before) == {"early"}
    assert listed(newcomer) == {"early", "newcomer"}, "ghost joined and left inside one window: never announced"
    later = world.view("early")
    assert listed(later) == {"early"}, "a pending join is listed once the window announces it, not before"
    await world.announcer.flush()
    assert listed(world.view("early")) == {"early", "newcomer"}


async def test_unity_player_who_left_inside_the_window_stays_listed_until_the_leave_is_announced(kb_server) -> None:
    world = kb_server.app[WORLDS][EXPERIENCE]
    await world.join_and_view("stayer", "s-stay", "gw", time.time())
    await world.join_and_view("goer", "s-go", "gw", time.time())
    await world.announcer.flush()
    await world.announce(world.presence.leave("s-go"))
    assert listed(world.view("stayer")) == {"stayer", "goer"}, "the leave is yet to come: the others think goer is here"
    await world.announcer.flush()
    assert listed(world.view("stayer")) == {"stayer"}


def test_unity_clean_close_of_the_last_live_session_leaves_despite_a_dropped_one_in_grace() -> None:
    book = PresenceBook(grace_s=60.0, stale_s=45.0)
    assert book.join("silent", "p", EXPERIENCE, "gw", 0.0) == [PresenceChange("join", "p", EXPERIENCE)]
    assert book.drop("silent", 1.0) == []  # the network went silent: grace starts
    assert book.join("resumed", "p", EXPERIENCE, "gw", 2.0) == []
    assert book.leave("resumed") == [PresenceChange("leave", "p", EXPERIENCE)]
    assert not book.is_present(EXPERIENCE, "p") and not book.sessions
    assert book.take_changes()[1] and not book.expire(100.0), "both sessions gone (and persisted as gone)"


def test_unity_clean_close_keeps_a_player_with_another_live_session() -> None:
    book = PresenceBook(grace_s=60.0, stale_s=45.0)
    book.join("phone", "p", EXPERIENCE, "gw", 0.0)
    book.join("tablet", "p", EXPERIENCE, "gw", 0.0)
    book.join("old", "p", EXPERIENCE, "gw", 0.0)
    book.drop("old", 1.0)
    assert book.leave("phone") == [] and book.is_present(EXPERIENCE, "p")
    assert "old" in book.sessions, "the tablet is live: the dropped socket keeps its grace"
    assert book.leave("tablet") == [PresenceChange("leave", "p", EXPERIENCE)] and not book.sessions
