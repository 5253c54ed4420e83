//! Backups: targets (admins), backing up now and watching the job to its end, restoring
//! as a new VM, verifying, deleting (admins).

use super::{execute, Action, Caller, Denied, Op, Services};
use crate::lifecycle::backups::{self, RestoreRequest, Restored, TargetView, Verified};
use crate::lifecycle::{By, LcResult};
use crate::store::backups::BackupRow;
use std::sync::Arc;
use std::time::Duration;

type Done<T> = Result<LcResult<T>, Denied>;

/// How often a running backup's job is looked at.
const BACKUP_POLL: Duration = Duration::from_millis(200);

/// Names a pool a backup target, or no longer.
pub async fn set_target(
    svc: &Arc<Services>,
    caller: &Caller,
    pool: &str,
    on: bool,
) -> Done<Vec<TargetView>> {
    let (p, actor) = (pool.to_string(), caller.username.clone());
    execute(
        svc,
        caller,
        Op::admin(
            Action::BackupTarget,
            pool,
            move |s| {
                backups::set_target(
                    s.hv.as_ref(),
                    &s.store,
                    &p,
                    on,
                    By {
                        actor: &actor,
                        now: super::now(),
                    },
                )
            },
            move |_| if on { "added" } else { "removed" }.to_string(),
        ),
    )
    .await
}

/// Begins a backup of the running VM into `pool`; a thread watches it to its end and
/// writes the end into the audit log.
pub async fn backup_now(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    pool: &str,
) -> Done<BackupRow> {
    let (n, p, actor) = (name.to_string(), pool.to_string(), caller.username.clone());
    let watcher = svc.clone();
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmBackup,
            name,
            move |s| {
                let row = backups::begin(
                    s.lc(),
                    &n,
                    &p,
                    By {
                        actor: &actor,
                        now: super::now(),
                    },
                )?;
                watch(watcher, row.id, actor.clone());
                Ok(row)
            },
            |b| {
                format!(
                    "backup {} ({}{}) to {}",
                    b.id,
                    b.kind,
                    if b.why_full.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", b.why_full)
                    },
                    b.pool
                )
            },
        ),
    )
    .await
}

/// Watches backup `id` on a thread of its own until it ends.
fn watch(svc: Arc<Services>, id: i64, actor: String) {
    let spawned = std::thread::Builder::new()
        .name(format!("backup-{id}"))
        .spawn(move || {
            let ended = backups::watch(
                svc.hv.as_ref(),
                &svc.store,
                id,
                &|| std::thread::sleep(BACKUP_POLL),
                &super::now,
            );
            let (vm, result, detail) = match ended {
                Ok(b) => (
                    b.vm.clone(),
                    if b.state == "succeeded" {
                        "ok"
                    } else {
                        "failed"
                    },
                    if b.state == "succeeded" {
                        format!("backup {id} ({}) done: {} bytes", b.kind, b.bytes)
                    } else {
                        b.message.clone()
                    },
                ),
                Err(e) => (String::new(), "failed", e.to_string()),
            };
            super::audit::append(
                &svc.store,
                crate::store::AuditEntry {
                    at: super::now(),
                    actor,
                    remote_addr: "local".into(),
                    action: "vm.backup.end".into(),
                    target: vm,
                    result: result.into(),
                    detail,
                },
            );
        });
    if let Err(e) = spawned {
        tracing::error!(backup = id, error = %e, "the backup's watcher could not start");
    }
}

/// Restores a backup as a new VM.
pub async fn restore(
    svc: &Arc<Services>,
    caller: &Caller,
    id: i64,
    req: RestoreRequest,
) -> Done<Restored> {
    let actor = caller.username.clone();
    let target = req.name.trim().to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::BackupRestore,
            target,
            move |s| {
                backups::restore_new(
                    s.lc(),
                    id,
                    &req,
                    By {
                        actor: &actor,
                        now: super::now(),
                    },
                )
            },
            move |r| {
                format!(
                    "from backup {}: {} units, {}",
                    r.from_backup,
                    r.units,
                    r.volumes.join(", ")
                )
            },
        ),
    )
    .await
}

/// Re-reads a backup's chain and compares checksums.
pub async fn verify(svc: &Arc<Services>, caller: &Caller, id: i64) -> Done<Verified> {
    execute(
        svc,
        caller,
        Op::operator(
            Action::BackupVerify,
            id.to_string(),
            move |s| backups::verify(&s.store, id),
            |v| {
                if v.ok {
                    "checksums match".into()
                } else {
                    "CHECKSUMS DIFFER".into()
                }
            },
        ),
    )
    .await
}

/// Deletes a backup (admins); one that later incrementals need is refused.
pub async fn delete(svc: &Arc<Services>, caller: &Caller, id: i64) -> Done<BackupRow> {
    execute(
        svc,
        caller,
        Op::admin(
            Action::BackupDelete,
            id.to_string(),
            move |s| backups::delete(s.hv.as_ref(), &s.store, id),
            |b| format!("backup {} of {} ({})", b.id, b.vm, b.kind),
        ),
    )
    .await
}
