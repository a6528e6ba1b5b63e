"""Frozen settings read once from environment variables, with safe dev defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

# 64 bytes: long enough for every HMAC size a forger might try (RFC 7518 3.2), so none is refused for it.
DEV_JWT_SECRET = "dev-secret-change-me-" + "0123456789abcdef" * 2 + "ffffffffffffffffffffffffffff"
DEV_KB_API_KEY = "dev-kb-key"
# Renamed settings, old variable -> new: the old one is still read while the new one is unset, and each
# service logs one warning line per old name it finds at start (`deprecation_warnings`).
DEPRECATED: dict[str, str] = {
    "GAIA_SESSION_OUTBOX_SIZE": "GAIA_SESSION_SEND_QUEUE_SIZE",
    "GAIA_MAX_SESSIONS_PER_USER": "GAIA_MAX_CONNECTIONS_PER_USER",
}


def _csv(value: str) -> tuple[str, ...]:
    """Split a comma-separated list, dropping blanks."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Every tunable of both services; one instance per process, never mutated."""

    nats_url: str = "nats://127.0.0.1:4222"
    # This process's NATS user (shared/natsauth.py has the permissions): a password, or an NKey/JWT
    # creds file. Never in the URL of a service, so it never reaches a log.
    nats_user: str = ""
    nats_password: str = ""
    nats_creds: str = ""
    stream_name: str = "WORLD_UPDATES"
    stream_max_age_s: float = 24 * 3600.0
    stream_replicas: int = 1
    # Leave a NATS server through which the stream has had no quorum for this long (a node cut off
    # from the others, or frozen, keeps its clients while their writes and reads go nowhere); 0: stay.
    nats_stranded_s: float = 8.0
    # nats-py's PING every this many seconds; a server that leaves more than `nats_max_pings_out` of
    # them unanswered is frozen and left: after 4-6 s with 2 and 2 (nats-py's own 120 s, and our former
    # 5 s x 3, outlasted the stream's election). A live server answers in milliseconds, and nats-py
    # reads its PONG in order with the messages before it, so only a backlog of 4 s would trip it.
    nats_ping_interval_s: float = 2.0
    nats_max_pings_out: int = 2
    stream_duplicate_window_s: float = 20 * 60.0
    # Consumers exist only while sessions catch up; nats-server's default (1,000) would cap a
    # reconnect storm's catch-ups across all gateways.
    stream_max_consumers: int = 100_000

    kb_host: str = "127.0.0.1"
    kb_port: int = 8001
    kb_url: str = "http://127.0.0.1:8001"
    kb_api_key: str = DEV_KB_API_KEY
    kb_db_path: str = ".run/kb.sqlite3"
    kb_store: str = ""  # sqlite:///path or postgresql://user:password@host:port/db; empty: sqlite at kb_db_path
    kb_players_hot_s: float = 86400.0  # players seen longer ago than this (and absent) leave kb's memory
    kb_data_dir: str = ""  # folders of experiences, comma-separated; empty: kb/data (docs/authoring.md)
    # Modules that add actions (docs/authoring.md), imported by kb AND the gateway at start: set it the same for both.
    action_modules: tuple[str, ...] = ()
    kb_outbox_keep_s: float = 15 * 60.0
    kb_timeout_s: float = 5.0
    kb_clock_tick_s: float = 0.0
    kb_ownership: str = "single"  # "single": this kb owns every world; "lease": JetStream KV lease per world
    kb_advertise_url: str = ""  # how other kb processes reach this one (lease mode); default http://host:port
    kb_lease_ttl_s: float = 3.0
    # The owner keeps writing this much past its lease's TTL while the lease store gives no answer at all
    # (its leader is being elected, or the owner's node is cut off or frozen and about to be left): nobody
    # can take the lease through a store without a leader, and a write by two kb is fenced by the store's
    # version check. An answer ("another kb holds it") ends it at once.
    kb_lease_grace_s: float = 10.0

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    gateway_id: str = ""  # shown in /health and connection ids; `<host name>-<port>` when empty
    # Pending connections the kernel queues per listening socket: a reconnect storm arrives at once,
    # and a full queue drops handshakes for a whole SYN retransmit (1 s). Capped by net.core.somaxconn.
    listen_backlog: int = 4096
    # A connection's request headers must arrive within this (and an idle keep-alive connection waits
    # no longer for its next request); aiohttp's default of 75 s let a slow client hold a descriptor
    http_header_timeout_s: float = 10.0
    # Connections from one address still waiting for their first request's headers (trusted proxies
    # excepted: they send whole requests); one more is closed at once. Counted PER PROCESS
    max_pending_requests_per_address: int = 64
    # GET /metrics and /debug/event-timings answer only `Authorization: Bearer <this>`; empty: 404 always
    admin_token: str = field(default="", repr=False)

    jwt_secret: str = DEV_JWT_SECRET
    jwt_algorithm: str = "HS256"
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_leeway_s: float = 10.0
    jwt_max_lifetime_s: float = 30 * 24 * 3600.0  # an `exp` further away than this is refused
    jwt_jwks_url: str = ""

    allowed_experiences: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    session_send_queue_size: int = 256  # frames waiting to be written to one client
    # ...and their bytes, with what the socket's transport still holds: a client that never reads is
    # closed 4408 here, whatever the size of the frames it makes us send (a 60 KB ping's echo)
    session_send_queue_bytes: int = 512 * 1024
    # WebSocket frames gathered per socket for at most this long, then written together, one tick per
    # experience (gateway/delivery/tick.py); 0: each frame written as soon as the socket takes it
    send_tick_ms: float = 0.0
    rewind_every_s: float = 10.0  # a full send queue is read again from the stream once per this; full again: 4408
    slow_consumer_s: float = 10.0  # events waiting and nothing taken by the client this long: 4408
    session_max_actions: int = 4
    max_frame_bytes: int = 64 * 1024
    msg_rate_per_s: float = 20.0
    msg_burst: int = 40
    # Every WebSocket frame a client sends (data, continuation, ping, pong, close) draws on these, by
    # count and by bytes (headers included), before aiohttp parses it (gateway/ws/guard.py); beyond: 4429
    frame_rate_per_s: float = 50.0
    frame_burst: int = 100
    bytes_per_s: float = 64 * 1024
    bytes_burst: int = 256 * 1024
    # A message sent in fragments must end within this many frames and seconds (its bytes: max_frame_bytes)
    message_max_frames: int = 64
    message_max_s: float = 5.0
    gateway_workers: int = 1  # gateway processes on one port (SO_REUSEPORT): one per core in production
    # Limits marked PER PROCESS are not shared between those workers (or hosts): one address or user may
    # get the figure times the processes it reaches (gateway/edge/scopes.py, table in docs/security.md).
    # A user's open connections of every transport (WebSocket, SSE stream, chat POST), refused at once by
    # each process; over every gateway process too: kb counts the sockets and SSE streams of all of them
    max_connections_per_user: int = 8
    max_sse_per_user: int = 4  # PER PROCESS
    handshakes_per_ip_per_s: float = 20.0  # WebSocket handshakes, SSE opens, chat POSTs: one bucket; PER PROCESS
    handshake_burst: int = 50  # PER PROCESS
    # Proxies (addresses or networks) whose X-Forwarded-For is believed; nobody else's is.
    trusted_proxies: tuple[str, ...] = ()
    max_connections_per_address: int = 1000  # sockets, SSE streams, chat POSTs open at once per address; PER PROCESS
    state_rate_per_s: float = 1.0  # get_state and resume cost a snapshot or a catch-up: a budget per session
    state_burst: int = 5
    chats_per_user_per_s: float = 2.0  # POST /chat/unified per user, as many per address; PER PROCESS
    chat_burst: int = 10  # PER PROCESS
    sub_pending_msgs: int = 1024  # live messages a stream holds while catching up (more: read from the stream)
    sub_pending_bytes: int = 1024 * 1024  # a live message this large is dropped (and caught up)
    # the gateway parses a run of copies of one NATS message once (gateway/streams/natscopies.py)
    read_copies_once: int = 1
    stream_sweep_s: float = 5.0  # how often streams are checked for a lost tail
    catchup_concurrency: int = 32  # catch-up JetStream requests in flight per gateway process
    catchup_inactive_s: float = 10.0  # a catch-up consumer left by a dead gateway goes after this
    resync_after_events: int = 1000  # further behind than this: a fresh snapshot instead of a replay
    catchup_direct_max: int = 1000  # catch-ups this short read by direct gets; longer ones through a consumer
    heartbeat_s: float = 20.0
    presence_grace_s: float = 60.0
    presence_announce: int = 1  # 0: no presence frames, and each snapshot lists only its own player
    presence_window_ms: int = 250  # joins and leaves are announced once per window, coalesced
    presence_renew_s: float = 15.0
    sse_keepalive_s: float = 15.0
    sse_retry_ms: int = 500  # EventSource reconnect delay: each stream gets this plus up to as much again
    shutdown_timeout_s: float = 10.0
    # a grown heap is fully collected within this (shared/service/gcpacer.py); 0: CPython's own
    gc_full_every_s: float = 30.0
    # The narrator (gateway/chat): no URL keeps the embedded intent narrator; an OpenAI-compatible
    # base URL (a hosted API, vLLM, Ollama, llama.cpp's server: ".../v1") makes a language model write it.
    narrator_url: str = ""
    narrator_model: str = ""
    narrator_api_key: str = field(default="", repr=False)  # GAIA_NARRATOR_API_KEY only; never logged
    # no first token by then (queueing for a model slot included): kb's message instead (model_timeout,
    # or model_busy when no slot came in time); also the bound of a free-form line's action proposal
    narrator_first_token_s: float = 3.0
    narrator_answer_s: float = 8.0  # the whole story within this, or the rest is kb's message
    # model requests at once over the gateway workers of one host (PER HOST): what the endpoint serves at
    # once (1 for llama.cpp's server on a small machine); more wait for a slot (gaia_gateway_narrator_requests_queued)
    narrator_max_inflight: int = 32
    narrator_max_per_user: int = 2  # a user's share of those slots; PER HOST
    narrator_max_tokens: int = 60
    narrator_sentences: int = 2  # the story stops after this many sentences (the model's request is closed)
    narrator_temperature: float = 0.3  # low: a story keeps to the facts it is given
    narrator_turns: int = 4  # earlier turns of a conversation kept, as facts (line, result, kb's words)
    narrator_history_tokens: int = 40  # of which a prompt shows the newest that fit in this many tokens
    narrator_tools: int = 1  # a line the intent parser does not know goes to the model with kb's actions as a tool
    narrator_actions: tuple[str, ...] = ()  # the actions the model may propose; empty: every kb action
    narrator_extra_body: str = ""  # a JSON object of server-specific fields for narrative requests ({"top_k": 40})
    narrator_check_s: float = 30.0  # the endpoint and key are checked at start, and this often while failing
    # Chat memory (conversations' "it", "there" and last turns, oldest forgotten first), in bytes:
    chat_history_user_bytes: int = 32 * 1024  # a user's conversations together; PER PROCESS
    chat_history_bytes: int = 16 * 1024 * 1024  # every conversation of the process together; PER PROCESS
    uvloop: int = 1  # run on uvloop when it is installed (0: asyncio's own loop)
    env: str = ""  # "dev" lets a process start with the public development secrets (make run, tests)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def kb_store_url(self) -> str:
        """The store kb opens: GAIA_KB_STORE, or SQLite at GAIA_KB_DB_PATH."""
        return self.kb_store or f"sqlite:///{self.kb_db_path}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from GAIA_* variables (e.g. GAIA_NATS_URL), then apply overrides."""
        env = current_env(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = env.get("GAIA_" + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        settings = cls(**values)
        return replace(settings, **overrides) if overrides else settings


def current_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with each deprecated variable under its new name; the new one wins when both are set."""
    current = {name: value for name, value in env.items() if name not in DEPRECATED}
    for old, new in DEPRECATED.items():
        if old in env and new not in env:
            current[new] = env[old]
    return current


def deprecation_warnings(env: Mapping[str, str] | None = None) -> list[str]:
    """One line per deprecated variable set in `env` (default: the process's), to log at start."""
    env = os.environ if env is None else env
    return [f"{old} is deprecated: rename it {new}" + (f" ({new} is set too and wins)" if new in env else "")
            for old, new in DEPRECATED.items() if old in env]


def refuse_dev_secrets(settings: Settings) -> None:
    """Exit with a clear message when a service would run on the public dev secrets outside dev."""
    if settings.env == "dev":
        return
    public = [name for name, value, dev in (("GAIA_JWT_SECRET", settings.jwt_secret, DEV_JWT_SECRET),
                                            ("GAIA_KB_API_KEY", settings.kb_api_key, DEV_KB_API_KEY)) if value == dev]
    if public and not (settings.jwt_jwks_url and public == ["GAIA_JWT_SECRET"]):
        raise SystemExit(f"refusing to start: {' and '.join(public)} still hold the public development value; "
                         "set real secrets, or GAIA_ENV=dev on a development machine")


def _convert(name: str, type_name: Any, raw: str) -> Any:
    """Turn one environment string into the field's type, with a clear error."""
    kind = str(type_name)
    try:
        if kind.startswith("tuple"):
            return _csv(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"GAIA_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
