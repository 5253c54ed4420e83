-- Clones (of a VM or from a template) and volume creates run as jobs too. SQLite cannot
-- change a CHECK constraint, so the table is rebuilt with two more kinds and two columns:
-- `vm`, the VM a clone makes (its name links to it), and `step`, what the job is doing
-- now ("copying disk 1 of 2"). For a clone, `pool`/`volume` name the disk copy in
-- progress, with `volume_made` set while it is being made, so a restart removes it.
CREATE TABLE jobs_rebuilt (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL CHECK (kind IN ('upload', 'fetch', 'clone', 'create')),
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
    finished_at INTEGER
);
INSERT INTO jobs_rebuilt (id, kind, state, pool, volume, source, volume_made, volume_path,
                          bytes_done, bytes_total, message, created_by, created_at, finished_at)
    SELECT id, kind, state, pool, volume, source, volume_made, volume_path,
           bytes_done, bytes_total, message, created_by, created_at, finished_at
    FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_rebuilt RENAME TO jobs;
CREATE INDEX jobs_state ON jobs(state);
