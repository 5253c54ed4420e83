-- Restoring a backup over its VM runs as a job too ('restore-over'): progress, Cancel, and
-- a hold on the VM (no start, change or backup of it while its disks are being read back).
-- Each backup is a job as well ('backup'): on the Jobs page with its progress and Cancel.
-- SQLite cannot change a CHECK constraint, so the table is rebuilt with the new kinds.
CREATE TABLE jobs_rebuilt (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL CHECK (kind IN ('upload', 'fetch', 'clone', 'create', 'migrate', 'action', 'restore', 'restore-over', 'backup')),
    state       TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    pool        TEXT NOT NULL,
    volume      TEXT NOT NULL,
    source      TEXT NOT NULL DEFAULT '',
    vm          TEXT NOT NULL DEFAULT '',
    step        TEXT NOT NULL DEFAULT '',
    volume_made INTEGER NOT NULL DEFAULT 0,
    volume_path TEXT,
    bytes_done  INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER NOT NULL DEFAULT 0,
    message     TEXT NOT NULL DEFAULT '',
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER,
    batch       INTEGER
);
INSERT INTO jobs_rebuilt (id, kind, state, pool, volume, source, vm, step, volume_made,
    volume_path, bytes_done, bytes_total, message, created_by, created_at, finished_at, batch)
    SELECT id, kind, state, pool, volume, source, vm, step, volume_made,
    volume_path, bytes_done, bytes_total, message, created_by, created_at, finished_at, batch FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_rebuilt RENAME TO jobs;
CREATE INDEX jobs_state ON jobs(state);
CREATE INDEX jobs_batch ON jobs(batch) WHERE batch IS NOT NULL;
