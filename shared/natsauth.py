"""Who may do what on the bus: the NATS users and their permissions, in one place.

kb publishes world updates and keeps its KV leases; a gateway reads the republished live subject
and uses the JetStream API it needs to catch up, and may not publish world updates. Nobody else
has either right. Tests and the harness add an `operator` (every right) to inject faults; shipped
configurations (deploy/) carry kb and gateway only, with passwords from the environment.
"""
from __future__ import annotations

import json
import secrets
from urllib.parse import quote, urlsplit, urlunsplit

from shared.subjects import CLOCK_LEASE_BUCKET, OWNER_BUCKET, REPUBLISH_DEST, REPUBLISH_SOURCE

STREAM = "WORLD_UPDATES"
KV_STREAMS = tuple(f"KV_{bucket}" for bucket in (CLOCK_LEASE_BUCKET, OWNER_BUCKET))

PERMISSIONS: dict[str, dict[str, list[str]]] = {
    "kb": {
        "publish": [
            REPUBLISH_SOURCE,
            *(f"$KV.{bucket}.>" for bucket in (CLOCK_LEASE_BUCKET, OWNER_BUCKET)),
            *(f"$JS.API.STREAM.{op}.{STREAM}" for op in ("CREATE", "UPDATE", "INFO")),
            f"$JS.API.DIRECT.GET.{STREAM}",
            *(f"$JS.API.STREAM.{op}.{kv}" for kv in KV_STREAMS for op in ("CREATE", "INFO")),
            *(f"$JS.API.STREAM.MSG.GET.{kv}" for kv in KV_STREAMS),
            *(f"$JS.API.DIRECT.GET.{kv}.>" for kv in KV_STREAMS),
            *(f"$JS.API.DIRECT.GET.{kv}" for kv in KV_STREAMS),
        ],
        "subscribe": ["_INBOX.>"],
    },
    "gateway": {
        "publish": [
            f"$JS.API.STREAM.INFO.{STREAM}",
            f"$JS.API.CONSUMER.CREATE.{STREAM}",
            f"$JS.API.CONSUMER.CREATE.{STREAM}.>",
            f"$JS.API.CONSUMER.DELETE.{STREAM}.>",
            f"$JS.API.CONSUMER.INFO.{STREAM}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.>",
            f"$JS.API.DIRECT.GET.{STREAM}",
            f"$JS.API.DIRECT.GET.{STREAM}.>",
            f"$JS.API.STREAM.MSG.GET.{STREAM}",  # the leader's answer, when a replica's may lag
        ],
        "subscribe": [REPUBLISH_DEST, "_INBOX.>"],
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


def redacted(url: str) -> str:
    """A NATS URL list as it may be logged: no user or password."""
    return ",".join(urlunsplit(urlsplit(one.strip())._replace(netloc=urlsplit(one.strip()).netloc.rsplit("@", 1)[-1]))
                    for one in url.split(","))
