-- Schedules also take snapshots (inside the VM's disks, the last N kept) instead of
-- backups; a snapshot schedule has no backup target.
ALTER TABLE backup_schedules ADD COLUMN kind TEXT NOT NULL DEFAULT 'backup' CHECK (kind IN ('backup', 'snapshot'));
