-- Backup schedules: one VM, the VMs with a tag, or every VM of the host, backed up into a
-- target daily or weekly at a time (UTC), with Proxmox-like keep rules; each backup says
-- which schedule made it.
CREATE TABLE backup_schedules (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    scope        TEXT NOT NULL CHECK (scope IN ('vm', 'tag', 'all')),
    scope_value  TEXT NOT NULL DEFAULT '',
    pool         TEXT NOT NULL,
    every        TEXT NOT NULL CHECK (every IN ('daily', 'weekly')),
    weekday      INTEGER NOT NULL DEFAULT 0 CHECK (weekday BETWEEN 0 AND 6),
    at_minute    INTEGER NOT NULL CHECK (at_minute BETWEEN 0 AND 1439),
    keep_last    INTEGER NOT NULL DEFAULT 0,
    keep_daily   INTEGER NOT NULL DEFAULT 0,
    keep_weekly  INTEGER NOT NULL DEFAULT 0,
    keep_monthly INTEGER NOT NULL DEFAULT 0,
    last_run_at  INTEGER,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
ALTER TABLE backups ADD COLUMN schedule INTEGER;
