-- Storage by entity: a commit writes the meta row and only the areas and players it changed.
-- A world saved by 0001 (the `worlds` row) is split into these rows the first time it is loaded.
CREATE TABLE world_meta (
    experience TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    meta BLOB NOT NULL
);
CREATE TABLE areas (
    experience TEXT NOT NULL,
    area_id TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (experience, area_id)
);
CREATE TABLE players (
    experience TEXT NOT NULL,
    user_id TEXT NOT NULL,
    state BLOB NOT NULL,
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (experience, user_id)
);
CREATE INDEX players_seen ON players (experience, seen_ms);
