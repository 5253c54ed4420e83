//! Migration between peers: the source asks the destination to hold the VM's units (its
//! admission, under its own lock; volumes made for disks QEMU copies), then libvirt moves
//! the VM peer to peer as a job; the end is told to the destination, which keeps the VM's
//! record or releases everything. On any failure the VM stays on the source and nothing
//! stays on the destination. Audited on both hosts.

use super::{audit, execute, runner, Action, Caller, Denied, Op, Services};
use crate::domain::fleet::{plan_arrival, DiskMove, MigrationNeeds};
use crate::domain::volumes::JobState;
use crate::hypervisor::MigrateOptions;
use crate::lifecycle::jobs::{self, Actor};
use crate::lifecycle::migrate as lm;
use crate::lifecycle::{FieldError, LcResult, LifecycleError};
use crate::store::fleet::{ArrivingRow, PeerRow};
use crate::store::jobs::JobRow;
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

type Done<T> = Result<LcResult<T>, Denied>;

/// What the source sends the destination to hold a VM's place.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArrivalRequest {
    pub needs: MigrationNeeds,
    /// The VM runs (a live move); else only its definition moves.
    pub running: bool,
}

/// The destination's answer: where its libvirtd is reached, and which disks QEMU copies,
/// as (path on the source, path of the volume made for it on the destination).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArrivalPlan {
    pub migration_uri: String,
    pub copied: Vec<(String, String)>,
}

/// How a move ended, as the source tells the destination.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArrivalEnd {
    pub arrived: bool,
    pub uuid: String,
    pub message: String,
    /// What the source knew of the VM, kept by the destination when it arrived.
    #[serde(default)]
    pub record: Option<VmRecord>,
}

/// virtdeck's own record of a VM that travels with it: its cloud-init seed and the
/// volumes virtdeck made for it (at their paths on the destination).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmRecord {
    pub cloud_init: Option<crate::store::cloud_init::CloudInitRow>,
    /// (path, format, backing) of each volume virtdeck made for the VM.
    pub made_volumes: Vec<(String, String, Option<String>)>,
}

/// The source's record of `name`, with copied disks at their new paths.
fn record_of(s: &Services, name: &str, moved: &[(String, String)]) -> VmRecord {
    let there = |p: &str| {
        moved
            .iter()
            .find(|(here, _)| here == p)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| p.to_string())
    };
    VmRecord {
        cloud_init: s.store.cloud_init(name).ok().flatten(),
        made_volumes: s
            .store
            .vm_volumes(name)
            .unwrap_or_default()
            .into_iter()
            .map(|v| (there(&v.path), v.format, v.backing))
            .collect(),
    }
}

/// Keeps the travelling record of an arrived VM.
fn keep_record(s: &Services, name: &str, record: &VmRecord) {
    if let Some(ci) = &record.cloud_init {
        let row = crate::store::cloud_init::CloudInitRow {
            vm: name.to_string(),
            ..ci.clone()
        };
        if let Err(e) = s.store.insert_cloud_init(&row) {
            tracing::warn!(vm = name, error = %e, "could not keep an arrived VM's cloud-init record");
        }
    }
    for (path, format, backing) in &record.made_volumes {
        if let Err(e) = s
            .store
            .record_vm_volume(name, path, format, backing.as_deref())
        {
            tracing::warn!(vm = name, error = %e, "could not keep an arrived VM's volume record");
        }
    }
}

/// Whether a VM can come here, and why not (`POST /api/v1/peer/fit`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fit {
    pub fits: bool,
    pub reasons: Vec<String>,
    /// Units free there now (a drain sends each VM where most are free).
    #[serde(default)]
    pub free_units: u32,
}

fn actor_of(peer: &PeerRow, remote_addr: &str) -> Caller {
    Caller {
        username: format!("peer:{}", peer.name),
        remote_addr: remote_addr.to_string(),
        role: crate::auth::Role::Viewer,
    }
}

/// What this host offers the VM `needs` describes (blocking).
fn offer_here(s: &Services, needs: &MigrationNeeds) -> LcResult<crate::domain::fleet::HostOffer> {
    let mut offer = lm::offer(
        s.hv.as_ref(),
        &s.store,
        &s.lifecycle,
        needs,
        &s.cfg.fleet.shared_dirs,
    )?;
    offer.kvm = matches!(s.virt_type, Ok(crate::domain::host::VirtType::Kvm));
    Ok(offer)
}

/// Whether `needs` fits here now (no change is made) (blocking).
pub fn fit(s: &Services, needs: &MigrationNeeds, running: bool) -> LcResult<Fit> {
    if let Some(who) = s.store.draining()? {
        return Ok(Fit {
            fits: false,
            reasons: vec![format!("It is being emptied for maintenance ({who}).")],
            free_units: 0,
        });
    }
    match crate::domain::vmspec::VmName::parse(&needs.vm) {
        Ok(n) if n.as_str() == needs.vm => {}
        Ok(_) | Err(_) => {
            return Err(LifecycleError::Conflict(format!(
                "{:?} is not a VM name this host accepts.",
                needs.vm
            )))
        }
    }
    let offer = offer_here(s, needs)?;
    let free_units = offer.free_units;
    Ok(match plan_arrival(needs, &offer) {
        Ok(moves) if !running && moves.iter().any(|m| matches!(m, DiskMove::Copied { .. })) => {
            Fit {
                fits: false,
                reasons: vec![
                    "It is shut off and its disks are not on shared storage: start it, so QEMU copies them while it runs."
                        .into(),
                ],
                free_units,
            }
        }
        Ok(_) => Fit {
            fits: true,
            reasons: Vec::new(),
            free_units,
        },
        Err(reasons) => Fit {
            fits: false,
            reasons,
            free_units,
        },
    })
}

/// The destination side: holds the VM's units under the admission lock, makes the
/// volumes QEMU copies into, records a job; refuses with every reason (blocking).
pub fn receive(
    s: &Services,
    peer: &PeerRow,
    remote_addr: &str,
    req: &ArrivalRequest,
) -> LcResult<ArrivalPlan> {
    let who = actor_of(peer, remote_addr);
    let vm = req.needs.vm.clone();
    let r = receive_now(s, peer, req);
    let (result, detail) = match &r {
        Ok(plan) => (
            "ok",
            format!(
                "arriving from {}: {} held{}",
                peer.name,
                crate::domain::capacity::units_text(req.needs.units),
                if plan.copied.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; disks copied into {}",
                        plan.copied
                            .iter()
                            .map(|(_, there)| there.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
        ),
        Err(e) => (
            "refused",
            format!("arrival from {} refused: {e}", peer.name),
        ),
    };
    audit::write(
        &s.store,
        &who,
        Action::VmMigrate.as_str(),
        &vm,
        result,
        &detail,
    );
    r
}

fn receive_now(s: &Services, peer: &PeerRow, req: &ArrivalRequest) -> LcResult<ArrivalPlan> {
    let needs = &req.needs;
    let _admission = s.admission.0.lock().map_err(|_| {
        LifecycleError::failed("The admission lock is unusable after an earlier failure.")
    })?;
    if let Some(who) = s.store.draining()? {
        return Err(LifecycleError::Conflict(format!(
            "{} is being emptied for maintenance ({who}).",
            s.fleet_name()
        )));
    }
    let verdict = fit(s, needs, req.running)?;
    if !verdict.fits {
        return Err(LifecycleError::Conflict(format!(
            "{} cannot come to {}: {}",
            needs.vm,
            s.fleet_name(),
            verdict.reasons.join(" ")
        )));
    }
    let offer = offer_here(s, needs)?;
    let moves =
        plan_arrival(needs, &offer).map_err(|why| LifecycleError::Conflict(why.join(" ")))?;
    let made = lm::make_disk_targets(s.hv.as_ref(), &moves)?;
    let now = super::now();
    let row = ArrivingRow {
        name: needs.vm.clone(),
        units: needs.units,
        peer: peer.name.clone(),
        created_by: format!("peer:{}", peer.name),
        created_at: now,
        expires_at: now + 60 * s.cfg.fleet.migration_timeout_minutes as i64 + 300,
        volumes: made.iter().map(|(_, there)| there.clone()).collect(),
        job_id: 0,
    };
    match s.store.insert_arriving(&row) {
        Ok(()) => {}
        Err(e) => {
            lm::remove_volumes(s.hv.as_ref(), &row.volumes);
            return Err(match e {
                StoreError::Duplicate(_) => LifecycleError::Conflict(format!(
                    "A VM named {} exists on {} already.",
                    needs.vm,
                    s.fleet_name()
                )),
                other => other.into(),
            });
        }
    }
    if let Ok(job) = jobs::record_arrival(&s.store, &needs.vm, &peer.name, &row.created_by) {
        let _ = s
            .store
            .job_transfer(job.id, &format!("arriving from {}", peer.name), 0, 0);
        let _ = s.store.set_arriving_job(&needs.vm, job.id);
    }
    s.vm_list.invalidate();
    Ok(ArrivalPlan {
        migration_uri: s.fleet_migration_uri(),
        copied: made,
    })
}

/// The destination side of a move's end: the VM keeps its record here, or everything
/// held for it goes (blocking).
pub fn arrival_ended(
    s: &Services,
    peer: &PeerRow,
    remote_addr: &str,
    name: &str,
    end: &ArrivalEnd,
) -> LcResult<()> {
    let row = s
        .store
        .arriving_vms()?
        .into_iter()
        .find(|r| r.name == name && r.peer == peer.name)
        .ok_or_else(|| {
            LifecycleError::NotFound(format!(
                "No VM named {name} is arriving from {}.",
                peer.name
            ))
        })?;
    // A failed move is released even when libvirt here does not answer (it may be why
    // the move failed); an arrival is believed only when the VM is here.
    if !end.arrived && s.hv.list_vms().is_err() {
        // libvirt here does not answer (it may be why the move failed): the clean-up waits
        // for it; the arrival is settled by the next sweep once libvirt is back.
        s.store.expire_arriving(name, super::now())?;
        audit::write(
            &s.store,
            &actor_of(peer, remote_addr),
            Action::VmMigrate.as_str(),
            name,
            "failed",
            &format!(
                "did not arrive from {} ({}); libvirt here does not answer, so the clean-up waits for it",
                peer.name, end.message
            ),
        );
        return Ok(());
    }
    let arrived = end.arrived && s.hv.list_vms()?.into_iter().any(|v| v.name == name);
    finish_arrival(s, &row, arrived, &end.uuid, &end.message);
    if arrived {
        if let Some(record) = &end.record {
            keep_record(s, name, record);
        }
    }
    audit::write(
        &s.store,
        &actor_of(peer, remote_addr),
        Action::VmMigrate.as_str(),
        name,
        if arrived { "ok" } else { "failed" },
        &if arrived {
            format!(
                "arrived from {}; it holds {} here",
                peer.name,
                crate::domain::capacity::units_text(row.units)
            )
        } else {
            format!(
                "did not arrive from {} ({}); its units, volumes and definition here were removed",
                peer.name, end.message
            )
        },
    );
    Ok(())
}

fn finish_arrival(s: &Services, row: &ArrivingRow, arrived: bool, uuid: &str, message: &str) {
    if arrived {
        let uuid = if uuid.is_empty() {
            s.hv.list_vms()
                .ok()
                .and_then(|vms| vms.into_iter().find(|v| v.name == row.name).map(|v| v.uuid))
                .unwrap_or_default()
        } else {
            uuid.to_string()
        };
        if let Err(e) = s.store.end_arriving(&row.name, Some((&uuid, super::now()))) {
            tracing::error!(vm = %row.name, error = %e, "could not record an arrived VM");
        }
    } else {
        let _ = lm::remove_leftover(s.hv.as_ref(), &row.name);
        lm::remove_volumes(s.hv.as_ref(), &row.volumes);
        if let Err(e) = s.store.end_arriving(&row.name, None) {
            tracing::error!(vm = %row.name, error = %e, "could not release a failed arrival");
        }
    }
    if row.job_id > 0 {
        let (state, text) = if arrived {
            (
                JobState::Succeeded,
                format!("{} arrived from {}.", row.name, row.peer),
            )
        } else {
            (
                JobState::Failed,
                format!("{} did not arrive from {}: {message}", row.name, row.peer),
            )
        };
        let _ = s
            .store
            .finish_job(row.job_id, state.as_str(), 0, &text, super::now());
    }
    s.vm_list.invalidate();
}

/// Arrivals whose source never told their end (it stopped, or the network did): past
/// their deadline, a VM that is here and runs stays; anything else is released.
pub fn sweep_arrivals(s: &Services) {
    let Ok(rows) = s.store.arriving_vms() else {
        return;
    };
    let now = super::now();
    for row in rows.into_iter().filter(|r| r.expires_at <= now) {
        // Settled only once libvirt here answers; a guest counts as arrived only if it runs
        // (a paused one is the incoming half of a move that broke off).
        let Ok(vms) = s.hv.list_vms() else {
            return;
        };
        let running_here = vms
            .iter()
            .any(|v| v.name == row.name && v.state == crate::domain::vm::VmState::Running);
        finish_arrival(
            s,
            &row,
            running_here,
            "",
            "the source host never told how the move ended",
        );
        audit::write(
            &s.store,
            &Caller::virtdeck(),
            Action::VmMigrate.as_str(),
            &row.name,
            if running_here { "ok" } else { "failed" },
            &format!(
                "arrival from {} past its deadline: {}",
                row.peer,
                if running_here {
                    "the VM runs here, so it is kept"
                } else {
                    "released"
                }
            ),
        );
    }
}

/// A started move: its job, where it goes and what QEMU copies.
struct Started {
    job: JobRow,
    cancel: tokio_util::sync::CancellationToken,
    peer: PeerRow,
    plan: ArrivalPlan,
    departure: lm::Departure,
    uuid: String,
}

/// Moves `name` to the peer `to` (operators and up): refused before anything starts when
/// it cannot go there (with the destination's reasons); otherwise a job runs the move.
pub async fn migrate(
    svc: &Arc<Services>,
    caller: &Caller,
    name: &str,
    to: &str,
    live: bool,
) -> Done<JobRow> {
    let (n, t, actor) = (name.to_string(), to.to_string(), caller.actor());
    let started = execute(
        svc,
        caller,
        Op::operator(
            Action::VmMigrate,
            name,
            move |s| start(s, &n, &t, &actor),
            |st: &Started| {
                format!(
                    "to {}: job {} started{}",
                    st.peer.name,
                    st.job.id,
                    if st.plan.copied.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; QEMU copies {}",
                            st.plan
                                .copied
                                .iter()
                                .map(|(here, _)| here.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                )
            },
        ),
    )
    .await?;
    let started = match started {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let job = started.job.clone();
    let actor = caller.actor();
    let spawned = runner::spawn(svc, &job, move |s| run(s, started, live, &actor));
    Ok(spawned.map(|()| job))
}

fn start(s: &Services, name: &str, to: &str, actor: &Actor) -> LcResult<Started> {
    let peer = s.store.peer(to)?.ok_or_else(|| {
        LifecycleError::Invalid(vec![FieldError {
            field: "to",
            message: format!("There is no peer named {to}. Pair it on the Fleet peers page first."),
        }])
    })?;
    let busy = s
        .store
        .running_jobs()?
        .into_iter()
        .any(|j| j.kind == "migrate" && j.vm == name);
    if busy {
        return Err(LifecycleError::Conflict(format!(
            "{name} is being moved already."
        )));
    }
    let departure = lm::departure(s.hv.as_ref(), &s.store, &s.lifecycle, name)?;
    let uuid =
        s.hv.list_vms()?
            .into_iter()
            .find(|v| v.name == name)
            .map(|v| v.uuid)
            .unwrap_or_default();
    let client = s
        .peer_client(&peer)
        .map_err(|e| LifecycleError::failed(e.to_string()))?;
    let plan: ArrivalPlan = client
        .post_json(
            "api/v1/peer/arrivals",
            &ArrivalRequest {
                needs: departure.needs.clone(),
                running: departure.running,
            },
        )
        .map_err(|e| match e {
            crate::adapters::http_fetch::peer::PeerCallError::Refused {
                status: 409,
                message,
            } => LifecycleError::Conflict(message),
            other => LifecycleError::failed(format!("{}: {other}", peer.name)),
        })?;
    match jobs::begin_migration(runner::job_ctx(s), name, &peer.name, actor) {
        Ok((job, cancel)) => Ok(Started {
            job,
            cancel,
            peer,
            plan,
            departure,
            uuid,
        }),
        Err(e) => {
            tell_end(
                s,
                &peer,
                name,
                false,
                &uuid,
                "the source could not start the job",
                None,
            );
            Err(e)
        }
    }
}

fn tell_end(
    s: &Services,
    peer: &PeerRow,
    name: &str,
    arrived: bool,
    uuid: &str,
    message: &str,
    record: Option<VmRecord>,
) {
    let end = ArrivalEnd {
        arrived,
        uuid: uuid.to_string(),
        message: message.to_string(),
        record,
    };
    for attempt in 0..3 {
        let told = s.peer_client(peer).and_then(|c| {
            c.post_json::<_, serde_json::Value>(&format!("api/v1/peer/arrivals/{name}/end"), &end)
        });
        match told {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(peer = %peer.name, vm = name, attempt, error = %e, "could not tell the destination how the move ended");
                std::thread::sleep(std::time::Duration::from_secs(1 << attempt));
            }
        }
    }
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

fn run(s: &Services, st: Started, live: bool, actor: &Actor) {
    let Started {
        job,
        cancel,
        peer,
        plan,
        departure,
        uuid,
    } = st;
    let name = job.vm.clone();
    let copy_disks: Vec<String> = plan
        .copied
        .iter()
        .filter_map(|(here, _)| {
            departure
                .targets
                .iter()
                .find(|(path, _)| path == here)
                .map(|(_, t)| t.clone())
        })
        .collect();
    let options = MigrateOptions {
        live: live && departure.running,
        offline: !departure.running,
        copy_disks,
        disk_paths: plan.copied.clone(),
        bandwidth_mib_s: s.cfg.fleet.migration_bandwidth_mib_s,
        tls: s.cfg.fleet.migration_tls,
    };
    let started = std::time::Instant::now();
    let deadline =
        started + std::time::Duration::from_secs(60 * s.cfg.fleet.migration_timeout_minutes);
    let _ = s
        .store
        .job_transfer(job.id, &format!("moving to {}", peer.name), 0, 0);
    let result = lm::run_move(
        s.hv.as_ref(),
        &name,
        &plan.migration_uri,
        &options,
        deadline,
        &|| cancel.is_cancelled(),
        &|p| {
            let step = format!(
                "moving to {}: {} MiB left, {} MiB/s, expected downtime {} ms",
                peer.name,
                mib(p.data_remaining_bytes),
                mib(p.memory_bps),
                p.downtime_ms
            );
            let _ = s
                .store
                .job_transfer(job.id, &step, p.data_processed_bytes, p.data_total_bytes);
        },
    );
    let (state, message) = match &result {
        Ok(last) => {
            tell_end(
                s,
                &peer,
                &name,
                true,
                &uuid,
                "",
                Some(record_of(s, &name, &plan.copied)),
            );
            // The VM and its definition left with libvirt; its record here goes too.
            let _ = s.store.delete_vm(&name);
            let _ = s.store.release_vm_volumes(&name);
            let downtime = last
                .map(|p| format!(", downtime about {} ms", p.downtime_ms))
                .unwrap_or_default();
            (
                JobState::Succeeded,
                format!(
                    "{name} moved to {} in {:.1} s{downtime}; its units here are free.",
                    peer.name,
                    started.elapsed().as_secs_f64()
                ),
            )
        }
        Err(e) => {
            tell_end(s, &peer, &name, false, &uuid, &e.to_string(), None);
            let state = if cancel.is_cancelled() {
                JobState::Cancelled
            } else {
                JobState::Failed
            };
            (state, e.to_string())
        }
    };
    let done = s
        .store
        .job(job.id)
        .ok()
        .flatten()
        .map(|j| j.bytes_done)
        .unwrap_or(0);
    let _ = s
        .store
        .finish_job(job.id, state.as_str(), done, &message, super::now());
    s.jobs.forget(job.id);
    let outcome = match state {
        JobState::Succeeded => "ok",
        other => other.as_str(),
    };
    actor.audit(
        &s.store,
        Action::VmMigrate.as_str(),
        &name,
        outcome,
        &message,
    );
}

/// A peer as a destination for a VM: whether it can go there, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    pub peer: String,
    pub fits: bool,
    pub reasons: Vec<String>,
    pub free_units: u32,
}

/// Every peer, asked (all at once, each bounded by the peer timeout) whether `name`
/// could come there now (blocking).
pub fn destinations(s: &Services, name: &str) -> LcResult<(lm::Departure, Vec<Destination>)> {
    let departure = lm::departure(s.hv.as_ref(), &s.store, &s.lifecycle, name)?;
    let peers = s.store.peers()?;
    let req = ArrivalRequest {
        needs: departure.needs.clone(),
        running: departure.running,
    };
    let answers: Vec<Destination> = std::thread::scope(|scope| {
        let asks: Vec<_> = peers
            .iter()
            .map(|p| {
                let req = &req;
                scope.spawn(move || {
                    let fit = s
                        .peer_client(p)
                        .and_then(|c| c.post_json::<_, Fit>("api/v1/peer/fit", req));
                    match fit {
                        Ok(f) => Destination {
                            peer: p.name.clone(),
                            fits: f.fits,
                            reasons: f.reasons,
                            free_units: f.free_units,
                        },
                        Err(e) => Destination {
                            peer: p.name.clone(),
                            fits: false,
                            reasons: vec![e.to_string()],
                            free_units: 0,
                        },
                    }
                })
            })
            .collect();
        asks.into_iter()
            .zip(&peers)
            .map(|(h, p)| {
                h.join().unwrap_or_else(|_| Destination {
                    peer: p.name.clone(),
                    fits: false,
                    reasons: vec!["internal error".into()],
                    free_units: 0,
                })
            })
            .collect()
    });
    Ok((departure, answers))
}

/// What a drain started with.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DrainStarted {
    /// VMs it will try to move.
    pub vms: Vec<String>,
}

/// Empties this host for maintenance (admins): from now on no new VM is made or accepted
/// here; then every VM that runs or is shut off moves, one at a time, to the peer with
/// the most free units where it fits. Each move is a migrate job; the drain's end is audited with what moved
/// and what stayed (and why). The host stays draining until an admin ends it.
pub async fn drain(svc: &Arc<Services>, caller: &Caller) -> Done<DrainStarted> {
    let who = caller.username.clone();
    let started = execute(
        svc,
        caller,
        Op::admin(
            Action::HostDrain,
            "host",
            move |s| {
                if let Some(d) = s.store.draining()? {
                    return Err(LifecycleError::Conflict(format!(
                        "This host is being emptied already ({d})."
                    )));
                }
                if s.store.peers()?.is_empty() {
                    return Err(LifecycleError::Conflict(
                        "No peer is paired with this host: there is nowhere to move its VMs. Pair one first."
                            .into(),
                    ));
                }
                let vms = movable_vms(s)?;
                s.store.set_draining(Some(&format!(
                    "started by {who} at {}",
                    crate::domain::clock::format_time(super::now())
                )))?;
                Ok(DrainStarted { vms })
            },
            |d: &DrainStarted| format!("new VMs refused; moving {} VMs to peers", d.vms.len()),
        ),
    )
    .await?;
    let started = match started {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    let (s, actor, vms) = (svc.clone(), caller.actor(), started.vms.clone());
    let spawned = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || drain_all(&s, &vms, &actor));
    if let Err(e) = spawned {
        let _ = svc.store.set_draining(None);
        return Ok(Err(LifecycleError::failed(format!(
            "The drain could not be started: {e}."
        ))));
    }
    Ok(Ok(started))
}

/// VMs a drain moves: running or shut off, not templates, by name.
fn movable_vms(s: &Services) -> LcResult<Vec<String>> {
    let templates: Vec<String> = s.store.templates()?.into_iter().map(|t| t.name).collect();
    let mut vms: Vec<String> =
        s.hv.list_vms()?
            .into_iter()
            .filter(|v| v.state.is_active() || v.state == crate::domain::vm::VmState::ShutOff)
            .filter(|v| !templates.contains(&v.name))
            .map(|v| v.name)
            .collect();
    vms.sort();
    Ok(vms)
}

fn drain_all(s: &Services, vms: &[String], actor: &Actor) {
    let mut moved = Vec::new();
    let mut stayed = Vec::new();
    for name in vms {
        if s.store.draining().ok().flatten().is_none() {
            stayed.push(format!("{name} (the drain was ended)"));
            continue;
        }
        let to = match destinations(s, name) {
            // Where it fits, the peer with the most free units.
            Ok((_, dests)) => match dests
                .into_iter()
                .filter(|d| d.fits)
                .max_by_key(|d| d.free_units)
            {
                Some(d) => d.peer,
                None => {
                    stayed.push(format!("{name} (it fits on no peer)"));
                    continue;
                }
            },
            Err(e) => {
                stayed.push(format!("{name} ({e})"));
                continue;
            }
        };
        let started = match start(s, name, &to, actor) {
            Ok(st) => st,
            Err(e) => {
                stayed.push(format!("{name} ({e})"));
                continue;
            }
        };
        let id = started.job.id;
        run(s, started, true, actor);
        match s.store.job(id).ok().flatten() {
            Some(j) if j.state == JobState::Succeeded.as_str() => {
                moved.push(format!("{name} → {to}"))
            }
            Some(j) => stayed.push(format!("{name} ({})", j.message)),
            None => stayed.push(format!("{name} (its job is gone)")),
        }
    }
    s.vm_list.invalidate();
    let detail = format!(
        "moved {}: {}; stayed {}: {}. The host stays draining until an admin ends it.",
        moved.len(),
        if moved.is_empty() {
            "none".into()
        } else {
            moved.join(", ")
        },
        stayed.len(),
        if stayed.is_empty() {
            "none".into()
        } else {
            stayed.join(", ")
        }
    );
    actor.audit(
        &s.store,
        Action::HostDrain.as_str(),
        "host",
        if stayed.is_empty() { "ok" } else { "failed" },
        &detail,
    );
}

/// Ends the drain: new VMs are made and accepted here again (admins).
pub async fn end_drain(svc: &Arc<Services>, caller: &Caller) -> Done<()> {
    execute(
        svc,
        caller,
        Op::admin(
            Action::HostDrainEnd,
            "host",
            |s| {
                if s.store.draining()?.is_none() {
                    return Err(LifecycleError::Conflict(
                        "This host is not being drained.".into(),
                    ));
                }
                s.store.set_draining(None)?;
                Ok(())
            },
            |_| "new VMs are made and accepted here again".into(),
        ),
    )
    .await
}
