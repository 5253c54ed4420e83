//! Backups: targets (admins), backing up now and watching the job to its end, restoring
//! as a new VM, verifying, deleting (admins); schedules (admins) and their scheduler.

use super::runner;
use super::{execute, Action, Caller, Denied, Op, Services};
use crate::domain::backup_schedule::{self as schedule, Every, Keep, ScheduleKind, Timing};
use crate::lifecycle::backup_records::{self, ScanReport};
use crate::lifecycle::backups::{self, RestoreRequest, Restored, TargetView, Verified};
use crate::lifecycle::jobs::{self, RunningJob};
use crate::lifecycle::{By, LcResult};
use crate::store::backups::{BackupRow, ScheduleRow};
use crate::store::jobs::JobRow;
use std::sync::Arc;
use std::time::Duration;

type Done<T> = Result<LcResult<T>, Denied>;

/// How often a running backup's job is looked at, at most.
const BACKUP_POLL: Duration = Duration::from_millis(100);

/// How often it is looked at during its first seconds.
const BACKUP_POLL_FIRST: Duration = Duration::from_millis(10);

/// How many looks at [`BACKUP_POLL_FIRST`] (ten seconds' worth) before the pause doubles
/// up to [`BACKUP_POLL`].
const BACKUP_FIRST_LOOKS: u32 = 1000;

/// A fresh [`backup_pause`] for each scheduled backup.
fn pauses() -> Box<dyn Fn()> {
    Box::new(backup_pause())
}

/// The pause between looks at a running backup job: 10 ms for its first ten seconds (a
/// short job, such as an incremental or a small disk, is seen ending at once), then doubling up to
/// [`BACKUP_POLL`], so a long one is not asked about more than ten times a second.
fn backup_pause() -> impl Fn() {
    let looks = std::cell::Cell::new(0u32);
    let next = std::cell::Cell::new(BACKUP_POLL_FIRST);
    move || {
        let pause = next.get();
        std::thread::sleep(pause);
        looks.set(looks.get().saturating_add(1));
        if looks.get() >= BACKUP_FIRST_LOOKS {
            next.set((pause * 2).min(BACKUP_POLL));
        }
    }
}

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
                    None,
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
                &svc.jobs,
                id,
                &backup_pause(),
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

/// Restores a backup as a new VM, as a job: checked and admitted now, its disks read
/// from the backup on a thread of its own (progress and Cancel on the Jobs page); a
/// failure or a cancel removes what it made.
pub async fn restore(
    svc: &Arc<Services>,
    caller: &Caller,
    id: i64,
    req: RestoreRequest,
) -> Done<JobRow> {
    let (actor, job_actor, runner_svc) = (caller.username.clone(), caller.actor(), svc.clone());
    let target = req.name.trim().to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::BackupRestore,
            target,
            move |s| {
                let plan = backups::plan_restore(
                    s.lc(),
                    id,
                    &req,
                    By {
                        actor: &actor,
                        now: super::now(),
                    },
                )?;
                let (job, cancel) = jobs::begin_restore(runner::job_ctx(s), &plan, &job_actor)?;
                runner::spawn_clone(
                    &runner_svc,
                    RunningJob {
                        job: job.clone(),
                        cancel,
                        actor: job_actor,
                    },
                    Action::BackupRestore.as_str(),
                    move |s, watch| backups::build_restore(s.hv.as_ref(), &s.store, plan, watch),
                    |r: &Restored| {
                        format!(
                            "Restored from backup {} as {} (shut off): {} unit{}, {}.",
                            r.from_backup,
                            r.name,
                            r.units,
                            if r.units == 1 { "" } else { "s" },
                            r.volumes.join(", ")
                        )
                    },
                )?;
                Ok(job)
            },
            |job: &JobRow| {
                format!(
                    "job {} started: restoring {} as {}",
                    job.id, job.source, job.vm
                )
            },
        ),
    )
    .await
}

/// Restores a backup over the shut-off VM it was taken of, as a job that holds the VM
/// (no start, change or backup of it until the job ends): checked now, the backup read
/// into new volumes on a thread of its own (progress and Cancel on the Jobs page), the
/// VM then put on them; a failure, a cancel or a restart leaves the VM as it was.
pub async fn restore_over(svc: &Arc<Services>, caller: &Caller, id: i64, vm: &str) -> Done<JobRow> {
    let (job_actor, runner_svc) = (caller.actor(), svc.clone());
    execute(
        svc,
        caller,
        Op::operator(
            Action::BackupRestore,
            vm,
            move |s| {
                let plan = backups::plan_restore_over(s.hv.as_ref(), &s.store, id)?;
                let (job, cancel) =
                    jobs::begin_restore_over(runner::job_ctx(s), &plan, &job_actor)?;
                let run = RunningJob {
                    job: job.clone(),
                    cancel,
                    actor: job_actor,
                };
                runner::spawn(&runner_svc, &job, move |s| {
                    jobs::run_clone(
                        runner::job_ctx(s),
                        run,
                        Action::BackupRestore.as_str(),
                        |watch| {
                            backups::build_restore_over(s.hv.as_ref(), &s.store, plan, watch)
                        },
                        |r: &backups::RestoredOver| {
                            format!(
                                "{} is back to backup {} (shut off): {}.{}",
                                r.name,
                                r.from_backup,
                                r.volumes.join(", "),
                                if r.kept.is_empty() {
                                    String::new()
                                } else {
                                    format!(
                                        " Its former volumes {} were not made by virtdeck and are kept; delete them from their pool when sure.",
                                        r.kept.join(", ")
                                    )
                                }
                            )
                        },
                    )
                })?;
                Ok(job)
            },
            |job: &JobRow| {
                format!(
                    "job {} started: restoring {} over {}",
                    job.id, job.source, job.vm
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

/// Looks for backups on target `pool` that are not listed and adds those whose record,
/// definition and files pass their checks (admins); checksums that chaining changed are
/// computed again on a thread of their own.
pub async fn scan_target(svc: &Arc<Services>, caller: &Caller, pool: &str) -> Done<ScanReport> {
    let (p, actor) = (pool.to_string(), caller.username.clone());
    let done = execute(
        svc,
        caller,
        Op::admin(
            Action::BackupTarget,
            pool,
            move |s| {
                backup_records::scan_target(
                    s.lc(),
                    &p,
                    By {
                        actor: &actor,
                        now: super::now(),
                    },
                )
            },
            |r| {
                format!(
                    "looked for backups: {} added {:?}, {} listed already, {} skipped",
                    r.added.len(),
                    r.added,
                    r.known,
                    r.skipped.len()
                )
            },
        ),
    )
    .await;
    if matches!(&done, Ok(Ok(r)) if !r.added.is_empty()) {
        record_missing_checksums(svc);
    }
    done
}

/// At start-up, on a thread of its own: the checksums of backups that ended while
/// virtdeck stopped before writing them.
pub fn record_missing_checksums(svc: &Arc<Services>) {
    let store = svc.store.clone();
    let spawned = std::thread::Builder::new()
        .name("backup-checksums".into())
        .spawn(move || {
            for id in backups::without_checksums(&store) {
                backups::record_checksums(&store, id);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the backups' checksums could not be computed");
    }
}

/// How often the scheduler looks for due schedules.
const SCHEDULER_TICK: Duration = Duration::from_secs(30);

/// Runs due backup schedules on a thread of its own (up to `[backups] scheduled_at_once`
/// backups at a time), until the services are gone; the first look is at once (a schedule
/// missed while virtdeck was down runs now).
pub fn start_scheduler(svc: &Arc<Services>) {
    let weak = Arc::downgrade(svc);
    let spawned = std::thread::Builder::new()
        .name("backup-schedules".into())
        .spawn(move || loop {
            let Some(svc) = weak.upgrade() else { return };
            {
                let _one_at_a_time = svc
                    .schedule_runs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match backups::run_due(svc.lc(), &super::now, &pauses) {
                    Ok(runs) => record_runs(&svc, runs),
                    Err(e) => tracing::error!(error = %e, "backup schedules could not run"),
                }
            }
            drop(svc);
            std::thread::sleep(SCHEDULER_TICK);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the backup scheduler could not start");
    }
}

/// Each scheduled backup's end, in the audit log.
fn record_runs(svc: &Services, runs: Vec<backups::ScheduledRun>) {
    for run in runs {
        let pruned = if run.pruned.is_empty() {
            String::new()
        } else {
            format!("; keep rules deleted {}", run.pruned.join(", "))
        };
        let (action, result, detail) = match &run.outcome {
            Ok(backups::Made::Backup(b)) if b.state == "succeeded" => (
                "vm.backup.scheduled",
                "ok",
                format!("backup {} ({}){pruned}", b.id, b.kind),
            ),
            Ok(backups::Made::Backup(b)) => ("vm.backup.scheduled", "failed", b.message.clone()),
            Ok(backups::Made::Snapshot(name)) => (
                "vm.snapshot.scheduled",
                "ok",
                format!("snapshot {name}{pruned}"),
            ),
            Err(why) => ("vm.schedule.run", "failed", why.clone()),
        };
        super::audit::append(
            &svc.store,
            crate::store::AuditEntry {
                at: super::now(),
                actor: format!("schedule #{}", run.schedule),
                remote_addr: "local".into(),
                action: action.into(),
                target: run.vm,
                result: result.into(),
                detail,
            },
        );
    }
}

/// Runs schedule `id` now (admins), on a thread of its own: its backups appear on the
/// Backups page as they start, its keep rules apply after each. While another schedule
/// runs it waits for it, so scheduled backups stay within `[backups] scheduled_at_once`.
pub async fn run_schedule_now(svc: &Arc<Services>, caller: &Caller, id: i64) -> Done<i64> {
    let runner = svc.clone();
    execute(
        svc,
        caller,
        Op::admin(
            Action::BackupSchedule,
            format!("#{id}"),
            move |s| {
                backups::schedule(&s.store, id)?;
                let spawned = std::thread::Builder::new()
                    .name(format!("backup-schedule-{id}"))
                    .spawn(move || {
                        let _one_at_a_time = runner
                            .schedule_runs
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        match backups::run_schedule_now(runner.lc(), id, &super::now, &pauses)
                        {
                            Ok(runs) => record_runs(&runner, runs),
                            Err(e) => {
                                tracing::error!(schedule = id, error = %e, "a backup schedule could not run")
                            }
                        }
                    });
                spawned.map_err(|e| {
                    crate::lifecycle::LifecycleError::failed(format!(
                        "The schedule could not be started: {e}"
                    ))
                })?;
                Ok(id)
            },
            |id| format!("#{id} run now"),
        ),
    )
    .await
}

/// A new backup schedule.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// Backups into a target (the default) or snapshots inside the VMs' disks.
    #[serde(default)]
    pub kind: ScheduleKind,
    /// One VM (`vm`), the VMs with a tag (`tag`), or every VM of the host (`all`).
    pub scope: String,
    /// The VM or the tag.
    #[serde(default)]
    pub scope_value: String,
    /// A backup target (a backup schedule's; a snapshot schedule has none).
    #[serde(default)]
    pub pool: String,
    pub every: Every,
    /// Weekly: 0 Monday … 6 Sunday.
    #[serde(default)]
    pub weekday: u32,
    /// `HH:MM`, UTC.
    pub at: String,
    #[serde(default)]
    pub keep: Keep,
}

/// Adds a backup schedule (admins).
pub async fn create_schedule(
    svc: &Arc<Services>,
    caller: &Caller,
    req: ScheduleRequest,
) -> Done<ScheduleRow> {
    let actor = caller.username.clone();
    execute(
        svc,
        caller,
        Op::admin(
            Action::BackupSchedule,
            format!("{} {}", req.scope, req.scope_value)
                .trim()
                .to_string(),
            move |s| {
                use crate::domain::create_plan::field;
                use crate::lifecycle::LifecycleError;
                let mut errors = Vec::new();
                let at_minute = schedule::parse_time(&req.at);
                if at_minute.is_none() {
                    errors.push(field("at", "Give the time as HH:MM (UTC), 00:00 to 23:59."));
                }
                let value = req.scope_value.trim().to_string();
                match req.scope.as_str() {
                    "all" => {}
                    "vm" | "tag" if !value.is_empty() => {}
                    "vm" | "tag" => errors.push(field("scope_value", "Name the VM or the tag.")),
                    _ => errors.push(field("scope", "Choose one VM, a tag, or every VM.")),
                }
                let timing = Timing {
                    every: req.every,
                    weekday: req.weekday,
                    at_minute: at_minute.unwrap_or(0),
                };
                let checked = match req.kind {
                    ScheduleKind::Backup => {
                        if !s
                            .store
                            .backup_targets()?
                            .iter()
                            .any(|t| t == req.pool.trim())
                        {
                            errors.push(field("pool", "Choose one of the backup targets."));
                        }
                        schedule::check(&timing, &req.keep)
                    }
                    ScheduleKind::Snapshot => {
                        if !req.pool.trim().is_empty() {
                            errors.push(field(
                                "pool",
                                "Snapshots stay inside the VMs' disks: a snapshot schedule has no backup target.",
                            ));
                        }
                        schedule::check(&timing, &req.keep)
                            .and_then(|()| schedule::check_snapshot_keep(&req.keep))
                    }
                };
                if let Err(more) = checked {
                    errors.extend(more);
                }
                if !errors.is_empty() {
                    return Err(LifecycleError::Invalid(errors));
                }
                let mut row = ScheduleRow {
                    id: 0,
                    kind: req.kind.as_str().into(),
                    scope: req.scope.clone(),
                    scope_value: if req.scope == "all" {
                        String::new()
                    } else {
                        value
                    },
                    pool: req.pool.trim().to_string(),
                    every: if req.every == Every::Weekly {
                        "weekly"
                    } else {
                        "daily"
                    }
                    .into(),
                    weekday: req.weekday,
                    at_minute: timing.at_minute,
                    keep_last: req.keep.last,
                    keep_daily: req.keep.daily,
                    keep_weekly: req.keep.weekly,
                    keep_monthly: req.keep.monthly,
                    last_run_at: None,
                    created_by: actor.clone(),
                    created_at: super::now(),
                };
                row.id = s.store.insert_backup_schedule(&row)?;
                Ok(row)
            },
            |r| {
                format!(
                    "#{}: {} {}s at {:02}:{:02} UTC{}",
                    r.id,
                    r.every,
                    r.kind,
                    r.at_minute / 60,
                    r.at_minute % 60,
                    if r.pool.is_empty() {
                        String::new()
                    } else {
                        format!(" to {}", r.pool)
                    }
                )
            },
        ),
    )
    .await
}

/// Removes a backup schedule (admins); its backups stay.
pub async fn delete_schedule(svc: &Arc<Services>, caller: &Caller, id: i64) -> Done<i64> {
    execute(
        svc,
        caller,
        Op::admin(
            Action::BackupSchedule,
            format!("#{id}"),
            move |s| {
                if s.store.delete_backup_schedule(id)? {
                    Ok(id)
                } else {
                    Err(crate::lifecycle::LifecycleError::NotFound(format!(
                        "There is no backup schedule #{id}."
                    )))
                }
            },
            |id| format!("#{id} removed"),
        ),
    )
    .await
}
