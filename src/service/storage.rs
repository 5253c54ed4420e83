//! Storage operations: pools (define, start/stop/refresh/autostart, delete), volumes
//! (create, resize, delete, fetch from a URL, upload), and cancelling a job. Admins make
//! them, except cancelling a clone, which is operators' work.

use super::{check_role, execute, runner, Action, Caller, Denied, Op, Services};
use crate::auth::Role;
use crate::domain::libvirt_network::NetworkRequest;
use crate::domain::storage::{human_bytes, PoolRequest, PoolVolume};
use crate::domain::volumes::{resize_refusal, FetchRequest, JobKind, NewVolumeRequest};
use crate::lifecycle::jobs::{self, RunningJob, Transfer, Upload};
use crate::lifecycle::storage::{
    self as pools, NetworkAction, NetworkChanged, NetworkCreated, NetworkRemoved, PoolAction,
    PoolDefined, PoolDeleted,
};
use crate::lifecycle::volumes::{self as vols, VolumeResized};
use crate::lifecycle::{FieldError, LcResult, LifecycleError};
use crate::store::jobs::JobRow;
use std::sync::Arc;

type Done<T> = Result<LcResult<T>, Denied>;

/// How the audit log names a volume.
pub fn volume_target(pool: &str, name: &str) -> String {
    format!("{pool}/{name}")
}

// ---- pools ----

pub async fn define_pool(
    svc: &Arc<Services>,
    caller: &Caller,
    req: PoolRequest,
) -> Done<PoolDefined> {
    let target = req.name.trim().to_string();
    execute(
        svc,
        caller,
        Op::admin(
            Action::PoolDefine,
            target,
            move |s| pools::define_pool(s.hv.as_ref(), &req, &s.cfg.data_dir),
            |d: &PoolDefined| {
                let mut out = format!("{} pool at {}", d.kind, d.target_path);
                if !d.wiped_devices.is_empty() {
                    out.push_str(&format!(
                        ", volume group built on {} (wiped)",
                        d.wiped_devices.join(", ")
                    ));
                }
                if d.autostart {
                    out.push_str(", autostart on");
                }
                out
            },
        ),
    )
    .await
}

pub async fn pool_action(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    action: PoolAction,
) -> Done<()> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::admin(
            Action::Pool(action),
            name,
            move |s| pools::pool_action(s.hv.as_ref(), &n, action),
            |()| String::new(),
        ),
    )
    .await
}

pub async fn delete_pool(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    delete_contents: bool,
) -> Done<PoolDeleted> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::admin(
            Action::PoolDelete,
            name,
            move |s| pools::delete_pool(s.hv.as_ref(), &n, delete_contents),
            |d: &PoolDeleted| {
                if d.storage_deleted {
                    format!(
                        "contents deleted ({} volume{}{})",
                        d.volumes_deleted.len(),
                        if d.volumes_deleted.len() == 1 {
                            ""
                        } else {
                            "s"
                        },
                        if d.volumes_deleted.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", d.volumes_deleted.join(", "))
                        }
                    )
                } else {
                    "definition removed, contents kept".into()
                }
            },
        ),
    )
    .await
}

// ---- volumes ----

/// Checks and records an empty volume's create, then makes it as a job (started inside
/// the checked step, so a caller that goes away leaves no checked job without a thread).
pub async fn create_volume(
    svc: &Arc<Services>,
    caller: &Caller,
    pool: &str,
    req: NewVolumeRequest,
) -> Done<JobRow> {
    let (p, a, runner_svc) = (pool.to_string(), caller.actor(), svc.clone());
    execute(
        svc,
        caller,
        Op::admin(
            Action::VolumeCreate,
            volume_target(pool, req.name.trim()),
            move |s| {
                let (job, spec, cancel) = jobs::begin_create(runner::job_ctx(s), &p, &req, &a)?;
                let run = RunningJob {
                    job: job.clone(),
                    cancel,
                    actor: a,
                };
                runner::spawn(&runner_svc, &job, move |s| {
                    jobs::run_create(runner::job_ctx(s), run, &spec)
                })?;
                Ok(job)
            },
            |job: &JobRow| format!("job {} started: {}", job.id, job.source),
        ),
    )
    .await
}

pub async fn resize_volume(
    svc: &Arc<Services>,
    caller: &Caller,
    pool: &str,
    name: &str,
    size_gib: Option<u64>,
) -> Done<VolumeResized> {
    let (p, n) = (pool.to_string(), name.to_string());
    execute(
        svc,
        caller,
        Op::admin(
            Action::VolumeResize,
            volume_target(pool, name),
            move |s| {
                let v = vols::volume(s.hv.as_ref(), &p, &n)?;
                if let Some(m) = resize_refusal(&n, v.volume.format.as_deref()) {
                    return Err(LifecycleError::Invalid(vec![FieldError {
                        field: "size_gib",
                        message: m,
                    }]));
                }
                vols::resize_volume(s.hv.as_ref(), &p, &n, size_gib)
            },
            |r: &VolumeResized| {
                format!(
                    "{} → {}",
                    human_bytes(r.previous_bytes),
                    human_bytes(r.capacity_bytes)
                )
            },
        ),
    )
    .await
}

pub async fn delete_volume(
    svc: &Arc<Services>,
    caller: &Caller,
    pool: &str,
    name: &str,
) -> Done<PoolVolume> {
    let (p, n) = (pool.to_string(), name.to_string());
    execute(
        svc,
        caller,
        Op::admin(
            Action::VolumeDelete,
            volume_target(pool, name),
            move |s| vols::delete_volume(s.hv.as_ref(), &s.store, &p, &n),
            |v: &PoolVolume| format!("{} deleted", v.path),
        ),
    )
    .await
}

/// Checks and records a fetch, then runs it on its own thread (started inside the
/// checked step, like a volume create's).
pub async fn fetch_volume(
    svc: &Arc<Services>,
    caller: &Caller,
    pool: &str,
    req: FetchRequest,
) -> Done<JobRow> {
    let (p, a, runner_svc) = (pool.to_string(), caller.actor(), svc.clone());
    execute(
        svc,
        caller,
        Op::admin(
            Action::VolumeFetch,
            volume_target(pool, req.name.trim()),
            move |s| {
                let (job, cancel) =
                    jobs::begin_fetch(runner::job_ctx(s), &s.cfg.images, &p, &req, &a)?;
                let run = RunningJob {
                    job: job.clone(),
                    cancel,
                    actor: a,
                };
                runner::spawn(&runner_svc, &job, move |s| {
                    jobs::run_fetch(runner::job_ctx(s), &s.cfg.images, &s.cfg.fetch, run)
                })?;
                Ok(job)
            },
            |job: &JobRow| format!("job {} started: {}", job.id, job.source),
        ),
    )
    .await
}

/// Checks and records an upload of `length` bytes: the job row and the empty volume,
/// waiting for its bytes (the caller streams them with [`jobs::transfer`]).
pub async fn begin_upload(
    svc: &Arc<Services>,
    caller: &Caller,
    pool: &str,
    name: &str,
    length: u64,
    source: String,
) -> Done<Transfer> {
    let (p, n, a) = (pool.to_string(), name.to_string(), caller.actor());
    execute(
        svc,
        caller,
        Op::admin(
            Action::VolumeUpload,
            volume_target(pool, name),
            move |s| {
                jobs::begin_upload(
                    runner::job_ctx(s),
                    &s.cfg.images,
                    &Upload {
                        pool: &p,
                        name: &n,
                        length,
                        source: &source,
                    },
                    a,
                )
            },
            move |t: &Transfer| format!("job {} started: {length} bytes", t.job_id),
        ),
    )
    .await
}

// ---- jobs ----

/// The role a job's cancel takes: clones and restores are operators' work, volume jobs
/// admins'.
pub fn role_to_cancel(job: &JobRow) -> Role {
    if JobKind::parse(&job.kind).is_some_and(JobKind::on_vm) {
        Role::Operator
    } else {
        Role::Admin
    }
}

/// What a job works on, in a few words.
pub fn describe_job(j: &JobRow) -> String {
    if j.kind == JobKind::Backup.as_str() {
        format!("{} of {} → {}", j.source, j.vm, j.pool)
    } else if JobKind::parse(&j.kind).is_some_and(JobKind::on_vm) {
        format!("{} {} → {}", j.kind, j.source, j.vm)
    } else {
        format!("{} {}/{}", j.kind, j.pool, j.volume)
    }
}

/// Cancels a running job; the role it takes depends on the job's kind.
pub async fn cancel_job(svc: &Arc<Services>, caller: &Caller, id: i64) -> Done<JobRow> {
    let target = format!("job {id}");
    check_role(svc, caller, Role::Operator, Action::JobCancel, &target).await?;
    let s = svc.clone();
    let job = match tokio::task::spawn_blocking(move || s.store.job(id)).await {
        Ok(Ok(Some(job))) => job,
        Ok(Ok(None)) => {
            return Ok(Err(LifecycleError::NotFound(format!(
                "There is no job {id}."
            ))))
        }
        Ok(Err(e)) => return Ok(Err(e.into())),
        Err(e) => return Ok(Err(LifecycleError::failed(format!("internal error: {e}")))),
    };
    execute(
        svc,
        caller,
        Op {
            action: Action::JobCancel,
            target,
            role: role_to_cancel(&job),
            run: move |s: &Services| jobs::cancel(&s.store, &s.jobs, id),
            describe: describe_job,
        },
    )
    .await
}

// ---- libvirt networks ----

/// Creates a NAT or isolated network: defined, started and (if asked) set to start with
/// the host; undone again when a step fails.
pub async fn create_network(
    svc: &Arc<Services>,
    caller: &Caller,
    req: NetworkRequest,
) -> Done<NetworkCreated> {
    let target = req.name.trim().to_string();
    execute(
        svc,
        caller,
        Op::admin(
            Action::NetworkCreate,
            target,
            move |s| pools::create_network(s.hv.as_ref(), &req),
            |c: &NetworkCreated| {
                let mut out = format!("{} network {} (subnet {})", c.mode, c.address, c.subnet);
                match &c.dhcp {
                    Some(r) => out.push_str(&format!(", DHCP {r}")),
                    None => out.push_str(", no DHCP"),
                }
                if c.autostart {
                    out.push_str(", autostart on");
                }
                out
            },
        ),
    )
    .await
}

/// Starts or stops a network, or turns its start with the host on or off (one audit
/// action for autostart on and off; the detail says which).
pub async fn network_action(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    action: NetworkAction,
) -> Done<NetworkChanged> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::admin(
            match action {
                NetworkAction::Start => Action::NetworkStart,
                NetworkAction::Stop => Action::NetworkStop,
                NetworkAction::Autostart(_) => Action::NetworkAutostart,
            },
            name,
            move |s| pools::network_action(s.hv.as_ref(), &n, action),
            move |c: &NetworkChanged| match action {
                NetworkAction::Stop if c.vms_affected.is_empty() => "stopped; no VM used it".into(),
                NetworkAction::Stop => {
                    format!("stopped; VMs that use it: {}", c.vms_affected.join(", "))
                }
                NetworkAction::Start => "started".into(),
                NetworkAction::Autostart(true) => "autostart on".into(),
                NetworkAction::Autostart(false) => "autostart off".into(),
            },
        ),
    )
    .await
}

/// Stops and removes a network (such as libvirt's `default`).
pub async fn remove_network(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
) -> Done<NetworkRemoved> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::admin(
            Action::NetworkRemove,
            name,
            move |s| pools::remove_network(s.hv.as_ref(), &n),
            |r: &NetworkRemoved| {
                if r.vms_affected.is_empty() {
                    "stopped and undefined; no VM used it".into()
                } else {
                    format!(
                        "stopped and undefined; VMs that used it: {}",
                        r.vms_affected.join(", ")
                    )
                }
            },
        ),
    )
    .await
}
