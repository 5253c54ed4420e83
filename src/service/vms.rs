//! VM operations: create, power actions, autostart, resize, clone, snapshots, delete.
//! Operators (and admins) make them; each runs through [`execute`].

use super::{execute, runner, Action, Caller, Denied, Op, Services};
use crate::auth::Role;
use crate::domain::capacity::units_text;
use crate::domain::snapshot::SnapshotInfo;
use crate::domain::templates::CloneMode;
use crate::domain::vm::VmAction;
use crate::lifecycle::jobs::RunningJob;
use crate::lifecycle::{
    self, changes, jobs, By, CloneRequest, CreateVmRequest, Created, Deleted, LcResult, Resized,
    SizeRequest, SnapshotRequest,
};
use crate::store::jobs::JobRow;
use std::sync::Arc;

type Done<T> = Result<LcResult<T>, Denied>;

/// Creates a VM (admission, volumes, define, start), rolled back on any failure.
pub async fn create(svc: &Arc<Services>, caller: &Caller, req: CreateVmRequest) -> Done<Created> {
    let actor = caller.username.clone();
    let name = req.name.trim().to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmCreate,
            name,
            move |s| {
                let by = By {
                    actor: &actor,
                    now: super::now(),
                };
                lifecycle::create(s.lc(), s.virt_type.clone(), &req, by)
            },
            |c: &Created| {
                format!(
                    "{}, {} vCPUs, {} MiB{}{}",
                    units_text(c.units),
                    c.vcpus,
                    c.memory_mib,
                    c.disk_path
                        .as_deref()
                        .map(|d| format!(", disk {d}"))
                        .unwrap_or_default(),
                    if c.started { ", started" } else { "" }
                )
            },
        ),
    )
    .await
}

/// Start, shut down, reboot, force off, pause or resume.
pub async fn act(svc: &Arc<Services>, caller: &Caller, name: &str, action: VmAction) -> Done<()> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::Vm(action),
            name,
            move |s| lifecycle::act(s.hv.as_ref(), &s.store, &n, action),
            |()| String::new(),
        ),
    )
    .await
}

/// Turns the VM's start with the host on or off.
pub async fn set_autostart(svc: &Arc<Services>, caller: &Caller, name: &str, on: bool) -> Done<()> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmAutostart,
            name,
            move |s| {
                // A VM in the start order is started by virtdeck, not libvirt: "on" keeps
                // it there; "off" takes it out.
                let in_order = s.store.start_order()?.iter().any(|o| o.vm == n);
                if in_order && !on {
                    s.store.set_start_order(&n, None)?;
                }
                if !(in_order && on) {
                    s.hv.set_autostart(&n, on)?;
                }
                Ok(())
            },
            move |()| if on { "on" } else { "off" }.to_string(),
        ),
    )
    .await
}

/// Sets a VM's tags and/or notes (kept in its definition).
pub async fn set_labels(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    tags: Option<Vec<String>>,
    notes: Option<String>,
) -> Done<crate::lifecycle::labels::Labelled> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmLabels,
            name,
            move |s| crate::lifecycle::labels::set_labels(s.hv.as_ref(), &n, tags, notes),
            |l| {
                format!(
                    "tags [{}], notes {} characters",
                    l.tags.join(", "),
                    l.notes.chars().count()
                )
            },
        ),
    )
    .await
}

/// Sets a VM's boot order, boot menu, watchdog, RNG and balloon (from its next start).
pub async fn set_devices(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    change: crate::lifecycle::devices::DeviceChange,
) -> Done<crate::lifecycle::devices::DevicesSet> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmDevices,
            name,
            move |s| crate::lifecycle::devices::set_devices(s.hv.as_ref(), &n, change),
            |d| {
                let o = &d.options;
                let boot: Vec<&str> = o.boot.iter().map(|b| b.as_str()).collect();
                format!(
                    "boot {}, menu {}, watchdog {}, rng {}, balloon {}{}",
                    boot.join(","),
                    o.boot_menu,
                    o.watchdog,
                    o.rng,
                    o.balloon,
                    if d.at_next_start {
                        "; from the next start"
                    } else {
                        ""
                    }
                )
            },
        ),
    )
    .await
}

/// Puts an ISO into a VM's CD-ROM drive, or ejects it (`iso` none).
pub async fn change_cdrom(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    target: Option<String>,
    iso: Option<String>,
) -> Done<crate::lifecycle::devices::CdromChanged> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmCdrom,
            name,
            move |s| {
                crate::lifecycle::devices::change_cdrom(
                    s.hv.as_ref(),
                    &s.store,
                    &n,
                    target.as_deref(),
                    iso.as_deref(),
                )
            },
            |c| match &c.iso {
                Some(iso) => format!("{}: {iso}", c.target),
                None => format!("{}: ejected", c.target),
            },
        ),
    )
    .await
}

/// Grows a VM's disk (live while it runs); units follow a disk that takes more of its pool.
pub async fn grow_disk(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    target: &str,
    size_gib: u64,
) -> Done<crate::lifecycle::changes::DiskGrown> {
    let (n, t) = (name.to_string(), target.to_string());
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmDiskGrow,
            name,
            move |s| {
                crate::lifecycle::changes::grow_disk(
                    s.hv.as_ref(),
                    &s.store,
                    &s.lifecycle,
                    &s.admission,
                    &n,
                    &t,
                    size_gib,
                )
            },
            |g| {
                format!(
                    "{} → {} GiB{}, {} units",
                    g.target,
                    g.size_gib,
                    if g.live { " (live)" } else { "" },
                    g.units
                )
            },
        ),
    )
    .await
}

/// Adds a disk (a new volume or a free one) to a VM, live while it runs.
pub async fn add_disk(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    req: crate::domain::vm_attach::AddDiskRequest,
) -> Done<crate::lifecycle::attach::DiskAdded> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmDiskAdd,
            name,
            move |s| {
                crate::lifecycle::attach::add_disk(
                    s.hv.as_ref(),
                    &s.store,
                    &s.lifecycle,
                    &s.admission,
                    &n,
                    &req,
                )
            },
            |d| {
                format!(
                    "{} ({}, {} GiB{}): {}{}, {} units",
                    d.target,
                    d.bus,
                    d.size_gib,
                    if d.new_volume { ", new volume" } else { "" },
                    d.path,
                    if d.live { " (live)" } else { "" },
                    d.units
                )
            },
        ),
    )
    .await
}

/// Takes a disk out of a VM (live while it runs); its volume stays in its pool.
pub async fn detach_disk(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    target: &str,
) -> Done<crate::lifecycle::attach::DiskDetached> {
    let (n, t) = (name.to_string(), target.to_string());
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmDiskDetach,
            name,
            move |s| crate::lifecycle::attach::detach_disk(s.hv.as_ref(), &n, &t),
            |d| {
                format!(
                    "{}{}{}",
                    d.target,
                    d.path
                        .as_deref()
                        .map(|p| format!(": {p} kept"))
                        .unwrap_or_default(),
                    if d.pending_in_guest {
                        "; the guest has not let go yet"
                    } else {
                        ""
                    }
                )
            },
        ),
    )
    .await
}

/// Adds a NIC to a VM on a bridge or libvirt network, live while it runs.
pub async fn add_nic(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    req: crate::domain::vm_attach::AddNicRequest,
) -> Done<crate::lifecycle::attach::NicAdded> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmNicAdd,
            name,
            move |s| {
                crate::lifecycle::attach::add_nic(
                    s.hv.as_ref(),
                    &s.store,
                    &s.lifecycle,
                    &s.admission,
                    &n,
                    &req,
                )
            },
            |a| {
                format!(
                    "{} on {} {} ({}){}",
                    a.mac,
                    a.kind,
                    a.source,
                    a.model,
                    if a.live { " (live)" } else { "" }
                )
            },
        ),
    )
    .await
}

/// Takes a NIC out of a VM (live while it runs).
pub async fn remove_nic(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    mac: &str,
) -> Done<crate::lifecycle::attach::NicChanged> {
    let (n, m) = (name.to_string(), mac.to_string());
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmNicRemove,
            name,
            move |s| crate::lifecycle::attach::remove_nic(s.hv.as_ref(), &n, &m),
            |c| {
                format!(
                    "{}{}",
                    c.mac,
                    if c.pending_in_guest {
                        "; the guest has not let go yet"
                    } else {
                        ""
                    }
                )
            },
        ),
    )
    .await
}

/// Plugs a NIC's cable in or pulls it (live while the VM runs, and in its definition).
pub async fn set_nic_link(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    mac: &str,
    up: bool,
) -> Done<crate::lifecycle::attach::NicChanged> {
    let (n, m) = (name.to_string(), mac.to_string());
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmNicLink,
            name,
            move |s| crate::lifecycle::attach::set_nic_link(s.hv.as_ref(), &n, &m, up),
            |c| format!("{}: link {}", c.mac, if c.link_up { "up" } else { "down" }),
        ),
    )
    .await
}

/// Passes a host device through to a VM (admins).
pub async fn attach_hostdev(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    device: &str,
) -> Done<crate::lifecycle::attach::HostdevChanged> {
    let (n, d) = (name.to_string(), device.to_string());
    execute(
        svc,
        caller,
        Op::admin(
            Action::VmHostdevAttach,
            name,
            move |s| crate::lifecycle::attach::attach_hostdev(s.hv.as_ref(), &n, &d),
            |h| {
                format!(
                    "{} ({}){}",
                    h.address,
                    h.device,
                    if h.live { " (live)" } else { "" }
                )
            },
        ),
    )
    .await
}

/// Gives a passed-through device back to the host (admins).
pub async fn detach_hostdev(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    address: &str,
) -> Done<crate::lifecycle::attach::HostdevChanged> {
    let (n, a) = (name.to_string(), address.to_string());
    execute(
        svc,
        caller,
        Op::admin(
            Action::VmHostdevDetach,
            name,
            move |s| crate::lifecycle::attach::detach_hostdev(s.hv.as_ref(), &n, &a),
            |h| {
                format!(
                    "{}{}",
                    h.address,
                    if h.pending_in_guest {
                        "; the guest has not let go yet"
                    } else {
                        ""
                    }
                )
            },
        ),
    )
    .await
}

/// Puts a VM in the host's start order (or takes it out: `position` none).
pub async fn set_start_order(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    position: Option<u32>,
    delay_seconds: u32,
) -> Done<crate::lifecycle::start_order::StartOrderSet> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmStartOrder,
            name,
            move |s| {
                crate::lifecycle::start_order::set_start_order(
                    s.hv.as_ref(),
                    &s.store,
                    &n,
                    position,
                    delay_seconds,
                )
            },
            |o| match o.position {
                Some(p) => format!("place {p}, then {} s", o.delay_seconds),
                None => "out of the start order (libvirt autostart)".into(),
            },
        ),
    )
    .await
}

/// Adds one tag to a VM's tags (a bulk "tag" action).
pub async fn add_tag(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    tag: &str,
) -> Done<crate::lifecycle::labels::Labelled> {
    let (n, t) = (name.to_string(), tag.to_string());
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmLabels,
            name,
            move |s| crate::lifecycle::labels::add_tag(s.hv.as_ref(), &n, &t),
            |l| format!("tags [{}]", l.tags.join(", ")),
        ),
    )
    .await
}

/// Deletes a VM. Operators delete only the volumes virtdeck made for it; admins any of
/// its disk volumes.
pub async fn delete(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    delete_volumes: bool,
) -> Done<Deleted> {
    let n = name.to_string();
    let may_delete_any = caller.role.allows(Role::Admin);
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmDelete,
            name,
            move |s| lifecycle::delete(s.hv.as_ref(), &s.store, &n, delete_volumes, may_delete_any),
            |d: &Deleted| {
                let kept: Vec<&str> = d.volumes_kept.iter().map(|k| k.path.as_str()).collect();
                format!(
                    "{} units released{}{}",
                    d.units_released,
                    if d.volumes_deleted.is_empty() {
                        String::new()
                    } else {
                        format!(", volumes deleted: {}", d.volumes_deleted.join(", "))
                    },
                    if kept.is_empty() {
                        String::new()
                    } else {
                        format!(", volumes kept: {}", kept.join(", "))
                    }
                )
            },
        ),
    )
    .await
}

/// Changes the VM's size (from its next start), within the free units.
pub async fn resize(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    req: SizeRequest,
    cpu: Option<String>,
) -> Done<Resized> {
    let n = name.to_string();
    let cpu_text = cpu.clone();
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmResize,
            name,
            move |s| {
                // A CPU the host cannot give is refused before the size changes.
                if let Some(c) = &cpu {
                    lifecycle::devices::check_cpu(s.hv.as_ref(), &n, c)?;
                }
                let resized = lifecycle::resize(
                    s.hv.as_ref(),
                    &s.store,
                    &s.lifecycle,
                    &s.admission,
                    &n,
                    &req,
                )?;
                if let Some(c) = cpu {
                    lifecycle::devices::set_devices(
                        s.hv.as_ref(),
                        &n,
                        lifecycle::devices::DeviceChange {
                            cpu: Some(c),
                            ..Default::default()
                        },
                    )?;
                }
                Ok(resized)
            },
            move |r: &Resized| {
                format!(
                    "{} → {}, {} vCPUs, {} MiB{}",
                    r.previous_units,
                    units_text(r.units),
                    r.vcpus,
                    r.memory_mib,
                    cpu_text
                        .as_deref()
                        .map(|c| format!(", CPU {c}"))
                        .unwrap_or_default()
                )
            },
        ),
    )
    .await
}

/// Checks a clone and holds its units, then copies on a thread of its own as a job.
/// The thread is started inside the checked step, so a caller that goes away early
/// never leaves a checked clone without its job. Audited under the source's name; the
/// clone's own history starts with its create.
pub async fn clone(
    svc: &Arc<Services>,
    caller: &Caller,
    source: &str,
    req: CloneRequest,
) -> Done<JobRow> {
    let src = source.to_string();
    let (actor, job_actor, runner_svc) = (caller.username.clone(), caller.actor(), svc.clone());
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmClone,
            source,
            move |s| {
                let by = By {
                    actor: &actor,
                    now: super::now(),
                };
                let plan = changes::plan_clone(s.lc(), &src, &req, by, CloneMode::Full)?;
                let (job, cancel) = jobs::begin_clone(runner::job_ctx(s), &plan, &job_actor)?;
                runner::spawn_clone(
                    &runner_svc,
                    RunningJob {
                        job: job.clone(),
                        cancel,
                        actor: job_actor,
                    },
                    Action::VmClone.as_str(),
                    move |s, watch| {
                        changes::build_clone(s.hv.as_ref(), &s.store, plan, None, watch)
                    },
                    |c| {
                        format!(
                            "Cloned from {} to {}: {} unit{}, {} disk{} copied{}.",
                            c.source,
                            c.name,
                            c.units,
                            if c.units == 1 { "" } else { "s" },
                            c.volumes.len(),
                            if c.volumes.len() == 1 { "" } else { "s" },
                            if c.started { ", started" } else { "" }
                        )
                    },
                )?;
                Ok(job)
            },
            |job: &JobRow| format!("job {} started: cloning to {}", job.id, job.vm),
        ),
    )
    .await
}

pub async fn create_snapshot(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    req: SnapshotRequest,
) -> Done<SnapshotInfo> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::SnapshotCreate,
            name,
            move |s| lifecycle::create_snapshot(s.hv.as_ref(), &n, &req),
            |s: &SnapshotInfo| format!("snapshot {}", s.name),
        ),
    )
    .await
}

pub async fn revert_snapshot(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    snapshot: &str,
) -> Done<()> {
    on_snapshot(
        svc,
        caller,
        Action::SnapshotRevert,
        name,
        snapshot,
        lifecycle::revert_snapshot,
    )
    .await
}

pub async fn delete_snapshot(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    snapshot: &str,
) -> Done<()> {
    on_snapshot(
        svc,
        caller,
        Action::SnapshotDelete,
        name,
        snapshot,
        lifecycle::delete_snapshot,
    )
    .await
}

/// Reverts to or deletes one snapshot of VM `name`, audited under the VM's name.
async fn on_snapshot(
    svc: &Arc<Services>,
    caller: &Caller,
    action: Action,
    name: &str,
    snapshot: &str,
    change: fn(&dyn crate::hypervisor::Hypervisor, &str, &str) -> LcResult<()>,
) -> Done<()> {
    let (n, sn) = (name.to_string(), snapshot.to_string());
    let detail = format!("snapshot {snapshot}");
    execute(
        svc,
        caller,
        Op::operator(
            action,
            name,
            move |s| change(s.hv.as_ref(), &n, &sn),
            move |_| detail,
        ),
    )
    .await
}

/// A create its checks refused before anything was made (the form shows every error at
/// its field at once): audited like any refused change.
pub async fn refuse_create(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    errors: Vec<crate::lifecycle::FieldError>,
) -> Done<()> {
    execute(
        svc,
        caller,
        Op::operator(
            Action::VmCreate,
            name,
            move |_| Err(crate::lifecycle::LifecycleError::Invalid(errors)),
            |()| String::new(),
        ),
    )
    .await
}
