//! Jobs: long storage operations with progress and outcome.

use super::{Store, StoreResult};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// One job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct JobRow {
    pub id: i64,
    /// upload, fetch, clone, create, migrate, action, restore, restore-over or backup.
    pub kind: String,
    /// running, succeeded, failed, cancelled or interrupted.
    pub state: String,
    pub pool: String,
    pub volume: String,
    /// The URL of a fetch, the file name an upload came from, or the VM a clone copies.
    pub source: String,
    /// The VM a clone makes (empty for volume jobs).
    pub vm: String,
    /// What the job is doing now, e.g. "copying disk 1 of 2".
    pub step: String,
    /// The job has made (or is about to make) its volume, which a failure removes.
    #[serde(skip)]
    pub volume_made: bool,
    pub volume_path: Option<String>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub message: String,
    pub created_by: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// The bulk action this job is one VM's part of (the id of its first job).
    pub batch: Option<i64>,
}

/// A job to insert.
pub struct NewJob<'a> {
    pub kind: &'a str,
    pub pool: &'a str,
    pub volume: &'a str,
    pub source: &'a str,
    pub vm: &'a str,
    pub bytes_total: u64,
    pub created_by: &'a str,
    pub created_at: i64,
}

const COLUMNS: &str = "id, kind, state, pool, volume, source, volume_made, volume_path, \
                       bytes_done, bytes_total, message, created_by, created_at, finished_at, \
                       vm, step, batch";

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        state: r.get(2)?,
        pool: r.get(3)?,
        volume: r.get(4)?,
        source: r.get(5)?,
        volume_made: r.get::<_, i64>(6)? != 0,
        volume_path: r.get(7)?,
        bytes_done: r.get::<_, i64>(8)?.max(0) as u64,
        bytes_total: r.get::<_, i64>(9)?.max(0) as u64,
        message: r.get(10)?,
        created_by: r.get(11)?,
        created_at: r.get(12)?,
        finished_at: r.get(13)?,
        vm: r.get(14)?,
        step: r.get(15)?,
        batch: r.get(16)?,
    })
}

impl Store {
    /// Inserts a running job; returns its id.
    pub fn insert_job(&self, j: &NewJob<'_>) -> StoreResult<i64> {
        self.with(|c| {
            c.execute(
                "INSERT INTO jobs (kind, state, pool, volume, source, vm, bytes_total, created_by, created_at)
                 VALUES (?1, 'running', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    j.kind,
                    j.pool,
                    j.volume,
                    j.source,
                    j.vm,
                    j.bytes_total as i64,
                    j.created_by,
                    j.created_at
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Records, before the volume is made, that this job makes it (with its size).
    pub fn job_making_volume(&self, id: i64, bytes_total: u64) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET volume_made = 1, bytes_total = ?2 WHERE id = ?1",
                params![id, bytes_total as i64],
            )
            .map(drop)
        })
    }

    /// Records the path of the volume the job made.
    pub fn job_volume_path(&self, id: i64, path: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET volume_path = ?2 WHERE id = ?1",
                params![id, path],
            )
            .map(drop)
        })
    }

    /// A clone's next step: what it does now, and the disk copy in progress (made by
    /// this step, so a restart removes it) or none.
    pub fn job_step(
        &self,
        id: i64,
        step: &str,
        copying: Option<(&str, &str)>,
        bytes_done: u64,
    ) -> StoreResult<()> {
        let (pool, volume) = copying.unwrap_or(("", ""));
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET step = ?2, pool = CASE WHEN ?5 THEN ?3 ELSE pool END,
                        volume = CASE WHEN ?5 THEN ?4 ELSE volume END,
                        volume_made = ?5, volume_path = NULL, bytes_done = ?6
                 WHERE id = ?1 AND state = 'running'",
                params![id, step, pool, volume, copying.is_some(), bytes_done as i64],
            )
            .map(drop)
        })
    }

    pub fn job_progress(&self, id: i64, bytes_done: u64) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET bytes_done = ?2 WHERE id = ?1 AND state = 'running'",
                params![id, bytes_done as i64],
            )
            .map(drop)
        })
    }

    /// Ends a running job. Its volume is no longer the job's to remove: kept on success,
    /// already removed (or never made) otherwise.
    /// A transfer's step, bytes done and total as the job goes (a migration's total
    /// grows while memory is dirtied).
    pub fn job_transfer(&self, id: i64, step: &str, done: u64, total: u64) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET step = ?2, bytes_done = ?3, bytes_total = ?4
                 WHERE id = ?1 AND state = 'running'",
                params![id, step, done as i64, total as i64],
            )
            .map(drop)
        })
    }

    pub fn finish_job(
        &self,
        id: i64,
        state: &str,
        bytes_done: u64,
        message: &str,
        at: i64,
    ) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = ?2, bytes_done = ?3, message = ?4, finished_at = ?5,
                        volume_made = 0
                 WHERE id = ?1 AND state = 'running'",
                params![id, state, bytes_done as i64, message, at],
            )
            .map(drop)
        })
    }

    pub fn job(&self, id: i64) -> StoreResult<Option<JobRow>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                job_from_row,
            )
            .optional()
        })
    }

    /// The newest jobs first.
    /// Inserts one running `action` job per VM of a bulk action, in order, in one
    /// transaction; the batch is the first job's id. Returns the batch and the job ids.
    pub fn insert_batch(
        &self,
        action: &str,
        vms: &[String],
        created_by: &str,
        created_at: i64,
    ) -> StoreResult<(i64, Vec<i64>)> {
        let mut conn = self.conn.lock().map_err(|_| super::StoreError::Poisoned)?;
        let tx = conn.transaction()?;
        let mut ids = Vec::with_capacity(vms.len());
        for vm in vms {
            tx.execute(
                "INSERT INTO jobs (kind, state, pool, volume, source, vm, step, created_by, created_at)
                 VALUES ('action', 'running', '', '', ?1, ?2, 'waiting', ?3, ?4)",
                params![action, vm, created_by, created_at],
            )?;
            ids.push(tx.last_insert_rowid());
        }
        let batch = ids.first().copied().unwrap_or(0);
        tx.execute(
            "UPDATE jobs SET batch = ?1 WHERE id >= ?1 AND id <= ?2",
            params![batch, ids.last().copied().unwrap_or(0)],
        )?;
        tx.commit()?;
        Ok((batch, ids))
    }

    /// The jobs of a bulk action, in the order the VMs were given.
    pub fn batch_jobs(&self, batch: i64) -> StoreResult<Vec<JobRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE batch = ?1 ORDER BY id"
            ))?;
            let rows = st.query_map([batch], job_from_row)?;
            rows.collect()
        })
    }

    pub fn jobs(&self, limit: u64) -> StoreResult<Vec<JobRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM jobs ORDER BY id DESC LIMIT ?1"
            ))?;
            let rows = st.query_map([limit as i64], job_from_row)?;
            rows.collect()
        })
    }

    /// The job of backup `backup` (kind `backup`, source `backup <id>`).
    pub fn backup_job(&self, backup: i64) -> StoreResult<Option<JobRow>> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM jobs WHERE kind = 'backup' AND source = ?1
                     ORDER BY id DESC LIMIT 1"
                ),
                [crate::domain::volumes::backup_job_source(backup)],
                job_from_row,
            )
            .optional()
        })
    }

    /// Jobs still marked running (at start-up: the ones a restart interrupted).
    pub fn running_jobs(&self) -> StoreResult<Vec<JobRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE state = 'running' ORDER BY id"
            ))?;
            let rows = st.query_map([], job_from_row)?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_runs_and_finishes_once() {
        let s = Store::open_in_memory().unwrap();
        let id = s
            .insert_job(&NewJob {
                kind: "upload",
                pool: "default",
                volume: "a.iso",
                source: "a.iso",
                vm: "",
                bytes_total: 0,
                created_by: "admin",
                created_at: 10,
            })
            .unwrap();
        s.job_making_volume(id, 100).unwrap();
        s.job_volume_path(id, "/p/a.iso").unwrap();
        s.job_progress(id, 40).unwrap();
        let j = s.job(id).unwrap().unwrap();
        assert_eq!(
            (j.state.as_str(), j.bytes_done, j.bytes_total),
            ("running", 40, 100)
        );
        assert!(j.volume_made);
        assert_eq!(s.running_jobs().unwrap().len(), 1);
        s.finish_job(id, "cancelled", 50, "cancelled by admin", 20)
            .unwrap();
        // A second end (e.g. a late progress or a restart) changes nothing.
        s.finish_job(id, "succeeded", 100, "", 30).unwrap();
        s.job_progress(id, 99).unwrap();
        let j = s.job(id).unwrap().unwrap();
        assert_eq!(j.state, "cancelled");
        assert_eq!(j.bytes_done, 50);
        assert_eq!(j.finished_at, Some(20));
        assert!(!j.volume_made);
        assert!(s.running_jobs().unwrap().is_empty());
        assert_eq!(s.jobs(10).unwrap(), vec![j.clone()]);
        assert_eq!(s.job(id + 1).unwrap(), None);
        // A clone's steps: the copy in progress is named (and removed by a restart);
        // once recorded with its VM, the job no longer claims it.
        let clone = s
            .insert_job(&NewJob {
                kind: "clone",
                pool: "",
                volume: "",
                source: "base",
                vm: "copy",
                bytes_total: 300,
                created_by: "admin",
                created_at: 40,
            })
            .unwrap();
        s.job_step(
            clone,
            "copying disk 1 of 2",
            Some(("default", "copy.qcow2")),
            0,
        )
        .unwrap();
        let j = s.job(clone).unwrap().unwrap();
        assert_eq!(
            (
                j.pool.as_str(),
                j.volume.as_str(),
                j.volume_made,
                j.step.as_str()
            ),
            ("default", "copy.qcow2", true, "copying disk 1 of 2")
        );
        s.job_step(clone, "copying disk 1 of 2 done", None, 120)
            .unwrap();
        let j = s.job(clone).unwrap().unwrap();
        assert!(!j.volume_made);
        assert_eq!(
            (j.volume.as_str(), j.bytes_done, j.vm.as_str()),
            ("copy.qcow2", 120, "copy")
        );
        // The CHECK constraint refuses unknown states.
        assert!(s
            .insert_job(&NewJob {
                kind: "copy",
                ..NewJob {
                    kind: "upload",
                    pool: "p",
                    volume: "v",
                    source: "",
                    vm: "",
                    bytes_total: 0,
                    created_by: "a",
                    created_at: 0
                }
            })
            .is_err());
    }
}
