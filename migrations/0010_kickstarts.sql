-- Named kickstart files, served to installing guests.
CREATE TABLE kickstarts (
    name       TEXT PRIMARY KEY,
    content    TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);

-- A VM's network install with a kickstart: the secret token of its URL (stored as a
-- SHA-256 hash), which file it serves and until when at the latest. The row goes with
-- the VM's row.
CREATE TABLE vm_kickstart (
    vm         TEXT PRIMARY KEY REFERENCES vms(name) ON DELETE CASCADE,
    kickstart  TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at INTEGER NOT NULL
);
