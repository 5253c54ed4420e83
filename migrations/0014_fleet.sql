-- Fleet: paired peer hosts, single-use pairing codes, VMs arriving by migration, and
-- migration jobs.
--
-- A peer holds two credentials: the one this host presents when it calls the peer
-- (`outbound_credential`, kept because it must be sent), and the digest of the one the
-- peer presents when it calls this host (`inbound_credential_sha256`; the secret itself
-- is never stored here). `fingerprint_sha256` is the peer's TLS certificate, pinned at
-- pairing.
CREATE TABLE peers (
    name                       TEXT PRIMARY KEY,
    url                        TEXT NOT NULL,
    fingerprint_sha256         TEXT NOT NULL,
    outbound_credential        TEXT NOT NULL,
    inbound_credential_sha256  TEXT NOT NULL UNIQUE,
    paired_by                  TEXT NOT NULL,
    paired_at                  INTEGER NOT NULL
);

CREATE TABLE pairing_codes (
    code_sha256 TEXT PRIMARY KEY,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- The units of a VM a peer is migrating here, held from the peer's request until the
-- migration ends (then the VM gets its row in `vms`, or this row just goes). Counted
-- like a VM being created. (`vms` is not rebuilt for this: other tables refer to it.)
CREATE TABLE arriving_vms (
    name        TEXT PRIMARY KEY,
    units       INTEGER NOT NULL CHECK (units > 0),
    peer        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    -- Volumes made here for disks QEMU copies (a JSON list of paths), deleted if the
    -- VM does not arrive; the job that shows the arrival.
    volumes     TEXT NOT NULL DEFAULT '[]',
    job_id      INTEGER NOT NULL DEFAULT 0
);

-- Host-wide flags: `draining` (its value says who started it and when) while the host
-- is being emptied for maintenance: no new VM is made or accepted here.
CREATE TABLE host_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE jobs_rebuilt (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL CHECK (kind IN ('upload', 'fetch', 'clone', 'create', 'migrate')),
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
INSERT INTO jobs_rebuilt SELECT id, kind, state, pool, volume, source, vm, step, volume_made,
    volume_path, bytes_done, bytes_total, message, created_by, created_at, finished_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_rebuilt RENAME TO jobs;
CREATE INDEX jobs_state ON jobs(state);
