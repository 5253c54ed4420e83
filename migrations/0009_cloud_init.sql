-- VMs provisioned from a cloud image with a cloud-init seed: who the seed creates and
-- the seed volume, which is deleted with the VM. Never the password.
CREATE TABLE vm_cloud_init (
    vm          TEXT PRIMARY KEY REFERENCES vms(name) ON DELETE CASCADE,
    user        TEXT NOT NULL,
    hostname    TEXT NOT NULL,
    ssh_keys    INTEGER NOT NULL,
    password    INTEGER NOT NULL CHECK (password IN (0, 1)),
    base_volume TEXT NOT NULL,
    seed_path   TEXT NOT NULL
);
