-- Long storage operations (uploads into a pool, fetches from a URL) with their progress
-- and outcome. `volume_made` is set before the job makes its volume, so a failure or a
-- restart removes exactly that volume; it is cleared when the job succeeds.
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL CHECK (kind IN ('upload', 'fetch')),
    state       TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    pool        TEXT NOT NULL,
    volume      TEXT NOT NULL,
    source      TEXT NOT NULL DEFAULT '',
    volume_made INTEGER NOT NULL DEFAULT 0,
    volume_path TEXT,
    bytes_done  INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER NOT NULL DEFAULT 0,
    message     TEXT NOT NULL DEFAULT '',
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX jobs_state ON jobs(state);
