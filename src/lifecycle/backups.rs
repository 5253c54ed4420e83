//! Backups of running VMs through libvirt's backup API into a backup target (a directory
//! pool an admin named), full or incremental on the last one; their end (checksums, the
//! incremental file chained to the one before it), their undoing when they fail or are
//! interrupted, and restoring any backup of a chain as a new VM.

use super::changes::{find_vm, locked};
use super::{
    claims, field, inventory, random_uuid, reason_in_plain_words, undo_failed, By, Ctx, LcResult,
    LifecycleError,
};
use crate::adapters::backup_files;
use crate::domain::backup::{self, BackupInput, Link, PreviousBackup, Target};
use crate::domain::capacity::admit;
use crate::domain::clone::{clone_domain_xml, CloneEdits};
use crate::domain::vmspec::{DiskFormat, VmName};
use crate::domain::xml;
use crate::hypervisor::{BackupStatus, Hypervisor};
use crate::store::backups::{BackupRow, NewBackup};
use crate::store::{Store, VmRow};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// How many looks a job that neither runs nor has ended gets before it counts as lost.
const UNSETTLED_LOOKS: u32 = 50;

impl Link for BackupRow {
    fn id(&self) -> i64 {
        self.id
    }
    fn parent(&self) -> Option<i64> {
        self.parent
    }
}

/// A backup with, while it runs, how far it got.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BackupView {
    #[serde(flatten)]
    pub backup: BackupRow,
    /// Bytes copied and to copy, while it runs.
    pub progress: Option<(u64, u64)>,
    /// Its job, while it runs (Cancel it there).
    pub job: Option<i64>,
}

/// Each backup, with the progress and the job of those that run. The progress is the
/// one their watcher records in the job (bytes copied of libvirt's total), so listing
/// backups never waits on libvirt, which answers about a running backup job only when
/// QEMU's monitor is free.
pub fn with_progress(
    jobs: &super::jobs::Jobs,
    store: &Store,
    rows: Vec<BackupRow>,
) -> Vec<BackupView> {
    rows.into_iter()
        .map(|b| {
            let job = (b.state == "running")
                .then(|| store.backup_job(b.id).ok().flatten())
                .flatten()
                .map(|j| jobs.live(j));
            BackupView {
                progress: job.as_ref().map(|j| (j.bytes_done, j.bytes_total)),
                job: job.map(|j| j.id),
                backup: b,
            }
        })
        .collect()
}

/// A backup target as the pages show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TargetView {
    pub pool: String,
    pub active: bool,
    pub available_bytes: u64,
    pub path: Option<String>,
}

/// The backup targets with their free space.
pub fn targets(hv: &dyn Hypervisor, store: &Store) -> LcResult<Vec<TargetView>> {
    let pools = hv.pool_statuses()?;
    Ok(store
        .backup_targets()?
        .into_iter()
        .map(|name| match pools.iter().find(|p| p.name == name) {
            Some(p) => TargetView {
                pool: name,
                active: p.active,
                available_bytes: p.available_bytes,
                path: p.target_path.clone(),
            },
            None => TargetView {
                pool: name,
                active: false,
                available_bytes: 0,
                path: None,
            },
        })
        .collect())
}

/// Names a directory or NFS pool a backup target, or no longer (`on` false).
pub fn set_target(
    hv: &dyn Hypervisor,
    store: &Store,
    pool: &str,
    on: bool,
    by: By<'_>,
) -> LcResult<Vec<TargetView>> {
    if on {
        let pools = hv.pool_statuses()?;
        let Some(p) = pools.iter().find(|p| p.name == pool) else {
            return Err(LifecycleError::Invalid(vec![field(
                "pool",
                format!("There is no pool named {pool}."),
            )]));
        };
        if !matches!(p.kind.as_str(), "dir" | "netfs") || p.target_path.is_none() {
            return Err(LifecycleError::Invalid(vec![field(
                "pool",
                format!(
                    "Pool {pool} is a {} pool; backups go into a directory or NFS pool.",
                    p.kind
                ),
            )]));
        }
    }
    store.set_backup_target(pool, on, by.actor, by.now)?;
    targets(hv, store)
}

fn previous(row: &BackupRow) -> PreviousBackup {
    PreviousBackup {
        id: row.id,
        checkpoint: row.checkpoint.clone(),
        pool: row.pool.clone(),
        disks: row
            .files
            .iter()
            .map(|f| (f.disk.clone(), f.capacity))
            .collect(),
    }
}

/// Starts a backup of the running VM into `pool`: full, or incremental on its last
/// backup there. Its row is written before libvirt begins, so a restart finds it.
pub fn begin(
    ctx: Ctx<'_>,
    name: &str,
    pool: &str,
    by: By<'_>,
    schedule: Option<i64>,
) -> LcResult<BackupRow> {
    let Ctx {
        hv,
        store,
        cfg,
        lock,
        jobs,
    } = ctx;
    // One backup of a VM at a time: checked and recorded under the lock.
    let _guard = locked(lock)?;
    super::jobs::refuse_while_held(store, name)?;
    let inv = inventory(hv, store, cfg)?;
    let vm = find_vm(&inv.vms, name)?;
    let status = super::backup_records::target_pool(hv, store, pool)?;
    let all = store.backups(Some(name))?;
    if all.iter().any(|b| b.state == "running") {
        return Err(LifecycleError::Conflict(format!(
            "A backup of {name} is running; wait for it to end."
        )));
    }
    let def_xml = hv.live_domain_xml(name)?.unwrap_or(hv.domain_xml(name)?);
    let def = xml::parse_domain(&def_xml).map_err(|e| {
        LifecycleError::failed(format!("The VM's definition could not be read: {e}"))
    })?;
    let sizes: Vec<(String, u64, u64)> = def
        .disks
        .iter()
        .filter(|d| d.device == "disk")
        .map(|d| {
            let vol = d
                .source
                .as_deref()
                .and_then(|p| inv.volume(p))
                .map(|(_, v)| v);
            (
                d.target.clone(),
                vol.map(|v| v.capacity_bytes).unwrap_or(0),
                vol.map(|v| v.allocation_bytes).unwrap_or(0),
            )
        })
        .collect();
    let target = Target {
        pool: pool.to_string(),
        active: status.active,
        path: status.target_path.clone(),
        available_bytes: status.available_bytes,
        capacity_bytes: status.capacity_bytes,
    };
    let last = all.iter().find(|b| b.state == "succeeded").map(previous);
    let checkpoints = if vm.state.is_active() {
        hv.checkpoints(name).unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut r = [0u8; 3];
    rand::rng().fill_bytes(&mut r);
    let stamp = format!("{}-{}", by.now, hex::encode(r));
    let plan = backup::plan_backup(&BackupInput {
        vm: name,
        uuid: &vm.uuid,
        running: vm.state.is_active(),
        def: &def,
        sizes: &sizes,
        target: &target,
        previous: last.as_ref(),
        checkpoints: &checkpoints,
        stamp: &stamp,
    })
    .map_err(LifecycleError::Invalid)?;
    let units = claims(&inv.model, &inv.vms, &inv.rows)
        .iter()
        .find(|c| c.vm == name)
        .map(|c| c.units)
        .unwrap_or(1);
    let inactive = hv.domain_xml(name).unwrap_or(def_xml);
    let id = store.insert_backup(&NewBackup {
        vm: name,
        vm_uuid: &vm.uuid,
        kind: plan.kind,
        parent: plan.parent,
        checkpoint: &plan.checkpoint,
        pool,
        dir: &plan.dir,
        why_full: &plan.why_full,
        definition: &inactive,
        units,
        created_by: by.actor,
        created_at: by.now,
        schedule,
        consistency: if plan.offline { "clean" } else { "crash" },
        message: "",
        files: plan.files.clone(),
    })?;
    // Its job: on the Jobs page with its progress (a full copy's size is known now, an
    // incremental's when libvirt counts it) and Cancel.
    let job = super::jobs::begin_backup_job(
        super::jobs::JobCtx { hv, store, jobs },
        id,
        name,
        pool,
        if plan.kind == "full" {
            sizes.iter().map(|(_, _, allocation)| allocation).sum()
        } else {
            0
        },
        by.actor,
    );
    if let Err(e) = &job {
        tracing::error!(backup = id, error = %e, "the backup's job could not be recorded");
    }
    // With a guest agent, the guest's file systems are frozen for the moment libvirt takes
    // the backup's point in time (when it begins), and thawed right after.
    let mut frozen = false;
    let started = backup_files::make_dir(&plan.dir)
        .map_err(|e| LifecycleError::failed(format!("The backup directory could not be made: {e}")))
        .and_then(|()| {
            if plan.offline {
                // Copied by the watcher, disk by disk.
                return Ok(());
            }
            if def.guest_agent {
                let (consistency, note) = match hv.freeze_filesystems(name) {
                    Ok(_) => {
                        frozen = true;
                        ("filesystem", String::new())
                    }
                    Err(e) => (
                        "crash",
                        format!(
                            "The guest agent did not freeze the file systems ({}), so this backup is crash-consistent.",
                            reason_in_plain_words(&e)
                        ),
                    ),
                };
                store.set_backup_consistency(id, consistency, &note)?;
            }
            let begun = hv
                .backup_begin(name, &plan.backup_xml, &plan.checkpoint_xml)
                .map_err(|e| {
                    LifecycleError::failed_because(
                        format!(
                            "libvirt did not begin the backup: {}.",
                            reason_in_plain_words(&e)
                        ),
                        e,
                    )
                });
            if frozen {
                if let Err(e) = hv.thaw_filesystems(name) {
                    tracing::error!(vm = name, error = %e, "the guest's file systems could not be thawed");
                }
            }
            begun
        });
    if let Err(e) = started {
        let _ = backup_files::remove_dir(&plan.dir);
        store.finish_backup(id, "failed", &e.to_string(), &[], by.now)?;
        super::jobs::BackupJobWatch::of(store, jobs, id)
            .end(crate::domain::volumes::JobState::Failed, &e.to_string());
        return Err(e);
    }
    store
        .backup(id)?
        .ok_or_else(|| LifecycleError::failed("The backup's record is gone."))
}

/// Waits for the VM's backup job `id` to end (calling `pause` between looks; its job's
/// progress recorded, a Cancel asked there aborting libvirt's job), then finishes it:
/// checksums and the chain on success; files and checkpoint removed on failure or
/// cancel. Returns the backup as it ended.
pub fn watch(
    hv: &dyn Hypervisor,
    store: &Store,
    jobs: &super::jobs::Jobs,
    id: i64,
    pause: &dyn Fn(),
    now: &dyn Fn() -> i64,
) -> LcResult<BackupRow> {
    use crate::domain::volumes::JobState;
    let row = store
        .backup(id)?
        .ok_or_else(|| LifecycleError::NotFound(format!("There is no backup {id}.")))?;
    let job = super::jobs::BackupJobWatch::of(store, jobs, id);
    // libvirt records how a job ended a moment after it stops running: "none" is asked
    // again, a while.
    let mut unsettled = 0;
    let mut aborted = false;
    let outcome = if row.checkpoint.is_empty() {
        copy_offline(&row, &job)
    } else {
        loop {
            if job.cancelled() && !aborted {
                aborted = true;
                if let Err(e) = hv.abort_backup(&row.vm) {
                    tracing::warn!(backup = id, error = %e, "libvirt's backup job could not be aborted");
                }
            }
            match hv.backup_status(&row.vm) {
                Ok(BackupStatus::Running {
                    processed_bytes,
                    total_bytes,
                }) => {
                    job.copied(processed_bytes, total_bytes);
                    pause()
                }
                Ok(BackupStatus::Completed) => break Ok(()),
                Ok(BackupStatus::Failed(why)) => break Err(why),
                Ok(BackupStatus::None) if unsettled < UNSETTLED_LOOKS => {
                    unsettled += 1;
                    pause();
                }
                Ok(BackupStatus::None) => {
                    break Err("libvirt has no record of the backup job".into())
                }
                Err(e) => break Err(reason_in_plain_words(&e)),
            }
        }
    };
    let cancelled = job.cancelled();
    let ended_at = now();
    let sealed = outcome
        .and_then(|()| seal(store, &row).map_err(|e| e.to_string()))
        .and_then(|files| {
            // What it is, beside its files: another virtdeck can list it from there.
            super::backup_records::write_record(store, &row, &files, ended_at)
                .map_err(|e| format!("the record beside its files could not be written: {e}"))
                .map(|()| files)
        });
    match sealed {
        Ok(files) => {
            // Restorable from here on; the checksums that verify it follow.
            store.finish_backup(id, "succeeded", &row.message, &files, ended_at)?;
            let bytes: u64 = files.iter().map(|(_, b, _)| b).sum();
            job.end(
                JobState::Succeeded,
                &format!(
                    "Backup {id} of {} ({}, {}) to {}.",
                    row.vm,
                    row.kind,
                    crate::domain::storage::human_bytes(bytes),
                    row.pool
                ),
            );
            record_checksums(store, id);
        }
        Err(why) => {
            undo(hv, &row);
            let (state, message) = if cancelled {
                (
                    JobState::Cancelled,
                    "The backup was cancelled; its files were removed.".to_string(),
                )
            } else {
                (JobState::Failed, format!("The backup failed: {why}"))
            };
            store.finish_backup(id, "failed", &message, &[], now())?;
            job.end(state, &message);
        }
    }
    store
        .backup(id)?
        .ok_or_else(|| LifecycleError::failed("The backup's record is gone."))
}

/// The disks of a VM that is off, each copied whole into its backup file (qemu-img
/// holds the disk while it reads it, so the VM cannot start half-way through); the job's
/// progress follows the copy, and Cancel stops it part-way.
fn copy_offline(row: &BackupRow, job: &super::jobs::BackupJobWatch) -> Result<(), String> {
    let def = xml::parse_domain(&row.definition).map_err(|e| e.to_string())?;
    let disks = row.files.len().max(1) as f64;
    for (done, f) in row.files.iter().enumerate() {
        if job.cancelled() {
            return Err("it was cancelled".into());
        }
        let disk = def
            .disks
            .iter()
            .find(|d| d.target == f.disk)
            .ok_or_else(|| format!("disk {} is not in the VM's definition", f.disk))?;
        let source = disk
            .source
            .as_deref()
            .ok_or_else(|| format!("disk {} has no volume behind it", f.disk))?;
        backup_files::copy_disk(
            source,
            disk.format.as_deref().unwrap_or("raw"),
            &f.path,
            &|p| job.fraction((done as f64 + p) / disks),
            &|| job.cancelled(),
        )
        .map_err(|e| match e {
            backup_files::BackupFileError::Stopped => "it was cancelled".to_string(),
            e => e.to_string(),
        })?;
    }
    Ok(())
}

/// A finished backup's files: an incremental one chained to the one before it; each
/// file's size (its checksum comes after, from `record_checksums`).
fn seal(
    store: &Store,
    row: &BackupRow,
) -> Result<Vec<(String, u64, String)>, backup_files::BackupFileError> {
    let parent = row.parent.and_then(|p| store.backup(p).ok().flatten());
    let mut out = Vec::new();
    for f in &row.files {
        if let Some(parent_file) = parent
            .as_ref()
            .and_then(|p| p.files.iter().find(|pf| pf.disk == f.disk))
        {
            backup_files::chain_to(&f.path, &parent_file.path)?;
        }
        out.push((f.disk.clone(), backup_files::size(&f.path)?, String::new()));
    }
    Ok(out)
}

/// Reads backup `id`'s files and records the checksums its files lack. A file that
/// cannot be read (the backup was deleted meanwhile) is left without one.
pub fn record_checksums(store: &Store, id: i64) {
    let Ok(Some(row)) = store.backup(id) else {
        return;
    };
    let mut computed = false;
    for f in row.files.iter().filter(|f| f.sha256.is_empty()) {
        match backup_files::sha256(&f.path) {
            Ok((_, sha)) => {
                if let Err(e) = store.set_backup_checksum(id, &f.disk, &sha) {
                    tracing::error!(backup = id, error = %e, "could not record a backup's checksum");
                }
                computed = true;
            }
            Err(e) => {
                tracing::warn!(backup = id, error = %e, "a backup file's checksum could not be computed")
            }
        }
    }
    if computed {
        super::backup_records::rewrite_record(store, id);
    }
}

/// The backups that succeeded but lack a checksum (virtdeck stopped before it was
/// written).
pub fn without_checksums(store: &Store) -> Vec<i64> {
    store
        .backups(None)
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b.state == "succeeded" && b.files.iter().any(|f| f.sha256.is_empty()))
        .map(|b| b.id)
        .collect()
}

/// Removes what a failed or interrupted backup left: its files and its checkpoint.
fn undo(hv: &dyn Hypervisor, row: &BackupRow) {
    if let Err(e) = backup_files::remove_dir(&row.dir) {
        tracing::error!(backup = row.id, error = %e, "could not remove a failed backup's files");
    }
    if row.checkpoint.is_empty() {
        return;
    }
    match hv.delete_checkpoint(&row.vm, &row.checkpoint) {
        Ok(()) | Err(crate::hypervisor::HypervisorError::NotFound { .. }) => {}
        Err(e) => {
            tracing::warn!(backup = row.id, error = %e, "could not delete a failed backup's checkpoint")
        }
    }
}

/// At start-up: backups still `running` were cut off. Their job is stopped, their files
/// and the VM's virtdeck checkpoints removed (so its next backup is full), and they are
/// marked `interrupted`. Returns what was done, for the log.
pub fn reconcile(hv: &dyn Hypervisor, store: &Store, now: i64) -> Vec<String> {
    let Ok(running) = store.running_backups() else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    for row in running {
        if matches!(hv.backup_status(&row.vm), Ok(BackupStatus::Running { .. })) {
            let _ = hv.abort_backup(&row.vm);
        }
        undo(hv, &row);
        for cp in hv.checkpoints(&row.vm).unwrap_or_default() {
            if cp.starts_with("virtdeck-") {
                let _ = hv.delete_checkpoint(&row.vm, &cp);
            }
        }
        let message = "virtdeck stopped while this backup ran; its files are removed and the next backup is full.";
        if let Err(e) = store.finish_backup(row.id, "interrupted", message, &[], now) {
            tracing::error!(backup = row.id, error = %e, "could not mark a backup interrupted");
        }
        notes.push(format!(
            "backup {} of {} interrupted; its files removed",
            row.id, row.vm
        ));
    }
    notes
}

/// What checking a backup's files found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Verified {
    pub backup: i64,
    pub ok: bool,
    /// Per file: (disk, what was found).
    pub files: Vec<(String, String)>,
}

/// Re-reads a backup's files (and those of the backups it builds on) and compares their
/// checksums with the ones recorded when it ended.
pub fn verify(store: &Store, id: i64) -> LcResult<Verified> {
    let all = store.backups(None)?;
    let links = backup::chain(&all, id).ok_or_else(|| {
        LifecycleError::NotFound(format!("There is no backup {id} (or its chain is broken)."))
    })?;
    let mut files = Vec::new();
    let mut ok = true;
    for b in &links {
        if b.state != "succeeded" {
            ok = false;
            files.push((String::new(), format!("backup {} is {}", b.id, b.state)));
            continue;
        }
        for f in &b.files {
            if f.sha256.is_empty() {
                ok = false;
                files.push((
                    format!("{} (backup {})", f.disk, b.id),
                    "no checksum yet: it is being computed; verify again in a moment".into(),
                ));
                continue;
            }
            let found = match backup_files::sha256(&f.path) {
                Ok((_, sha)) if sha == f.sha256 => "checksum matches".to_string(),
                Ok(_) => {
                    ok = false;
                    "CHECKSUM DIFFERS: the file changed since the backup".to_string()
                }
                Err(e) => {
                    ok = false;
                    format!("unreadable: {e}")
                }
            };
            files.push((format!("{} (backup {})", f.disk, b.id), found));
        }
    }
    Ok(Verified {
        backup: id,
        ok,
        files,
    })
}

/// Deletes a backup's files and record (admins). A backup that later incrementals need
/// is refused: they are deleted first.
pub fn delete(hv: &dyn Hypervisor, store: &Store, id: i64) -> LcResult<BackupRow> {
    let all = store.backups(None)?;
    let row = all
        .iter()
        .find(|b| b.id == id)
        .cloned()
        .ok_or_else(|| LifecycleError::NotFound(format!("There is no backup {id}.")))?;
    if row.state == "running" {
        return Err(LifecycleError::Conflict(format!(
            "Backup {id} is running; wait for it to end."
        )));
    }
    let needed_by: Vec<String> = backup::dependents(&all, id)
        .into_iter()
        .filter(|d| all.iter().any(|b| b.id == *d && b.state == "succeeded"))
        .map(|d| d.to_string())
        .collect();
    if !needed_by.is_empty() {
        return Err(LifecycleError::Conflict(format!(
            "Backup {id} is needed by the incremental backups {} (each holds only the changes since it); delete them first.",
            needed_by.join(", ")
        )));
    }
    backup_files::remove_dir(&row.dir).map_err(|e| {
        LifecycleError::failed(format!("The backup's files could not be deleted: {e}"))
    })?;
    // The newest backup's checkpoint would make the next one incremental on files that
    // are gone: it goes too.
    if all
        .iter()
        .filter(|b| b.vm == row.vm && b.state == "succeeded")
        .map(|b| b.id)
        .max()
        == Some(id)
    {
        let _ = hv.delete_checkpoint(&row.vm, &row.checkpoint);
    }
    // Failed or interrupted backups built on it have no files; their records go with it.
    for d in backup::dependents(&all, id).into_iter().rev() {
        store.delete_backup(d)?;
    }
    store.delete_backup(id)?;
    Ok(row)
}

/// A restore as a new VM.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The new VM's name.
    pub name: String,
    /// The pool for its disks; the backed-up VM's pool when left out.
    #[serde(default)]
    pub pool: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Restored {
    pub name: String,
    pub uuid: String,
    pub units: u32,
    pub from_backup: i64,
    pub volumes: Vec<String>,
}

/// Backup `id` with the backups it builds on (`links`, oldest first, `top` the newest),
/// and every backup (`all`), once the chain is whole and every link succeeded.
struct RestorableChain {
    all: Vec<BackupRow>,
    links: Vec<BackupRow>,
    top: BackupRow,
}

/// Backup `id`'s chain, or why it cannot be restored.
fn restorable_chain(store: &Store, id: i64) -> LcResult<RestorableChain> {
    let all = store.backups(None)?;
    let links = backup::chain(&all, id).ok_or_else(|| {
        LifecycleError::NotFound(format!("There is no backup {id} (or its chain is broken)."))
    })?;
    if let Some(bad) = links.iter().find(|b| b.state != "succeeded") {
        return Err(LifecycleError::Conflict(format!(
            "Backup {} of this chain is {}, so it cannot be restored.",
            bad.id, bad.state
        )));
    }
    let Some(top) = links.last().cloned() else {
        return Err(LifecycleError::NotFound(format!(
            "There is no backup {id}."
        )));
    };
    Ok(RestorableChain { all, links, top })
}

/// Bytes of disk `disk`'s files across a chain's backups.
fn chain_bytes(links: &[BackupRow], disk: &str) -> u64 {
    links
        .iter()
        .flat_map(|b| b.files.iter().filter(|x| x.disk == disk))
        .map(|x| x.bytes)
        .sum()
}

/// A restore as a new VM, checked and admitted (its VM row written, `creating`): what
/// [`build_restore`] makes.
pub struct RestorePlan {
    pub from_backup: i64,
    pub name: String,
    pub units: u32,
    /// Bytes of backup files to read (every file of every disk's chain).
    pub bytes_total: u64,
    /// Per disk: (its old path, the new volume's pool and name, its capacity, the newest
    /// file of its chain, the bytes of its chain).
    disks: Vec<RestoredDisk>,
    edits: CloneEdits,
    definition: String,
}

/// Checks a restore of backup `id` (with the backups it builds on) as a new VM: new name,
/// UUID and MACs, its units admitted like a create, room for its disks as new volumes.
/// The admitted VM's row is written; [`build_restore`] makes it.
pub fn plan_restore(
    ctx: Ctx<'_>,
    id: i64,
    req: &RestoreRequest,
    by: By<'_>,
) -> LcResult<RestorePlan> {
    let Ctx {
        hv,
        store,
        cfg,
        lock,
        ..
    } = ctx;
    let RestorableChain { links, top, .. } = restorable_chain(store, id)?;
    let def = xml::parse_domain(&top.definition).map_err(|e| {
        LifecycleError::failed(format!("The backed-up definition could not be read: {e}"))
    })?;
    let name = VmName::parse(&req.name)
        .map_err(|e| LifecycleError::Invalid(vec![field("name", e.to_string())]))?;
    let mut disks = Vec::new();
    let edits;
    let units;
    {
        let _guard = locked(lock)?;
        let inv = inventory(hv, store, cfg)?;
        if inv.vms.iter().any(|v| v.name == name.as_str())
            || inv.rows.iter().any(|r| r.name == name.as_str())
        {
            return Err(LifecycleError::Invalid(vec![field(
                "name",
                format!("A VM named {name} exists already. Pick another name."),
            )]));
        }
        let mut needed: HashMap<String, u64> = HashMap::new();
        for f in &top.files {
            let old = def
                .disks
                .iter()
                .find(|d| d.target == f.disk)
                .and_then(|d| d.source.clone());
            let pool = match (&req.pool, old.as_deref().and_then(|p| inv.volume(p))) {
                (Some(p), _) => p.clone(),
                (None, Some((p, _))) => p.name.clone(),
                (None, None) => {
                    return Err(LifecycleError::Invalid(vec![field(
                        "pool",
                        format!(
                            "The pool of disk {} is gone; choose a pool for the restored disks.",
                            f.disk
                        ),
                    )]))
                }
            };
            let Some(p) = inv.pools.iter().find(|x| x.name == pool && x.active) else {
                return Err(LifecycleError::Invalid(vec![field(
                    "pool",
                    format!("There is no running pool named {pool}."),
                )]));
            };
            if p.is_block() {
                return Err(LifecycleError::Invalid(vec![field(
                    "pool",
                    format!("Pool {pool} holds block volumes; restore into a directory pool."),
                )]));
            }
            let volume_name = format!("{name}-{}.qcow2", f.disk);
            if p.volumes.iter().any(|v| v.name == volume_name) {
                return Err(LifecycleError::Invalid(vec![field(
                    "name",
                    format!("Pool {pool} already has a volume {volume_name}; pick another name."),
                )]));
            }
            let chain_bytes = chain_bytes(&links, &f.disk);
            *needed.entry(pool.clone()).or_default() += chain_bytes;
            disks.push(RestoredDisk {
                old,
                pool,
                volume: volume_name,
                capacity: f.capacity,
                newest: f.path.clone(),
                chain_bytes,
            });
        }
        for (pool, bytes) in &needed {
            let available = inv
                .pools
                .iter()
                .find(|p| &p.name == pool)
                .map(|p| p.available_bytes)
                .unwrap_or(0);
            if *bytes > available {
                return Err(LifecycleError::Conflict(format!(
                    "Pool {pool} has {} MiB free; the restored disks need up to {} MiB.",
                    available >> 20,
                    bytes >> 20
                )));
            }
        }
        units = top.units.max(1);
        super::refuse_while_draining(store)?;
        admit(
            &inv.model,
            &claims(&inv.model, &inv.vms, &inv.rows),
            units,
            None,
        )?;
        let macs = super::changes::new_macs(&def, &inv.macs_in_use);
        edits = CloneEdits {
            name: name.to_string(),
            uuid: random_uuid(),
            macs,
            disks: HashMap::new(),
            logs: def
                .serial_log
                .iter()
                .map(|old| {
                    let dir = old.rsplit_once('/').map(|(d, _)| d).unwrap_or(".");
                    (old.clone(), format!("{dir}/{name}-serial.log"))
                })
                .collect(),
            disk_format: Some(DiskFormat::Qcow2.as_str().to_string()),
            // Media stay with the VM they belonged to (a cloud-init seed above all).
            ejected: def
                .disks
                .iter()
                .filter(|d| d.device == "cdrom")
                .filter_map(|d| d.source.clone())
                .collect(),
        };
        store.insert_vm(&VmRow {
            name: name.to_string(),
            uuid: edits.uuid.clone(),
            units,
            state: "creating".into(),
            created_volume: None,
            created_by: by.actor.to_string(),
            created_at: by.now,
        })?;
    }
    Ok(RestorePlan {
        from_backup: id,
        name: name.to_string(),
        units,
        bytes_total: disks.iter().map(|d| d.chain_bytes).sum(),
        disks,
        edits,
        definition: top.definition,
    })
}

/// Makes a planned restore: each disk's volume, the backup read into it (progress told
/// to `watch`, which can cancel between disks), the VM defined. Anything made is removed
/// again, with the VM's row, when a step fails.
pub fn build_restore(
    hv: &dyn Hypervisor,
    store: &Store,
    plan: RestorePlan,
    watch: &dyn super::changes::CloneWatch,
) -> LcResult<Restored> {
    let RestorePlan {
        from_backup: id,
        name,
        units,
        disks,
        mut edits,
        definition,
        ..
    } = plan;
    let mut volumes = Vec::new();
    let mut done_bytes = 0u64;
    let built: Result<(), (&'static str, String)> = (|| {
        for RestoredDisk {
            old,
            pool,
            volume: volume_name,
            capacity,
            newest,
            chain_bytes,
        } in &disks
        {
            if watch.cancelled() {
                return Err((
                    "reading the backup",
                    "the restore was cancelled".to_string(),
                ));
            }
            watch.step(
                &format!("reading the backup into {volume_name}"),
                Some((pool, volume_name)),
                done_bytes,
            );
            let path = hv
                .create_volume(
                    pool,
                    &xml::volume_copy_xml(volume_name, *capacity, DiskFormat::Qcow2),
                )
                .map_err(|e| ("making a disk volume", reason_in_plain_words(&e)))?;
            super::record_volume(store, &name, &path, DiskFormat::Qcow2, None);
            volumes.push(path.clone());
            let before = done_bytes;
            backup_files::read_chain_into(
                newest,
                &path,
                "qcow2",
                &|p| watch.copied(before + (*chain_bytes as f64 * p) as u64),
                &|| watch.cancelled(),
            )
            .map_err(|e| match e {
                backup_files::BackupFileError::Stopped => (
                    "reading the backup",
                    "the restore was cancelled".to_string(),
                ),
                e => ("reading the backup into the disk", e.to_string()),
            })?;
            done_bytes += chain_bytes;
            if let Some(old) = old {
                edits.disks.insert(old.clone(), path);
            }
        }
        watch.step("defining the VM", None, done_bytes);
        let new_xml = clone_domain_xml(&definition, &edits)
            .map_err(|e| ("rewriting the definition", e.to_string()))?;
        hv.define(&new_xml)
            .map_err(|e| ("defining the VM", reason_in_plain_words(&e)))?;
        Ok(())
    })();
    match built {
        Ok(()) => {
            store.finish_vm(&name)?;
            Ok(Restored {
                name,
                uuid: edits.uuid.clone(),
                units,
                from_backup: id,
                volumes,
            })
        }
        Err(_) if watch.cancelled() => {
            let undone = super::roll_back(hv, store, &name);
            Err(LifecycleError::Conflict(format!(
                "The restore as {name} was cancelled; nothing was left behind{}.",
                if undone.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", undone.join(", "))
                }
            )))
        }
        Err((what, reason)) => Err(undo_failed(
            hv,
            store,
            &name,
            &format!("Backup {id} could not be restored as {name}"),
            what,
            &reason,
        )),
    }
}

// ---- schedules and retention ----

/// Applies a schedule's keep rules to `vm`'s backups in `pool`: the others are deleted,
/// oldest first. A deleted backup that a later one builds on is merged into it first
/// (qemu-img copies what the later one lacks), so every kept backup still restores.
pub fn prune(
    store: &Store,
    vm: &str,
    pool: &str,
    keep: &crate::domain::backup_schedule::Keep,
) -> LcResult<Vec<i64>> {
    let all = store.backups(Some(vm))?;
    let ours: Vec<&BackupRow> = all
        .iter()
        .filter(|b| b.pool == pool && b.state == "succeeded")
        .collect();
    let keepers = crate::domain::backup_schedule::kept(
        &ours
            .iter()
            .map(|b| (b.id, b.created_at))
            .collect::<Vec<_>>(),
        keep,
    );
    let mut doomed: Vec<&BackupRow> = ours
        .iter()
        .filter(|b| !keepers.contains(&b.id))
        .copied()
        .collect();
    doomed.sort_by_key(|b| b.id);
    let mut deleted = Vec::new();
    for d in doomed {
        // Read again: an earlier merge may have changed the chain.
        let now_all = store.backups(Some(vm))?;
        let Some(d) = now_all.iter().find(|b| b.id == d.id).cloned() else {
            continue;
        };
        let parent = d
            .parent
            .and_then(|p| now_all.iter().find(|b| b.id == p).cloned());
        for child in now_all
            .iter()
            .filter(|b| b.parent == Some(d.id) && b.state == "succeeded")
        {
            let mut files = Vec::new();
            for f in &child.files {
                let backing = parent
                    .as_ref()
                    .and_then(|p| p.files.iter().find(|pf| pf.disk == f.disk))
                    .map(|pf| pf.path.as_str());
                backup_files::merge_into(&f.path, backing).map_err(|e| {
                    LifecycleError::failed(format!(
                        "Backup {} could not take over backup {}'s blocks: {e}",
                        child.id, d.id
                    ))
                })?;
                let (bytes, sha) = backup_files::sha256(&f.path)
                    .map_err(|e| LifecycleError::failed(e.to_string()))?;
                files.push((f.disk.clone(), bytes, sha));
            }
            let kind = if parent.is_some() {
                "incremental"
            } else {
                "full"
            };
            store.rechain_backup(child.id, d.parent, kind, &files)?;
            super::backup_records::rewrite_record(store, child.id);
        }
        backup_files::remove_dir(&d.dir).map_err(|e| {
            LifecycleError::failed(format!("Backup {} could not be deleted: {e}", d.id))
        })?;
        let gone: Vec<i64> = backup::dependents(&now_all, d.id)
            .into_iter()
            .filter(|x| now_all.iter().any(|b| b.id == *x && b.state != "succeeded"))
            .collect();
        for x in gone.into_iter().rev() {
            store.delete_backup(x)?;
        }
        store.delete_backup(d.id)?;
        deleted.push(d.id);
    }
    Ok(deleted)
}

/// What a schedule made of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    /// The backup (succeeded or not).
    Backup(Box<BackupRow>),
    /// The snapshot's name.
    Snapshot(String),
}

/// What one due schedule did to one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRun {
    pub schedule: i64,
    pub vm: String,
    /// What was made, or why nothing was.
    pub outcome: Result<Made, String>,
    /// What the keep rules deleted: backups (`#id`) or snapshots (their names).
    pub pruned: Vec<String>,
}

/// The VMs a schedule covers.
fn in_scope(hv: &dyn Hypervisor, s: &crate::store::backups::ScheduleRow) -> LcResult<Vec<String>> {
    let names: Vec<String> = hv.list_vms()?.into_iter().map(|v| v.name).collect();
    Ok(match s.scope.as_str() {
        "vm" => names.into_iter().filter(|n| n == &s.scope_value).collect(),
        "tag" => names
            .into_iter()
            .filter(|n| {
                hv.domain_xml(n)
                    .ok()
                    .and_then(|x| xml::parse_domain(&x).ok())
                    .is_some_and(|d| d.tags.contains(&s.scope_value))
            })
            .collect(),
        _ => names,
    })
}

/// A fresh pause between looks at a running backup, one per backup watched (each backs
/// off on its own).
pub type Pauses<'a> = &'a (dyn Fn() -> Box<dyn Fn()> + Sync);

/// The time, for schedules (a clock tests can set).
pub type Clock<'a> = &'a (dyn Fn() -> i64 + Sync);

/// Runs every schedule due at `now()`: each watched to its end and followed by its keep
/// rules, up to `[backups] scheduled_at_once` backups at a time (never two of one VM). A
/// schedule is marked run before it starts, so a crash never makes it run twice for one
/// slot; one missed while virtdeck was down runs once.
pub fn run_due(ctx: Ctx<'_>, now: Clock<'_>, pause: Pauses<'_>) -> LcResult<Vec<ScheduledRun>> {
    use crate::domain::backup_schedule::{due, Every, Timing};
    let due_now: Vec<_> = ctx
        .store
        .backup_schedules()?
        .into_iter()
        .filter(|s| {
            let timing = Timing {
                every: if s.every == "weekly" {
                    Every::Weekly
                } else {
                    Every::Daily
                },
                weekday: s.weekday,
                at_minute: s.at_minute,
            };
            due(&timing, s.last_run_at, s.created_at, now())
        })
        .collect();
    run_schedules(ctx, &due_now, now, pause)
}

/// Runs schedule `id` now, whatever its times (an admin's "Run now"): the same backups
/// and keep rules as at its next time; it counts as that schedule's last run.
pub fn run_schedule_now(
    ctx: Ctx<'_>,
    id: i64,
    now: Clock<'_>,
    pause: Pauses<'_>,
) -> LcResult<Vec<ScheduledRun>> {
    let s = schedule(ctx.store, id)?;
    run_schedules(ctx, std::slice::from_ref(&s), now, pause)
}

/// Backup schedule `id`, or why there is none.
pub fn schedule(store: &Store, id: i64) -> LcResult<crate::store::backups::ScheduleRow> {
    store
        .backup_schedules()?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| LifecycleError::NotFound(format!("There is no backup schedule #{id}.")))
}

/// One run of each schedule: each marked run first; snapshots taken; then a backup of
/// each VM in the backup schedules' scopes, up to `scheduled_at_once` at a time and never
/// two of one VM, each followed by its schedule's keep rules.
fn run_schedules(
    ctx: Ctx<'_>,
    schedules: &[crate::store::backups::ScheduleRow],
    now: Clock<'_>,
    pause: Pauses<'_>,
) -> LcResult<Vec<ScheduledRun>> {
    let mut out = Vec::new();
    let mut backups = Vec::new();
    for s in schedules {
        ctx.store.set_schedule_run(s.id, now())?;
        let vms = in_scope(ctx.hv, s)?;
        if s.kind == "snapshot" {
            out.extend(
                vms.into_iter()
                    .map(|vm| snapshot_by_schedule(ctx.hv, s, vm, now())),
            );
        } else {
            backups.extend(vms.into_iter().map(|vm| (s, vm)));
        }
    }
    out.extend(at_once(
        backups,
        ctx.cfg.backups.scheduled_at_once as usize,
        |(_, vm)| vm.clone(),
        |(s, vm)| back_up_by_schedule(ctx, s, vm, now, &*pause()),
    ));
    Ok(out)
}

/// A backup schedule's run on one VM: its backup watched to its end, then its keep rules.
fn back_up_by_schedule(
    ctx: Ctx<'_>,
    s: &crate::store::backups::ScheduleRow,
    vm: String,
    now: Clock<'_>,
    pause: &dyn Fn(),
) -> ScheduledRun {
    use crate::domain::backup_schedule::Keep;
    let keep = Keep {
        last: s.keep_last,
        daily: s.keep_daily,
        weekly: s.keep_weekly,
        monthly: s.keep_monthly,
    };
    let actor = format!("schedule #{}", s.id);
    let made = begin(
        ctx,
        &vm,
        &s.pool,
        By {
            actor: &actor,
            now: now(),
        },
        Some(s.id),
    )
    .and_then(|b| watch(ctx.hv, ctx.store, ctx.jobs, b.id, pause, now));
    let pruned = match &made {
        Ok(b) if b.state == "succeeded" => {
            prune(ctx.store, &vm, &s.pool, &keep).unwrap_or_else(|e| {
                tracing::error!(vm, error = %e, "a schedule's keep rules could not be applied");
                Vec::new()
            })
        }
        _ => Vec::new(),
    };
    ScheduledRun {
        schedule: s.id,
        vm,
        outcome: made
            .map(|b| Made::Backup(Box::new(b)))
            .map_err(|e| e.to_string()),
        pruned: pruned.iter().map(|id| format!("#{id}")).collect(),
    }
}

/// Runs `work` on every task, up to `limit` at a time (on scoped threads), never two
/// tasks of the same `key` at once; the results in the tasks' order.
fn at_once<T: Send, R: Send>(
    tasks: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> String + Sync,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    use std::collections::VecDeque;
    use std::sync::{Condvar, Mutex, PoisonError};
    struct Queue<T> {
        waiting: VecDeque<(usize, T)>,
        busy: HashSet<String>,
    }
    let workers = limit.clamp(1, tasks.len().max(1));
    let queue = Mutex::new(Queue {
        waiting: tasks.into_iter().enumerate().collect(),
        busy: HashSet::new(),
    });
    let freed = Condvar::new();
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let (index, task, k) = {
                    let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
                    loop {
                        if q.waiting.is_empty() {
                            return;
                        }
                        let free = q
                            .waiting
                            .iter()
                            .position(|(_, t)| !q.busy.contains(&key(t)));
                        if let Some((index, task)) = free.and_then(|at| q.waiting.remove(at)) {
                            let k = key(&task);
                            q.busy.insert(k.clone());
                            break (index, task, k);
                        }
                        q = freed.wait(q).unwrap_or_else(PoisonError::into_inner);
                    }
                };
                let r = work(task);
                results
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((index, r));
                queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .busy
                    .remove(&k);
                freed.notify_all();
            });
        }
    });
    let mut out = results.into_inner().unwrap_or_else(PoisonError::into_inner);
    out.sort_by_key(|(index, _)| *index);
    out.into_iter().map(|(_, r)| r).collect()
}

/// A snapshot schedule's run on one VM: a snapshot named by the time (a second one in
/// the same second gets `-2`, …), then the schedule's own snapshots beyond its last N
/// deleted, oldest first. A VM that cannot have snapshots (UEFI, raw disks) says why.
fn snapshot_by_schedule(
    hv: &dyn Hypervisor,
    s: &crate::store::backups::ScheduleRow,
    vm: String,
    at: i64,
) -> ScheduledRun {
    use crate::domain::backup_schedule::{snapshot_name, snapshots_beyond};
    let taken = super::changes::snapshots(hv, &vm).and_then(|existing| {
        let base = snapshot_name(s.id, at);
        let name = (1..)
            .map(|n| {
                if n == 1 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                }
            })
            .find(|n| !existing.iter().any(|e| &e.name == n))
            .unwrap_or(base);
        super::changes::create_snapshot(
            hv,
            &vm,
            &super::SnapshotRequest {
                name,
                description: format!("Taken by schedule #{}", s.id),
            },
        )
    });
    let mut pruned = Vec::new();
    if taken.is_ok() {
        let all: Vec<(String, i64)> = super::changes::snapshots(hv, &vm)
            .unwrap_or_default()
            .into_iter()
            .map(|i| (i.name, i.created_at))
            .collect();
        for old in snapshots_beyond(s.id, &all, s.keep_last) {
            match super::changes::delete_snapshot(hv, &vm, &old) {
                Ok(()) => pruned.push(old),
                Err(e) => {
                    tracing::error!(vm, snapshot = old, error = %e, "a scheduled snapshot could not be deleted")
                }
            }
        }
    }
    ScheduledRun {
        schedule: s.id,
        vm,
        outcome: taken
            .map(|i| Made::Snapshot(i.name))
            .map_err(|e| e.to_string()),
        pruned,
    }
}

/// A restore over the VM that was backed up.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RestoredOver {
    pub name: String,
    pub from_backup: i64,
    /// The VM's new disk volumes.
    pub volumes: Vec<String>,
    /// Its former volumes virtdeck had made for it: deleted.
    pub deleted: Vec<String>,
    /// Its former volumes virtdeck did not make: kept, for the admin to delete.
    pub kept: Vec<String>,
}

/// One disk of a planned restore over a VM.
struct RestoredDisk {
    /// The backed-up VM's volume for this disk (a restore over it: its present one).
    old: Option<String>,
    pool: String,
    /// The new volume the backup is read into.
    volume: String,
    capacity: u64,
    /// The newest file of the disk's chain.
    newest: String,
    /// Bytes of the disk's chain.
    chain_bytes: u64,
}

/// A checked restore over a shut-off VM: what [`build_restore_over`] does as a job.
pub struct RestoreOverPlan {
    pub from_backup: i64,
    pub name: String,
    /// Bytes of backup files to read (every file of every disk's chain).
    pub bytes_total: u64,
    uuid: String,
    disks: Vec<RestoredDisk>,
}

/// The part of a new volume's name that marks it as read from backup `id` over a VM.
fn restored_mark(id: i64) -> String {
    format!("-restored-{id}-")
}

/// Checks a restore of backup `id` (with the backups it builds on) over the VM it was
/// taken of: it must be shut off, the same VM (its UUID) with the same disks, each a
/// volume of a pool, and no backup of it running. Changes nothing.
pub fn plan_restore_over(hv: &dyn Hypervisor, store: &Store, id: i64) -> LcResult<RestoreOverPlan> {
    let RestorableChain { all, links, top } = restorable_chain(store, id)?;
    let name = top.vm.clone();
    let vm = find_vm(&hv.list_vms()?, &name)?;
    if vm.uuid != top.vm_uuid {
        return Err(LifecycleError::Conflict(format!(
            "{name} is another VM than the one backed up (its UUID differs); restore the backup as a new VM."
        )));
    }
    if vm.state != crate::domain::vm::VmState::ShutOff {
        return Err(LifecycleError::Conflict(format!(
            "{name} is {}; shut it down before restoring over it.",
            vm.state.label()
        )));
    }
    if all.iter().any(|b| b.vm == name && b.state == "running") {
        return Err(LifecycleError::Conflict(format!(
            "A backup of {name} is running; wait for it to end before restoring over it."
        )));
    }
    let current = xml::parse_domain(&hv.domain_xml(&name)?).map_err(|e| {
        LifecycleError::failed(format!("The VM's definition could not be read: {e}"))
    })?;
    let now_disks: Vec<&str> = current
        .disks
        .iter()
        .filter(|d| d.device == "disk")
        .map(|d| d.target.as_str())
        .collect();
    let backed: Vec<&str> = top.files.iter().map(|f| f.disk.as_str()).collect();
    if now_disks.len() != backed.len() || now_disks.iter().any(|d| !backed.contains(d)) {
        return Err(LifecycleError::Conflict(format!(
            "{name}'s disks changed since backup {id} (now {}, then {}); restore it as a new VM.",
            now_disks.join(", "),
            backed.join(", ")
        )));
    }
    let pools = hv.pools()?;
    let mut disks = Vec::new();
    for f in &top.files {
        let Some(old) = current
            .disks
            .iter()
            .find(|d| d.target == f.disk)
            .and_then(|d| d.source.clone())
        else {
            continue;
        };
        let pool = pools
            .iter()
            .find(|p| p.volumes.iter().any(|v| v.path == old))
            .ok_or_else(|| {
                LifecycleError::Conflict(format!(
                    "Disk {} ({old}) is not a volume of a pool; restore the backup as a new VM.",
                    f.disk
                ))
            })?;
        let volume = (1..)
            .map(|n| format!("{name}-{}{}{n}.qcow2", f.disk, restored_mark(id)))
            .find(|v| !pool.volumes.iter().any(|x| &x.name == v))
            .unwrap_or_default();
        let chain_bytes = chain_bytes(&links, &f.disk);
        disks.push(RestoredDisk {
            old: Some(old),
            pool: pool.name.clone(),
            volume,
            capacity: f.capacity,
            newest: f.path.clone(),
            chain_bytes,
        });
    }
    Ok(RestoreOverPlan {
        from_backup: id,
        name,
        bytes_total: disks.iter().map(|d| d.chain_bytes).sum(),
        uuid: vm.uuid,
        disks,
    })
}

/// Restores a planned backup over its VM (run as the job holding the VM): the backup is
/// read into new volumes first (progress told to `watch`, which can cancel between
/// disks); only when the VM, still shut off, is defined on them are its former volumes
/// dealt with, so a failure or a cancel leaves the VM as it was.
pub fn build_restore_over(
    hv: &dyn Hypervisor,
    store: &Store,
    plan: RestoreOverPlan,
    watch: &dyn super::changes::CloneWatch,
) -> LcResult<RestoredOver> {
    let RestoreOverPlan {
        from_backup: id,
        name,
        uuid,
        disks,
        ..
    } = plan;
    let mut made = Vec::new();
    let mut map = HashMap::new();
    let mut done_bytes = 0u64;
    let built: Result<(), String> = (|| {
        for d in &disks {
            if watch.cancelled() {
                return Err("the restore was cancelled".into());
            }
            watch.step(
                &format!("reading the backup into {}", d.volume),
                Some((&d.pool, &d.volume)),
                done_bytes,
            );
            let path = hv
                .create_volume(
                    &d.pool,
                    &xml::volume_copy_xml(&d.volume, d.capacity, DiskFormat::Qcow2),
                )
                .map_err(|e| {
                    format!(
                        "a disk volume could not be made: {}",
                        reason_in_plain_words(&e)
                    )
                })?;
            made.push(path.clone());
            // Recorded as the VM's at once, so a restart can find and remove it.
            if let Err(e) = store.record_vm_volume(&name, &path, DiskFormat::Qcow2.as_str(), None) {
                tracing::error!(vm = name, path, error = %e, "could not record a restored disk's volume");
            }
            let before = done_bytes;
            backup_files::read_chain_into(
                &d.newest,
                &path,
                "qcow2",
                &|p| watch.copied(before + (d.chain_bytes as f64 * p) as u64),
                &|| watch.cancelled(),
            )
            .map_err(|e| match e {
                backup_files::BackupFileError::Stopped => "the restore was cancelled".to_string(),
                e => format!("reading the backup into the disk failed: {e}"),
            })?;
            done_bytes += d.chain_bytes;
            if let Some(old) = &d.old {
                map.insert(old.clone(), path);
            }
        }
        if watch.cancelled() {
            return Err("the restore was cancelled".into());
        }
        watch.step("putting the VM on the restored disks", None, done_bytes);
        // Held by this job, but a VM can be started outside virtdeck: look again.
        let vms = hv.list_vms().map_err(|e| reason_in_plain_words(&e))?;
        let vm = find_vm(&vms, &name).map_err(|e| e.to_string())?;
        if vm.state != crate::domain::vm::VmState::ShutOff || vm.uuid != uuid {
            return Err(format!(
                "{name} was started or replaced while the backup was read"
            ));
        }
        // The VM's checkpoints name its present disks' bitmaps: they go, the next backup
        // is full.
        for cp in hv.checkpoints(&name).unwrap_or_default() {
            if cp.starts_with("virtdeck-") {
                let _ = hv.delete_checkpoint(&name, &cp);
            }
        }
        let current_xml = hv
            .domain_xml(&name)
            .map_err(|e| reason_in_plain_words(&e))?;
        let edits = CloneEdits {
            name: name.clone(),
            uuid: uuid.clone(),
            macs: HashMap::new(),
            disks: map.clone(),
            logs: HashMap::new(),
            disk_format: Some(DiskFormat::Qcow2.as_str().to_string()),
            ejected: Vec::new(),
        };
        let new_xml = clone_domain_xml(&current_xml, &edits).map_err(|e| e.to_string())?;
        hv.define(&new_xml).map_err(|e| {
            format!(
                "the VM's definition could not be changed: {}",
                reason_in_plain_words(&e)
            )
        })
    })();
    if let Err(why) = built {
        for path in &made {
            if let Err(e) = hv.delete_volume(path) {
                tracing::error!(vm = name, path, error = %e, "could not delete a failed restore's volume");
            }
            let _ = store.forget_made_volume(path);
        }
        return Err(if watch.cancelled() {
            LifecycleError::Conflict(format!(
                "The restore over {name} was cancelled; {name} is as it was."
            ))
        } else {
            LifecycleError::failed(format!(
                "Backup {id} could not be restored over {name}: {why}. {name} is as it was."
            ))
        });
    }
    let ours: HashSet<String> = store
        .vm_volumes(&name)?
        .into_iter()
        .map(|v| v.path)
        .collect();
    let (mut deleted, mut kept) = (Vec::new(), Vec::new());
    for old in map.keys() {
        if ours.contains(old) && hv.delete_volume(old).is_ok() {
            let _ = store.forget_made_volume(old);
            deleted.push(old.clone());
        } else {
            kept.push(old.clone());
        }
    }
    Ok(RestoredOver {
        name,
        from_backup: id,
        volumes: map.into_values().collect(),
        deleted,
        kept,
    })
}

/// At start-up, for a restore over `vm` from backup `id` that a restart cut off: the
/// volumes it had read the backup into (`in_progress`, the one it was making, among them)
/// are deleted unless the VM's definition already uses them (the restore had then ended).
/// Returns what was done, in a few words.
pub fn clean_cut_restore_over(
    hv: &dyn Hypervisor,
    store: &Store,
    vm: &str,
    id: i64,
    in_progress: Option<String>,
) -> String {
    let used: HashSet<String> = hv
        .domain_xml(vm)
        .ok()
        .and_then(|x| xml::parse_domain(&x).ok())
        .map(|d| d.disks.into_iter().filter_map(|d| d.source).collect())
        .unwrap_or_default();
    let mark = restored_mark(id);
    let read: Vec<String> = store
        .vm_volumes(vm)
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.path)
        .filter(|p| p.contains(&mark))
        .chain(in_progress)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !read.is_empty() && read.iter().all(|p| used.contains(p)) {
        return format!(
            "{vm} had already been put on the restored disks; its former volumes are kept"
        );
    }
    let mut deleted = Vec::new();
    for path in read.iter().filter(|p| !used.contains(*p)) {
        match hv.delete_volume(path) {
            Ok(()) | Err(crate::hypervisor::HypervisorError::NotFound { .. }) => {
                let _ = store.forget_made_volume(path);
                deleted.push(path.clone());
            }
            Err(e) => {
                tracing::error!(vm, path, error = %e, "could not delete a cut-off restore's volume")
            }
        }
    }
    if deleted.is_empty() {
        format!("{vm} is as it was")
    } else {
        format!(
            "{vm} is as it was; the volumes read so far were deleted ({})",
            deleted.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_runs_at_once_and_never_two_of_one_key() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let busy_keys = Mutex::new(HashSet::new());
        let tasks: Vec<(usize, &str)> = vec![
            (0, "a"),
            (1, "a"),
            (2, "b"),
            (3, "c"),
            (4, "a"),
            (5, "d"),
            (6, "b"),
        ];
        for limit in [1, 2, 3] {
            most.store(0, Ordering::SeqCst);
            let out = at_once(
                tasks.clone(),
                limit,
                |(_, k)| k.to_string(),
                |(i, k)| {
                    assert!(busy_keys.lock().unwrap().insert(k), "{k} twice at once");
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    busy_keys.lock().unwrap().remove(k);
                    i * 10
                },
            );
            assert_eq!(out, vec![0, 10, 20, 30, 40, 50, 60], "in the tasks' order");
            assert_eq!(most.load(Ordering::SeqCst), limit, "limit {limit}");
        }
        assert_eq!(
            at_once(Vec::<(usize, &str)>::new(), 4, |_| String::new(), |t| t),
            vec![]
        );
    }
    use crate::store::backups::NewBackup;

    #[test]
    fn a_backup_is_verified_once_its_checksums_are_recorded_after_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vda.qcow2");
        std::fs::write(&file, b"backed-up bytes").unwrap();
        let path = file.display().to_string();
        let store = Store::open_in_memory().unwrap();
        let id = store
            .insert_backup(&NewBackup {
                vm: "web01",
                vm_uuid: "",
                kind: "full",
                parent: None,
                checkpoint: "",
                pool: "bk",
                dir: &dir.path().display().to_string(),
                why_full: "",
                definition: "",
                units: 1,
                created_by: "test",
                created_at: 1,
                schedule: None,
                consistency: "clean",
                message: "",
                files: vec![("vda".into(), path.clone(), 1 << 30)],
            })
            .unwrap();
        let row = store.backup(id).unwrap().unwrap();
        let sealed = seal(&store, &row).unwrap();
        assert_eq!(sealed, vec![("vda".to_string(), 15, String::new())]);
        store
            .finish_backup(id, "succeeded", "", &sealed, 2)
            .unwrap();
        assert_eq!(without_checksums(&store), vec![id]);
        let early = verify(&store, id).unwrap();
        assert!(!early.ok, "{early:?}");
        assert!(early.files[0].1.contains("no checksum yet"), "{early:?}");

        record_checksums(&store, id);
        assert!(without_checksums(&store).is_empty());
        let checked = verify(&store, id).unwrap();
        assert!(checked.ok, "{checked:?}");
        std::fs::write(&file, b"changed bytes!!").unwrap();
        let changed = verify(&store, id).unwrap();
        assert!(
            !changed.ok && changed.files[0].1.contains("DIFFERS"),
            "{changed:?}"
        );
        // A checksum once recorded is not replaced.
        record_checksums(&store, id);
        assert!(!verify(&store, id).unwrap().ok);
    }
}
