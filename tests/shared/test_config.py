"""Settings from the environment, renamed variables included."""
from __future__ import annotations

from dataclasses import fields

import pytest

from shared.config import DEPRECATED, Settings, current_env, deprecation_warnings

OLD, NEW = "GAIA_SESSION_OUTBOX_SIZE", "GAIA_SESSION_SEND_QUEUE_SIZE"


def test_a_renamed_variable_is_still_read_and_its_old_name_is_warned_of_once() -> None:
    env = {OLD: "16"}
    assert Settings.from_env(env).session_send_queue_size == 16
    assert deprecation_warnings(env) == [f"{OLD} is deprecated: rename it {NEW}"]


def test_the_new_name_wins_when_both_are_set() -> None:
    env = {OLD: "16", NEW: "32"}
    assert Settings.from_env(env).session_send_queue_size == 32
    assert deprecation_warnings(env) == [f"{OLD} is deprecated: rename it {NEW} ({NEW} is set too and wins)"]


def test_no_old_name_no_warning() -> None:
    assert deprecation_warnings({NEW: "32"}) == [] and Settings.from_env({NEW: "32"}).session_send_queue_size == 32
    assert Settings.from_env({}).session_send_queue_size == Settings().session_send_queue_size


@pytest.mark.parametrize("old,new", sorted(DEPRECATED.items()))
def test_every_old_name_maps_to_a_setting_under_its_new_name(old: str, new: str) -> None:
    names = {f"GAIA_{f.name.upper()}": f.name for f in fields(Settings)}
    assert new in names and old not in names
    assert getattr(Settings.from_env({old: "3"}), names[new]) == 3


def test_the_environment_handed_on_carries_only_new_names() -> None:
    """What the gateway's supervisor gives its workers: they have nothing left to warn of."""
    handed = current_env({OLD: "16", "GAIA_NATS_URL": "nats://x:4222"})
    assert handed == {NEW: "16", "GAIA_NATS_URL": "nats://x:4222"} and deprecation_warnings(handed) == []
