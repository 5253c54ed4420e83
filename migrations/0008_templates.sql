-- VMs marked as templates: they are never started, and new VMs are made from them as
-- full or linked clones. Kept here (not in the VM's libvirt definition) so marking needs
-- no redefine and survives libvirt's XML round trips.
CREATE TABLE templates (
    name       TEXT PRIMARY KEY,
    marked_by  TEXT NOT NULL,
    marked_at  INTEGER NOT NULL
);
