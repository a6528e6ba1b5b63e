"""Frozen settings read once from environment variables, with safe dev defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

# 64 bytes: long enough for every HMAC size a forger might try (RFC 7518 3.2), so none is refused for it.
DEV_JWT_SECRET = "dev-secret-change-me-" + "0123456789abcdef" * 2 + "ffffffffffffffffffffffffffff"
DEV_KB_API_KEY = "dev-kb-key"


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
    kb_data_dir: str = ""
    kb_outbox_keep_s: float = 15 * 60.0
    kb_timeout_s: float = 5.0
    kb_clock_tick_s: float = 0.0
    kb_ownership: str = "single"  # "single": this kb owns every world; "lease": JetStream KV lease per world
    kb_advertise_url: str = ""  # how other kb processes reach this one (lease mode); default http://host:port
    kb_lease_ttl_s: float = 3.0

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    gateway_id: str = ""  # shown in /health and connection ids; random per process when empty
    # Pending connections the kernel queues per listening socket: a reconnect storm arrives at once,
    # and a full queue drops handshakes for a whole SYN retransmit (1 s). Capped by net.core.somaxconn.
    listen_backlog: int = 4096

    jwt_secret: str = DEV_JWT_SECRET
    jwt_algorithm: str = "HS256"
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_leeway_s: float = 10.0
    jwt_max_lifetime_s: float = 30 * 24 * 3600.0  # an `exp` further away than this is refused
    jwt_jwks_url: str = ""

    allowed_experiences: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    session_outbox_size: int = 256
    # WebSocket frames gathered per socket for at most this long, then written together, one tick per
    # experience (gateway/delivery/tick.py); 0: each frame written as soon as the socket takes it
    send_tick_ms: float = 0.0
    rewind_every_s: float = 10.0  # a full outbox is read again from the stream once per this; full again: 4408
    slow_consumer_s: float = 10.0  # events waiting and nothing taken by the client this long: 4408
    session_max_actions: int = 4
    max_frame_bytes: int = 64 * 1024
    msg_rate_per_s: float = 20.0
    msg_burst: int = 40
    gateway_workers: int = 1  # gateway processes on one port (SO_REUSEPORT): one per core in production
    # Limits marked PER PROCESS are not shared between those workers (or hosts): one address or user may
    # get the figure times the processes it reaches (gateway/edge/scopes.py, table in docs/security.md).
    max_sessions_per_user: int = 8  # over every gateway process (kb counts them all)
    max_sse_per_user: int = 4  # PER PROCESS
    handshakes_per_ip_per_s: float = 20.0  # WebSocket handshakes and SSE opens, one bucket; PER PROCESS
    handshake_burst: int = 50  # PER PROCESS
    # Proxies (addresses or networks) whose X-Forwarded-For is believed; nobody else's is.
    trusted_proxies: tuple[str, ...] = ()
    max_connections_per_address: int = 1000  # sockets and SSE streams open at once per address; PER PROCESS
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
    narrator_first_token_s: float = 5.0  # no first token by then: kb's message instead (model_timeout)
    narrator_answer_s: float = 20.0  # the whole answer (and a tool call) within this, or the rest is kb's message
    # model requests at once per gateway process (PER PROCESS); more: kb's message (model_unavailable)
    narrator_max_inflight: int = 32
    narrator_max_per_user: int = 2  # model requests at once per user; PER PROCESS
    narrator_max_tokens: int = 160
    narrator_temperature: float = 0.7
    narrator_turns: int = 4  # the conversation's last turns the model sees
    narrator_tools: int = 1  # a line the intent parser does not know goes to the model with kb's actions as a tool
    narrator_actions: tuple[str, ...] = ()  # the actions the model may propose; empty: every kb action
    narrator_flush_ms: int = 100  # after the first token, the story's tokens go out at most this often, joined
    narrator_extra_body: str = ""  # a JSON object of server-specific fields for narrative requests ({"top_k": 40})
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
        env = os.environ if env is None else env
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
