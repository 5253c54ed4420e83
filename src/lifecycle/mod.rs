//! VM lifecycle: capacity in compute units, admission, create with rollback, actions,
//! delete, and start-up reconciliation. Uses the hypervisor and the store; knows no HTTP.
//! Every function here blocks: call it off the async runtime.

pub mod attach;
pub mod backup_records;
pub mod backups;
pub mod changes;
pub mod cloudinit;
pub mod devices;
pub mod images;
pub mod jobs;
pub mod kickstart;
pub mod labels;
pub mod list_cache;
pub mod migrate;
pub mod start_order;
pub mod storage;
pub mod templates;
pub mod volumes;
pub use changes::{
    clone, create_snapshot, delete_snapshot, resize, revert_snapshot, snapshots, CloneRequest,
    Cloned, Resized, SnapshotRequest,
};
// The create request and its field errors belong to the pure plan.
pub use crate::domain::create_plan::{
    CreateVmRequest, DiskRequest, FieldError, InstallRequest, NicRequest, SizeRequest,
    SERIAL_LOG_DIR,
};

use crate::config::LifecycleSettings;
use crate::domain::capacity::{admit, usage, AdmissionError, Claim, Size, UnitModel, UnitUsage};
use crate::domain::create_plan::{self, field, resolve_size, valid_ifname};
use crate::domain::host::VirtType;
use crate::domain::install_tree::TreeUrl;
use crate::domain::vm::{VmAction, VmSummary};
use crate::domain::vmspec::DiskFormat;
use crate::domain::volumes::{cdrom_refusal, delete_keep_reason, existing_disk_refusal, VolumeUse};
use crate::domain::xml;
use crate::hypervisor::{HvResult, Hypervisor, HypervisorError};
use crate::store::{Store, StoreError, VmRow};
use rand::RngCore;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

/// After an ACPI shutdown, how long the guest gets before virtdeck offers force off.
pub const SHUTDOWN_GRACE_SECS: i64 = 60;

/// Serializes admission: two creates can never both take the last units.
#[derive(Default)]
pub struct AdmissionLock(pub(crate) Mutex<()>);

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Input errors, each at its field. Nothing was touched.
    #[error("{}", .0.first().map(|f| f.message.as_str()).unwrap_or("invalid input"))]
    Invalid(Vec<FieldError>),
    /// Does not fit; nothing was touched.
    #[error("{0}")]
    Capacity(#[from] AdmissionError),
    /// A libvirt step failed; what had been done was undone. `cause` is libvirt's own
    /// error when a libvirt call failed (its error number included), for the log.
    #[error("{message}")]
    Failed {
        message: String,
        #[source]
        cause: Option<HypervisorError>,
    },
    #[error("{0}")]
    NotFound(String),
    /// The action does not fit the VM's state.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Hypervisor(#[from] HypervisorError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl LifecycleError {
    /// A step failed for a reason of virtdeck's own (a broken lock, a definition it
    /// cannot read back); the sentence says what to do.
    pub fn failed(message: impl Into<String>) -> Self {
        LifecycleError::Failed {
            message: message.into(),
            cause: None,
        }
    }

    /// A step failed because libvirt refused a call; `message` says it in plain words,
    /// `cause` keeps libvirt's error (and its number) for the log.
    pub fn failed_because(message: impl Into<String>, cause: HypervisorError) -> Self {
        LifecycleError::Failed {
            message: message.into(),
            cause: Some(cause),
        }
    }

    /// libvirt's error number behind this error, if libvirt refused a call.
    pub fn libvirt_code(&self) -> Option<u32> {
        match self {
            LifecycleError::Failed {
                cause: Some(cause), ..
            }
            | LifecycleError::Hypervisor(cause) => cause.libvirt_code(),
            _ => None,
        }
    }
}

pub type LcResult<T> = Result<T, LifecycleError>;

/// What a VM change works with: libvirt, the store, the lifecycle's settings and the
/// admission lock (held from reading the claims to inserting the new VM's row).
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub hv: &'a dyn Hypervisor,
    pub store: &'a Store,
    pub cfg: &'a LifecycleSettings,
    pub lock: &'a AdmissionLock,
    /// Cancel handles and live byte counts of the running jobs.
    pub jobs: &'a jobs::Jobs,
}

/// Who asks for a change and when (kept in the new VM's row).
#[derive(Debug, Clone, Copy)]
pub struct By<'a> {
    pub actor: &'a str,
    pub now: i64,
}

// ---- capacity ----

/// The host's units and who holds them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Capacity {
    pub model: UnitModel,
    pub unit_size: Size,
    pub usage: UnitUsage,
    pub claims: Vec<Claim>,
    pub pools: Vec<PoolCapacity>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PoolCapacity {
    pub name: String,
    pub kind: String,
    pub capacity_gib: u64,
    pub available_gib: u64,
    pub gib_per_unit: u64,
}

fn unit_model(hv: &dyn Hypervisor, cfg: &LifecycleSettings) -> LcResult<UnitModel> {
    let facts = hv.host_facts()?;
    UnitModel::new(&cfg.capacity, facts.cpu_count, facts.memory_mib).map_err(|e| {
        LifecycleError::failed(format!("The capacity settings do not fit this host: {e}"))
    })
}

/// Each VM counted once: virtdeck's own by their recorded units (including those being
/// created), the others by their real size rounded up to units.
pub fn claims(model: &UnitModel, vms: &[VmSummary], rows: &[VmRow]) -> Vec<Claim> {
    let existing: HashSet<&str> = vms.iter().map(|v| v.name.as_str()).collect();
    let managed: HashMap<&str, &VmRow> = rows.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut out: Vec<Claim> = rows
        .iter()
        .filter(|r| r.state != "ready" || existing.contains(r.name.as_str()))
        .map(|r| Claim {
            vm: r.name.clone(),
            units: r.units,
            managed: true,
        })
        .collect();
    out.extend(
        vms.iter()
            .filter(|v| !managed.contains_key(v.name.as_str()))
            .map(|v| Claim {
                vm: v.name.clone(),
                units: model.units_for(Size {
                    vcpus: v.vcpus,
                    memory_mib: v.memory_mib,
                }),
                managed: false,
            }),
    );
    out
}

pub fn capacity(hv: &dyn Hypervisor, store: &Store, cfg: &LifecycleSettings) -> LcResult<Capacity> {
    let model = unit_model(hv, cfg)?;
    let rows = store.vm_rows()?; // before the VMs: see `inventory`
    let vms = hv.list_vms()?;
    let claims = claims(&model, &vms, &rows);
    capacity_of(hv, model, claims)
}

/// The capacity summary for claims already counted (e.g. with a cached VM list); the
/// pools are read now.
pub fn capacity_of(
    hv: &dyn Hypervisor,
    model: UnitModel,
    claims: Vec<Claim>,
) -> LcResult<Capacity> {
    let pools = hv
        .pools()?
        .into_iter()
        .map(|p| PoolCapacity {
            gib_per_unit: model.disk_gib_of(1, p.capacity_gib()),
            capacity_gib: p.capacity_gib(),
            available_gib: p.available_gib(),
            name: p.name,
            kind: p.kind,
        })
        .collect();
    Ok(Capacity {
        unit_size: model.size_of(1),
        usage: usage(&model, &claims),
        model,
        claims,
        pools,
    })
}

// ---- create ----

/// What a successful create made.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub name: String,
    pub uuid: String,
    pub units: u32,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_path: Option<String>,
    pub mac: Option<String>,
    pub started: bool,
}

/// The steps of a create, for failure injection in tests and for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateStep {
    CreateVolume,
    FetchInstaller,
    Define,
    Autostart,
    Start,
    CloudInit,
    Kickstart,
}

fn random_uuid() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The last three bytes of a new MAC address.
fn random_mac_bytes() -> [u8; 3] {
    let mut b = [0u8; 3];
    rand::rng().fill_bytes(&mut b);
    b
}

/// A file for direct kernel boot: must resolve to a regular file inside `boot_dir`;
/// the real path, or why not.
fn boot_file(boot_dir: &Path, given: &str) -> Result<String, String> {
    let p = Path::new(given.trim());
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        boot_dir.join(p)
    };
    let outside = || {
        format!(
            "Put the file in {} and give its name; files elsewhere are not used.",
            boot_dir.display()
        )
    };
    let real = std::fs::canonicalize(&p).map_err(|_| format!("{} does not exist.", p.display()))?;
    let root = std::fs::canonicalize(boot_dir).map_err(|_| outside())?;
    if !real.starts_with(&root) || !real.is_file() {
        return Err(outside());
    }
    Ok(real.display().to_string())
}

/// The host as a create reads it: the plain snapshot the plan works on (read through
/// this type, as `inv.vms`, `inv.pools`…) and the store's VM rows, claims are counted
/// from.
struct Inventory {
    snapshot: create_plan::Snapshot,
    rows: Vec<VmRow>,
}

impl std::ops::Deref for Inventory {
    type Target = create_plan::Snapshot;
    fn deref(&self) -> &create_plan::Snapshot {
        &self.snapshot
    }
}

fn inventory(hv: &dyn Hypervisor, store: &Store, cfg: &LifecycleSettings) -> LcResult<Inventory> {
    let model = unit_model(hv, cfg)?;
    // Rows before VMs: a row still "creating" now is counted by its row; one already
    // "ready" was defined before this point, so the VM listing below includes it.
    let rows = store.vm_rows()?;
    let mut macs_in_use = HashSet::new();
    let mut disks_in_use = HashMap::new();
    let mut cdroms_in_use = HashMap::new();
    for x in hv.all_domain_xml()? {
        if let Ok(d) = xml::parse_domain(&x) {
            for n in &d.nics {
                if let Some(m) = &n.mac {
                    macs_in_use.insert(m.to_ascii_lowercase());
                }
            }
            for disk in &d.disks {
                let Some(src) = &disk.source else { continue };
                match disk.device.as_str() {
                    "disk" => disks_in_use.insert(src.clone(), d.name.clone()),
                    _ => cdroms_in_use.insert(src.clone(), d.name.clone()),
                };
            }
        }
    }
    Ok(Inventory {
        snapshot: create_plan::Snapshot {
            model,
            vms: hv.list_vms()?,
            row_names: rows.iter().map(|r| r.name.clone()).collect(),
            pools: hv.pools()?,
            networks: hv.networks()?,
            macs_in_use,
            disks_in_use,
            cdroms_in_use,
            seeds: store.seed_paths()?,
            being_made: store.volumes_being_made()?,
            inspected: HashMap::new(),
            boot_files: HashMap::new(),
            host_bridges: HashSet::new(),
            guest: Default::default(),
        },
        rows,
    })
}

/// The inventory, what the request names looked at, and the named sizes: everything
/// the create plan reads.
fn read_for_create(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &LifecycleSettings,
    req: &CreateVmRequest,
    virt_type: VirtType,
) -> LcResult<(Inventory, Vec<(String, u32)>)> {
    let mut inv = inventory(hv, store, cfg)?;
    inspect_named(hv, store, cfg, req, &mut inv.snapshot);
    let asks_for_more = req.firmware.is_some_and(|f| f.is_uefi())
        || req.tpm
        || req
            .cpu
            .as_deref()
            .is_some_and(|c| !matches!(c.trim(), "" | "default"));
    if asks_for_more {
        // Only what the request asks for is looked up: a plain create needs none of it.
        inv.snapshot.guest = hv.guest_capabilities(virt_type).unwrap_or_default();
    }
    let flavors: Vec<(String, u32)> = store
        .flavors()?
        .into_iter()
        .map(|f| (f.name, f.units))
        .collect();
    Ok((inv, flavors))
}

/// The pure plan of `req` on the host read into `inv`, with a fresh UUID and MAC.
fn plan(
    req: &CreateVmRequest,
    inv: &Inventory,
    flavors: &[(String, u32)],
    virt_type: VirtType,
) -> Result<create_plan::CreatePlan, Vec<FieldError>> {
    create_plan::plan(
        req,
        inv,
        flavors,
        virt_type,
        random_uuid(),
        random_mac_bytes,
    )
}

/// The volumes a new VM may take: paths allowed as its existing disk, and as its CD-ROM
/// (by the rules of `domain::volumes`, as [`create`] checks them), for the form's lists.
pub struct VolumeChoices {
    pub disks: HashSet<String>,
    pub isos: HashSet<String>,
}

pub fn volume_choices(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &LifecycleSettings,
) -> LcResult<VolumeChoices> {
    let inv = inventory(hv, store, cfg)?;
    let mut choices = VolumeChoices {
        disks: HashSet::new(),
        isos: HashSet::new(),
    };
    for v in inv.pools.iter().flat_map(|p| p.volumes.iter()) {
        let usage = inv.volume_use(v);
        if existing_disk_refusal(&usage).is_none() {
            choices.disks.insert(v.path.clone());
        }
        if cdrom_refusal(&usage).is_none() {
            choices.isos.insert(v.path.clone());
        }
    }
    Ok(choices)
}

/// Every problem [`create`] would find with `req` at its fields, without making
/// anything: the field checks and, when they pass, whether the free units admit it
/// (reported at the `units` field). The New VM form shows them all in one round.
pub fn check_create(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &LifecycleSettings,
    virt_type: Result<VirtType, String>,
    req: &CreateVmRequest,
) -> LcResult<Vec<FieldError>> {
    let Ok(virt_type) = virt_type else {
        return Ok(Vec::new());
    };
    let (inv, flavors) = read_for_create(hv, store, cfg, req, virt_type)?;
    let claims = claims(&inv.model, &inv.vms, &inv.rows);
    let admission = |units: u32| admit(&inv.model, &claims, units, None).err();
    match plan(req, &inv, &flavors, virt_type) {
        Ok(plan) => Ok(admission(plan.units)
            .map(|e| vec![field("units", e.to_string())])
            .unwrap_or_default()),
        Err(mut errors) => {
            // The size's own units (without the disk's share) may already be too many.
            let size_fields = ["flavor", "units", "vcpus", "memory_mib"];
            if !errors.iter().any(|e| size_fields.contains(&e.field)) {
                let mut scratch = Vec::new();
                if let (Some(u), _) = resolve_size(&inv.model, &flavors, &req.size(), &mut scratch)
                {
                    if let Some(e) = admission(u) {
                        errors.push(field("units", e.to_string()));
                    }
                }
            }
            Ok(errors)
        }
    }
}

/// Validates, admits against free units, then makes the volume, the definition and
/// (optionally) starts it. A failure at any step undoes the earlier ones.
pub fn create(
    ctx: Ctx<'_>,
    virt_type: Result<VirtType, String>,
    req: &CreateVmRequest,
    by: By<'_>,
) -> LcResult<Created> {
    let Ctx {
        hv,
        store,
        cfg,
        lock,
        ..
    } = ctx;
    let By { actor, now } = by;
    let virt_type = virt_type.map_err(LifecycleError::failed)?;
    let (mut plan, kickstart) = {
        let _guard = lock.0.lock().map_err(|_| {
            LifecycleError::failed(
                "The admission lock is broken after an earlier failure; restart virtdeck.",
            )
        })?;
        let (inv, flavors) = read_for_create(hv, store, cfg, req, virt_type)?;
        let plan = plan(req, &inv, &flavors, virt_type).map_err(LifecycleError::Invalid)?;
        let kickstart = match &req.install {
            InstallRequest::Url { kickstart: ks, .. } => kickstart::plan(
                store,
                &cfg.install,
                ks.as_deref(),
                req.kickstart_base_url.as_deref(),
                now,
            )?,
            _ => None,
        };
        let claims = claims(&inv.model, &inv.vms, &inv.rows);
        refuse_while_draining(store)?;
        admit(&inv.model, &claims, plan.units, None)?;
        store.insert_vm(&VmRow {
            name: plan.spec.name.to_string(),
            uuid: plan.spec.uuid.clone(),
            units: plan.units,
            state: "creating".into(),
            created_volume: None,
            created_by: actor.to_string(),
            created_at: now,
        })?;
        (plan, kickstart)
    };
    let name = plan.spec.name.to_string();
    match build(hv, store, cfg, &mut plan, kickstart.as_ref()) {
        Ok(disk_path) => {
            store.finish_vm(&name)?;
            Ok(Created {
                name,
                uuid: plan.spec.uuid.clone(),
                units: plan.units,
                vcpus: plan.spec.vcpus,
                memory_mib: plan.spec.memory_mib,
                disk_path,
                mac: plan.spec.nic.as_ref().map(|n| n.mac.to_string()),
                started: plan.start,
            })
        }
        Err((step, e)) => {
            let what = match step {
                CreateStep::CreateVolume => "creating the disk volume",
                CreateStep::FetchInstaller => "fetching the installer",
                CreateStep::Define => "defining the VM",
                CreateStep::Autostart => "turning on autostart",
                CreateStep::Start => "starting the VM",
                CreateStep::CloudInit => "preparing the cloud image and its cloud-init seed",
                CreateStep::Kickstart => "preparing the kickstart URL",
            };
            Err(undo_failed(
                hv,
                store,
                &name,
                "The VM could not be created",
                what,
                &e,
            ))
        }
    }
}

/// Looks at what a create request names before the plan checks it: the volumes
/// (existing disk, CD-ROM, cloud image), the direct-boot files and the bridge.
fn inspect_named(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &LifecycleSettings,
    req: &CreateVmRequest,
    inv: &mut create_plan::Snapshot,
) {
    if let InstallRequest::Kernel { kernel, initrd, .. } = &req.install {
        let initrd = initrd.as_ref().filter(|s| !s.trim().is_empty());
        for given in std::iter::once(kernel).chain(initrd) {
            let found = boot_file(&cfg.boot_dir, given);
            inv.boot_files.insert(given.clone(), found);
        }
    }
    if let Some(b) = req.nic.as_ref().and_then(|n| n.bridge.as_deref()) {
        if valid_ifname(b) && Path::new("/sys/class/net").join(b).join("bridge").exists() {
            inv.host_bridges.insert(b.to_string());
        }
    }
    let mut paths = Vec::new();
    match &req.disk {
        Some(DiskRequest::Existing { path }) => paths.push(path),
        Some(DiskRequest::CloudImage { base, .. }) => paths.push(base),
        _ => {}
    }
    if let InstallRequest::Cdrom { volume } = &req.install {
        paths.push(volume);
    }
    for path in paths {
        let name = inv
            .pools
            .iter()
            .flat_map(|p| p.volumes.iter())
            .find(|v| &v.path == path)
            .map(|v| v.name.clone());
        if let Some(name) = name {
            let found = images::inspect(hv, store, &name, path, None);
            let facts = create_plan::VolumeFacts {
                libvirt_format: found.libvirt_format,
                checked: found.checked,
            };
            inv.inspected.insert(path.clone(), facts);
        }
    }
}

/// Records a volume virtdeck just made for VM `vm`: in `vm_made` (undone if the create
/// fails) and in `vm_volumes` (its VM's own, deleted with it on request), with the
/// format it was made in and the backing file it names.
pub(crate) fn record_volume(
    store: &Store,
    vm: &str,
    path: &str,
    format: DiskFormat,
    backing: Option<&str>,
) {
    if let Err(e) = store.record_made(vm, "volume", path) {
        tracing::error!(vm, path, error = %e, "could not record a new volume");
    }
    if let Err(e) = store.record_vm_volume(vm, path, format.as_str(), backing) {
        tracing::error!(vm, path, error = %e, "could not record a new volume as the VM's");
    }
}

/// Performs the steps; the store row records what exists so far.
fn build(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &LifecycleSettings,
    plan: &mut create_plan::CreatePlan,
    kickstart: Option<&kickstart::KickstartPlan>,
) -> Result<Option<String>, (CreateStep, String)> {
    let failed = |step: CreateStep| move |e: HypervisorError| (step, reason_in_plain_words(&e));
    let name = plan.spec.name.to_string();
    let mut disk_path = None;
    if let Some(seed) = &plan.cloud {
        cloudinit::make(hv, store, seed, &mut plan.spec).map_err(|e| (CreateStep::CloudInit, e))?;
    }
    if let Some((pool, vol_xml)) = &plan.new_volume {
        let path = hv
            .create_volume(pool, vol_xml)
            .map_err(failed(CreateStep::CreateVolume))?;
        // Record it before anything else can fail, so a crash here is reconciled too.
        let format = plan
            .spec
            .disks
            .iter()
            .find(|d| !d.cdrom && d.path.is_empty())
            .map(|d| d.format)
            .unwrap_or(DiskFormat::Raw);
        record_volume(store, &name, &path, format, None);
        if let Some(d) = plan
            .spec
            .disks
            .iter_mut()
            .find(|d| !d.cdrom && d.path.is_empty())
        {
            d.path = path.clone();
        }
        disk_path = Some(path);
    } else {
        disk_path = plan
            .spec
            .disks
            .iter()
            .find(|d| !d.cdrom)
            .map(|d| d.path.clone())
            .or(disk_path);
    }
    if let Some((tree, kernel_args)) = &plan.network_install {
        // Like virt-install --location: boot the installer once from a transient
        // definition, and define the VM to boot its disk from then on.
        let (kernel, initrd) = fetch_installer(store, &name, tree, &cfg.boot_dir, &cfg.fetch)
            .map_err(|e| (CreateStep::FetchInstaller, e))?;
        let kernel_args = match kickstart {
            Some(k) => k
                .kernel_args(store, &name, kernel_args)
                .map_err(|e| (CreateStep::Kickstart, e))?,
            None => kernel_args.clone(),
        };
        let install = xml::install_domain_xml(&plan.spec, &kernel, &initrd, &kernel_args);
        hv.start_transient(&install)
            .map_err(failed(CreateStep::Start))?;
        hv.define(&xml::domain_xml(&plan.spec))
            .map_err(failed(CreateStep::Define))?;
        if plan.autostart {
            hv.set_autostart(&name, true)
                .map_err(failed(CreateStep::Autostart))?;
        }
        // QEMU has read them at start; the next boot is from the disk.
        for f in [&kernel, &initrd] {
            if let Err(e) = std::fs::remove_file(f) {
                tracing::warn!(file = %f, error = %e, "could not remove a downloaded installer file");
            }
        }
        return Ok(disk_path);
    }
    hv.define(&xml::domain_xml(&plan.spec))
        .map_err(failed(CreateStep::Define))?;
    if plan.autostart {
        hv.set_autostart(&name, true)
            .map_err(failed(CreateStep::Autostart))?;
    }
    if plan.start {
        hv.act(&name, VmAction::Start)
            .map_err(failed(CreateStep::Start))?;
    }
    Ok(disk_path)
}

/// Downloads an install tree's kernel and initrd into the boot directory, recording
/// each file before it is written so a failure or restart removes it.
fn fetch_installer(
    store: &Store,
    name: &str,
    tree: &TreeUrl,
    boot_dir: &Path,
    fetch: &crate::adapters::http_fetch::FetchConfig,
) -> Result<(String, String), String> {
    let (kernel_url, initrd_url) =
        crate::adapters::http_fetch::locate(fetch, tree).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(boot_dir)
        .map_err(|e| format!("{} could not be created: {e}", boot_dir.display()))?;
    let mut paths = Vec::new();
    for (url, suffix) in [(&kernel_url, "vmlinuz"), (&initrd_url, "initrd")] {
        let path = boot_dir.join(format!("virtdeck-{name}-{suffix}"));
        let shown = path.display().to_string();
        store
            .record_made(name, "boot_file", &shown)
            .map_err(|e| format!("the download could not be recorded: {e}"))?;
        let bytes =
            crate::adapters::http_fetch::download(fetch, url, &path).map_err(|e| e.to_string())?;
        tracing::info!(vm = name, url = %url, file = %shown, bytes, "installer file downloaded");
        paths.push(shown);
    }
    let initrd = paths.pop().unwrap_or_default();
    let kernel = paths.pop().unwrap_or_default();
    Ok((kernel, initrd))
}

/// Undoes a create or clone: the definition, the volumes and files it made, and the claim.
pub(crate) fn roll_back(hv: &dyn Hypervisor, store: &Store, name: &str) -> Vec<String> {
    let mut undone = Vec::new();
    match hv.undefine(name) {
        Ok(()) => undone.push("definition removed".to_string()),
        Err(HypervisorError::NotFound { .. }) => {}
        Err(e) => {
            tracing::error!(vm = name, error = %e, "rollback: could not remove the definition")
        }
    }
    let mut made = store.made(name).unwrap_or_else(|e| {
        tracing::error!(vm = name, error = %e, "rollback: could not read what was made");
        Vec::new()
    });
    // Rows written before the vm_made table existed.
    if let Some(path) = store
        .vm_rows()
        .ok()
        .and_then(|rows| rows.into_iter().find(|r| r.name == name))
        .and_then(|r| r.created_volume)
    {
        made.push(("volume".into(), path));
    }
    for (kind, path) in made.into_iter().rev() {
        if kind == "boot_file" {
            match std::fs::remove_file(&path) {
                Ok(()) => undone.push(format!("file {path} deleted")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(vm = name, path, error = %e, "rollback: could not delete the file")
                }
            }
            continue;
        }
        match hv.delete_volume(&path) {
            Ok(()) => undone.push(format!("volume {path} deleted")),
            Err(HypervisorError::NotFound { .. }) => {}
            Err(e) => {
                tracing::error!(vm = name, error = %e, "rollback: could not delete the volume")
            }
        }
    }
    if let Err(e) = store.forget_vm_volumes(name) {
        tracing::error!(vm = name, error = %e, "rollback: could not forget the VM's volumes");
    }
    match store.delete_vm(name) {
        Ok(()) => undone.push("units released".to_string()),
        Err(e) => tracing::error!(vm = name, error = %e, "rollback: could not release the units"),
    }
    undone
}

/// Rolls back a failed create or clone of `name` and says what happened, for the admin
/// (the sentence) and the log (the cause and what was undone).
pub(crate) fn undo_failed(
    hv: &dyn Hypervisor,
    store: &Store,
    name: &str,
    outcome: &str,
    step: &str,
    reason: &str,
) -> LifecycleError {
    let undone = roll_back(hv, store, name);
    tracing::warn!(vm = name, step, reason, undone = ?undone, "{outcome}; rolled back");
    LifecycleError::failed(format!(
        "{outcome}: {step} failed: {reason}. Nothing was left behind{}.",
        if undone.is_empty() {
            String::new()
        } else {
            format!(" ({})", undone.join(", "))
        }
    ))
}

/// libvirt's reason, with a hint for the failures admins meet most.
pub fn reason_in_plain_words(e: &HypervisorError) -> String {
    let text = e.to_string();
    if text.contains("failed to set MSR") || text.contains("kvm_buf_set_msrs") {
        return format!(
            "{text} (KVM does not work on this host; set virt_type = \"auto\" or \"qemu\")"
        );
    }
    if text.contains("Permission denied") {
        return format!("{text} (QEMU may not read that file: check its directory's permissions)");
    }
    text
}

/// While the host is being emptied for maintenance, no new VM is made here.
pub fn refuse_while_draining(store: &Store) -> LcResult<()> {
    match store.draining()? {
        Some(who) => Err(LifecycleError::Conflict(format!(
            "This host is being emptied for maintenance ({who}): make new VMs on another \
             host, or end the drain on the Fleet page."
        ))),
        None => Ok(()),
    }
}

/// Rolls back creates interrupted by a restart, and forgets VMs removed behind virtdeck's back.
pub fn reconcile(hv: &dyn Hypervisor, store: &Store) -> LcResult<Vec<String>> {
    let existing: HashSet<String> = hv.list_vms()?.into_iter().map(|v| v.name).collect();
    let mut notes = Vec::new();
    for row in store.vm_rows()? {
        if row.state == "arriving" {
            // The fleet's own start-up check ends these.
            continue;
        }
        if row.state == "creating" {
            let undone = roll_back(hv, store, &row.name);
            notes.push(format!(
                "interrupted create of {} rolled back: {}",
                row.name,
                undone.join(", ")
            ));
        } else if !existing.contains(&row.name) {
            store.delete_vm(&row.name)?;
            store.release_vm_volumes(&row.name)?;
            notes.push(format!(
                "{} was removed outside virtdeck; its {} units are free",
                row.name, row.units
            ));
        }
    }
    Ok(notes)
}

// ---- operate ----

/// Runs a VM action if the VM's state allows it; a template is never started.
pub fn act(hv: &dyn Hypervisor, store: &Store, name: &str, action: VmAction) -> LcResult<()> {
    templates::refuse_start(store, name, action)?;
    let vm = hv
        .list_vms()?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| LifecycleError::NotFound(format!("There is no VM named {name}.")))?;
    if !VmAction::available_in(vm.state).contains(&action) {
        return Err(LifecycleError::Conflict(format!(
            "{name} is {}; it cannot {} now.",
            vm.state.label(),
            action.label().to_lowercase()
        )));
    }
    hv.act(name, action).map_err(|e| {
        LifecycleError::failed_because(
            format!("{} failed: {}", action.label(), reason_in_plain_words(&e)),
            e,
        )
    })
}

/// What a delete removed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub name: String,
    pub volumes_deleted: Vec<String>,
    /// Disk volumes left in their pool, each with why.
    pub volumes_kept: Vec<KeptVolume>,
    pub units_released: u32,
}

/// A disk volume a delete leaves in its pool, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct KeptVolume {
    pub path: String,
    pub reason: String,
}

/// What "delete its volumes" would do for a VM: the disk volumes deleted, those kept
/// (with why), and the cloud-init seed (deleted whatever is chosen).
#[derive(Debug, Clone, Serialize)]
pub struct VolumesOnDelete {
    pub deleted: Vec<String>,
    pub kept: Vec<KeptVolume>,
    pub seed: Option<String>,
    /// The caller may delete volumes virtdeck did not make for this VM (admins).
    pub may_delete_any: bool,
}

/// Disks (not CD-ROMs) of a VM that are volumes in a pool, and may be deleted with it.
pub fn deletable_volumes(hv: &dyn Hypervisor, name: &str) -> LcResult<Vec<String>> {
    let def = xml::parse_domain(&hv.domain_xml(name)?).map_err(|e| {
        LifecycleError::failed(format!("The VM's definition could not be read: {e}"))
    })?;
    let known: HashSet<String> = hv
        .pools()?
        .into_iter()
        .flat_map(|p| p.volumes.into_iter().map(|v| v.path))
        .collect();
    Ok(def
        .disks
        .into_iter()
        .filter(|d| d.device == "disk")
        .filter_map(|d| d.source)
        .filter(|s| known.contains(s))
        .collect())
}

/// Which of VM `name`'s disk volumes a delete with "delete volumes" removes: an
/// operator's only those virtdeck made for it (recorded); an admin's (`may_delete_any`)
/// every disk volume. Never ISO images or volumes another VM uses.
pub fn volumes_on_delete(
    hv: &dyn Hypervisor,
    store: &Store,
    name: &str,
    may_delete_any: bool,
) -> LcResult<VolumesOnDelete> {
    let disks = deletable_volumes(hv, name)?;
    let mine: HashSet<String> = store
        .vm_volumes(name)?
        .into_iter()
        .map(|m| m.path)
        .collect();
    let seeds = store.seed_paths()?;
    let mut disk_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut cdrom_of: HashMap<String, Vec<String>> = HashMap::new();
    for x in hv.all_domain_xml()? {
        let Ok(d) = xml::parse_domain(&x) else {
            continue;
        };
        if d.name == name {
            continue;
        }
        for disk in &d.disks {
            let Some(src) = &disk.source else { continue };
            let users = if disk.device == "disk" {
                &mut disk_of
            } else {
                &mut cdrom_of
            };
            users.entry(src.clone()).or_default().push(d.name.clone());
        }
    }
    let names: HashMap<String, String> = hv
        .pools()?
        .into_iter()
        .flat_map(|p| p.volumes.into_iter().map(|v| (v.path, v.name)))
        .collect();
    let mut out = VolumesOnDelete {
        deleted: Vec::new(),
        kept: Vec::new(),
        seed: store.cloud_init(name)?.map(|c| c.seed_path),
        may_delete_any,
    };
    for path in disks {
        let usage = VolumeUse {
            name: names.get(&path).cloned().unwrap_or_else(|| path.clone()),
            format: hv
                .volume_xml(&path)
                .ok()
                .and_then(|x| crate::domain::storage::parse_volume_format(&x)),
            disk_of: disk_of.remove(&path).unwrap_or_default(),
            cdrom_of: cdrom_of.remove(&path).unwrap_or_default(),
            seed: seeds.contains(&path),
            being_made: false,
        };
        match delete_keep_reason(&usage, mine.contains(&path), may_delete_any) {
            None => out.deleted.push(path),
            Some(reason) => out.kept.push(KeptVolume { path, reason }),
        }
    }
    Ok(out)
}

/// Removes VM `name`; with `delete_volumes`, also the disk volumes
/// [`volumes_on_delete`] names for the caller (`may_delete_any`: an admin).
pub fn delete(
    hv: &dyn Hypervisor,
    store: &Store,
    name: &str,
    delete_volumes: bool,
    may_delete_any: bool,
) -> LcResult<Deleted> {
    let on_delete = match hv.domain_xml(name) {
        Ok(_) => volumes_on_delete(hv, store, name, may_delete_any)?,
        Err(HypervisorError::NotFound { .. }) => {
            return Err(LifecycleError::NotFound(format!(
                "There is no VM named {name}."
            )))
        }
        Err(e) => return Err(e.into()),
    };
    templates::check_delete(hv, store, name)?;
    let units = store
        .vm_rows()?
        .into_iter()
        .find(|r| r.name == name)
        .map(|r| r.units)
        .unwrap_or(0);
    let VolumesOnDelete {
        deleted: volumes,
        mut kept,
        seed,
        ..
    } = on_delete;
    hv.undefine(name).map_err(|e| {
        LifecycleError::failed_because(
            format!("The VM could not be removed: {}", reason_in_plain_words(&e)),
            e,
        )
    })?;
    store.delete_vm(name)?;
    store.unmark_template(name)?;
    let mut deleted = Vec::new();
    let forget = |path: &str| {
        if let Err(e) = store.forget_made_volume(path) {
            tracing::error!(vm = name, path, error = %e, "could not forget a deleted volume");
        }
    };
    // The cloud-init seed (which holds the password hash) never outlives its VM.
    if let Some(seed) = seed {
        match hv.delete_volume(&seed) {
            Ok(()) => {
                forget(&seed);
                deleted.push(seed)
            }
            Err(HypervisorError::NotFound { .. }) => forget(&seed),
            Err(e) => {
                tracing::error!(vm = name, seed, error = %e, "could not delete the cloud-init seed")
            }
        }
    }
    if delete_volumes {
        for v in volumes {
            match hv.delete_volume(&v) {
                Ok(()) => {
                    forget(&v);
                    deleted.push(v)
                }
                Err(e) => {
                    // What is kept stays recorded with no VM (its format is still known).
                    if let Err(e) = store.release_vm_volumes(name) {
                        tracing::error!(vm = name, error = %e, "could not release the VM's volumes");
                    }
                    return Err(LifecycleError::failed(format!(
                            "{name} was removed, but its volume {v} could not be deleted: {}. Delete it from the pool.",
                            reason_in_plain_words(&e)
                        )));
                }
            }
        }
    } else {
        let asked = volumes.into_iter().map(|path| KeptVolume {
            path,
            reason: "Kept, as asked.".into(),
        });
        kept = asked.chain(kept).collect();
    }
    store.release_vm_volumes(name)?;
    if let Err(e) = store.set_start_order(name, None) {
        tracing::error!(vm = name, error = %e, "could not take a deleted VM out of the start order");
    }
    Ok(Deleted {
        name: name.to_string(),
        volumes_deleted: deleted,
        volumes_kept: kept,
        units_released: units,
    })
}

/// A VM for the list and detail pages.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VmView {
    #[serde(flatten)]
    pub summary: VmSummary,
    pub units: u32,
    pub managed: bool,
    pub disks: Vec<String>,
    pub macs: Vec<String>,
    /// Guest IP addresses libvirt knows of (running VMs on a libvirt network, or seen
    /// in the host's ARP table), as `address/prefix`.
    pub addresses: Vec<String>,
    /// Marked as a template: never started, new VMs are made from it.
    pub template: bool,
    /// Free tags from the VM's definition (`domain::vm_labels`).
    pub tags: Vec<String>,
}

/// Every VM with its units, devices and guest addresses, and the units each holds.
#[derive(Debug, Clone)]
pub struct VmList {
    pub model: UnitModel,
    pub claims: Vec<Claim>,
    pub vms: Vec<VmView>,
}

pub fn list(hv: &dyn Hypervisor, store: &Store, cfg: &LifecycleSettings) -> LcResult<VmList> {
    let mut list = views_and_claims(hv, store, cfg)?;
    for vm in &mut list.vms {
        vm.addresses = guest_addresses(hv, &vm.summary);
    }
    Ok(list)
}

/// A running VM's addresses as `address/prefix`; none when it is off or libvirt
/// does not know them.
fn guest_addresses(hv: &dyn Hypervisor, vm: &VmSummary) -> Vec<String> {
    if !vm.state.is_active() {
        return Vec::new();
    }
    hv.guest_addresses(&vm.name)
        .unwrap_or_default()
        .into_iter()
        .map(|a| format!("{}/{}", a.address, a.prefix))
        .collect()
}

/// Every VM with its units and devices, without asking libvirt for guest addresses.
fn views(hv: &dyn Hypervisor, store: &Store, cfg: &LifecycleSettings) -> LcResult<Vec<VmView>> {
    Ok(views_and_claims(hv, store, cfg)?.vms)
}

fn views_and_claims(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &LifecycleSettings,
) -> LcResult<VmList> {
    let model = unit_model(hv, cfg)?;
    let rows = store.vm_rows()?; // before the VMs: see `inventory`
    let vms = hv.list_vms()?;
    let claims = claims(&model, &vms, &rows);
    let marked: HashSet<String> = store.templates()?.into_iter().map(|t| t.name).collect();
    let mut defs: HashMap<String, xml::ParsedDomain> = HashMap::new();
    for x in hv.all_domain_xml()? {
        if let Ok(d) = xml::parse_domain(&x) {
            defs.insert(d.name.clone(), d);
        }
    }
    let vms = vms
        .into_iter()
        .map(|v| {
            let claim = claims.iter().find(|c| c.vm == v.name);
            let def = defs.get(&v.name);
            VmView {
                units: claim.map(|c| c.units).unwrap_or(0),
                managed: claim.is_some_and(|c| c.managed),
                disks: def
                    .map(|d| {
                        d.disks
                            .iter()
                            .filter(|x| x.device == "disk")
                            .filter_map(|x| x.source.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                macs: def
                    .map(|d| d.nics.iter().filter_map(|n| n.mac.clone()).collect())
                    .unwrap_or_default(),
                addresses: Vec::new(),
                tags: def.map(|d| d.tags.clone()).unwrap_or_default(),
                template: marked.contains(&v.name),
                summary: v,
            }
        })
        .collect();
    Ok(VmList { model, claims, vms })
}

/// One VM with its parsed devices and its definition, for the detail page and the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VmDetail {
    #[serde(flatten)]
    pub vm: VmView,
    pub devices: xml::ParsedDomain,
    /// A running VM's guest addresses (`address/prefix`) by the MAC of the NIC they are
    /// on (lower case), as libvirt knows them.
    pub nic_addresses: std::collections::BTreeMap<String, Vec<String>>,
    /// Its place in the host's start order (virtdeck starts it at the host's boot).
    pub start_order: Option<crate::store::start_order::StartOrder>,
    pub xml: String,
    /// What the VM was provisioned with from a cloud image (never the password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<crate::store::cloud_init::CloudInitRow>,
}

pub fn detail(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &LifecycleSettings,
    name: &str,
) -> LcResult<VmDetail> {
    let mut vm = views(hv, store, cfg)?
        .into_iter()
        .find(|v| v.summary.name == name)
        .ok_or_else(|| LifecycleError::NotFound(format!("There is no VM named {name}.")))?;
    let mut nic_addresses = std::collections::BTreeMap::<String, Vec<String>>::new();
    if vm.summary.state.is_active() {
        for a in hv.guest_addresses(name).unwrap_or_default() {
            let shown = format!("{}/{}", a.address, a.prefix);
            if let Some(mac) = &a.mac {
                nic_addresses
                    .entry(mac.to_ascii_lowercase())
                    .or_default()
                    .push(shown.clone());
            }
            vm.addresses.push(shown);
        }
    }
    let xml = hv.domain_xml(name)?;
    let devices = xml::parse_domain(&xml).map_err(|e| {
        LifecycleError::failed(format!("The VM's definition could not be read: {e}"))
    })?;
    let start_order = store.start_order()?.into_iter().find(|o| o.vm == name);
    Ok(VmDetail {
        vm,
        devices,
        nic_addresses,
        start_order,
        xml,
        cloud_init: store.cloud_init(name)?,
    })
}

/// The pieces of a VM's state that must stay true after any create attempt, for tests
/// and for the reconciliation report.
pub fn fingerprint(
    hv: &dyn Hypervisor,
    store: &Store,
) -> HvResult<(Vec<String>, Vec<String>, Vec<String>)> {
    let vms = hv.list_vms()?.into_iter().map(|v| v.name).collect();
    let vols = hv
        .pools()?
        .into_iter()
        .flat_map(|p| p.volumes.into_iter().map(|v| v.path))
        .collect();
    let rows = store
        .vm_rows()
        .map(|r| {
            r.into_iter()
                .map(|r| format!("{}:{}", r.name, r.units))
                .collect()
        })
        .unwrap_or_default();
    Ok((vms, vols, rows))
}
