-- Backups: libvirt pools an admin named as backup targets, and every backup of a VM
-- (full, or incremental on the one before it), with its files and their checksums.
CREATE TABLE backup_targets (
    pool       TEXT PRIMARY KEY,
    added_by   TEXT NOT NULL,
    added_at   INTEGER NOT NULL
);

CREATE TABLE backups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    vm          TEXT NOT NULL,
    vm_uuid     TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('full', 'incremental')),
    -- The backup an incremental one holds the changes since.
    parent      INTEGER REFERENCES backups(id),
    -- The libvirt checkpoint made with this backup (the next incremental starts there).
    checkpoint  TEXT NOT NULL,
    pool        TEXT NOT NULL,
    dir         TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'interrupted')),
    -- 'crash': a copy of the disks as a power cut would leave them.
    consistency TEXT NOT NULL DEFAULT 'crash',
    -- Why a backup that could have been incremental is full.
    why_full    TEXT NOT NULL DEFAULT '',
    -- The VM's definition and virtdeck's record of it (units) when it was backed up.
    definition  TEXT NOT NULL,
    units       INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0,
    message     TEXT NOT NULL DEFAULT '',
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX backups_by_vm ON backups (vm, id);

CREATE TABLE backup_files (
    backup      INTEGER NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
    disk        TEXT NOT NULL,
    path        TEXT NOT NULL,
    -- The disk's size for the guest, and the file's size on the target.
    capacity    INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0,
    sha256      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (backup, disk)
);
