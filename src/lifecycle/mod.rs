//! VM lifecycle: capacity in compute units, admission, create with rollback, actions,
//! delete, and start-up reconciliation. Uses the hypervisor and the store; knows no HTTP.
//! Every function here blocks: call it off the async runtime.

pub mod changes;
pub mod cloudinit;
pub mod images;
pub mod jobs;
pub mod kickstart;
pub mod list_cache;
pub mod storage;
pub mod templates;
pub mod volumes;
pub use changes::{
    clone, create_snapshot, delete_snapshot, resize, revert_snapshot, snapshots, CloneRequest,
    Cloned, Resized, SnapshotRequest,
};

use crate::config::LifecycleSettings;
use crate::domain::capacity::{admit, usage, AdmissionError, Claim, Size, UnitModel, UnitUsage};
use crate::domain::host::VirtType;
use crate::domain::install_tree::TreeUrl;
use crate::domain::inventory::{NetworkInfo, PoolInfo};
use crate::domain::vm::{VmAction, VmSummary};
use crate::domain::vmspec::{
    BootSpec, Clock, DiskFormat, DiskSpec, Mac, NicModel, NicSource, NicSpec, VmName, VmSpec,
};
use crate::domain::volumes::{cdrom_refusal, delete_keep_reason, existing_disk_refusal, VolumeUse};
use crate::domain::xml;
use crate::hypervisor::{HvResult, Hypervisor, HypervisorError};
use crate::store::{Store, StoreError, VmRow};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

/// Where serial console output of real guests is kept (libvirt's own log directory).
pub const SERIAL_LOG_DIR: &str = "/var/log/libvirt/qemu";

/// After an ACPI shutdown, how long the guest gets before virtdeck offers force off.
pub const SHUTDOWN_GRACE_SECS: i64 = 60;

/// Serializes admission: two creates can never both take the last units.
#[derive(Default)]
pub struct AdmissionLock(pub(crate) Mutex<()>);

// ---- requests ----

/// A create request, from the form or the API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVmRequest {
    pub name: String,
    /// A named size ("small"…); or `units`; or explicit `vcpus` + `memory_mib`.
    pub flavor: Option<String>,
    pub units: Option<u32>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk: Option<DiskRequest>,
    #[serde(default)]
    pub install: InstallRequest,
    pub nic: Option<NicRequest>,
    pub clock: Option<Clock>,
    #[serde(default)]
    pub autostart: bool,
    /// Start right after defining ("create and start").
    #[serde(default)]
    pub start: bool,
    /// The seed for a `cloud_image` disk.
    #[serde(default)]
    pub cloud_init: Option<cloudinit::CloudInitRequest>,
    /// Where installing guests fetch a kickstart when `[install] kickstart_base_url` is
    /// unset: filled by the web layer from the address virtdeck serves on.
    #[serde(skip)]
    pub kickstart_base_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DiskRequest {
    /// A new volume in a pool; size defaults to the units' share of the pool.
    New {
        pool: String,
        size_gib: Option<u64>,
        format: Option<DiskFormat>,
    },
    /// An existing volume, by path.
    Existing { path: String },
    /// A copy of a cloud image volume (by path), in its pool, grown to `size_gib`
    /// (default: the units' share, at least the image's size); needs `cloud_init`.
    CloudImage { base: String, size_gib: Option<u64> },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InstallRequest {
    /// Boot from the disk (an imported or already installed disk).
    #[default]
    Import,
    /// An installer ISO volume as CD-ROM, booted first.
    Cdrom { volume: String },
    /// Direct kernel boot from files in the boot directory.
    Kernel {
        kernel: String,
        initrd: Option<String>,
        #[serde(default)]
        cmdline: String,
    },
    /// PXE from the NIC.
    Pxe,
    /// A network install tree (virt-install -l).
    Url {
        url: String,
        #[serde(default)]
        kernel_args: String,
        /// A stored kickstart, served to the installer at a per-VM URL.
        #[serde(default)]
        kickstart: Option<String>,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicRequest {
    pub bridge: Option<String>,
    pub network: Option<String>,
    pub model: Option<NicModel>,
    pub mac: Option<String>,
}

// ---- errors ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn field(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Input errors, each at its field. Nothing was touched.
    #[error("{}", .0.first().map(|f| f.message.as_str()).unwrap_or("invalid input"))]
    Invalid(Vec<FieldError>),
    /// Does not fit; nothing was touched.
    #[error("{0}")]
    Capacity(#[from] AdmissionError),
    /// A libvirt step failed; what had been done was undone.
    #[error("{message}")]
    Failed { message: String },
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

pub type LcResult<T> = Result<T, LifecycleError>;

/// What a VM change works with: libvirt, the store, the lifecycle's settings and the
/// admission lock (held from reading the claims to inserting the new VM's row).
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub hv: &'a dyn Hypervisor,
    pub store: &'a Store,
    pub cfg: &'a LifecycleSettings,
    pub lock: &'a AdmissionLock,
}

/// Who asks for a change and when (kept in the new VM's row).
#[derive(Debug, Clone, Copy)]
pub struct By<'a> {
    pub actor: &'a str,
    pub now: i64,
}

// ---- capacity ----

/// The host's units and who holds them.
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    pub model: UnitModel,
    pub unit_size: Size,
    pub usage: UnitUsage,
    pub claims: Vec<Claim>,
    pub pools: Vec<PoolCapacity>,
}

#[derive(Debug, Clone, Serialize)]
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
        LifecycleError::Failed {
            message: format!("The capacity settings do not fit this host: {e}"),
        }
    })
}

/// Each VM counted once: virtdeck's own by their recorded units (including those being
/// created), the others by their real size rounded up to units.
pub fn claims(model: &UnitModel, vms: &[VmSummary], rows: &[VmRow]) -> Vec<Claim> {
    let existing: HashSet<&str> = vms.iter().map(|v| v.name.as_str()).collect();
    let managed: HashMap<&str, &VmRow> = rows.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut out: Vec<Claim> = rows
        .iter()
        .filter(|r| r.state == "creating" || existing.contains(r.name.as_str()))
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
#[derive(Debug, Clone, Serialize)]
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

fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A file for direct kernel boot: must resolve to a regular file inside `boot_dir`.
fn boot_file(boot_dir: &Path, given: &str, name: &'static str) -> Result<String, FieldError> {
    let p = Path::new(given.trim());
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        boot_dir.join(p)
    };
    let outside = || {
        field(
            name,
            format!(
                "Put the file in {} and give its name; files elsewhere are not used.",
                boot_dir.display()
            ),
        )
    };
    let real = std::fs::canonicalize(&p)
        .map_err(|_| field(name, format!("{} does not exist.", p.display())))?;
    let root = std::fs::canonicalize(boot_dir).map_err(|_| outside())?;
    if !real.starts_with(&root) || !real.is_file() {
        return Err(outside());
    }
    Ok(real.display().to_string())
}

fn cmdline_ok(s: &str) -> bool {
    s.len() <= 2048 && !s.chars().any(|c| c.is_control())
}

struct Inventory {
    model: UnitModel,
    vms: Vec<VmSummary>,
    rows: Vec<VmRow>,
    pools: Vec<PoolInfo>,
    networks: Vec<NetworkInfo>,
    macs_in_use: HashSet<String>,
    disks_in_use: HashMap<String, String>,
    /// Volumes attached as a CD-ROM, and (one of) the VMs using them.
    cdroms_in_use: HashMap<String, String>,
    /// Every VM's cloud-init seed volume.
    seeds: HashSet<String>,
    /// Volumes an unfinished create, clone or job is making.
    being_made: HashSet<String>,
    /// The volumes the request names, looked at before the plan (see `images`).
    inspected: HashMap<String, images::Inspected>,
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
        model,
        vms: hv.list_vms()?,
        rows,
        pools: hv.pools()?,
        networks: hv.networks()?,
        macs_in_use,
        disks_in_use,
        cdroms_in_use,
        seeds: store.seed_paths()?,
        being_made: store.volumes_being_made()?,
        inspected: HashMap::new(),
    })
}

impl Inventory {
    /// Who uses the volume `v` and what it is, for the rules of `domain::volumes`.
    fn volume_use(&self, v: &crate::domain::inventory::VolumeInfo) -> VolumeUse {
        VolumeUse {
            name: v.name.clone(),
            format: self
                .inspected
                .get(&v.path)
                .and_then(|i| i.libvirt_format.clone()),
            disk_of: self
                .disks_in_use
                .get(&v.path)
                .cloned()
                .into_iter()
                .collect(),
            cdrom_of: self
                .cdroms_in_use
                .get(&v.path)
                .cloned()
                .into_iter()
                .collect(),
            seed: self.seeds.contains(&v.path),
            being_made: self.being_made.contains(&v.path),
        }
    }
}

/// A size as asked for: a named size, units, or explicit vCPUs and memory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeRequest {
    pub flavor: Option<String>,
    pub units: Option<u32>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
}

/// The units claimed and the vCPUs/memory given for a size request; problems go to
/// `errors`, at their field.
fn resolve_size(
    model: &UnitModel,
    flavors: &[(String, u32)],
    req: &SizeRequest,
    errors: &mut Vec<FieldError>,
) -> (Option<u32>, Option<Size>) {
    let mut units = match (&req.flavor, req.units) {
        (Some(f), _) if !f.is_empty() => match flavors.iter().find(|(n, _)| n == f) {
            Some((_, u)) => Some(*u),
            None => {
                errors.push(field("flavor", format!("There is no size named {f}.")));
                None
            }
        },
        (_, Some(0)) => {
            errors.push(field("units", "Give at least 1 unit."));
            None
        }
        (_, Some(u)) => Some(u),
        _ => None,
    };
    let size = match (units, req.vcpus, req.memory_mib) {
        (_, Some(0), _) => {
            errors.push(field("vcpus", "Give at least 1 vCPU."));
            None
        }
        (_, _, Some(m)) if m < 64 => {
            errors.push(field("memory_mib", "Give at least 64 MiB of memory."));
            None
        }
        (Some(u), v, m) => {
            let full = model.size_of(u);
            let s = Size {
                vcpus: v.unwrap_or(full.vcpus),
                memory_mib: m.unwrap_or(full.memory_mib),
            };
            if model.units_for(s) > u {
                errors.push(field(
                    if v.is_some_and(|v| v > full.vcpus) { "vcpus" } else { "memory_mib" },
                    format!(
                        "{u} unit{} give at most {} vCPUs and {} MiB; choose more units or a smaller size.",
                        if u == 1 { "" } else { "s" },
                        full.vcpus,
                        full.memory_mib
                    ),
                ));
            }
            Some(s)
        }
        (None, Some(v), Some(m)) => {
            let s = Size {
                vcpus: v,
                memory_mib: m,
            };
            units = Some(model.units_for(s));
            Some(s)
        }
        (None, _, _) => {
            errors.push(field(
                "flavor",
                "Choose a size: a named size, a number of units, or vCPUs and memory.",
            ));
            None
        }
    };
    (units, size)
}

/// The validated plan for a create, before anything is touched.
struct Plan {
    spec: VmSpec,
    units: u32,
    new_volume: Option<(String, String)>,
    start: bool,
    autostart: bool,
    /// A network install: the tree and the installer's kernel arguments.
    network_install: Option<(TreeUrl, String)>,
    /// Where downloaded installer files go.
    boot_dir: std::path::PathBuf,
    /// `[fetch]`: where the installer may be downloaded from.
    fetch: crate::adapters::http_fetch::FetchConfig,
    /// A cloud image copy and its cloud-init seed.
    cloud: Option<cloudinit::SeedPlan>,
    /// A network install's kickstart.
    kickstart: Option<kickstart::KickstartPlan>,
}

fn plan(
    req: &CreateVmRequest,
    inv: &Inventory,
    flavors: &[(String, u32)],
    cfg: &LifecycleSettings,
    virt_type: VirtType,
) -> Result<Plan, LifecycleError> {
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

    // Size: flavor or units give the claim; explicit vCPUs/memory must fit inside it.
    let (units, size) = resolve_size(
        &inv.model,
        flavors,
        &SizeRequest {
            flavor: req.flavor.clone(),
            units: req.units,
            vcpus: req.vcpus,
            memory_mib: req.memory_mib,
        },
        &mut errors,
    );

    // Disk.
    let mut disks = Vec::new();
    let mut new_volume = None;
    let mut disk_units = 0;
    let mut cloud = None;
    let all_volumes = || {
        inv.pools
            .iter()
            .flat_map(|p| p.volumes.iter().map(move |v| (p, v)))
    };
    match &req.disk {
        Some(DiskRequest::New {
            pool,
            size_gib,
            format,
        }) => match inv.pools.iter().find(|p| &p.name == pool) {
            None => errors.push(field(
                "pool",
                format!("There is no storage pool named {pool}."),
            )),
            Some(p) if !p.active => errors.push(field(
                "pool",
                format!("Storage pool {pool} is not running; start it first."),
            )),
            Some(p) => {
                let format = format.unwrap_or(if p.is_block() {
                    DiskFormat::Raw
                } else {
                    DiskFormat::Qcow2
                });
                if p.is_block() && format != DiskFormat::Raw {
                    errors.push(field(
                        "format",
                        format!("Pool {pool} holds LVM volumes, which are raw; choose raw."),
                    ));
                }
                let gib = size_gib.unwrap_or_else(|| {
                    units
                        .map(|u| inv.model.disk_gib_of(u, p.capacity_gib()))
                        .unwrap_or(0)
                        .max(1)
                });
                if gib == 0 {
                    errors.push(field("size_gib", "Give a disk size of at least 1 GiB."));
                } else if gib > p.available_gib() {
                    errors.push(field(
                        "size_gib",
                        AdmissionError::Disk {
                            pool: pool.clone(),
                            needed_gib: gib,
                            available_gib: p.available_gib(),
                            short_gib: gib - p.available_gib(),
                        }
                        .to_string(),
                    ));
                }
                disk_units = inv.model.units_for_disk(gib, p.capacity_gib().max(1));
                if let Some(n) = &name {
                    let vol_name = match (p.is_block(), format) {
                        (true, _) => n.to_string(),
                        (false, DiskFormat::Qcow2) => format!("{n}.qcow2"),
                        (false, DiskFormat::Raw) => format!("{n}.img"),
                    };
                    if p.volumes.iter().any(|v| v.name == vol_name) {
                        errors.push(field("name", format!("Pool {pool} already has a volume {vol_name}; pick another VM name or use that volume.")));
                    }
                    new_volume = Some((pool.clone(), xml::volume_xml(&vol_name, gib, format)));
                    disks.push(DiskSpec {
                        path: String::new(),
                        block: p.is_block(),
                        format,
                        cdrom: false,
                    });
                }
            }
        },
        Some(DiskRequest::Existing { path }) => {
            match all_volumes().find(|(_, v)| &v.path == path) {
                None => errors.push(field("volume", "Choose a volume from a storage pool.")),
                Some((p, v)) => {
                    // Only a volume nobody else has, read in the format checked from
                    // its header and libvirt's view (never guessed from its name).
                    let format = match existing_disk_refusal(&inv.volume_use(v)) {
                        Some(why) => {
                            errors.push(field("volume", why));
                            DiskFormat::Raw
                        }
                        None => match inv.inspected.get(&v.path).map(|i| &i.checked) {
                            Some(Ok(f)) => *f,
                            Some(Err(why)) => {
                                errors.push(field("volume", why.clone()));
                                DiskFormat::Raw
                            }
                            None => {
                                errors.push(field(
                                    "volume",
                                    format!("Volume {} could not be looked at; try again.", v.name),
                                ));
                                DiskFormat::Raw
                            }
                        },
                    };
                    disks.push(DiskSpec {
                        path: v.path.clone(),
                        block: p.is_block(),
                        format,
                        cdrom: false,
                    });
                }
            }
        }
        Some(DiskRequest::CloudImage { base, size_gib }) => {
            if let Some((seed, disk, units)) = cloudinit::plan(
                base,
                *size_gib,
                req.cloud_init.as_ref(),
                &req.install,
                name.as_ref(),
                units,
                inv,
                &mut errors,
            ) {
                cloud = Some(seed);
                disks.push(disk);
                disk_units = units;
            }
        }
        None => {}
    }
    if req.cloud_init.is_some() && !matches!(req.disk, Some(DiskRequest::CloudImage { .. })) {
        errors.push(field(
            "disk_mode",
            "Cloud-init settings go with a cloud image disk: choose \"Cloud image\".",
        ));
    }

    // Install source.
    let mut network_install = None;
    let boot = match &req.install {
        InstallRequest::Import => {
            if disks.is_empty() {
                errors.push(field(
                    "install",
                    "Booting from disk needs a disk: add one or choose another install source.",
                ));
            }
            BootSpec::Disk
        }
        InstallRequest::Cdrom { volume } => {
            match all_volumes().find(|(_, v)| &v.path == volume) {
                None => errors.push(field("iso", "Choose an ISO volume from a storage pool.")),
                Some((p, v)) => {
                    if let Some(why) = cdrom_refusal(&inv.volume_use(v)) {
                        errors.push(field("iso", why));
                    }
                    disks.push(DiskSpec {
                        path: v.path.clone(),
                        block: p.is_block(),
                        format: DiskFormat::Raw,
                        cdrom: true,
                    })
                }
            }
            BootSpec::Cdrom
        }
        InstallRequest::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            if !cmdline_ok(cmdline) {
                errors.push(field(
                    "cmdline",
                    "Kernel arguments must be one line of at most 2048 characters.",
                ));
            }
            let k = boot_file(&cfg.boot_dir, kernel, "kernel")
                .map_err(|e| errors.push(e))
                .ok();
            let i = match initrd.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(i) => boot_file(&cfg.boot_dir, i, "initrd")
                    .map_err(|e| errors.push(e))
                    .ok(),
                None => None,
            };
            BootSpec::Kernel {
                kernel: k.unwrap_or_default(),
                initrd: i,
                cmdline: cmdline.clone(),
            }
        }
        InstallRequest::Pxe => {
            if req.nic.is_none() {
                errors.push(field("install", "A PXE boot needs a network card."));
            }
            BootSpec::Network
        }
        InstallRequest::Url {
            url, kernel_args, ..
        } => {
            match TreeUrl::parse(url) {
                Ok(t) => network_install = Some((t, kernel_args.trim().to_string())),
                Err(e) => errors.push(field("url", e.to_string())),
            }
            if !cmdline_ok(kernel_args) {
                errors.push(field(
                    "kernel_args",
                    "Kernel arguments must be one line of at most 2048 characters.",
                ));
            }
            if !req.start {
                errors.push(field(
                    "start",
                    "A network install boots the installer right away: choose \"Create and start\".",
                ));
            }
            if disks.iter().all(|d| d.cdrom) {
                errors.push(field(
                    "install",
                    "A network install needs a disk to install onto: add one.",
                ));
            }
            BootSpec::Disk
        }
    };

    // NIC.
    let nic = match &req.nic {
        None => None,
        Some(n) => {
            let source = match (
                n.bridge.as_deref().filter(|s| !s.is_empty()),
                n.network.as_deref().filter(|s| !s.is_empty()),
            ) {
                (Some(b), None) => {
                    let known = inv
                        .networks
                        .iter()
                        .any(|net| net.bridge.as_deref() == Some(b))
                        || Path::new("/sys/class/net").join(b).join("bridge").exists();
                    if !valid_ifname(b) || !known {
                        errors.push(field(
                            "bridge",
                            format!("There is no bridge named {b} on this host."),
                        ));
                    }
                    Some(NicSource::Bridge(b.to_string()))
                }
                (None, Some(net)) => {
                    if !inv.networks.iter().any(|x| x.name == net) {
                        errors.push(field(
                            "network",
                            format!("There is no libvirt network named {net}."),
                        ));
                    }
                    Some(NicSource::Network(net.to_string()))
                }
                _ => {
                    errors.push(field(
                        "network",
                        "Choose either a bridge or a libvirt network for the network card.",
                    ));
                    None
                }
            };
            let mac = match n.mac.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                Some(m) => match Mac::parse(m) {
                    Ok(mac) if inv.macs_in_use.contains(&mac.to_string()) => {
                        errors.push(field(
                            "mac",
                            format!(
                                "MAC address {mac} is already used by another VM on this host."
                            ),
                        ));
                        None
                    }
                    Ok(mac) => Some(mac),
                    Err(e) => {
                        errors.push(field("mac", e.to_string()));
                        None
                    }
                },
                None => Some(loop {
                    let mut b = [0u8; 3];
                    rand::rng().fill_bytes(&mut b);
                    let mac = Mac::qemu_local(b);
                    if !inv.macs_in_use.contains(&mac.to_string()) {
                        break mac;
                    }
                }),
            };
            match (source, mac) {
                (Some(source), Some(mac)) => Some(NicSpec {
                    source,
                    model: n.model.unwrap_or(NicModel::Virtio),
                    mac,
                }),
                _ => None,
            }
        }
    };

    if !errors.is_empty() {
        return Err(LifecycleError::Invalid(errors));
    }
    let (Some(name), Some(size), Some(units)) = (name, size, units) else {
        return Err(LifecycleError::Invalid(vec![field(
            "name",
            "Check the form.",
        )]));
    };
    let units = units.max(disk_units);
    Ok(Plan {
        spec: VmSpec {
            name,
            uuid: random_uuid(),
            virt_type,
            vcpus: size.vcpus,
            memory_mib: size.memory_mib,
            disks,
            boot,
            nic,
            clock: req.clock.unwrap_or(Clock::Utc),
            description: String::new(),
            serial_log: (virt_type != VirtType::Test)
                .then(|| format!("{SERIAL_LOG_DIR}/{n}-serial.log", n = req.name.trim())),
        },
        units,
        new_volume,
        start: req.start,
        autostart: req.autostart,
        network_install,
        boot_dir: cfg.boot_dir.clone(),
        fetch: cfg.fetch.clone(),
        cloud,
        kickstart: None,
    })
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
    let mut inv = inventory(hv, store, cfg)?;
    inspect_named(hv, store, req, &mut inv);
    let flavors: Vec<(String, u32)> = store
        .flavors()?
        .into_iter()
        .map(|f| (f.name, f.units))
        .collect();
    let claims = claims(&inv.model, &inv.vms, &inv.rows);
    let admission = |units: u32| admit(&inv.model, &claims, units, None).err();
    match plan(req, &inv, &flavors, cfg, virt_type) {
        Ok(plan) => Ok(admission(plan.units)
            .map(|e| vec![field("units", e.to_string())])
            .unwrap_or_default()),
        Err(LifecycleError::Invalid(mut errors)) => {
            // The size's own units (without the disk's share) may already be too many.
            let size_fields = ["flavor", "units", "vcpus", "memory_mib"];
            if !errors.iter().any(|e| size_fields.contains(&e.field)) {
                let mut scratch = Vec::new();
                let size = SizeRequest {
                    flavor: req.flavor.clone(),
                    units: req.units,
                    vcpus: req.vcpus,
                    memory_mib: req.memory_mib,
                };
                if let (Some(u), _) = resolve_size(&inv.model, &flavors, &size, &mut scratch) {
                    if let Some(e) = admission(u) {
                        errors.push(field("units", e.to_string()));
                    }
                }
            }
            Ok(errors)
        }
        Err(other) => Err(other),
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
    } = ctx;
    let By { actor, now } = by;
    let virt_type = virt_type.map_err(|e| LifecycleError::Failed { message: e })?;
    let mut plan = {
        let _guard = lock.0.lock().map_err(|_| LifecycleError::Failed {
            message: "The admission lock is broken after an earlier failure; restart virtdeck."
                .into(),
        })?;
        let mut inv = inventory(hv, store, cfg)?;
        inspect_named(hv, store, req, &mut inv);
        let flavors: Vec<(String, u32)> = store
            .flavors()?
            .into_iter()
            .map(|f| (f.name, f.units))
            .collect();
        let mut plan = plan(req, &inv, &flavors, cfg, virt_type)?;
        if let InstallRequest::Url { kickstart: ks, .. } = &req.install {
            plan.kickstart = kickstart::plan(
                store,
                &cfg.install,
                ks.as_deref(),
                req.kickstart_base_url.as_deref(),
                now,
            )?;
        }
        let claims = claims(&inv.model, &inv.vms, &inv.rows);
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
        plan
    };
    let name = plan.spec.name.to_string();
    match build(hv, store, &mut plan) {
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

/// Looks at the volumes a create request names (existing disk, CD-ROM, cloud image)
/// before the plan checks them.
fn inspect_named(hv: &dyn Hypervisor, store: &Store, req: &CreateVmRequest, inv: &mut Inventory) {
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
            inv.inspected.insert(path.clone(), found);
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
    plan: &mut Plan,
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
        let (kernel, initrd) = fetch_installer(store, &name, tree, &plan.boot_dir, &plan.fetch)
            .map_err(|e| (CreateStep::FetchInstaller, e))?;
        let kernel_args = match &plan.kickstart {
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
    LifecycleError::Failed {
        message: format!(
            "{outcome}: {step} failed: {reason}. Nothing was left behind{}.",
            if undone.is_empty() {
                String::new()
            } else {
                format!(" ({})", undone.join(", "))
            }
        ),
    }
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

/// Rolls back creates interrupted by a restart, and forgets VMs removed behind virtdeck's back.
pub fn reconcile(hv: &dyn Hypervisor, store: &Store) -> LcResult<Vec<String>> {
    let existing: HashSet<String> = hv.list_vms()?.into_iter().map(|v| v.name).collect();
    let mut notes = Vec::new();
    for row in store.vm_rows()? {
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
    hv.act(name, action).map_err(|e| LifecycleError::Failed {
        message: format!("{} failed: {}", action.label(), reason_in_plain_words(&e)),
    })
}

/// What a delete removed.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub name: String,
    pub volumes_deleted: Vec<String>,
    /// Disk volumes left in their pool, each with why.
    pub volumes_kept: Vec<KeptVolume>,
    pub units_released: u32,
}

/// A disk volume a delete leaves in its pool, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
    let def = xml::parse_domain(&hv.domain_xml(name)?).map_err(|e| LifecycleError::Failed {
        message: format!("The VM's definition could not be read: {e}"),
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
    hv.undefine(name).map_err(|e| LifecycleError::Failed {
        message: format!("The VM could not be removed: {}", reason_in_plain_words(&e)),
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
                    return Err(LifecycleError::Failed {
                        message: format!(
                            "{name} was removed, but its volume {v} could not be deleted: {}. Delete it from the pool.",
                            reason_in_plain_words(&e)
                        ),
                    });
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
    Ok(Deleted {
        name: name.to_string(),
        volumes_deleted: deleted,
        volumes_kept: kept,
        units_released: units,
    })
}

/// A VM for the list and detail pages.
#[derive(Debug, Clone, Serialize)]
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
                template: marked.contains(&v.name),
                summary: v,
            }
        })
        .collect();
    Ok(VmList { model, claims, vms })
}

/// One VM with its parsed devices and its definition, for the detail page and the API.
#[derive(Debug, Clone, Serialize)]
pub struct VmDetail {
    #[serde(flatten)]
    pub vm: VmView,
    pub devices: xml::ParsedDomain,
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
    vm.addresses = guest_addresses(hv, &vm.summary);
    let xml = hv.domain_xml(name)?;
    let devices = xml::parse_domain(&xml).map_err(|e| LifecycleError::Failed {
        message: format!("The VM's definition could not be read: {e}"),
    })?;
    Ok(VmDetail {
        vm,
        devices,
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
