"""Where each gateway limit counts: per session, per gateway process, per host, or over every process (kb).

A gateway host runs `GAIA_GATEWAY_WORKERS` processes on one port (SO_REUSEPORT) and a deployment
may run several hosts. A per-process limit is not shared between them: what one client address or
user may hold in all is the setting times the processes it reaches (the kernel spreads one
address's connections over every worker). A per-host limit holds over the workers of one host (the
narrator's model slots, in a file their supervisor shares). docs/security.md shows this table, rendered from
LIMIT_SCOPES with the shipped defaults by `make docs`; a test keeps both equal and covers every
limit setting.
"""
from __future__ import annotations

from shared.config import Settings

SESSION = "per session"
CONNECTION = "per connection"
PROCESS = "per gateway process"
HOST = "per gateway host"  # over the workers of one host (a file their supervisor shares: gateway/chat/slots.py)
EVERYWHERE = "over every gateway process"

# setting -> (what it limits, where it counts)
LIMIT_SCOPES: dict[str, tuple[str, str]] = {
    "handshakes_per_ip_per_s": ("WebSocket handshakes, SSE opens and chat POSTs per second per client address",
                                PROCESS),
    "handshake_burst": ("burst of the same bucket", PROCESS),
    "max_connections_per_address": ("sockets, SSE streams and chat POSTs open at once per client address", PROCESS),
    "max_connections_per_user": ("a user's connections of every transport: sockets, SSE streams, chat POSTs (the "
                                 "process refuses one too many at once; kb also counts the sockets and SSE streams "
                                 "of every process, and a socket past the limit closes with 4409)", EVERYWHERE),
    "max_sse_per_user": ("SSE streams per user", PROCESS),
    "chats_per_user_per_s": ("POST /chat/unified per second per user, and as many per address", PROCESS),
    "chat_burst": ("burst of the chat buckets", PROCESS),
    "narrator_max_inflight": ("language-model requests at once (more wait for a slot until their first-token "
                              "deadline, then kb's message: model_busy)", HOST),
    "narrator_max_per_user": ("language-model requests at once per user", HOST),
    "chat_history_user_bytes": ("bytes of a user's chat conversations kept (lines and kb's answers, clipped; "
                                "the oldest conversation is forgotten first)", PROCESS),
    "chat_history_bytes": ("bytes of every chat conversation kept by one gateway process", PROCESS),
    "catchup_concurrency": ("catch-up JetStream requests in flight", PROCESS),
    "msg_rate_per_s": ("frames per second", SESSION),
    "msg_burst": ("burst of the frame bucket", SESSION),
    "session_max_actions": ("actions (and chats) in flight", SESSION),
    "state_rate_per_s": ("get_state and resume per second", SESSION),
    "state_burst": ("burst of the same budget", SESSION),
    "max_frame_bytes": ("size of one client message (its frames together)", SESSION),
    "session_send_queue_size": ("frames queued for the client", SESSION),
    "session_send_queue_bytes": ("bytes queued for the client, with what the socket still holds: beyond, 4408",
                                 SESSION),
    "frame_rate_per_s": ("WebSocket frames of every kind (data, continuation, ping, pong, close) per second; "
                         "beyond the burst, 4429", SESSION),
    "frame_burst": ("burst of the frame bucket", SESSION),
    "bytes_per_s": ("bytes a client sends per second, frame headers included; beyond the burst, 4429", SESSION),
    "bytes_burst": ("burst of the byte bucket", SESSION),
    "message_max_frames": ("frames of one fragmented message; beyond, 4413", SESSION),
    "message_max_s": ("seconds a fragmented message may stay unfinished; beyond, 4413", SESSION),
    "max_pending_requests_per_address": ("connections of one client address still waiting for their first "
                                         "request's headers (trusted proxies excepted); one more is closed",
                                         PROCESS),
    "http_header_timeout_s": ("seconds a connection may take to send its request headers, or stay idle between "
                              "requests", CONNECTION),
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
                  else f"{value}; N hosts: N x that" if scope == HOST
                  else f"{value}" if scope == EVERYWHERE else f"{value} {scope}")
        rows.append(f"| `GAIA_{name.upper()}` | {what} | {value} | {scope} | {figure} |")
    return "\n".join(rows)


def _times(value: float, workers: int) -> str:
    total = value * workers
    return str(int(total)) if float(total).is_integer() else f"{total:g}"
