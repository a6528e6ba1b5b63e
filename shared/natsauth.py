"""Who may do what on the bus: the NATS users and their permissions, in one place.

kb publishes world updates and keeps its KV leases; a gateway reads the republished live subject
and uses the JetStream API it needs to catch up, and may not publish world updates. Nobody else
has either right. Tests and the harness add an `operator` (every right) to inject faults; shipped
configurations (deploy/) carry kb and gateway only, with passwords from the environment.

Each service has its own inbox prefix (`_INBOX.kb`, `_INBOX.gateway`: nats-py's `inbox_prefix`)
and may subscribe only there, so neither reads the other's replies. What NATS cannot refuse is
where a request's answer goes (a JetStream API request may name any reply subject, a consumer any
deliver subject); the gateway drops what reaches the live subject without the republish headers
(gateway: live message check), and `permission_table()` renders these rights for docs/security.md.
"""
from __future__ import annotations

import json
import secrets
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from shared.subjects import (
    CLOCK_LEASE_BUCKET,
    EXPERIENCE_UPDATES_PREFIX,
    OWNER_BUCKET,
    REPUBLISH_DEST,
    REPUBLISH_SOURCE,
)

STREAM = "WORLD_UPDATES"
INBOX_ROOT = "_INBOX"
KV_STREAMS = tuple(f"KV_{bucket}" for bucket in (CLOCK_LEASE_BUCKET, OWNER_BUCKET))



def inbox_prefix(user: str) -> str:
    """The reply-subject prefix of a service user (`_INBOX.kb`); nats-py's default for anyone else."""
    return f"{INBOX_ROOT}.{user}" if user in ("kb", "gateway") else INBOX_ROOT


# A catch-up consumer is named and filtered to one experience in the create request's subject
# (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`), which the server holds its config to. Its
# deliver subject is in the payload, out of the permissions' sight: the gateway drops deliveries
# that reach a live subject or a read of its own (gateway/streams/headers.py).
CATCHUP_CONSUMER_CREATE = f"$JS.API.CONSUMER.CREATE.{STREAM}.*.{EXPERIENCE_UPDATES_PREFIX}*"

PERMISSIONS: dict[str, dict[str, list[str]]] = {
    "kb": {
        "publish": [
            REPUBLISH_SOURCE,
            *(f"$KV.{bucket}.>" for bucket in (CLOCK_LEASE_BUCKET, OWNER_BUCKET)),
            *(f"$JS.API.STREAM.{op}.{STREAM}" for op in ("CREATE", "UPDATE", "INFO")),
            f"$JS.API.DIRECT.GET.{STREAM}",
            # UPDATE: a lease bucket made with one replica is scaled up to the stream's (shared/natsconn.py)
            *(f"$JS.API.STREAM.{op}.{kv}" for kv in KV_STREAMS for op in ("CREATE", "UPDATE", "INFO")),
            *(f"$JS.API.STREAM.MSG.GET.{kv}" for kv in KV_STREAMS),
            *(f"$JS.API.DIRECT.GET.{kv}.>" for kv in KV_STREAMS),
            *(f"$JS.API.DIRECT.GET.{kv}" for kv in KV_STREAMS),
        ],
        "subscribe": [inbox_prefix("kb") + ".>"],
    },
    "gateway": {
        "publish": [
            f"$JS.API.STREAM.INFO.{STREAM}",
            CATCHUP_CONSUMER_CREATE,
            f"$JS.API.CONSUMER.DELETE.{STREAM}.>",
            f"$JS.API.CONSUMER.INFO.{STREAM}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.>",
            f"$JS.API.DIRECT.GET.{STREAM}",
            f"$JS.API.DIRECT.GET.{STREAM}.>",
            f"$JS.API.STREAM.MSG.GET.{STREAM}",  # the leader's answer, when a replica's may lag
        ],
        "subscribe": [REPUBLISH_DEST, inbox_prefix("gateway") + ".>"],
    },
}
SERVICES = tuple(PERMISSIONS)


def new_passwords(operator: bool = False) -> dict[str, str]:
    """Fresh random passwords for every service user (and the operator, for tests)."""
    users = SERVICES + (("operator",) if operator else ())
    return {user: secrets.token_urlsafe(24) for user in users}


def authorization_block(passwords: dict[str, str]) -> str:
    """The nats-server `authorization` block for these users (passwords as given, or `$ENV` references)."""
    entries = []
    for user, password in passwords.items():
        value = password if password.startswith("$") else json.dumps(password)
        rights = PERMISSIONS.get(user)
        perms = "" if rights is None else (
            f", permissions: {{publish: {{allow: {json.dumps(rights['publish'])}}}, "
            f"subscribe: {{allow: {json.dumps(rights['subscribe'])}}}}}")
        entries.append(f"    {{user: {json.dumps(user)}, password: {value}{perms}}}")
    return "authorization {\n  users = [\n" + ",\n".join(entries) + "\n  ]\n}\n"


def url_with(url: str, user: str, password: str) -> str:
    """Each server of a comma-separated NATS URL list, with credentials (for tools, never logged)."""
    parts = []
    for one in url.split(","):
        split = urlsplit(one.strip())
        host = split.netloc.rsplit("@", 1)[-1]
        parts.append(urlunsplit(split._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}")))
    return ",".join(parts)


def user_of(url: str) -> str:
    """The user named in a NATS URL list (its first server), or ""."""
    return unquote(urlsplit(url.split(",")[0].strip()).username or "")


def redacted(url: str) -> str:
    """A NATS URL list as it may be logged: no user or password."""
    return ",".join(urlunsplit(urlsplit(one.strip())._replace(netloc=urlsplit(one.strip()).netloc.rsplit("@", 1)[-1]))
                    for one in url.split(","))




def permission_table() -> str:
    """The markdown table of every NATS user's rights, exactly as PERMISSIONS grants them."""
    def cell(subjects: list[str]) -> str:
        return ", ".join(f"`{subject}`" for subject in subjects)
    rows = [f"| `{user}` | {cell(rights['publish'])} | {cell(rights['subscribe'])} |"
            for user, rights in PERMISSIONS.items()]
    return "\n".join(["| user | may publish | may subscribe |", "|---|---|---|", *rows,
                      "| anyone else | nothing: no connection without credentials | nothing |"])
