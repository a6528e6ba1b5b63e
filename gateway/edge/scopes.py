"""Where each gateway limit counts: per session, per gateway process, or over every process (kb).

A gateway host runs `GAIA_GATEWAY_WORKERS` processes on one port (SO_REUSEPORT) and a deployment
may run several hosts. A per-process limit is not shared between them: what one client address or
user may hold in all is the setting times the processes it reaches (the kernel spreads one
address's connections over every worker). docs/security.md shows this table, rendered from
LIMIT_SCOPES with the shipped defaults by `make docs`; a test keeps both equal and covers every
limit setting.
"""
from __future__ import annotations

from shared.config import Settings

SESSION = "per session"
PROCESS = "per gateway process"
EVERYWHERE = "over every gateway process"

# setting -> (what it limits, where it counts)
LIMIT_SCOPES: dict[str, tuple[str, str]] = {
    "handshakes_per_ip_per_s": ("WebSocket handshakes and SSE opens per second per client address", PROCESS),
    "handshake_burst": ("burst of the same bucket", PROCESS),
    "max_connections_per_address": ("sockets and SSE streams open at once per client address", PROCESS),
    "max_sessions_per_user": ("WebSocket sessions per user (the process refuses at once; kb counts every "
                              "process's and refuses one too many with 4409)", EVERYWHERE),
    "max_sse_per_user": ("SSE streams per user", PROCESS),
    "chats_per_user_per_s": ("POST /chat/unified per second per user, and as many per address", PROCESS),
    "chat_burst": ("burst of the chat buckets", PROCESS),
    "narrator_max_inflight": ("language-model requests at once", PROCESS),
    "narrator_max_per_user": ("language-model requests at once per user", PROCESS),
    "catchup_concurrency": ("catch-up JetStream requests in flight", PROCESS),
    "msg_rate_per_s": ("frames per second", SESSION),
    "msg_burst": ("burst of the frame bucket", SESSION),
    "session_max_actions": ("actions (and chats) in flight", SESSION),
    "state_rate_per_s": ("get_state and resume per second", SESSION),
    "state_burst": ("burst of the same budget", SESSION),
    "max_frame_bytes": ("size of one client frame", SESSION),
    "session_outbox_size": ("frames queued for the client", SESSION),
}
SHIPPED_WORKERS = 2  # GAIA_GATEWAY_WORKERS in every deploy/ file


def limits_table(settings: Settings | None = None, workers: int = SHIPPED_WORKERS) -> str:
    """The markdown table of every limit: default, where it counts, and what that means on one host."""
    settings = settings or Settings()
    rows = ["| setting | limits | default | counts | on one host with "
            f"`GAIA_GATEWAY_WORKERS={workers}` (as deploy/ ships) |", "|---|---|---|---|---|"]
    for name, (what, scope) in LIMIT_SCOPES.items():
        value = getattr(settings, name)
        figure = (f"{_times(value, workers)} ({workers} x {value}); N hosts: N x that" if scope == PROCESS
                  else f"{value}" if scope == EVERYWHERE else f"{value} per session")
        rows.append(f"| `GAIA_{name.upper()}` | {what} | {value} | {scope} | {figure} |")
    return "\n".join(rows)


def _times(value: float, workers: int) -> str:
    total = value * workers
    return str(int(total)) if float(total).is_integer() else f"{total:g}"
