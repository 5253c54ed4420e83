//! Backup targets and backups (`backup_targets`, `backups`, `backup_files`).

use super::{Store, StoreResult};
use rusqlite::{params, OptionalExtension};

/// One backup of a VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BackupRow {
    pub id: i64,
    pub vm: String,
    pub vm_uuid: String,
    /// `full` or `incremental`.
    pub kind: String,
    /// The backup an incremental one holds the changes since.
    pub parent: Option<i64>,
    pub checkpoint: String,
    pub pool: String,
    /// The directory of its files.
    pub dir: String,
    /// `running`, `succeeded`, `failed` or `interrupted`.
    pub state: String,
    /// `crash`: as a power cut would leave the disks; `filesystem`: frozen by the guest
    /// agent for the moment of the copy; `clean`: the VM was off.
    pub consistency: String,
    /// Why it is full when an incremental one was asked for or possible.
    pub why_full: String,
    #[serde(skip)]
    pub definition: String,
    pub units: u32,
    pub bytes: u64,
    pub message: String,
    pub created_by: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// The schedule that made it.
    pub schedule: Option<i64>,
    pub files: Vec<BackupFile>,
}

/// One disk's file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BackupFile {
    /// The disk's target in the VM (`vda`).
    pub disk: String,
    pub path: String,
    /// The disk's size for the guest.
    pub capacity: u64,
    /// The file's size.
    pub bytes: u64,
    /// SHA-256 of the file, written right after the backup ended (empty until then).
    pub sha256: String,
}

/// A backup about to begin.
pub struct NewBackup<'a> {
    pub vm: &'a str,
    pub vm_uuid: &'a str,
    pub kind: &'a str,
    pub parent: Option<i64>,
    pub checkpoint: &'a str,
    pub pool: &'a str,
    pub dir: &'a str,
    pub why_full: &'a str,
    pub definition: &'a str,
    pub units: u32,
    pub created_by: &'a str,
    pub created_at: i64,
    pub schedule: Option<i64>,
    /// `crash`, `filesystem` (frozen by the guest agent), or `clean` for a VM that was off.
    pub consistency: &'a str,
    /// A note kept with it (why it is only crash-consistent).
    pub message: &'a str,
    /// (disk, file path, capacity).
    pub files: Vec<(String, String, u64)>,
}

const COLUMNS: &str = "id, vm, vm_uuid, kind, parent, checkpoint, pool, dir, state, consistency, \
    why_full, definition, units, bytes, message, created_by, created_at, finished_at, schedule";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackupRow> {
    Ok(BackupRow {
        id: r.get(0)?,
        vm: r.get(1)?,
        vm_uuid: r.get(2)?,
        kind: r.get(3)?,
        parent: r.get(4)?,
        checkpoint: r.get(5)?,
        pool: r.get(6)?,
        dir: r.get(7)?,
        state: r.get(8)?,
        consistency: r.get(9)?,
        why_full: r.get(10)?,
        definition: r.get(11)?,
        units: r.get(12)?,
        bytes: r.get::<_, i64>(13)?.max(0) as u64,
        message: r.get(14)?,
        created_by: r.get(15)?,
        created_at: r.get(16)?,
        finished_at: r.get(17)?,
        schedule: r.get(18)?,
        files: Vec::new(),
    })
}

impl Store {
    pub fn backup_targets(&self) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT pool FROM backup_targets ORDER BY pool")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Names `pool` a backup target (`true`) or no longer (`false`).
    pub fn set_backup_target(&self, pool: &str, on: bool, by: &str, at: i64) -> StoreResult<()> {
        self.with(|c| {
            if on {
                c.execute(
                    "INSERT OR IGNORE INTO backup_targets (pool, added_by, added_at) VALUES (?1, ?2, ?3)",
                    params![pool, by, at],
                )
            } else {
                c.execute("DELETE FROM backup_targets WHERE pool = ?1", [pool])
            }
            .map(|_| ())
        })
    }

    /// Records a backup as running, with its files; its id.
    pub fn insert_backup(&self, b: &NewBackup<'_>) -> StoreResult<i64> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO backups (vm, vm_uuid, kind, parent, checkpoint, pool, dir, state, why_full, \
                 definition, units, created_by, created_at, schedule, consistency, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    b.vm, b.vm_uuid, b.kind, b.parent, b.checkpoint, b.pool, b.dir, b.why_full,
                    b.definition, b.units, b.created_by, b.created_at, b.schedule, b.consistency,
                    b.message
                ],
            )?;
            let id = tx.last_insert_rowid();
            for (disk, path, capacity) in &b.files {
                tx.execute(
                    "INSERT INTO backup_files (backup, disk, path, capacity) VALUES (?1, ?2, ?3, ?4)",
                    params![id, disk, path, *capacity as i64],
                )?;
            }
            tx.commit()?;
            Ok(id)
        })
    }

    /// How consistent a running backup is, and why.
    pub fn set_backup_consistency(
        &self,
        id: i64,
        consistency: &str,
        message: &str,
    ) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE backups SET consistency = ?2, message = ?3 WHERE id = ?1",
                params![id, consistency, message],
            )
            .map(|_| ())
        })
    }

    /// A running backup ended: its state, message, and its files' sizes and checksums.
    pub fn finish_backup(
        &self,
        id: i64,
        state: &str,
        message: &str,
        files: &[(String, u64, String)],
        at: i64,
    ) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let mut total: i64 = 0;
            for (disk, bytes, sha) in files {
                total += *bytes as i64;
                tx.execute(
                    "UPDATE backup_files SET bytes = ?3, sha256 = ?4 WHERE backup = ?1 AND disk = ?2",
                    params![id, disk, *bytes as i64, sha],
                )?;
            }
            tx.execute(
                "UPDATE backups SET state = ?2, message = ?3, bytes = ?4, finished_at = ?5 WHERE id = ?1 AND state = 'running'",
                params![id, state, message, total, at],
            )?;
            tx.commit()
        })
    }

    fn with_files(&self, mut rows: Vec<BackupRow>) -> StoreResult<Vec<BackupRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT disk, path, capacity, bytes, sha256 FROM backup_files WHERE backup = ?1 ORDER BY disk",
            )?;
            for b in &mut rows {
                b.files = st
                    .query_map([b.id], |r| {
                        Ok(BackupFile {
                            disk: r.get(0)?,
                            path: r.get(1)?,
                            capacity: r.get::<_, i64>(2)?.max(0) as u64,
                            bytes: r.get::<_, i64>(3)?.max(0) as u64,
                            sha256: r.get(4)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
            }
            Ok(rows)
        })
    }

    /// Backups, newest first; of one VM when `vm` is given.
    pub fn backups(&self, vm: Option<&str>) -> StoreResult<Vec<BackupRow>> {
        let rows = self.with(|c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM backups WHERE (?1 IS NULL OR vm = ?1) ORDER BY id DESC"
            );
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map([vm], row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        self.with_files(rows)
    }

    pub fn backup(&self, id: i64) -> StoreResult<Option<BackupRow>> {
        let found = self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM backups WHERE id = ?1"),
                [id],
                row,
            )
            .optional()
        })?;
        Ok(self.with_files(found.into_iter().collect())?.pop())
    }

    /// Backups still `running` (after a restart: interrupted).
    pub fn running_backups(&self) -> StoreResult<Vec<BackupRow>> {
        let rows = self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM backups WHERE state = 'running' ORDER BY id"
            ))?;
            let rows = st.query_map([], row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        self.with_files(rows)
    }

    /// A backup whose parent was merged into it: its new parent (none: it is full now),
    /// kind, and its files' sizes and checksums.
    /// Records a backup file's checksum, computed after the backup ended; a checksum
    /// already there is kept.
    pub fn set_backup_checksum(&self, id: i64, disk: &str, sha256: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE backup_files SET sha256 = ?3 WHERE backup = ?1 AND disk = ?2 AND sha256 = ''",
                params![id, disk, sha256],
            )
            .map(|_| ())
        })
    }

    pub fn rechain_backup(
        &self,
        id: i64,
        parent: Option<i64>,
        kind: &str,
        files: &[(String, u64, String)],
    ) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let mut total: i64 = 0;
            for (disk, bytes, sha) in files {
                total += *bytes as i64;
                tx.execute(
                    "UPDATE backup_files SET bytes = ?3, sha256 = ?4 WHERE backup = ?1 AND disk = ?2",
                    params![id, disk, *bytes as i64, sha],
                )?;
            }
            tx.execute(
                "UPDATE backups SET parent = ?2, kind = ?3, bytes = ?4 WHERE id = ?1",
                params![id, parent, kind, total],
            )?;
            tx.commit()
        })
    }

    /// Every backup schedule.
    pub fn backup_schedules(&self) -> StoreResult<Vec<ScheduleRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, scope, scope_value, pool, every, weekday, at_minute, keep_last, keep_daily, \
                 keep_weekly, keep_monthly, last_run_at, created_by, created_at, kind FROM backup_schedules ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(ScheduleRow {
                    id: r.get(0)?,
                    scope: r.get(1)?,
                    scope_value: r.get(2)?,
                    pool: r.get(3)?,
                    every: r.get(4)?,
                    weekday: r.get(5)?,
                    at_minute: r.get(6)?,
                    keep_last: r.get(7)?,
                    keep_daily: r.get(8)?,
                    keep_weekly: r.get(9)?,
                    keep_monthly: r.get(10)?,
                    last_run_at: r.get(11)?,
                    created_by: r.get(12)?,
                    created_at: r.get(13)?,
                    kind: r.get(14)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Adds a schedule; its id.
    pub fn insert_backup_schedule(&self, s: &ScheduleRow) -> StoreResult<i64> {
        self.with(|c| {
            c.execute(
                "INSERT INTO backup_schedules (scope, scope_value, pool, every, weekday, at_minute, keep_last, \
                 keep_daily, keep_weekly, keep_monthly, created_by, created_at, kind) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    s.scope, s.scope_value, s.pool, s.every, s.weekday, s.at_minute, s.keep_last,
                    s.keep_daily, s.keep_weekly, s.keep_monthly, s.created_by, s.created_at, s.kind
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Removes a schedule; whether there was one.
    pub fn delete_backup_schedule(&self, id: i64) -> StoreResult<bool> {
        self.with(|c| {
            c.execute("DELETE FROM backup_schedules WHERE id = ?1", [id])
                .map(|n| n > 0)
        })
    }

    pub fn set_schedule_run(&self, id: i64, at: i64) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE backup_schedules SET last_run_at = ?2 WHERE id = ?1",
                params![id, at],
            )
            .map(|_| ())
        })
    }

    /// Removes a backup's record (its files are deleted by the caller first).
    pub fn delete_backup(&self, id: i64) -> StoreResult<()> {
        self.with(|c| {
            c.execute("DELETE FROM backups WHERE id = ?1", [id])
                .map(|_| ())
        })
    }
}

/// A backup schedule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ScheduleRow {
    pub id: i64,
    /// `backup` or `snapshot`.
    pub kind: String,
    /// `vm`, `tag` or `all`.
    pub scope: String,
    /// The VM or the tag.
    pub scope_value: String,
    /// The backup target (empty for a snapshot schedule).
    pub pool: String,
    /// `daily` or `weekly`.
    pub every: String,
    /// Weekly: 0 Monday … 6 Sunday.
    pub weekday: u32,
    /// Minutes after midnight, UTC.
    pub at_minute: u32,
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub last_run_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
}
