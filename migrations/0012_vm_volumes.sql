-- Volumes virtdeck made for a VM (a new disk, a cloud-image copy and its seed, a clone's
-- or a template VM's disk), with the format it made them in and, for a linked clone's
-- overlay, the backing file it named. An operator's "delete volumes" deletes only these.
-- A volume kept when its VM is deleted stays recorded with no VM (`vm` NULL), so its
-- format is still known when it is attached or copied later. VMs made before this table
-- have no rows: their volumes count as not made by virtdeck.
CREATE TABLE vm_volumes (
    path    TEXT PRIMARY KEY,
    vm      TEXT,
    format  TEXT NOT NULL,
    backing TEXT,
    made_at INTEGER NOT NULL DEFAULT (strftime('%s','now'))
);
CREATE INDEX vm_volumes_vm ON vm_volumes(vm);
