"""NATS subject names: the only place they are spelled out."""
from __future__ import annotations

import re

USER_UPDATES_PREFIX = "world.updates.user."
EXPERIENCE_UPDATES_PREFIX = "world.updates.exp."
STREAM_SUBJECTS = ("world.updates.>",)
CLOCK_LEASE_BUCKET = "gaia_leases"
OWNER_BUCKET = "gaia_world_owners"  # experience -> URL of the kb that writes it (lease mode)

# NATS subject tokens must not contain separators or wildcards; user ids come from tokens.
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_\-@:+=]{1,128}$")


class BadSubjectToken(ValueError):
    """A user id that cannot be a single NATS subject token."""


def check_token(value: str) -> str:
    """Return value if it is a safe single subject token, else raise BadSubjectToken."""
    if not _SAFE_TOKEN.match(value):
        raise BadSubjectToken(f"not usable as a subject token: {value!r}")
    return value


def user_updates(user_id: str) -> str:
    """Subject carrying every event addressed to one user."""
    return USER_UPDATES_PREFIX + check_token(user_id)


def experience_updates(experience: str) -> str:
    """Subject carrying every change and presence event of one experience, once (the gateway fans out)."""
    return EXPERIENCE_UPDATES_PREFIX + check_token(experience)
