//! The record beside each backup's files (`domain::backup_record`): written when a backup
//! ends and whenever its chain or checksums change; read back when an admin asks virtdeck
//! to look for backups on a target that another virtdeck (or this one, before its
//! database was lost) wrote there.

use super::changes::locked;
use super::{field, By, Ctx, LcResult, LifecycleError};
use crate::adapters::backup_files;
use crate::domain::backup_record::{
    check_foreign_definition, disks_without_files, place_in_target, BackupRecord, RecordFile,
    DEFINITION_FILE, RECORD_FILE, RECORD_FORMAT,
};
use crate::domain::xml;
use crate::hypervisor::Hypervisor;
use crate::store::backups::{BackupRow, NewBackup};
use crate::store::Store;
use serde::Serialize;
use std::collections::HashMap;

/// The record of backup `row` as it ends with `files` ((disk, bytes, sha256)).
fn record_of(
    store: &Store,
    row: &BackupRow,
    files: &[(String, u64, String)],
    finished_at: Option<i64>,
) -> BackupRecord {
    let parent = row
        .parent
        .and_then(|p| store.backup(p).ok().flatten())
        .and_then(|p| place_in_target(&p.dir));
    BackupRecord {
        format: RECORD_FORMAT,
        vm: row.vm.clone(),
        vm_uuid: row.vm_uuid.clone(),
        kind: row.kind.clone(),
        parent,
        checkpoint: row.checkpoint.clone(),
        consistency: row.consistency.clone(),
        why_full: row.why_full.clone(),
        units: row.units,
        created_by: row.created_by.clone(),
        created_at: row.created_at,
        finished_at,
        files: row
            .files
            .iter()
            .map(|f| {
                let (bytes, sha) = files
                    .iter()
                    .find(|(d, _, _)| d == &f.disk)
                    .map(|(_, b, s)| (*b, s.clone()))
                    .unwrap_or((f.bytes, f.sha256.clone()));
                RecordFile {
                    disk: f.disk.clone(),
                    file: format!("{}.qcow2", f.disk),
                    capacity: f.capacity,
                    bytes,
                    sha256: sha,
                }
            })
            .collect(),
    }
}

/// Writes backup `row`'s record and definition beside its files, as it ends with `files`.
/// Not synced to the disk: it is written again, synced, once its checksums are computed
/// right after ([`rewrite_record`]), and the backup's end waits for no disk flush.
pub fn write_record(
    store: &Store,
    row: &BackupRow,
    files: &[(String, u64, String)],
    finished_at: i64,
) -> Result<(), String> {
    write(store, row, files, finished_at, false)
}

fn write(
    store: &Store,
    row: &BackupRow,
    files: &[(String, u64, String)],
    finished_at: i64,
    sync: bool,
) -> Result<(), String> {
    let rec = record_of(store, row, files, Some(finished_at));
    let json = serde_json::to_string_pretty(&rec).map_err(|e| e.to_string())?;
    backup_files::write_beside(&row.dir, &json, &row.definition, sync).map_err(|e| e.to_string())
}

/// Writes backup `id`'s record again from what the store holds now (its checksums were
/// computed, or its chain changed), synced to the disk.
pub fn rewrite_record(store: &Store, id: i64) {
    let Ok(Some(row)) = store.backup(id) else {
        return;
    };
    if row.state != "succeeded" {
        return;
    }
    let files: Vec<(String, u64, String)> = row
        .files
        .iter()
        .map(|f| (f.disk.clone(), f.bytes, f.sha256.clone()))
        .collect();
    let at = row.finished_at.unwrap_or(row.created_at);
    if let Err(e) = write(store, &row, &files, at, true) {
        tracing::error!(backup = id, error = %e, "the record beside a backup's files could not be written");
    }
}

/// Backup target `pool` as libvirt has it now; 422 at `pool` when it is not a target or
/// is gone.
pub(super) fn target_pool(
    hv: &dyn Hypervisor,
    store: &Store,
    pool: &str,
) -> LcResult<crate::domain::storage::PoolStatus> {
    if !store.backup_targets()?.iter().any(|t| t == pool) {
        return Err(LifecycleError::Invalid(vec![field(
            "pool",
            "Choose one of the backup targets (an admin names them on the Backups page).",
        )]));
    }
    hv.pool_statuses()?
        .into_iter()
        .find(|p| p.name == pool)
        .ok_or_else(|| {
            LifecycleError::Invalid(vec![field("pool", format!("Pool {pool} is gone."))])
        })
}

/// What looking for backups on a target found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ScanReport {
    /// The backups added to the list, oldest first.
    pub added: Vec<i64>,
    /// Backups on the target that were listed already.
    pub known: usize,
    /// Directories that were not taken, each with why.
    pub skipped: Vec<SkippedBackup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SkippedBackup {
    /// `<vm>-<uuid>/<stamp>` under the target's `virtdeck-backups`.
    pub place: String,
    pub reason: String,
}

/// Per disk: (disk, path, capacity), as a backup's row is made with.
type FilePaths = Vec<(String, String, u64)>;
/// Per disk: (disk, bytes, sha256), as a backup's row ends with.
type FileEnds = Vec<(String, u64, String)>;

/// A backup directory whose record and definition passed their checks.
struct Candidate {
    dir: String,
    place: String,
    record: BackupRecord,
    definition: String,
}

fn candidate(dir: &str) -> Result<Candidate, String> {
    let place = place_in_target(dir).ok_or("its directory name is not one virtdeck makes")?;
    let record = BackupRecord::read(&backup_files::read_beside(dir, RECORD_FILE)?)?;
    let definition = backup_files::read_beside(dir, DEFINITION_FILE)?;
    check_foreign_definition(&definition)?;
    let def = xml::parse_domain(&definition)
        .map_err(|e| format!("its definition cannot be read ({e})"))?;
    let bare = disks_without_files(&def, &record);
    if !bare.is_empty() {
        return Err(format!(
            "its definition has disks the backup holds no file for: {}",
            bare.join(", ")
        ));
    }
    if def.uuid != record.vm_uuid || def.name != record.vm {
        return Err("its definition is of another VM than its record".into());
    }
    Ok(Candidate {
        dir: dir.trim_end_matches('/').to_string(),
        place,
        record,
        definition,
    })
}

/// Checks a candidate's files against its record and chains each incremental file to
/// its parent's file here: (disk, path, capacity) and (disk, bytes, sha256) for the
/// store; a checksum is dropped (computed again) when chaining rewrote the file's header.
fn take_files(c: &Candidate, parent: Option<&BackupRow>) -> Result<(FilePaths, FileEnds), String> {
    let mut paths = Vec::new();
    let mut ends = Vec::new();
    for f in &c.record.files {
        let path = format!("{}/{}", c.dir, f.file);
        if !backup_files::is_plain_file(&path) {
            return Err(format!("{} is missing or not a plain file", f.file));
        }
        let facts = backup_files::image_facts(&path)
            .map_err(|e| format!("{} is not a qcow2 file ({e})", f.file))?;
        if facts.data_file {
            return Err(format!("{} keeps its data in another file", f.file));
        }
        if facts.virtual_size != f.capacity {
            return Err(format!(
                "{} holds a disk of {} bytes, its record says {}",
                f.file, facts.virtual_size, f.capacity
            ));
        }
        let mut sha = f.sha256.clone();
        match parent {
            None if facts.backing.is_some() => {
                return Err(format!("{} is full but builds on another file", f.file))
            }
            None => {}
            Some(p) => {
                let pf = p
                    .files
                    .iter()
                    .find(|pf| pf.disk == f.disk)
                    .ok_or_else(|| format!("the backup it builds on has no {}", f.disk))?;
                if facts.backing.as_deref() != Some(pf.path.as_str()) {
                    backup_files::chain_to(&path, &pf.path).map_err(|e| e.to_string())?;
                    sha.clear();
                }
            }
        }
        let bytes = backup_files::size(&path).map_err(|e| e.to_string())?;
        paths.push((f.disk.clone(), path, f.capacity));
        ends.push((f.disk.clone(), bytes, sha));
    }
    Ok((paths, ends))
}

/// Looks for backups in target `pool` that are not listed (written by another virtdeck,
/// or by this one before its database was lost) and adds each whose record, definition
/// and files pass their checks, full ones before the incrementals that build on them.
/// Returns what was added and what was skipped, with why; the added ones whose
/// checksums must be computed again lack them (`without_checksums`).
pub fn scan_target(ctx: Ctx<'_>, pool: &str, by: By<'_>) -> LcResult<ScanReport> {
    let Ctx {
        hv, store, lock, ..
    } = ctx;
    let status = target_pool(hv, store, pool)?;
    let Some(path) = status.target_path.filter(|_| status.active) else {
        return Err(LifecycleError::Conflict(format!(
            "Pool {pool} is not running; start it on the Storage page, then look again."
        )));
    };
    let _guard = locked(lock)?;
    let listed: Vec<BackupRow> = store.backups(None)?;
    let mut report = ScanReport::default();
    let mut waiting: Vec<Candidate> = Vec::new();
    for dir in backup_files::dirs_with_records(&path) {
        let trimmed = dir.trim_end_matches('/');
        if listed
            .iter()
            .any(|b| b.dir.trim_end_matches('/') == trimmed)
        {
            report.known += 1;
            continue;
        }
        match candidate(&dir) {
            Ok(c) => waiting.push(c),
            Err(reason) => report.skipped.push(SkippedBackup {
                place: place_in_target(&dir).unwrap_or(dir),
                reason,
            }),
        }
    }
    waiting.sort_by_key(|c| (c.record.kind != "full", c.record.created_at));
    // A backup's place under the target → its row here, for the incrementals after it.
    let mut here: HashMap<String, BackupRow> = listed
        .into_iter()
        .filter(|b| b.pool == pool && b.state == "succeeded")
        .filter_map(|b| place_in_target(&b.dir).map(|p| (p, b)))
        .collect();
    loop {
        let ready = waiting.iter().position(|c| {
            c.record
                .parent
                .as_ref()
                .is_none_or(|p| here.contains_key(p))
        });
        let Some(i) = ready else { break };
        let c = waiting.remove(i);
        let parent = c.record.parent.as_ref().and_then(|p| here.get(p));
        match take_files(&c, parent)
            .and_then(|(paths, ends)| add(store, pool, &c, parent.map(|p| p.id), paths, &ends, by))
        {
            Ok(row) => {
                report.added.push(row.id);
                here.insert(c.place.clone(), row);
            }
            Err(reason) => report.skipped.push(SkippedBackup {
                place: c.place,
                reason,
            }),
        }
    }
    for c in waiting {
        report.skipped.push(SkippedBackup {
            reason: format!(
                "the backup it builds on ({}) is not on this target, or was skipped",
                c.record.parent.as_deref().unwrap_or_default()
            ),
            place: c.place,
        });
    }
    Ok(report)
}

/// Lists one checked candidate as a succeeded backup.
fn add(
    store: &Store,
    pool: &str,
    c: &Candidate,
    parent: Option<i64>,
    paths: FilePaths,
    ends: &[(String, u64, String)],
    by: By<'_>,
) -> Result<BackupRow, String> {
    let r = &c.record;
    let message = format!(
        "Found on {pool} by {} (the record beside its files).",
        by.actor
    );
    let id = store
        .insert_backup(&NewBackup {
            vm: &r.vm,
            vm_uuid: &r.vm_uuid,
            kind: &r.kind,
            parent,
            checkpoint: &r.checkpoint,
            pool,
            dir: &c.dir,
            why_full: &r.why_full,
            definition: &c.definition,
            units: r.units,
            created_by: &r.created_by,
            created_at: r.created_at,
            schedule: None,
            consistency: &r.consistency,
            message: &message,
            files: paths,
        })
        .map_err(|e| e.to_string())?;
    store
        .finish_backup(
            id,
            "succeeded",
            &message,
            ends,
            r.finished_at.unwrap_or(by.now),
        )
        .map_err(|e| e.to_string())?;
    let row = store
        .backup(id)
        .map_err(|e| e.to_string())?
        .ok_or("its record is gone")?;
    // Its record now names this target's paths for what it builds on.
    rewrite_record(store, id);
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_its_parent_by_its_place_in_the_target() {
        let store = Store::open_in_memory().unwrap();
        let files = vec![(
            "vda".to_string(),
            "/t/virtdeck-backups/web-01234567/1/vda.qcow2".to_string(),
            1u64 << 30,
        )];
        let new = |dir: &str, kind: &str, parent: Option<i64>, files| NewBackup {
            vm: "web",
            vm_uuid: "01234567-89ab-cdef-0123-456789abcdef",
            kind: if kind == "full" {
                "full"
            } else {
                "incremental"
            },
            parent,
            checkpoint: "virtdeck-1",
            pool: "bk",
            dir: if dir == "1" {
                "/t/virtdeck-backups/web-01234567/1"
            } else {
                "/t/virtdeck-backups/web-01234567/2"
            },
            why_full: "",
            definition: "<domain/>",
            units: 2,
            created_by: "admin",
            created_at: 10,
            schedule: None,
            consistency: "crash",
            message: "",
            files,
        };
        let full = store
            .insert_backup(&new("1", "full", None, files.clone()))
            .unwrap();
        let inc = store
            .insert_backup(&new("2", "incremental", Some(full), files))
            .unwrap();
        let row = store.backup(inc).unwrap().unwrap();
        let rec = record_of(
            &store,
            &row,
            &[("vda".into(), 5, "ab".repeat(32))],
            Some(20),
        );
        assert_eq!(rec.parent.as_deref(), Some("web-01234567/1"));
        assert_eq!(rec.files[0].file, "vda.qcow2");
        assert_eq!((rec.files[0].bytes, rec.finished_at), (5, Some(20)));
        // What is written reads back through the checks a scan applies.
        let json = serde_json::to_string(&rec).unwrap();
        assert_eq!(BackupRecord::read(&json), Ok(rec));
    }
}
