-- What an unfinished create or clone has made so far (volumes, downloaded installer
-- files), so a failure or a restart can undo exactly that. Cleared once the VM is ready.
CREATE TABLE vm_made (
    vm    TEXT NOT NULL,
    kind  TEXT NOT NULL CHECK (kind IN ('volume', 'boot_file')),
    path  TEXT NOT NULL,
    PRIMARY KEY (vm, kind, path)
);

-- The VM page shows the newest audit entries about that VM.
CREATE INDEX audit_log_target ON audit_log(target, id);
