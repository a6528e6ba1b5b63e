-- The first schema: the whole world in one row, the outbox, presence.
CREATE TABLE IF NOT EXISTS worlds (
    experience TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    published_ms INTEGER,
    stream_seq INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_ms IS NULL;
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_ms);
CREATE TABLE IF NOT EXISTS presence (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    experience TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    seen_at REAL NOT NULL,
    dropped_at REAL
);
