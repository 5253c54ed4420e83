//! Jobs that move an image into a pool: an upload (bytes from a client) or a fetch
//! (bytes from a URL). The job row is written before the volume is made, progress is
//! recorded while bytes flow, and a failure, a cancel or a restart removes the partial
//! volume. Knows no HTTP; every function blocks.

use super::changes::{ClonePlan, CloneWatch};
use super::volumes::{check_name_free, invalid, running_pool};
use super::{LcResult, LifecycleError};
use crate::domain::storage::PoolStatus;
use crate::domain::vmspec::DiskFormat;
use crate::domain::volumes::{
    backup_job_source, backup_of_job_source, check_length, FetchRequest, JobKind, JobState,
    NewVolume, NewVolumeRequest, VolumeFieldError,
};
use crate::domain::xml::{volume_copy_xml, volume_xml};
use crate::hypervisor::Hypervisor;
use crate::store::jobs::{JobRow, NewJob};
use crate::store::{AuditEntry, Store};
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub use crate::config::ImagesConfig;

/// Seconds since the Unix epoch.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Cancel handles and live byte counts of the jobs running in this process.
#[derive(Default)]
pub struct Jobs {
    running: Mutex<HashMap<i64, (CancellationToken, Arc<AtomicU64>)>>,
}

impl Jobs {
    fn register(&self, id: i64) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut m) = self.running.lock() {
            m.insert(id, (token.clone(), Arc::default()));
        }
        token
    }

    fn counter(&self, id: i64) -> Arc<AtomicU64> {
        self.running
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|(_, c)| c.clone()))
            .unwrap_or_default()
    }

    /// Whether Cancel was asked of running job `id`.
    pub fn is_cancelled(&self, id: i64) -> bool {
        self.running
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|(t, _)| t.is_cancelled()))
            .unwrap_or(false)
    }

    pub fn forget(&self, id: i64) {
        if let Ok(mut m) = self.running.lock() {
            m.remove(&id);
        }
    }

    /// Asks a running job to stop; false if this process runs no such job.
    fn cancel(&self, id: i64) -> bool {
        match self
            .running
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|(t, _)| t.clone()))
        {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// A running job with its bytes done up to this moment (the stored count is
    /// written a few times a second).
    pub fn live(&self, mut job: JobRow) -> JobRow {
        if job.state == JobState::Running.as_str() {
            if let Some((_, c)) = self
                .running
                .lock()
                .ok()
                .and_then(|m| m.get(&job.id).cloned())
            {
                job.bytes_done = job.bytes_done.max(c.load(Ordering::Relaxed));
            }
        }
        job
    }
}

/// What a job works with: libvirt, the store and the running jobs' cancel handles and
/// byte counts.
#[derive(Clone, Copy)]
pub struct JobCtx<'a> {
    pub hv: &'a dyn Hypervisor,
    pub store: &'a Store,
    pub jobs: &'a Jobs,
}

/// A job its `begin_*` recorded and registered, handed to the thread that runs it: the
/// row, its cancel handle and who started it.
pub struct RunningJob {
    pub job: JobRow,
    pub cancel: CancellationToken,
    pub actor: Actor,
}

/// An upload into a new volume: the pool, the volume's name, its length in bytes and
/// where the bytes come from (for the job row). A fetch's and an empty create's job rows
/// are written from the same parts (a fetch's length is 0 until its server answers).
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    pub pool: &'a str,
    pub name: &'a str,
    pub length: u64,
    pub source: &'a str,
}

/// Who started a job, for the audit entry its outcome writes.
#[derive(Debug, Clone)]
pub struct Actor {
    pub username: String,
    pub remote_addr: String,
}

impl Actor {
    pub fn audit(&self, store: &Store, action: &str, target: &str, result: &str, detail: &str) {
        let entry = AuditEntry {
            at: now(),
            actor: self.username.clone(),
            remote_addr: self.remote_addr.clone(),
            action: action.to_string(),
            target: target.to_string(),
            result: result.to_string(),
            detail: detail.to_string(),
        };
        tracing::info!(actor = %entry.actor, action, target, result, detail, "audit");
        if let Err(e) = store.append_audit(&entry) {
            tracing::error!(error = %e, "could not write the audit log");
        }
    }
}

fn job_error(field: &'static str, message: String) -> LifecycleError {
    invalid(vec![VolumeFieldError { field, message }])
}

/// A job whose volume exists and waits for its bytes.
pub struct Transfer {
    pub job_id: i64,
    pub kind: JobKind,
    pub pool: String,
    pub volume: String,
    pub path: String,
    pub length: u64,
    pub cancel: CancellationToken,
    pub actor: Actor,
}

/// Makes the job's volume (recorded first), sized `length`. On failure the job ends.
fn make_volume(
    cx: JobCtx<'_>,
    job: &JobRow,
    length: u64,
    cancel: CancellationToken,
    actor: Actor,
) -> LcResult<Transfer> {
    let JobCtx { hv, store, jobs } = cx;
    store.job_making_volume(job.id, length)?;
    let end = |message: String| -> LcResult<Transfer> {
        store.finish_job(job.id, JobState::Failed.as_str(), 0, &message, now())?;
        jobs.forget(job.id);
        Err(LifecycleError::failed(message))
    };
    // A failed create made nothing (a clash with a volume made meanwhile is not ours).
    let path = match hv.create_volume(
        &job.pool,
        &volume_copy_xml(&job.volume, length, DiskFormat::Raw),
    ) {
        Ok(path) => path,
        Err(e) => {
            return end(format!(
                "Volume {} could not be created: {}",
                job.volume,
                e.user_message()
            ))
        }
    };
    if let Err(e) = store.job_volume_path(job.id, &path) {
        let _ = hv.delete_volume(&path);
        return end(format!(
            "Volume {} could not be recorded ({e}); it was deleted again.",
            job.volume
        ));
    }
    Ok(Transfer {
        job_id: job.id,
        kind: JobKind::parse(&job.kind).unwrap_or(JobKind::Upload),
        pool: job.pool.clone(),
        volume: job.volume.clone(),
        path,
        length,
        cancel,
        actor,
    })
}

/// The pool for a new image volume: running, the name free, and (when known) the
/// length within the limit and the pool's free space.
fn check_target(
    hv: &dyn Hypervisor,
    cfg: &ImagesConfig,
    pool: &str,
    name: &str,
    length: Option<u64>,
) -> LcResult<PoolStatus> {
    let p = running_pool(hv, pool)?;
    check_name_free(hv, pool, name)?;
    if let Some(length) = length {
        check_length(length, cfg.max_bytes, p.available_bytes).map_err(|m| job_error("file", m))?;
    }
    Ok(p)
}

fn new_job(store: &Store, job: &NewJob<'_>) -> LcResult<JobRow> {
    let id = store.insert_job(job)?;
    store
        .job(id)?
        .ok_or_else(|| LifecycleError::NotFound(format!("Job {id} vanished.")))
}

/// A volume job's row: `kind`, and `into.length` bytes (0 when not known yet) from
/// `into.source` into `into.pool`/`into.name`.
fn volume_job(store: &Store, kind: JobKind, into: &Upload<'_>, actor: &Actor) -> LcResult<JobRow> {
    new_job(
        store,
        &NewJob {
            kind: kind.as_str(),
            pool: into.pool,
            volume: into.name,
            source: into.source,
            vm: "",
            bytes_total: into.length,
            created_by: &actor.username,
            created_at: now(),
        },
    )
}

/// Starts an upload of `up.length` bytes into a new volume `up.name` of `up.pool`:
/// checks, the job row, the volume. The bytes follow through [`transfer`].
pub fn begin_upload(
    cx: JobCtx<'_>,
    cfg: &ImagesConfig,
    up: &Upload<'_>,
    actor: Actor,
) -> LcResult<Transfer> {
    crate::domain::volumes::check_volume_name(up.name).map_err(|m| job_error("name", m))?;
    check_target(cx.hv, cfg, up.pool, up.name, Some(up.length))?;
    let job = volume_job(cx.store, JobKind::Upload, up, &actor)?;
    let cancel = cx.jobs.register(job.id);
    make_volume(cx, &job, up.length, cancel, actor)
}

/// Counts bytes into the job's progress and stops when the job is cancelled.
struct Progress<'a> {
    inner: &'a mut dyn Read,
    store: &'a Store,
    job_id: i64,
    done: u64,
    live: Arc<AtomicU64>,
    saved_at: Instant,
    cancel: &'a CancellationToken,
}

impl Read for Progress<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("the job was cancelled"));
        }
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        self.live.store(self.done, Ordering::Relaxed);
        if self.saved_at.elapsed() >= Duration::from_millis(250) {
            self.saved_at = Instant::now();
            let _ = self.store.job_progress(self.job_id, self.done);
        }
        Ok(n)
    }
}

/// Moves the bytes from `from` into the job's volume. On success the pool is refreshed
/// (so the format is detected) and the job succeeds; otherwise the volume is deleted
/// and the job ends cancelled or failed. Audited either way.
pub fn transfer(cx: JobCtx<'_>, t: &Transfer, from: &mut dyn Read) -> LcResult<JobRow> {
    let JobCtx { hv, store, jobs } = cx;
    let mut progress = Progress {
        inner: from,
        store,
        job_id: t.job_id,
        done: 0,
        live: jobs.counter(t.job_id),
        // The first bytes are saved at once, then a few times a second.
        saved_at: Instant::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now),
        cancel: &t.cancel,
    };
    let r = hv.upload_volume(&t.path, t.length, &mut progress);
    let done = progress.done;
    let action = format!("volume.{}", t.kind.as_str());
    let target = format!("{}/{}", t.pool, t.volume);
    let outcome = match r {
        Ok(()) => {
            let _ = hv.refresh_pool(&t.pool);
            store.finish_job(t.job_id, JobState::Succeeded.as_str(), done, "", now())?;
            t.actor.audit(
                store,
                &action,
                &target,
                "ok",
                &format!("{done} bytes stored"),
            );
            Ok(())
        }
        Err(e) => {
            let cancelled = t.cancel.is_cancelled();
            let undone = match hv.delete_volume(&t.path) {
                Ok(()) => "the partial volume was deleted".to_string(),
                Err(d) => format!(
                    "the partial volume {} could not be deleted ({})",
                    t.path,
                    d.user_message()
                ),
            };
            let (state, message) = if cancelled {
                (
                    JobState::Cancelled,
                    format!("Cancelled after {done} of {} bytes; {undone}.", t.length),
                )
            } else {
                (
                    JobState::Failed,
                    format!(
                        "Stopped after {done} of {} bytes: {}; {undone}.",
                        t.length,
                        e.user_message()
                    ),
                )
            };
            store.finish_job(t.job_id, state.as_str(), done, &message, now())?;
            t.actor
                .audit(store, &action, &target, state.as_str(), &message);
            Err(if cancelled {
                LifecycleError::Conflict(message)
            } else {
                LifecycleError::failed(message)
            })
        }
    };
    jobs.forget(t.job_id);
    outcome?;
    store
        .job(t.job_id)?
        .ok_or_else(|| LifecycleError::NotFound(format!("Job {} vanished.", t.job_id)))
}

// ---- fetch ----

/// Checks a fetch and records its job; the download runs in [`run_fetch`].
pub fn begin_fetch(
    cx: JobCtx<'_>,
    cfg: &ImagesConfig,
    pool: &str,
    req: &FetchRequest,
    actor: &Actor,
) -> LcResult<(JobRow, CancellationToken)> {
    let fetch = req.validate().map_err(invalid)?;
    check_target(cx.hv, cfg, pool, &fetch.name, None)?;
    let job = volume_job(
        cx.store,
        JobKind::Fetch,
        &Upload {
            pool,
            name: &fetch.name,
            length: 0,
            source: fetch.url.as_str(),
        },
        actor,
    )?;
    let cancel = cx.jobs.register(job.id);
    Ok((job, cancel))
}

/// Downloads the job's URL into a new volume. Every failure ends the job (audited)
/// with nothing left in the pool.
pub fn run_fetch(
    cx: JobCtx<'_>,
    cfg: &ImagesConfig,
    fetch: &crate::adapters::http_fetch::FetchConfig,
    run: RunningJob,
) {
    let JobCtx { hv, store, jobs } = cx;
    let RunningJob { job, cancel, actor } = run;
    let job = &job;
    let target = format!("{}/{}", job.pool, job.volume);
    let fail = |message: String| {
        let _ = store.finish_job(job.id, JobState::Failed.as_str(), 0, &message, now());
        actor.audit(store, "volume.fetch", &target, "failed", &message);
        jobs.forget(job.id);
    };
    let url = job.source.as_str();
    // The whole fetch is limited by [images]; each wait for bytes by [fetch].
    let client = crate::adapters::http_fetch::Client::new(
        fetch,
        Some(Duration::from_secs(cfg.fetch_timeout_seconds)),
    );
    let answer = match client.get(url) {
        Ok(a) if a.status() == 200 => a.response,
        Ok(a) => return fail(format!("{url} answered HTTP {}.", a.response.status())),
        Err(e) => return fail(format!("{e}")),
    };
    let Some(length) = answer.body().content_length() else {
        return fail(format!(
            "{url} did not say how large the file is (no Content-Length); virtdeck needs the size to make the volume."
        ));
    };
    if cancel.is_cancelled() {
        let message = "Cancelled before any byte was stored.".to_string();
        let _ = store.finish_job(job.id, JobState::Cancelled.as_str(), 0, &message, now());
        actor.audit(store, "volume.fetch", &target, "cancelled", &message);
        jobs.forget(job.id);
        return;
    }
    if let Err(e) = check_target(hv, cfg, &job.pool, &job.volume, Some(length)) {
        return fail(e.to_string());
    }
    let t = match make_volume(cx, job, length, cancel, actor.clone()) {
        Ok(t) => t,
        Err(e) => {
            actor.audit(store, "volume.fetch", &target, "failed", &e.to_string());
            return;
        }
    };
    // The body is read on a thread of its own, so a cancel takes effect at once even
    // while the server sends nothing (that thread ends with [fetch] read_timeout_seconds).
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(8);
    let reading = std::thread::Builder::new()
        .name(format!("fetch-body-{}", job.id))
        .spawn(move || {
            let mut body = answer
                .into_body()
                .into_with_config()
                .limit(length.saturating_add(1))
                .reader();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let item = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
    if let Err(e) = reading {
        let _ = hv.delete_volume(&t.path);
        return fail(format!("The download could not be started: {e}."));
    }
    let mut body = CancellableReceiver {
        rx,
        pending: Vec::new(),
        at: 0,
        cancel: t.cancel.clone(),
    };
    // The outcome is in the job row and the audit log.
    let _ = transfer(cx, &t, &mut body);
}

/// Reads chunks from another thread, giving up as soon as the job is cancelled.
struct CancellableReceiver {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    pending: Vec<u8>,
    at: usize,
    cancel: CancellationToken,
}

impl Read for CancellableReceiver {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::sync::mpsc::RecvTimeoutError;
        while self.at == self.pending.len() {
            if self.cancel.is_cancelled() {
                return Err(std::io::Error::other("the job was cancelled"));
            }
            match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(chunk) => {
                    self.pending = chunk?;
                    self.at = 0;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

// ---- volume create ----

/// Checks a new empty volume and records its job; the volume is made in [`run_create`].
pub fn begin_create(
    cx: JobCtx<'_>,
    pool: &str,
    req: &NewVolumeRequest,
    actor: &Actor,
) -> LcResult<(JobRow, NewVolume, CancellationToken)> {
    let spec = req.validate().map_err(invalid)?;
    running_pool(cx.hv, pool)?;
    check_name_free(cx.hv, pool, &spec.name)?;
    let job = volume_job(
        cx.store,
        JobKind::Create,
        &Upload {
            pool,
            name: &spec.name,
            length: spec.size_gib.saturating_mul(1 << 30),
            source: &format!(
                "empty {} volume of {} GiB",
                spec.format.as_str(),
                spec.size_gib
            ),
        },
        actor,
    )?;
    let cancel = cx.jobs.register(job.id);
    Ok((job, spec, cancel))
}

/// Makes the job's empty volume. A failure ends the job with nothing made; a cancel
/// that arrives while libvirt makes it deletes it again.
pub fn run_create(cx: JobCtx<'_>, run: RunningJob, spec: &NewVolume) {
    let JobCtx { hv, store, jobs } = cx;
    let RunningJob { job, cancel, actor } = run;
    let (job, actor) = (&job, &actor);
    let target = format!("{}/{}", job.pool, job.volume);
    let total = job.bytes_total;
    let end = |state: JobState, done: u64, message: String| {
        let _ = store.finish_job(job.id, state.as_str(), done, &message, now());
        actor.audit(store, "volume.create", &target, state.as_str(), &message);
        jobs.forget(job.id);
    };
    if cancel.is_cancelled() {
        return end(
            JobState::Cancelled,
            0,
            "Cancelled before the volume was made.".into(),
        );
    }
    if let Err(e) = store.job_making_volume(job.id, total) {
        return end(
            JobState::Failed,
            0,
            format!("The job could not be recorded: {e}."),
        );
    }
    let path = match hv.create_volume(
        &job.pool,
        &volume_xml(&spec.name, spec.size_gib, spec.format),
    ) {
        Ok(path) => path,
        Err(e) => {
            return end(
                JobState::Failed,
                0,
                format!(
                    "Volume {} could not be created: {}",
                    spec.name,
                    e.user_message()
                ),
            )
        }
    };
    let _ = store.job_volume_path(job.id, &path);
    if cancel.is_cancelled() {
        let undone = match hv.delete_volume(&path) {
            Ok(()) => "it was deleted again".to_string(),
            Err(e) => format!("it could not be deleted ({})", e.user_message()),
        };
        return end(
            JobState::Cancelled,
            0,
            format!("Cancelled while the volume was made; {undone}."),
        );
    }
    let message = format!(
        "{} volume of {} GiB created.",
        spec.format.as_str(),
        spec.size_gib
    );
    let _ = store.finish_job(job.id, JobState::Succeeded.as_str(), total, &message, now());
    actor.audit(store, "volume.create", &target, "ok", &message);
    jobs.forget(job.id);
}

// ---- clone ----

/// Records the job of a planned clone; if that fails, the plan is rolled back.
pub fn begin_clone(
    cx: JobCtx<'_>,
    plan: &ClonePlan,
    actor: &Actor,
) -> LcResult<(JobRow, CancellationToken)> {
    begin_vm_job(
        cx,
        JobKind::Clone,
        plan.name(),
        &plan.source,
        plan.bytes_to_copy(),
        actor,
    )
}

/// Records the job of a planned restore (source `backup <id>`); if that fails, the
/// admitted VM is rolled back.
pub fn begin_restore(
    cx: JobCtx<'_>,
    plan: &super::backups::RestorePlan,
    actor: &Actor,
) -> LcResult<(JobRow, CancellationToken)> {
    begin_vm_job(
        cx,
        JobKind::Restore,
        &plan.name,
        &backup_job_source(plan.from_backup),
        plan.bytes_total,
        actor,
    )
}

/// Records the job of a planned restore over a VM (source `backup <id>`, the VM held
/// while it runs).
pub fn begin_restore_over(
    cx: JobCtx<'_>,
    plan: &super::backups::RestoreOverPlan,
    actor: &Actor,
) -> LcResult<(JobRow, CancellationToken)> {
    vm_job(
        cx,
        VmJob {
            kind: JobKind::RestoreOver,
            vm: &plan.name,
            source: &backup_job_source(plan.from_backup),
            pool: "",
            bytes_total: plan.bytes_total,
        },
        &actor.username,
    )
}

/// Records the job of backup `backup` of VM `vm` into target `pool` (source
/// `backup <id>`; `bytes_total` as far as known before libvirt counts), registered so
/// that Cancel reaches its watcher.
pub fn begin_backup_job(
    cx: JobCtx<'_>,
    backup: i64,
    vm: &str,
    pool: &str,
    bytes_total: u64,
    created_by: &str,
) -> LcResult<JobRow> {
    vm_job(
        cx,
        VmJob {
            kind: JobKind::Backup,
            vm,
            source: &backup_job_source(backup),
            pool,
            bytes_total,
        },
        created_by,
    )
    .map(|(job, _)| job)
}

/// Lets a job's stored byte count be written at most every 250 ms (its live count is
/// kept in between).
struct Pace(Mutex<Option<Instant>>);

impl Pace {
    /// The first write may come at once (`now`) or after the first 250 ms.
    fn new(first_at_once: bool) -> Pace {
        Pace(Mutex::new((!first_at_once).then(Instant::now)))
    }

    /// Whether a write is due now (and, if so, counts it as made).
    fn due(&self) -> bool {
        let Ok(mut at) = self.0.lock() else {
            return false;
        };
        if at.is_none_or(|t| t.elapsed() >= Duration::from_millis(250)) {
            *at = Some(Instant::now());
            true
        } else {
            false
        }
    }
}

/// A backup's job as the backup goes: bytes copied of the total (the stored row written
/// at most a few times a second, and at once when libvirt's total changes), and whether
/// Cancel was asked.
pub struct BackupJobWatch<'a> {
    store: &'a Store,
    jobs: &'a Jobs,
    job: Option<JobRow>,
    pace: Pace,
    /// The total last written.
    total: AtomicU64,
}

impl<'a> BackupJobWatch<'a> {
    /// The job of backup `backup`, if it has one.
    pub fn of(store: &'a Store, jobs: &'a Jobs, backup: i64) -> Self {
        BackupJobWatch {
            store,
            jobs,
            job: store.backup_job(backup).ok().flatten(),
            pace: Pace::new(true),
            total: AtomicU64::new(u64::MAX),
        }
    }

    pub fn copied(&self, done: u64, total: u64) {
        let Some(job) = &self.job else { return };
        self.jobs.counter(job.id).store(done, Ordering::Relaxed);
        let new_total = self.total.swap(total, Ordering::Relaxed) != total;
        if self.pace.due() || new_total {
            let _ = self.store.job_transfer(job.id, "copying", done, total);
        }
    }

    /// Copied `fraction` (0 to 1) of the total known when it began (a VM that is off:
    /// its disks' allocation).
    pub fn fraction(&self, fraction: f64) {
        let Some(job) = &self.job else { return };
        let total = job.bytes_total;
        self.copied((total as f64 * fraction.clamp(0.0, 1.0)) as u64, total);
    }

    pub fn cancelled(&self) -> bool {
        self.job
            .as_ref()
            .is_some_and(|j| self.jobs.is_cancelled(j.id))
    }

    /// The job ends as the backup did: `state` `succeeded`, `cancelled` or `failed`.
    pub fn end(&self, state: JobState, message: &str) {
        let Some(job) = &self.job else { return };
        let done = self.jobs.counter(job.id).load(Ordering::Relaxed);
        let done = if state == JobState::Succeeded {
            done.max(job.bytes_total)
        } else {
            done
        };
        if let Err(e) = self
            .store
            .finish_job(job.id, state.as_str(), done, message, now())
        {
            tracing::error!(job = job.id, error = %e, "could not record the backup job's end");
        }
        self.jobs.forget(job.id);
    }
}

/// Why VM `name` cannot be started, changed or backed up now: a restore over it runs.
pub fn held(store: &Store, name: &str) -> LcResult<Option<String>> {
    Ok(store
        .running_jobs()?
        .into_iter()
        .find(|j| j.vm == name && j.kind == JobKind::RestoreOver.as_str())
        .map(|j| {
            format!(
                "{name} is being restored from {} (job {}); wait for it to end on the Jobs page.",
                j.source, j.id
            )
        }))
}

/// Refuses a change of VM `name` while a restore over it runs.
pub fn refuse_while_held(store: &Store, name: &str) -> LcResult<()> {
    match held(store, name)? {
        Some(why) => Err(LifecycleError::Conflict(why)),
        None => Ok(()),
    }
}

/// What a job on VM `vm` is: its kind, what it works from (`source`), the pool it
/// writes into (if any) and the bytes it expects to move.
struct VmJob<'a> {
    kind: JobKind,
    vm: &'a str,
    source: &'a str,
    pool: &'a str,
    bytes_total: u64,
}

/// Records a running job on a VM, registered so that Cancel reaches it.
fn vm_job(
    cx: JobCtx<'_>,
    job: VmJob<'_>,
    created_by: &str,
) -> LcResult<(JobRow, CancellationToken)> {
    let row = new_job(
        cx.store,
        &NewJob {
            kind: job.kind.as_str(),
            pool: job.pool,
            volume: "",
            source: job.source,
            vm: job.vm,
            bytes_total: job.bytes_total,
            created_by,
            created_at: now(),
        },
    )?;
    let cancel = cx.jobs.register(row.id);
    Ok((row, cancel))
}

/// The job row of a planned VM `vm` (admitted, its row `creating`), registered so that
/// Cancel reaches it; if it cannot be written, the VM is rolled back.
fn begin_vm_job(
    cx: JobCtx<'_>,
    kind: JobKind,
    vm: &str,
    source: &str,
    bytes_total: u64,
    actor: &Actor,
) -> LcResult<(JobRow, CancellationToken)> {
    let recorded = vm_job(
        cx,
        VmJob {
            kind,
            vm,
            source,
            pool: "",
            bytes_total,
        },
        &actor.username,
    );
    if recorded.is_err() {
        super::roll_back(cx.hv, cx.store, vm);
    }
    recorded
}

/// A migration's job row on the host that moves the VM away (`to`: the other host),
/// registered so that Cancel reaches it.
pub fn begin_migration(
    cx: JobCtx<'_>,
    vm: &str,
    to: &str,
    actor: &Actor,
) -> LcResult<(JobRow, CancellationToken)> {
    vm_job(
        cx,
        VmJob {
            kind: JobKind::Migrate,
            vm,
            source: to,
            pool: "",
            bytes_total: 0,
        },
        &actor.username,
    )
}

/// An arriving VM's job row on the host it comes to (the other host runs the move and
/// its Cancel).
pub fn record_arrival(store: &Store, vm: &str, from: &str, created_by: &str) -> LcResult<JobRow> {
    new_job(
        store,
        &NewJob {
            kind: JobKind::Migrate.as_str(),
            pool: "",
            volume: "",
            source: from,
            vm,
            bytes_total: 0,
            created_by,
            created_at: now(),
        },
    )
}

/// Writes a clone's steps and bytes into its job row (bytes at most a few times a second).
struct JobWatch<'a> {
    store: &'a Store,
    id: i64,
    live: Arc<AtomicU64>,
    pace: Pace,
    cancel: &'a CancellationToken,
}

impl CloneWatch for JobWatch<'_> {
    fn step(&self, step: &str, making: Option<(&str, &str)>, bytes_done: u64) {
        self.live.store(bytes_done, Ordering::Relaxed);
        if let Err(e) = self.store.job_step(self.id, step, making, bytes_done) {
            tracing::error!(job = self.id, error = %e, "could not record the clone's step");
        }
    }

    fn copied(&self, bytes_done: u64) {
        self.live.store(bytes_done, Ordering::Relaxed);
        if self.pace.due() {
            let _ = self.store.job_progress(self.id, bytes_done);
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Runs a planned clone (`build`) as its job: steps and bytes recorded, outcome in
/// the job row and the audit log (`action` on the source VM, `describe` on success).
pub fn run_clone<T>(
    cx: JobCtx<'_>,
    run: RunningJob,
    action: &str,
    build: impl FnOnce(&dyn CloneWatch) -> LcResult<T>,
    describe: impl FnOnce(&T) -> String,
) {
    let JobCtx { store, jobs, .. } = cx;
    let RunningJob { job, cancel, actor } = run;
    let (job, actor) = (&job, &actor);
    let watch = JobWatch {
        store,
        id: job.id,
        live: jobs.counter(job.id),
        pace: Pace::new(false),
        cancel: &cancel,
    };
    let (state, done, message) = match build(&watch) {
        Ok(made) => (JobState::Succeeded, job.bytes_total, describe(&made)),
        Err(e) => {
            let state = if cancel.is_cancelled() && matches!(e, LifecycleError::Conflict(_)) {
                JobState::Cancelled
            } else {
                JobState::Failed
            };
            (state, watch.live.load(Ordering::Relaxed), e.to_string())
        }
    };
    if let Err(e) = store.finish_job(job.id, state.as_str(), done, &message, now()) {
        tracing::error!(job = job.id, error = %e, "could not record the clone's outcome");
    }
    let result = if state == JobState::Succeeded {
        "ok"
    } else {
        state.as_str()
    };
    actor.audit(store, action, &job.source, result, &message);
    jobs.forget(job.id);
}

// ---- cancel, list, restart ----

/// Asks a running job to stop. Its volume is removed by the job itself.
pub fn cancel(store: &Store, jobs: &Jobs, id: i64) -> LcResult<JobRow> {
    let job = store
        .job(id)?
        .ok_or_else(|| LifecycleError::NotFound(format!("There is no job {id}.")))?;
    if job.state != JobState::Running.as_str() {
        return Err(LifecycleError::Conflict(format!(
            "Job {id} has already ended ({}).",
            job.state
        )));
    }
    if !jobs.cancel(id) {
        return Err(LifecycleError::Conflict(format!(
            "Job {id} is not running in this virtdeck process any more."
        )));
    }
    Ok(job)
}

/// At start-up: jobs still marked running were interrupted by a stop of virtdeck.
/// Their partial volumes are deleted and they are marked interrupted. Returns notes
/// for the log and the audit log.
pub fn reconcile(hv: &dyn Hypervisor, store: &Store) -> LcResult<Vec<String>> {
    let mut notes = Vec::new();
    for job in store.running_jobs()? {
        let message = interrupted(hv, store, &job)?;
        store.finish_job(
            job.id,
            JobState::Interrupted.as_str(),
            job.bytes_done,
            &message,
            now(),
        )?;
        notes.push(format!(
            "job {} ({} {}/{}): {message}",
            job.id, job.kind, job.pool, job.volume
        ));
    }
    Ok(notes)
}

/// What is undone for `job`, which a restart cut off, and the sentence that says so.
fn interrupted(hv: &dyn Hypervisor, store: &Store, job: &JobRow) -> LcResult<String> {
    let mut undone = "nothing had been stored yet".to_string();
    let path = || match &job.volume_path {
        Some(p) => Some(p.clone()),
        None => hv
            .pool_volumes(&job.pool)
            .ok()
            .and_then(|vs| vs.into_iter().find(|v| v.name == job.volume))
            .map(|v| v.path),
    };
    let step = if job.step.is_empty() {
        "starting"
    } else {
        &job.step
    };
    if job.kind == JobKind::RestoreOver.as_str() {
        // Its volumes are deleted only if the VM does not use them yet.
        let id = backup_of_job_source(&job.source).unwrap_or(0);
        let in_progress = if job.volume_made { path() } else { None };
        let done = super::backups::clean_cut_restore_over(hv, store, &job.vm, id, in_progress);
        return Ok(format!(
            "virtdeck stopped while this restore over {} ran ({step}); {done}.",
            job.vm,
        ));
    }
    if job.kind == JobKind::Backup.as_str() {
        // The backup itself (its files, libvirt's job, the checkpoint) is cleaned up by the
        // backups' own start-up reconciliation.
        return Ok(format!(
            "virtdeck stopped while this backup of {} ran; its files were removed and the VM's next backup is full.",
            job.vm
        ));
    }
    if job.volume_made {
        let path = path();
        undone = match path {
            Some(p) => match hv.delete_volume(&p) {
                Ok(()) => format!("the partial volume {p} was deleted"),
                Err(crate::hypervisor::HypervisorError::NotFound { .. }) => {
                    "its volume was already gone".into()
                }
                Err(e) => format!(
                    "the partial volume {p} could not be deleted ({}); delete it on the pool page",
                    e.user_message()
                ),
            },
            None => "its volume had not been made".into(),
        };
    }
    let makes_vm = JobKind::parse(&job.kind).is_some_and(JobKind::makes_vm);
    let clone_made = makes_vm
        && store
            .vm_rows()?
            .iter()
            .any(|r| r.name == job.vm && r.state != "creating");
    Ok(if clone_made {
        format!(
            "virtdeck stopped just as this {} ended; VM {} was made and is kept.",
            job.kind, job.vm
        )
    } else if makes_vm {
        // The half-made VM itself (copied disks, definition, units) was rolled back
        // with the interrupted creates, before the jobs.
        let copy = if job.volume_made {
            format!("; the disk copy in progress: {undone}")
        } else {
            String::new()
        };
        format!(
            "virtdeck stopped while this {} ran ({step}); the partial VM {} was removed with its copied disks and its units released{copy}.",
            job.kind, job.vm
        )
    } else {
        format!(
            "virtdeck stopped while this {} ran ({} of {} bytes); {undone}.",
            job.kind, job.bytes_done, job.bytes_total
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_is_held_only_while_a_restore_over_it_runs() {
        let store = Store::open_in_memory().unwrap();
        let job = |kind: JobKind, vm: &str| {
            new_job(
                &store,
                &NewJob {
                    kind: kind.as_str(),
                    pool: "",
                    volume: "",
                    source: "backup 3",
                    vm,
                    bytes_total: 10,
                    created_by: "admin",
                    created_at: 1,
                },
            )
            .unwrap()
        };
        // A restore as a new VM named like it, or another VM's restore, holds nothing.
        job(JobKind::Restore, "web1");
        let other = job(JobKind::RestoreOver, "web2");
        assert_eq!(held(&store, "web1").unwrap(), None);
        let over = job(JobKind::RestoreOver, "web1");
        let why = held(&store, "web1").unwrap().expect("held");
        assert_eq!(
            why,
            format!(
                "web1 is being restored from backup 3 (job {}); wait for it to end on the Jobs page.",
                over.id
            )
        );
        assert!(matches!(
            refuse_while_held(&store, "web1"),
            Err(LifecycleError::Conflict(m)) if m == why
        ));
        store
            .finish_job(over.id, JobState::Succeeded.as_str(), 10, "done", 2)
            .unwrap();
        assert_eq!(held(&store, "web1").unwrap(), None);
        assert!(refuse_while_held(&store, "web1").is_ok());
        assert!(held(&store, "web2").unwrap().is_some(), "{other:?}");
    }
}
