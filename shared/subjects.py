"""NATS subject names: the only place they are spelled out."""
from __future__ import annotations

import re

EXPERIENCE_UPDATES_PREFIX = "world.updates.exp."
STREAM_SUBJECTS = ("world.updates.>",)
# The stream republishes every stored message under this prefix (with Nats-Sequence and
# Nats-Last-Sequence headers): sessions listen there with plain core subscriptions.
LIVE_PREFIX = "live."
REPUBLISH_SOURCE = "world.updates.>"
REPUBLISH_DEST = LIVE_PREFIX + REPUBLISH_SOURCE
CLOCK_LEASE_BUCKET = "gaia_leases"
OWNER_BUCKET = "gaia_world_owners"  # experience -> URL of the kb that writes it (lease mode)

# NATS subject tokens must not contain separators or wildcards; user ids come from tokens.
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_\-@:+=]{1,128}")


class BadSubjectToken(ValueError):
    """A user id that cannot be a single NATS subject token."""


def check_token(value: str) -> str:
    """Return value if it is a safe single subject token, else raise BadSubjectToken."""
    if not _SAFE_TOKEN.fullmatch(value):  # not match + `$`: `$` also matches before a final newline
        raise BadSubjectToken(f"not usable as a subject token: {value!r}")
    return value


def experience_updates(experience: str) -> str:
    """Subject carrying every change and presence event of one experience, once (the gateway fans out)."""
    return EXPERIENCE_UPDATES_PREFIX + check_token(experience)


def live_subject(subject: str) -> str:
    """Where the stream republishes what it stored on `subject`."""
    return LIVE_PREFIX + subject
