-- kb on PostgreSQL: the world by entity, the transactional outbox, presence.
CREATE TABLE world_meta (
    experience TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    meta BYTEA NOT NULL
);
CREATE TABLE areas (
    experience TEXT NOT NULL,
    area_id TEXT NOT NULL,
    state BYTEA NOT NULL,
    PRIMARY KEY (experience, area_id)
);
CREATE TABLE players (
    experience TEXT NOT NULL,
    user_id TEXT NOT NULL,
    state BYTEA NOT NULL,
    seen_ms BIGINT NOT NULL,
    PRIMARY KEY (experience, user_id)
);
CREATE INDEX players_seen ON players (experience, seen_ms);
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    msg_id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    payload BYTEA NOT NULL,
    created_ms BIGINT NOT NULL,
    published_ms BIGINT,
    stream_seq BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_ms IS NULL;
CREATE INDEX outbox_published ON outbox (published_ms);
CREATE TABLE presence (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    experience TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    seen_at DOUBLE PRECISION NOT NULL,
    dropped_at DOUBLE PRECISION
);
