//! Changing an existing VM: resize, clone, snapshots. Same rules as create: validate and
//! admit before touching anything, undo what was done when a step fails.

use super::{
    claims, field, inventory, random_uuid, reason_in_plain_words, resolve_size, undo_failed,
    AdmissionLock, LcResult, LifecycleError, SizeRequest,
};
use super::{By, Ctx};
use crate::config::LifecycleSettings;
use crate::domain::capacity::{admit, AdmissionError};
use crate::domain::clone::{clone_domain_xml, CloneEdits};
use crate::domain::snapshot::{snapshot_xml, SnapshotInfo, SnapshotName, MAX_DESCRIPTION_CHARS};
use crate::domain::templates::{
    overlay_refusal, overlay_volume_xml, pool_takes_overlays, CloneMode,
};
use crate::domain::vm::{VmAction, VmState, VmSummary};
use crate::domain::vmspec::{DiskFormat, Mac, VmName};
use crate::domain::xml;
use crate::hypervisor::{Hypervisor, HypervisorError};
use crate::store::{Store, VmRow};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

const GIB: u64 = 1024 * 1024 * 1024;

pub(super) fn locked(lock: &AdmissionLock) -> LcResult<std::sync::MutexGuard<'_, ()>> {
    lock.0.lock().map_err(|_| {
        LifecycleError::failed(
            "The admission lock is broken after an earlier failure; restart virtdeck.",
        )
    })
}

/// A new MAC for each of the definition's NICs (old MAC, lower case → new), unique among
/// `in_use` and each other: a copy of a VM (clone, restore) must not share its MACs.
pub(super) fn new_macs(
    def: &xml::ParsedDomain,
    in_use: &HashSet<String>,
) -> HashMap<String, String> {
    let mut taken = in_use.clone();
    let mut macs = HashMap::new();
    for old in def.nics.iter().filter_map(|n| n.mac.clone()) {
        let new = loop {
            let mut b = [0u8; 3];
            rand::rng().fill_bytes(&mut b);
            let mac = Mac::qemu_local(b).to_string();
            if !taken.contains(&mac) {
                break mac;
            }
        };
        taken.insert(new.clone());
        macs.insert(old.to_ascii_lowercase(), new);
    }
    macs
}

pub(super) fn find_vm(vms: &[VmSummary], name: &str) -> LcResult<VmSummary> {
    vms.iter()
        .find(|v| v.name == name)
        .cloned()
        .ok_or_else(|| LifecycleError::NotFound(format!("There is no VM named {name}.")))
}

fn definition(hv: &dyn Hypervisor, name: &str) -> LcResult<xml::ParsedDomain> {
    xml::parse_domain(&hv.domain_xml(name)?)
        .map_err(|e| LifecycleError::failed(format!("The VM's definition could not be read: {e}")))
}

// ---- resize ----

#[derive(Debug, Clone, Serialize)]
pub struct Resized {
    pub name: String,
    pub units: u32,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub previous_units: u32,
}

/// Gives a shut-off VM another size, if the host has the units for it.
pub fn resize(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &LifecycleSettings,
    lock: &AdmissionLock,
    name: &str,
    req: &SizeRequest,
) -> LcResult<Resized> {
    let _guard = locked(lock)?;
    let inv = inventory(hv, store, cfg)?;
    let vm = find_vm(&inv.vms, name)?;
    if vm.state.is_active() {
        return Err(LifecycleError::Conflict(format!(
            "{name} is {}; shut it down before changing its size.",
            vm.state.label()
        )));
    }
    let flavors: Vec<(String, u32)> = store
        .flavors()?
        .into_iter()
        .map(|f| (f.name, f.units))
        .collect();
    let mut errors = Vec::new();
    let (units, size) = resolve_size(&inv.model, &flavors, req, &mut errors);
    let (units, size) = match (units, size) {
        (Some(u), Some(s)) if errors.is_empty() => (u, s),
        _ => return Err(LifecycleError::Invalid(errors)),
    };
    let all = claims(&inv.model, &inv.vms, &inv.rows);
    let previous_units = all
        .iter()
        .find(|c| c.vm == name)
        .map(|c| c.units)
        .unwrap_or(0);
    let others: Vec<_> = all.into_iter().filter(|c| c.vm != name).collect();
    admit(&inv.model, &others, units, None)?;
    if let Err(e) = hv.set_size(name, size.vcpus, size.memory_mib) {
        // Put back what may have changed before the failing step.
        if let Err(undo) = hv.set_size(name, vm.vcpus, vm.memory_mib) {
            tracing::error!(vm = name, error = %undo, "resize: could not restore the old size");
        }
        return Err(LifecycleError::failed(format!(
            "The size could not be changed: {}. {name} keeps {} vCPUs and {} MiB.",
            reason_in_plain_words(&e),
            vm.vcpus,
            vm.memory_mib
        )));
    }
    if inv.rows.iter().any(|r| r.name == name) {
        store.set_vm_units(name, units)?;
    }
    Ok(Resized {
        name: name.to_string(),
        units,
        vcpus: size.vcpus,
        memory_mib: size.memory_mib,
        previous_units,
    })
}

// ---- growing a disk ----

/// A disk after it grew.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DiskGrown {
    /// The disk's target (`vda`, …).
    pub target: String,
    pub path: String,
    pub size_gib: u64,
    /// The VM's units after the change (a bigger disk may hold more of its pool).
    pub units: u32,
    /// The VM ran: its guest sees the new size now (it still has to grow its partition
    /// and file system).
    pub live: bool,
}

/// Grows the VM's disk `target` to `size_gib`: live through libvirt's block resize while
/// the VM runs (the guest sees it at once), else the volume itself. A disk never shrinks.
/// When the bigger disk takes more of its pool than the VM's units hold, the units grow
/// and are admitted like a create; refusals come before anything changes.
pub fn grow_disk(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &LifecycleSettings,
    lock: &AdmissionLock,
    name: &str,
    target: &str,
    size_gib: u64,
) -> LcResult<DiskGrown> {
    let _guard = locked(lock)?;
    let inv = inventory(hv, store, cfg)?;
    let vm = find_vm(&inv.vms, name)?;
    let def = definition(hv, name)?;
    let disk = def
        .disks
        .iter()
        .find(|d| d.device == "disk" && d.target == target)
        .ok_or_else(|| {
            LifecycleError::Invalid(vec![field(
                "target",
                format!("{name} has no disk {target}."),
            )])
        })?;
    let path = disk.source.clone().ok_or_else(|| {
        LifecycleError::Invalid(vec![field(
            "target",
            format!("Disk {target} has no volume behind it."),
        )])
    })?;
    let (pool, volume) = inv.volume(&path).ok_or_else(|| {
        LifecycleError::Conflict(format!(
            "Disk {target} ({path}) is not a volume of a storage pool, so virtdeck cannot grow it."
        ))
    })?;
    let now_gib = volume.capacity_bytes.div_ceil(GIB);
    if size_gib > 64 * 1024 {
        return Err(LifecycleError::Invalid(vec![field(
            "size_gib",
            "At most 65,536 GiB.",
        )]));
    }
    if size_gib * GIB <= volume.capacity_bytes {
        return Err(LifecycleError::Invalid(vec![field(
            "size_gib",
            format!("A disk can only grow: {target} has {now_gib} GiB now."),
        )]));
    }
    let extra_bytes = size_gib * GIB - volume.capacity_bytes;
    if pool.available_bytes < extra_bytes {
        return Err(LifecycleError::Conflict(format!(
            "Not enough space in pool {}: {} GiB more are needed, {} GiB are free.",
            pool.name,
            extra_bytes.div_ceil(GIB),
            pool.available_bytes / GIB
        )));
    }
    let all = claims(&inv.model, &inv.vms, &inv.rows);
    let previous_units = all
        .iter()
        .find(|c| c.vm == name)
        .map(|c| c.units)
        .unwrap_or(0);
    let disk_units = inv
        .model
        .units_for_disk(size_gib, pool.capacity_gib().max(1));
    let managed = inv.rows.iter().any(|r| r.name == name);
    let units = if managed {
        previous_units.max(disk_units)
    } else {
        previous_units
    };
    if units > previous_units {
        let others: Vec<_> = all.into_iter().filter(|c| c.vm != name).collect();
        admit(&inv.model, &others, units, None)?;
    }
    let live = vm.state.is_active();
    let grown = if live {
        hv.grow_disk(name, target, size_gib * GIB)
    } else {
        hv.resize_volume(&path, size_gib * GIB, false)
    };
    grown.map_err(|e| {
        LifecycleError::failed_because(
            format!(
                "Disk {target} could not grow: {}. It keeps its {now_gib} GiB.",
                reason_in_plain_words(&e)
            ),
            e,
        )
    })?;
    if managed && units != previous_units {
        store.set_vm_units(name, units)?;
    }
    Ok(DiskGrown {
        target: target.to_string(),
        path,
        size_gib,
        units,
        live,
    })
}

// ---- clone ----

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneRequest {
    /// The clone's name.
    pub name: String,
    /// Start the clone once it is made.
    #[serde(default)]
    pub start: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cloned {
    pub name: String,
    pub uuid: String,
    pub source: String,
    pub units: u32,
    pub volumes: Vec<String>,
    pub macs: Vec<String>,
    pub started: bool,
}

/// One disk to copy: source path, its pool, the copy's volume name, size, bytes on
/// disk (what a full copy reads), format.
struct DiskCopy {
    source: String,
    pool: String,
    volume_name: String,
    capacity_bytes: u64,
    allocation_bytes: u64,
    format: DiskFormat,
}

/// Runs on a defined clone (its name, its disks with their formats) before it starts.
pub(crate) type PrepareClone<'a> =
    &'a (dyn Fn(&str, &[(String, DiskFormat)]) -> Result<(), String> + Sync);

/// A step run on a defined clone before its first start, with what the job shows
/// while it runs. An error here rolls the clone back like any failed step.
pub(crate) type Prepare<'a> = Option<(&'static str, PrepareClone<'a>)>;

/// A clone that passed every check, its units held by a "creating" row: what
/// [`build_clone`] makes. Not built, it is undone by [`super::roll_back`] (or at
/// start-up, like an interrupted create).
pub struct ClonePlan {
    pub source: String,
    pub start: bool,
    pub mode: CloneMode,
    edits: CloneEdits,
    copies: Vec<DiskCopy>,
    units: u32,
    source_xml: String,
}

impl ClonePlan {
    /// The new VM's name.
    pub fn name(&self) -> &str {
        &self.edits.name
    }

    /// Bytes the disk copies read (the source volumes' allocation); an overlay copies none.
    pub fn bytes_to_copy(&self) -> u64 {
        if self.mode == CloneMode::Linked {
            return 0;
        }
        self.copies.iter().map(|c| c.allocation_bytes).sum()
    }
}

/// What a running clone reports, and how it is asked to stop.
pub trait CloneWatch: Sync {
    /// The clone moves on to `step`; `making` is the volume (pool, name) this step
    /// makes, so an interruption can remove it.
    fn step(&self, step: &str, making: Option<(&str, &str)>, bytes_done: u64);
    /// Bytes copied so far, a few times a second while a disk copy runs.
    fn copied(&self, bytes_done: u64);
    /// The clone stops (and is rolled back) before its next step once this is true.
    fn cancelled(&self) -> bool;
}

/// A clone nobody watches or cancels.
pub struct Unwatched;

impl CloneWatch for Unwatched {
    fn step(&self, _: &str, _: Option<(&str, &str)>, _: u64) {}
    fn copied(&self, _: u64) {}
    fn cancelled(&self) -> bool {
        false
    }
}

/// Why a clone stopped before it was done, as a build step's error.
pub const CLONE_CANCELLED: &str = "the clone was cancelled";

/// The copy's volume name: the clone's name with the source volume's extension.
fn copy_name(clone: &str, source_volume: &str, index: usize) -> String {
    let ext = source_volume
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty() && e.len() <= 5 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|e| format!(".{e}"))
        .unwrap_or_default();
    if index == 0 {
        format!("{clone}{ext}")
    } else {
        format!("{clone}-disk{index}{ext}")
    }
}

/// Copies a shut-off VM in one go: every disk volume copied in full, a new name, UUID
/// and MACs. (virtdeck's pages and API run a clone as a job: [`plan_clone`], then
/// [`build_clone`] on a thread of its own.)
pub fn clone(ctx: Ctx<'_>, source: &str, req: &CloneRequest, by: By<'_>) -> LcResult<Cloned> {
    let plan = plan_clone(ctx, source, req, by, CloneMode::Full)?;
    build_clone(ctx.hv, ctx.store, plan, None, &Unwatched)
}

/// Checks a clone (name, state, disks, units, disk space) and holds its units with a
/// "creating" row. Nothing is copied yet: that is [`build_clone`].
pub fn plan_clone(
    ctx: Ctx<'_>,
    source: &str,
    req: &CloneRequest,
    by: By<'_>,
    mode: CloneMode,
) -> LcResult<ClonePlan> {
    let Ctx {
        hv,
        store,
        cfg,
        lock,
        ..
    } = ctx;
    let By { actor, now } = by;
    let linked = mode == CloneMode::Linked;
    {
        let _guard = locked(lock)?;
        let inv = inventory(hv, store, cfg)?;
        let vm = find_vm(&inv.vms, source)?;
        let mut errors = Vec::new();
        let name = match VmName::parse(&req.name) {
            Ok(n) => Some(n),
            Err(e) => {
                errors.push(field("name", e.to_string()));
                None
            }
        };
        if let Some(n) = &name {
            if inv.vms.iter().any(|v| v.name == n.as_str())
                || inv.rows.iter().any(|r| r.name == n.as_str())
            {
                errors.push(field(
                    "name",
                    format!("A VM named {n} exists already. Pick another name."),
                ));
            }
        }
        if vm.state != VmState::ShutOff {
            return Err(LifecycleError::Conflict(format!(
                "{source} is {}; shut it down before cloning, so its disks are copied in a consistent state.",
                vm.state.label()
            )));
        }
        let source_xml = hv.domain_xml(source)?;
        let def = xml::parse_domain(&source_xml).map_err(|e| {
            LifecycleError::failed(format!("The VM's definition could not be read: {e}"))
        })?;
        let Some(name) = name.filter(|_| errors.is_empty()) else {
            return Err(LifecycleError::Invalid(errors));
        };

        // Disks: each must be a volume in a pool, so libvirt can copy it.
        let mut copies = Vec::new();
        let mut needed_gib: HashMap<String, u64> = HashMap::new();
        for disk in def.disks.iter().filter(|d| d.device == "disk") {
            let Some(path) = &disk.source else { continue };
            let found = inv
                .pools
                .iter()
                .find_map(|p| p.volumes.iter().find(|v| &v.path == path).map(|v| (p, v)));
            let Some((pool, vol)) = found else {
                return Err(LifecycleError::Conflict(format!(
                    "{source}'s disk {path} is not a volume in a storage pool, so virtdeck cannot copy it. Move it into a pool first."
                )));
            };
            if linked && !pool_takes_overlays(&pool.kind) {
                return Err(LifecycleError::Invalid(vec![field(
                    "mode",
                    overlay_refusal(&pool.name, &pool.kind),
                )]));
            }
            // A linked clone's disk is a qcow2 file whatever the source's format.
            let source_name = if linked { "overlay.qcow2" } else { &vol.name };
            let volume_name = copy_name(name.as_str(), source_name, copies.len());
            if pool.volumes.iter().any(|v| v.name == volume_name)
                || copies
                    .iter()
                    .any(|c: &DiskCopy| c.pool == pool.name && c.volume_name == volume_name)
            {
                return Err(LifecycleError::Invalid(vec![field(
                    "name",
                    format!(
                        "Pool {} already has a volume named {volume_name}; pick another name for the clone.",
                        pool.name
                    ),
                )]));
            }
            let format = match disk.format.as_deref() {
                Some("qcow2") => DiskFormat::Qcow2,
                _ => DiskFormat::Raw,
            };
            // libvirt's copy reads the volume in the format it lists for it: that must be
            // the format the VM used, with no backing file virtdeck did not make (a guest
            // can write a qcow2 header naming a host file into its raw disk).
            if !linked {
                if let Err(why) =
                    super::images::inspect(hv, store, &vol.name, path, Some(format)).checked
                {
                    return Err(LifecycleError::Conflict(format!(
                        "{source}'s disk cannot be copied: {why}"
                    )));
                }
            }
            // An overlay starts empty and grows with what the clone writes.
            if !linked {
                *needed_gib.entry(pool.name.clone()).or_default() +=
                    vol.allocation_bytes.max(1).div_ceil(GIB);
            }
            copies.push(DiskCopy {
                source: path.clone(),
                pool: pool.name.clone(),
                volume_name,
                capacity_bytes: vol.capacity_bytes,
                allocation_bytes: vol.allocation_bytes,
                format,
            });
        }

        // Units and disk space, before anything is touched.
        let all = claims(&inv.model, &inv.vms, &inv.rows);
        let units = all
            .iter()
            .find(|c| c.vm == source)
            .map(|c| c.units)
            .unwrap_or(1)
            .max(1);
        super::refuse_while_draining(store)?;
        admit(&inv.model, &all, units, None)?;
        for (pool, gib) in &needed_gib {
            let available = inv
                .pools
                .iter()
                .find(|p| &p.name == pool)
                .map(|p| p.available_gib())
                .unwrap_or(0);
            if *gib > available {
                return Err(AdmissionError::Disk {
                    pool: pool.clone(),
                    needed_gib: *gib,
                    available_gib: available,
                    short_gib: gib - available,
                }
                .into());
            }
        }

        // New MACs, unique on the host.
        let macs = new_macs(&def, &inv.macs_in_use);
        let logs = def
            .serial_log
            .iter()
            .map(|old| {
                let new = match old.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{name}-serial.log"),
                    None => format!("{name}-serial.log"),
                };
                (old.clone(), new)
            })
            .collect();
        let edits = CloneEdits {
            name: name.to_string(),
            uuid: random_uuid(),
            macs,
            disks: HashMap::new(),
            logs,
            disk_format: linked.then(|| DiskFormat::Qcow2.as_str().to_string()),
            // A cloud-init seed holds its VM's password hash and identity and is deleted
            // with it: the clone's CD-ROM drive is left empty instead of sharing it.
            ejected: store
                .cloud_init(source)?
                .map(|c| vec![c.seed_path])
                .unwrap_or_default(),
        };
        store.insert_vm(&VmRow {
            name: name.to_string(),
            uuid: edits.uuid.clone(),
            units,
            state: "creating".into(),
            created_volume: None,
            created_by: actor.to_string(),
            created_at: now,
        })?;
        Ok(ClonePlan {
            source: source.to_string(),
            start: req.start,
            mode,
            edits,
            copies,
            units,
            source_xml,
        })
    }
}

/// Makes a planned clone: disks copied (or overlaid), definition, `prepare`, start.
/// Any failure, or a cancel seen between steps, removes everything it made and
/// releases the units.
pub fn build_clone(
    hv: &dyn Hypervisor,
    store: &Store,
    mut plan: ClonePlan,
    prepare: Prepare<'_>,
    watch: &dyn CloneWatch,
) -> LcResult<Cloned> {
    let name = plan.edits.name.clone();
    let built = build_steps(hv, store, &mut plan, prepare, watch);
    let ClonePlan {
        source,
        start,
        edits,
        copies,
        units,
        ..
    } = plan;
    match built {
        Ok(()) => {
            store.finish_vm(&name)?;
            Ok(Cloned {
                name,
                uuid: edits.uuid.clone(),
                source,
                units,
                volumes: copies
                    .iter()
                    .filter_map(|c| edits.disks.get(&c.source).cloned())
                    .collect(),
                macs: edits.macs.values().cloned().collect(),
                started: start,
            })
        }
        Err(("cancel", _)) => {
            let undone = super::roll_back(hv, store, &name);
            tracing::info!(vm = %name, undone = ?undone, "clone cancelled; rolled back");
            Err(LifecycleError::Conflict(format!(
                "The clone of {source} to {name} was cancelled. Nothing was left behind{}.",
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
            &format!("{source} could not be cloned"),
            what,
            &reason,
        )),
    }
}

/// The steps of [`build_clone`]; the new disks' paths go into `plan`'s edits.
fn build_steps(
    hv: &dyn Hypervisor,
    store: &Store,
    plan: &mut ClonePlan,
    prepare: Prepare<'_>,
    watch: &dyn CloneWatch,
) -> Result<(), (&'static str, String)> {
    let (start, mode) = (plan.start, plan.mode);
    let (edits, copies, source_xml) = (&mut plan.edits, &plan.copies, plan.source_xml.as_str());
    let plain = |what: &'static str| move |e: HypervisorError| (what, reason_in_plain_words(&e));
    let go_on = || {
        if watch.cancelled() {
            Err(("cancel", CLONE_CANCELLED.to_string()))
        } else {
            Ok(())
        }
    };
    let linked = mode == CloneMode::Linked;
    let mut made = Vec::new();
    let mut copied_bytes = 0u64;
    for (i, c) in copies.iter().enumerate() {
        go_on()?;
        let what = if linked {
            "making linked disk"
        } else {
            "copying disk"
        };
        watch.step(
            &format!(
                "{what} {} of {}: {}/{}",
                i + 1,
                copies.len(),
                c.pool,
                c.volume_name
            ),
            Some((&c.pool, &c.volume_name)),
            copied_bytes,
        );
        let path = if linked {
            let vol_xml = overlay_volume_xml(&c.volume_name, c.capacity_bytes, &c.source, c.format);
            hv.create_volume(&c.pool, &vol_xml)
                .map_err(plain("creating a linked disk (qcow2 overlay)"))?
        } else {
            copy_watched(hv, c, copied_bytes, watch).map_err(plain("copying a disk volume"))?
        };
        if !linked {
            copied_bytes += c.allocation_bytes;
        }
        made.push((
            path.clone(),
            if linked { DiskFormat::Qcow2 } else { c.format },
        ));
        super::record_volume(
            store,
            &edits.name,
            &path,
            if linked { DiskFormat::Qcow2 } else { c.format },
            linked.then_some(c.source.as_str()),
        );
        edits.disks.insert(c.source.clone(), path);
        // The copy is recorded with the VM now; the job no longer needs to name it.
        watch.step(
            &format!("{what} {} of {} done", i + 1, copies.len()),
            None,
            copied_bytes,
        );
    }
    go_on()?;
    watch.step("defining the clone", None, copied_bytes);
    let new_xml = clone_domain_xml(source_xml, edits)
        .map_err(|e| ("rewriting the definition", e.to_string()))?;
    hv.define(&new_xml).map_err(plain("defining the clone"))?;
    if let Some((what, prepare)) = prepare {
        go_on()?;
        watch.step(what, None, copied_bytes);
        prepare(&edits.name, &made).map_err(|reason| (what, reason))?;
    }
    if start {
        go_on()?;
        watch.step("starting the clone", None, copied_bytes);
        hv.act(&edits.name, VmAction::Start)
            .map_err(plain("starting the clone"))?;
    }
    Ok(())
}

/// Copies one disk with libvirt, reporting the copy's growing allocation while it runs
/// (libvirt's copy itself reports nothing and cannot be interrupted).
fn copy_watched(
    hv: &dyn Hypervisor,
    c: &DiskCopy,
    copied_before: u64,
    watch: &dyn CloneWatch,
) -> Result<String, HypervisorError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut asked = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if asked.elapsed() < Duration::from_millis(500) {
                    continue;
                }
                asked = Instant::now();
                let copy = hv
                    .pool_volumes(&c.pool)
                    .ok()
                    .and_then(|vs| vs.into_iter().find(|v| v.name == c.volume_name));
                if let Some(v) = copy {
                    if !done.load(Ordering::Relaxed) {
                        watch.copied(copied_before + v.allocation_bytes.min(c.allocation_bytes));
                    }
                }
            }
        });
        let vol_xml = xml::volume_copy_xml(&c.volume_name, c.capacity_bytes, c.format);
        let r = hv.clone_volume(&c.source, &vol_xml);
        done.store(true, Ordering::Relaxed);
        r
    })
}

// ---- snapshots ----

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

pub fn snapshots(hv: &dyn Hypervisor, name: &str) -> LcResult<Vec<SnapshotInfo>> {
    match hv.snapshots(name) {
        Err(HypervisorError::NotFound { .. }) => Err(LifecycleError::NotFound(format!(
            "There is no VM named {name}."
        ))),
        other => Ok(other?),
    }
}

/// Takes a snapshot (with memory when the VM runs). QEMU keeps it inside qcow2 files,
/// so every writable disk must be qcow2.
pub fn create_snapshot(
    hv: &dyn Hypervisor,
    name: &str,
    req: &SnapshotRequest,
) -> LcResult<SnapshotInfo> {
    let existing = snapshots(hv, name)?;
    let mut errors = Vec::new();
    let snap = match SnapshotName::parse(&req.name) {
        Ok(s) => Some(s),
        Err(e) => {
            errors.push(field("snapshot_name", e.to_string()));
            None
        }
    };
    if let Some(s) = &snap {
        if existing.iter().any(|e| e.name == s.as_str()) {
            errors.push(field(
                "snapshot_name",
                format!(
                    "{name} has a snapshot named {} already. Pick another name.",
                    s.as_str()
                ),
            ));
        }
    }
    if req.description.chars().count() > MAX_DESCRIPTION_CHARS {
        errors.push(field(
            "description",
            format!("Keep the description under {MAX_DESCRIPTION_CHARS} characters."),
        ));
    }
    let Some(snap) = snap.filter(|_| errors.is_empty()) else {
        return Err(LifecycleError::Invalid(errors));
    };
    let def = definition(hv, name)?;
    if def.firmware == "uefi" {
        return Err(LifecycleError::Conflict(format!(
            "{name} boots with UEFI firmware: libvirt cannot keep the firmware's variables in a snapshot, so it takes none of this VM. Use Back up now instead: a backup keeps its disks and definition."
        )));
    }
    if def.domain_type != "test" {
        if let Some(d) = def.disks.iter().find(|d| {
            d.device == "disk" && d.source.is_some() && d.format.as_deref() != Some("qcow2")
        }) {
            return Err(LifecycleError::Conflict(format!(
                "{name}'s disk {} is {}, not qcow2; snapshots are kept inside qcow2 disks, so this VM cannot have them.",
                d.source.as_deref().unwrap_or(&d.target),
                d.format.as_deref().unwrap_or("raw"),
            )));
        }
    }
    hv.create_snapshot(name, &snapshot_xml(&snap, &req.description))
        .map_err(|e| {
            LifecycleError::failed_because(
                format!(
                    "The snapshot could not be taken: {}",
                    reason_in_plain_words(&e)
                ),
                e,
            )
        })?;
    snapshots(hv, name)?
        .into_iter()
        .find(|s| s.name == snap.as_str())
        .ok_or_else(|| LifecycleError::failed("libvirt took the snapshot but does not list it."))
}

fn snapshot_missing(name: &str, snapshot: &str) -> LifecycleError {
    LifecycleError::NotFound(format!("{name} has no snapshot named {snapshot}."))
}

/// Reverts VM `name` to `snapshot`. QEMU cannot load a snapshot into disks that carry
/// dirty bitmaps (a running VM is stopped by the attempt), so virtdeck's backup
/// checkpoints are deleted first (the VM's next backup is full, and says why); a
/// checkpoint virtdeck did not make refuses the revert.
pub fn revert_snapshot(hv: &dyn Hypervisor, name: &str, snapshot: &str) -> LcResult<()> {
    if !snapshots(hv, name)?.iter().any(|s| s.name == snapshot) {
        return Err(snapshot_missing(name, snapshot));
    }
    let (ours, others): (Vec<String>, Vec<String>) = hv
        .checkpoints(name)?
        .into_iter()
        .partition(|c| c.starts_with("virtdeck-"));
    if !others.is_empty() {
        return Err(LifecycleError::Conflict(format!(
            "{name} has checkpoints virtdeck did not make ({}); a snapshot cannot be loaded while \
             their dirty bitmaps exist. Delete them first (virsh checkpoint-delete).",
            others.join(", ")
        )));
    }
    for checkpoint in &ours {
        hv.delete_checkpoint(name, checkpoint).map_err(|e| {
            LifecycleError::failed_because(
                format!(
                    "{name} could not be reverted to {snapshot}: its backup checkpoint \
                     {checkpoint} could not be deleted first ({}). Is a backup of it running?",
                    reason_in_plain_words(&e)
                ),
                e,
            )
        })?;
    }
    hv.revert_snapshot(name, snapshot).map_err(|e| {
        LifecycleError::failed_because(
            format!(
                "{name} could not be reverted to {snapshot}: {}",
                reason_in_plain_words(&e)
            ),
            e,
        )
    })
}

pub fn delete_snapshot(hv: &dyn Hypervisor, name: &str, snapshot: &str) -> LcResult<()> {
    if !snapshots(hv, name)?.iter().any(|s| s.name == snapshot) {
        return Err(snapshot_missing(name, snapshot));
    }
    hv.delete_snapshot(name, snapshot).map_err(|e| {
        LifecycleError::failed_because(
            format!(
                "Snapshot {snapshot} of {name} could not be deleted: {}",
                reason_in_plain_words(&e)
            ),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::copy_name;

    #[test]
    fn copies_keep_the_source_extension() {
        assert_eq!(copy_name("web02", "web01.qcow2", 0), "web02.qcow2");
        assert_eq!(copy_name("web02", "web01-data.img", 1), "web02-disk1.img");
        assert_eq!(copy_name("db2", "lv_db1", 0), "db2");
        assert_eq!(copy_name("db2", "odd.name.with spaces", 0), "db2");
    }
}
