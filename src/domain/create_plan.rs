//! Planning a VM create, pure: a create request and a snapshot of the host (its VMs and
//! records, pools and volumes, networks, what uses what, and what was looked at for the
//! names the request gives) in; the VM's spec, the units it is charged and what to make
//! out, or every problem at its field in one round. Reads nothing and makes nothing: the
//! lifecycle reads the snapshot, admits the units and makes the VM.

use super::capacity::{AdmissionError, Size, UnitModel};
use super::cloudinit::{self, CheckedSeed, SeedInput};
use super::guest_caps::{self, GuestCapabilities};
use super::host::VirtType;
use super::install_tree::TreeUrl;
use super::inventory::{NetworkInfo, PoolInfo, VolumeInfo, GIB};
use super::vm::VmSummary;
use super::vmspec::{
    BootSpec, Clock, CpuSpec, DiskFormat, DiskSpec, Firmware, Mac, NicModel, NicSource, NicSpec,
    VmName, VmSpec,
};
use super::volumes::{cdrom_refusal, existing_disk_refusal, VolumeUse};
use super::xml;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Where serial console output of real guests is kept (libvirt's own log directory).
pub const SERIAL_LOG_DIR: &str = "/var/log/libvirt/qemu";

// ---- requests ----

/// A create request, from the form or the API.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
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
    pub cloud_init: Option<CloudInitRequest>,
    /// BIOS (default), UEFI, or UEFI with Secure Boot.
    #[serde(default)]
    pub firmware: Option<Firmware>,
    /// An emulated TPM 2.0.
    #[serde(default)]
    pub tpm: bool,
    /// `default` (host-passthrough under KVM, QEMU's CPU under TCG), `host-passthrough`,
    /// `host-model`, or a named model from `GET /api/v1/host` (`guest.cpu_models`).
    /// Hosts with different CPUs migrate VMs only with a named model both have.
    #[serde(default)]
    pub cpu: Option<String>,
    /// Where installing guests fetch a kickstart when `[install] kickstart_base_url` is
    /// unset: filled by the web layer from the address virtdeck serves on.
    #[serde(skip)]
    pub kickstart_base_url: Option<String>,
}

impl CreateVmRequest {
    /// The size part of the request.
    pub fn size(&self) -> SizeRequest {
        SizeRequest {
            flavor: self.flavor.clone(),
            units: self.units,
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicRequest {
    pub bridge: Option<String>,
    pub network: Option<String>,
    pub model: Option<NicModel>,
    pub mac: Option<String>,
}

/// The cloud-init fields of a create request.
#[derive(Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudInitRequest {
    /// Empty: the VM's name.
    #[serde(default)]
    pub hostname: String,
    pub user: String,
    /// Hashed (SHA-512 crypt) before it goes into the seed; never stored or logged.
    #[serde(default)]
    pub password: String,
    /// OpenSSH public key lines.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Extra `#cloud-config` text, appended after virtdeck's keys.
    #[serde(default)]
    pub user_data: String,
}

impl std::fmt::Debug for CloudInitRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudInitRequest")
            .field("hostname", &self.hostname)
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "(given)"
                },
            )
            .field("ssh_keys", &self.ssh_keys.len())
            .finish_non_exhaustive()
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

// ---- errors ----

/// A problem with the input, at its form field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

pub fn field(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

// ---- what the plan knows of the host ----

/// What was found about one volume the request names (its header, libvirt's view and
/// virtdeck's record, by the rule of `volumes::check_image`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFacts {
    /// libvirt's `<target><format>` for it.
    pub libvirt_format: Option<String>,
    /// The format to attach or copy it in, or why it must not be used.
    pub checked: Result<DiskFormat, String>,
}

/// The host as the plan sees it: plain values, read beforehand.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub model: UnitModel,
    pub vms: Vec<VmSummary>,
    /// The VMs virtdeck has records of (made, or still being created), by name.
    pub row_names: Vec<String>,
    pub pools: Vec<PoolInfo>,
    pub networks: Vec<NetworkInfo>,
    /// Every VM's MAC addresses, lower case.
    pub macs_in_use: HashSet<String>,
    /// Volumes attached as a disk, and (one of) the VMs using them.
    pub disks_in_use: HashMap<String, String>,
    /// Volumes attached as a CD-ROM, and (one of) the VMs using them.
    pub cdroms_in_use: HashMap<String, String>,
    /// Every VM's cloud-init seed volume.
    pub seeds: HashSet<String>,
    /// Volumes an unfinished create, clone or job is making.
    pub being_made: HashSet<String>,
    /// The volumes the request names (existing disk, CD-ROM, cloud image), by path, as
    /// looked at before the plan.
    pub inspected: HashMap<String, VolumeFacts>,
    /// The kernel and initrd files the request names, as given: the real path inside
    /// the boot directory, or why that file is not used.
    pub boot_files: HashMap<String, Result<String, String>>,
    /// Bridges the request names that exist on the host (outside libvirt's networks).
    pub host_bridges: HashSet<String>,
    /// The firmware, TPM and CPU models the host can give guests.
    pub guest: GuestCapabilities,
}

impl Snapshot {
    /// Who uses the volume `v` and what it is, for the rules of `domain::volumes`.
    pub fn volume_use(&self, v: &VolumeInfo) -> VolumeUse {
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

    /// The volume at `path` and its pool.
    pub fn volume(&self, path: &str) -> Option<(&PoolInfo, &VolumeInfo)> {
        self.pools
            .iter()
            .find_map(|p| p.volumes.iter().find(|v| v.path == path).map(|v| (p, v)))
    }
}

// ---- the plan ----

/// What a create will make, decided before anything is touched.
#[derive(Debug, Clone)]
pub struct CreatePlan {
    /// The definition; a new or copied disk's path is filled in when it is made.
    pub spec: VmSpec,
    /// The units the VM is charged: its size's, or its disk's when that needs more.
    pub units: u32,
    /// The units the size alone claims.
    pub size_units: u32,
    /// The units a new or copied disk's share of its pool needs (0 without one).
    pub disk_units: u32,
    /// A new volume: its pool and its XML.
    pub new_volume: Option<(String, String)>,
    pub start: bool,
    pub autostart: bool,
    /// A network install: the tree and the installer's kernel arguments.
    pub network_install: Option<(TreeUrl, String)>,
    /// A cloud image copy and its cloud-init seed.
    pub cloud: Option<SeedPlan>,
}

impl CreatePlan {
    /// The disk, not the size, decides the charge.
    pub fn disk_decides(&self) -> bool {
        self.disk_units > self.size_units
    }
}

/// A cloud image's copy and seed, as the build step makes them.
#[derive(Clone)]
pub struct SeedPlan {
    pub pool: String,
    pub base_path: String,
    pub base_name: String,
    /// The format the image was checked in (header, libvirt's view, virtdeck's record);
    /// checked again right before the copy, which libvirt reads in that format.
    pub base_format: DiskFormat,
    /// The copy's format.
    pub disk_format: DiskFormat,
    pub disk_volume_xml: String,
    /// The disk's final size, when bigger than the image.
    pub grow_to_bytes: Option<u64>,
    pub seed_volume: String,
    /// The pool holds block devices (the seed is one too).
    pub block: bool,
    pub checked: CheckedSeed,
    pub password: String,
}

impl std::fmt::Debug for SeedPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedPlan")
            .field("pool", &self.pool)
            .field("base_path", &self.base_path)
            .field("base_format", &self.base_format)
            .field("disk_format", &self.disk_format)
            .field("grow_to_bytes", &self.grow_to_bytes)
            .field("seed_volume", &self.seed_volume)
            .field("checked", &self.checked)
            .finish_non_exhaustive()
    }
}

/// Checks `req` against the host in `snap` and plans the VM, or returns every problem at
/// its field. `uuid` is the new VM's; `mac_bytes` draws a MAC address's last three bytes
/// (called until one no VM uses) when the request gives none.
pub fn plan(
    req: &CreateVmRequest,
    snap: &Snapshot,
    flavors: &[(String, u32)],
    virt_type: VirtType,
    uuid: String,
    mut mac_bytes: impl FnMut() -> [u8; 3],
) -> Result<CreatePlan, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = check_name(&req.name, snap, &mut errors);

    // Size: flavor or units give the claim; explicit vCPUs/memory must fit inside it.
    let (units, size) = resolve_size(&snap.model, flavors, &req.size(), &mut errors);

    let PlannedDisk {
        mut disks,
        new_volume,
        disk_units,
        cloud,
    } = plan_disk(req, snap, name.as_ref(), units, &mut errors);
    if req.cloud_init.is_some() && !matches!(req.disk, Some(DiskRequest::CloudImage { .. })) {
        errors.push(field(
            "disk_mode",
            "Cloud-init settings go with a cloud image disk: choose \"Cloud image\".",
        ));
    }
    let (boot, network_install) = plan_boot(req, snap, &mut disks, &mut errors);
    let nic = req
        .nic
        .as_ref()
        .and_then(|n| plan_nic(n, snap, &mut mac_bytes, &mut errors));
    let firmware = req.firmware.unwrap_or_default();
    let cpu = CpuSpec::from_value(req.cpu.as_deref().unwrap_or_default());
    for (at, message) in guest_caps::check_choice(&snap.guest, firmware, req.tpm, &cpu) {
        errors.push(field(at, message));
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(name), Some(size), Some(size_units)) = (name, size, units) else {
        return Err(vec![field("name", "Check the form.")]);
    };
    Ok(CreatePlan {
        spec: VmSpec {
            name,
            uuid,
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
            firmware,
            tpm: req.tpm,
            cpu,
        },
        units: size_units.max(disk_units),
        size_units,
        disk_units,
        new_volume,
        start: req.start,
        autostart: req.autostart,
        network_install,
        cloud,
    })
}

/// The VM's name, if valid and no VM or record has it.
fn check_name(given: &str, snap: &Snapshot, errors: &mut Vec<FieldError>) -> Option<VmName> {
    let name = match VmName::parse(given) {
        Ok(n) => n,
        Err(e) => {
            errors.push(field("name", e.to_string()));
            return None;
        }
    };
    if snap.vms.iter().any(|v| v.name == name.as_str())
        || snap.row_names.iter().any(|r| r == name.as_str())
    {
        errors.push(field(
            "name",
            format!("A VM named {name} exists already. Pick another name."),
        ));
    }
    Some(name)
}

/// The units claimed and the vCPUs/memory given for a size request; problems go to
/// `errors`, at their field.
pub fn resolve_size(
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

/// The disk part of a plan.
#[derive(Default)]
struct PlannedDisk {
    disks: Vec<DiskSpec>,
    new_volume: Option<(String, String)>,
    disk_units: u32,
    cloud: Option<SeedPlan>,
}

fn plan_disk(
    req: &CreateVmRequest,
    snap: &Snapshot,
    name: Option<&VmName>,
    units: Option<u32>,
    errors: &mut Vec<FieldError>,
) -> PlannedDisk {
    let mut out = PlannedDisk::default();
    match &req.disk {
        Some(DiskRequest::New {
            pool,
            size_gib,
            format,
        }) => match snap.pools.iter().find(|p| &p.name == pool) {
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
                        .map(|u| snap.model.disk_gib_of(u, p.capacity_gib()))
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
                out.disk_units = snap.model.units_for_disk(gib, p.capacity_gib().max(1));
                if let Some(n) = name {
                    let vol_name = disk_volume_name(n, p.is_block(), format);
                    if p.volumes.iter().any(|v| v.name == vol_name) {
                        errors.push(field("name", format!("Pool {pool} already has a volume {vol_name}; pick another VM name or use that volume.")));
                    }
                    out.new_volume = Some((pool.clone(), xml::volume_xml(&vol_name, gib, format)));
                    out.disks.push(DiskSpec {
                        path: String::new(),
                        block: p.is_block(),
                        format,
                        cdrom: false,
                    });
                }
            }
        },
        Some(DiskRequest::Existing { path }) => match snap.volume(path) {
            None => errors.push(field("volume", "Choose a volume from a storage pool.")),
            Some((p, v)) => {
                // Only a volume nobody else has, read in the format checked from
                // its header and libvirt's view (never guessed from its name).
                let format = match existing_disk_refusal(&snap.volume_use(v)) {
                    Some(why) => {
                        errors.push(field("volume", why));
                        DiskFormat::Raw
                    }
                    None => match snap.inspected.get(&v.path).map(|i| &i.checked) {
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
                out.disks.push(DiskSpec {
                    path: v.path.clone(),
                    block: p.is_block(),
                    format,
                    cdrom: false,
                });
            }
        },
        Some(DiskRequest::CloudImage { base, size_gib }) => {
            let input = CloudImageInput {
                base,
                size_gib: *size_gib,
                cloud_init: req.cloud_init.as_ref(),
                install: &req.install,
                name,
                units,
                snap,
            };
            if let Some(c) = plan_cloud_image(&input, errors) {
                out.cloud = Some(c.seed);
                out.disks.push(c.disk);
                out.disk_units = c.units;
            }
        }
        None => {}
    }
    out
}

/// The name of a VM's new disk volume: the VM's name, with a suffix in a file pool.
fn disk_volume_name(name: &VmName, block: bool, format: DiskFormat) -> String {
    match (block, format) {
        (true, _) => name.to_string(),
        (false, DiskFormat::Qcow2) => format!("{name}.qcow2"),
        (false, DiskFormat::Raw) => format!("{name}.img"),
    }
}

/// What a cloud-image disk is checked against: the request's parts, the name and units
/// the rest of the plan found (if valid), and the host.
pub struct CloudImageInput<'a> {
    /// The image volume's path.
    pub base: &'a str,
    pub size_gib: Option<u64>,
    pub cloud_init: Option<&'a CloudInitRequest>,
    pub install: &'a InstallRequest,
    pub name: Option<&'a VmName>,
    pub units: Option<u32>,
    pub snap: &'a Snapshot,
}

/// A checked cloud-image disk.
#[derive(Debug, Clone)]
pub struct CloudDisk {
    pub seed: SeedPlan,
    /// The copy (its path filled in by the build).
    pub disk: DiskSpec,
    /// The units the disk's size claims.
    pub units: u32,
}

/// Checks a cloud-image disk and its cloud-init fields; problems go to `errors`.
pub fn plan_cloud_image(
    input: &CloudImageInput<'_>,
    errors: &mut Vec<FieldError>,
) -> Option<CloudDisk> {
    let CloudImageInput {
        base,
        size_gib,
        cloud_init: ci,
        install,
        name,
        units,
        snap,
    } = *input;
    if !matches!(install, InstallRequest::Import) {
        errors.push(field(
            "install",
            "A cloud image boots from its disk: choose \"Boot the disk as it is\".",
        ));
    }
    let checked = match ci {
        None => {
            errors.push(field(
                "ci_user",
                "A cloud image needs its cloud-init settings: give at least the user.",
            ));
            None
        }
        Some(ci) => {
            let keys = ci.ssh_keys.join("\n");
            let input = SeedInput {
                vm_name: name.map(|n| n.as_str()).unwrap_or(""),
                hostname: &ci.hostname,
                user: &ci.user,
                has_password: !ci.password.is_empty(),
                ssh_keys: &keys,
                user_data: &ci.user_data,
            };
            if ci.password.len() > 1024 || ci.password.chars().any(char::is_control) {
                errors.push(field(
                    "ci_password",
                    "A password has at most 1024 characters and no control characters.",
                ));
            }
            match cloudinit::check_seed(&input) {
                Ok(c) => Some(c),
                Err(es) => {
                    errors.extend(es.into_iter().map(|e| FieldError {
                        field: e.field,
                        message: e.message,
                    }));
                    None
                }
            }
        }
    };
    let Some((pool, image)) = snap.volume(base) else {
        errors.push(field(
            "base",
            "Choose the cloud image: a volume in a storage pool.",
        ));
        return None;
    };
    if image.is_iso() {
        errors.push(field(
            "base",
            format!(
                "{} is an ISO; choose a disk image (qcow2 or raw).",
                image.name
            ),
        ));
    }
    if !pool.active {
        errors.push(field(
            "base",
            format!("Storage pool {} is not running; start it first.", pool.name),
        ));
    }
    if let Some(user) = snap.disks_in_use.get(&image.path) {
        errors.push(field(
            "base",
            format!(
                "{} is the disk of VM {user}; copy a volume no VM runs from.",
                image.name
            ),
        ));
    }
    if snap.being_made.contains(&image.path) {
        errors.push(field(
            "base",
            format!(
                "{} is still being made; wait for its job to finish.",
                image.name
            ),
        ));
    }
    // The image's real format: a guest may have written a qcow2 header naming a host
    // file into a raw disk that was kept when its VM was deleted.
    let base_format = match snap.inspected.get(&image.path).map(|i| &i.checked) {
        Some(Ok(f)) => Some(*f),
        Some(Err(why)) => {
            errors.push(field("base", why.clone()));
            None
        }
        None => {
            errors.push(field(
                "base",
                format!("{} could not be looked at; try again.", image.name),
            ));
            None
        }
    };
    let image_gib = image.capacity_gib().max(1);
    let gib = size_gib.unwrap_or_else(|| {
        units
            .map(|u| snap.model.disk_gib_of(u, pool.capacity_gib()))
            .unwrap_or(0)
            .max(image_gib)
    });
    if gib < image_gib {
        errors.push(field(
            "size_gib",
            format!(
                "The image {} is {image_gib} GiB; the disk cannot be smaller.",
                image.name
            ),
        ));
    } else if gib > pool.available_gib() {
        errors.push(field(
            "size_gib",
            AdmissionError::Disk {
                pool: pool.name.clone(),
                needed_gib: gib,
                available_gib: pool.available_gib(),
                short_gib: gib.saturating_sub(pool.available_gib()),
            }
            .to_string(),
        ));
    }
    let name = name?;
    let format = if pool.is_block() {
        DiskFormat::Raw
    } else {
        DiskFormat::Qcow2
    };
    let disk_volume = disk_volume_name(name, pool.is_block(), format);
    let seed_volume = cloudinit::seed_volume_name(name.as_str());
    for v in [&disk_volume, &seed_volume] {
        if pool.volumes.iter().any(|x| &x.name == v) {
            errors.push(field(
                "name",
                format!(
                    "Pool {} already has a volume {v}; pick another VM name.",
                    pool.name
                ),
            ));
        }
    }
    let checked = checked?;
    let base_format = base_format?;
    let disk_bytes = gib * GIB;
    Some(CloudDisk {
        seed: SeedPlan {
            pool: pool.name.clone(),
            base_path: image.path.clone(),
            base_name: image.name.clone(),
            base_format,
            disk_format: format,
            disk_volume_xml: xml::volume_copy_xml(&disk_volume, image.capacity_bytes, format),
            grow_to_bytes: (disk_bytes > image.capacity_bytes).then_some(disk_bytes),
            seed_volume,
            block: pool.is_block(),
            checked,
            password: ci.map(|c| c.password.clone()).unwrap_or_default(),
        },
        disk: DiskSpec {
            path: String::new(),
            block: pool.is_block(),
            format,
            cdrom: false,
        },
        units: snap.model.units_for_disk(gib, pool.capacity_gib().max(1)),
    })
}

/// What the VM boots, and a network install's tree and kernel arguments; a CD-ROM is
/// added to `disks`.
fn plan_boot(
    req: &CreateVmRequest,
    snap: &Snapshot,
    disks: &mut Vec<DiskSpec>,
    errors: &mut Vec<FieldError>,
) -> (BootSpec, Option<(TreeUrl, String)>) {
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
            match snap.volume(volume) {
                None => errors.push(field("iso", "Choose an ISO volume from a storage pool.")),
                Some((p, v)) => {
                    if let Some(why) = cdrom_refusal(&snap.volume_use(v)) {
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
            let k = boot_file(snap, kernel, "kernel", errors);
            let i = match initrd.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(i) => boot_file(snap, i, "initrd", errors),
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
    (boot, network_install)
}

/// A direct-boot file as looked at in the boot directory: its real path, or the problem
/// at `at` (kernel or initrd).
fn boot_file(
    snap: &Snapshot,
    given: &str,
    at: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match snap.boot_files.get(given) {
        Some(Ok(path)) => Some(path.clone()),
        Some(Err(why)) => {
            errors.push(field(at, why.clone()));
            None
        }
        None => {
            errors.push(field(
                at,
                format!("{} could not be looked at; try again.", given.trim()),
            ));
            None
        }
    }
}

/// The network card: a known bridge or libvirt network, and a MAC address no VM uses.
pub fn plan_nic(
    n: &NicRequest,
    snap: &Snapshot,
    mac_bytes: &mut impl FnMut() -> [u8; 3],
    errors: &mut Vec<FieldError>,
) -> Option<NicSpec> {
    let source = match (
        n.bridge.as_deref().filter(|s| !s.is_empty()),
        n.network.as_deref().filter(|s| !s.is_empty()),
    ) {
        (Some(b), None) => {
            let known = snap
                .networks
                .iter()
                .any(|net| net.bridge.as_deref() == Some(b))
                || snap.host_bridges.contains(b);
            if !valid_ifname(b) || !known {
                errors.push(field(
                    "bridge",
                    format!("There is no bridge named {b} on this host."),
                ));
            }
            Some(NicSource::Bridge(b.to_string()))
        }
        (None, Some(net)) => {
            if !snap.networks.iter().any(|x| x.name == net) {
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
            Ok(mac) if snap.macs_in_use.contains(&mac.to_string()) => {
                errors.push(field(
                    "mac",
                    format!("MAC address {mac} is already used by another VM on this host."),
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
            let mac = Mac::qemu_local(mac_bytes());
            if !snap.macs_in_use.contains(&mac.to_string()) {
                break mac;
            }
        }),
    };
    Some(NicSpec {
        source: source?,
        model: n.model.unwrap_or(NicModel::Virtio),
        mac: mac?,
    })
}

/// A Linux interface name (what a bridge may be called).
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Kernel arguments: one line, at most 2048 characters.
pub fn cmdline_ok(s: &str) -> bool {
    s.len() <= 2048 && !s.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::vm::VmState;

    const GIB_BYTES: u64 = GIB;

    /// 10 units of 2 vCPUs and 4 GiB each.
    fn model() -> UnitModel {
        UnitModel {
            units_total: 10,
            usable_vcpus: 20,
            usable_memory_mib: 40_960,
        }
    }

    fn volume(pool: &str, name: &str, gib: u64) -> VolumeInfo {
        VolumeInfo {
            name: name.into(),
            path: format!("/{pool}/{name}"),
            capacity_bytes: gib * GIB_BYTES,
            allocation_bytes: 0,
        }
    }

    fn pool(name: &str, kind: &str, capacity_gib: u64, available_gib: u64) -> PoolInfo {
        PoolInfo {
            name: name.into(),
            kind: kind.into(),
            active: true,
            capacity_bytes: capacity_gib * GIB_BYTES,
            allocation_bytes: (capacity_gib - available_gib) * GIB_BYTES,
            available_bytes: available_gib * GIB_BYTES,
            volumes: Vec::new(),
        }
    }

    fn vm(name: &str) -> VmSummary {
        VmSummary {
            name: name.into(),
            uuid: format!("uuid-of-{name}"),
            state: VmState::Running,
            vcpus: 2,
            memory_mib: 4096,
            autostart: false,
            persistent: true,
        }
    }

    fn looked_at(format: DiskFormat) -> VolumeFacts {
        VolumeFacts {
            libvirt_format: Some(format.as_str().into()),
            checked: Ok(format),
        }
    }

    /// A host with a 1000 GiB file pool (100 GiB a unit, 500 free), a 100 GiB LVM
    /// pool, VM web01 running from `/default/web01.qcow2`, and a few volumes.
    fn host() -> Snapshot {
        let mut default = pool("default", "dir", 1000, 500);
        default.volumes = vec![
            volume("default", "web01.qcow2", 20),
            volume("default", "spare.qcow2", 10),
            volume("default", "debian.iso", 1),
            volume("default", "web01-cidata.iso", 1),
            volume("default", "cloud.qcow2", 2),
        ];
        let mut vg = pool("vg", "logical", 100, 100);
        vg.volumes = vec![volume("vg", "db01", 10)];
        let mut inspected = HashMap::new();
        for (path, format) in [
            ("/default/spare.qcow2", DiskFormat::Qcow2),
            ("/default/cloud.qcow2", DiskFormat::Qcow2),
            ("/default/web01.qcow2", DiskFormat::Qcow2),
        ] {
            inspected.insert(path.to_string(), looked_at(format));
        }
        inspected.insert(
            "/default/debian.iso".into(),
            VolumeFacts {
                libvirt_format: Some("iso".into()),
                checked: Ok(DiskFormat::Raw),
            },
        );
        Snapshot {
            model: model(),
            vms: vec![vm("web01")],
            row_names: vec!["web01".into()],
            pools: vec![default, vg],
            networks: vec![NetworkInfo {
                name: "default".into(),
                bridge: Some("virbr0".into()),
                forward_mode: "nat".into(),
                active: true,
            }],
            macs_in_use: ["52:54:00:00:00:01".to_string()].into(),
            disks_in_use: [("/default/web01.qcow2".into(), "web01".into())].into(),
            cdroms_in_use: [("/default/web01-cidata.iso".into(), "web01".into())].into(),
            seeds: ["/default/web01-cidata.iso".to_string()].into(),
            being_made: HashSet::new(),
            inspected,
            boot_files: HashMap::new(),
            host_bridges: HashSet::new(),
            guest: GuestCapabilities::simulated(),
        }
    }

    fn flavors() -> Vec<(String, u32)> {
        vec![("small".into(), 1), ("large".into(), 4)]
    }

    /// Two units with a new disk in the file pool, booted from that disk.
    fn request(name: &str) -> CreateVmRequest {
        CreateVmRequest {
            name: name.into(),
            units: Some(2),
            disk: Some(DiskRequest::New {
                pool: "default".into(),
                size_gib: None,
                format: None,
            }),
            ..Default::default()
        }
    }

    fn plan_on(req: &CreateVmRequest, snap: &Snapshot) -> Result<CreatePlan, Vec<FieldError>> {
        // MACs drawn in turn: 52:54:00:00:00:01, :02, …
        let mut n = 0u8;
        plan(
            req,
            snap,
            &flavors(),
            VirtType::Qemu,
            "the-uuid".into(),
            || {
                n += 1;
                [0, 0, n]
            },
        )
    }

    fn fields(errors: &[FieldError]) -> Vec<&'static str> {
        errors.iter().map(|e| e.field).collect()
    }

    fn errors_of(req: &CreateVmRequest, snap: &Snapshot) -> Vec<FieldError> {
        plan_on(req, snap).expect_err("the plan should be refused")
    }

    fn message_at<'a>(errors: &'a [FieldError], at: &str) -> &'a str {
        errors
            .iter()
            .find(|e| e.field == at)
            .map(|e| e.message.as_str())
            .unwrap_or_else(|| panic!("no error at {at}: {errors:?}"))
    }

    #[test]
    fn a_valid_request_gives_the_spec_and_the_new_volume() {
        let p = plan_on(&request("app01"), &host()).unwrap();
        assert_eq!(p.spec.name.as_str(), "app01");
        assert_eq!(p.spec.uuid, "the-uuid");
        assert_eq!((p.spec.vcpus, p.spec.memory_mib), (4, 8192));
        assert_eq!((p.units, p.size_units, p.disk_units), (2, 2, 2));
        assert!(!p.disk_decides());
        assert_eq!(p.spec.boot, BootSpec::Disk);
        assert_eq!(p.spec.clock, Clock::Utc);
        assert_eq!(
            p.spec.disks,
            vec![DiskSpec {
                path: String::new(),
                block: false,
                format: DiskFormat::Qcow2,
                cdrom: false,
            }]
        );
        // The units' share of the pool: 2 × 100 GiB.
        let (pool, xml) = p.new_volume.unwrap();
        assert_eq!(pool, "default");
        assert_eq!(xml, xml::volume_xml("app01.qcow2", 200, DiskFormat::Qcow2));
        assert_eq!(
            p.spec.serial_log.as_deref(),
            Some("/var/log/libvirt/qemu/app01-serial.log")
        );
        assert!(p.spec.nic.is_none() && p.cloud.is_none() && p.network_install.is_none());
    }

    #[test]
    fn every_field_error_is_reported_in_one_round() {
        let req = CreateVmRequest {
            name: "bad name".into(),
            flavor: Some("huge".into()),
            disk: Some(DiskRequest::New {
                pool: "nowhere".into(),
                size_gib: None,
                format: None,
            }),
            install: InstallRequest::Url {
                url: "ftp://mirror/debian".into(),
                kernel_args: "a\nb".into(),
                kickstart: None,
            },
            nic: Some(NicRequest {
                network: Some("nonet".into()),
                mac: Some("zz".into()),
                ..Default::default()
            }),
            cloud_init: Some(CloudInitRequest {
                user: "debian".into(),
                password: "pw".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let errors = errors_of(&req, &host());
        assert_eq!(
            fields(&errors),
            vec![
                "name",
                // The unknown size, and so no size at all.
                "flavor",
                "flavor",
                "pool",
                "disk_mode",
                "url",
                "kernel_args",
                "start",
                "install",
                "network",
                "mac",
            ]
        );
    }

    #[test]
    fn units_come_from_a_named_size() {
        let req = CreateVmRequest {
            flavor: Some("large".into()),
            units: None,
            ..request("app01")
        };
        let p = plan_on(&req, &host()).unwrap();
        assert_eq!(p.units, 4);
        assert_eq!((p.spec.vcpus, p.spec.memory_mib), (8, 16_384));
        // A named size wins over units; an unknown one is refused at its field.
        let req = CreateVmRequest {
            flavor: Some("medium".into()),
            ..request("app01")
        };
        let errors = errors_of(&req, &host());
        assert_eq!(fields(&errors), vec!["flavor", "flavor"]);
        assert_eq!(errors[0].message, "There is no size named medium.");
    }

    #[test]
    fn units_give_their_share_and_smaller_sizes_inside_them() {
        let req = CreateVmRequest {
            units: Some(3),
            vcpus: Some(1),
            ..request("app01")
        };
        let p = plan_on(&req, &host()).unwrap();
        assert_eq!((p.units, p.spec.vcpus, p.spec.memory_mib), (3, 1, 12_288));

        // More than the units give is refused at the field that asks too much.
        let req = CreateVmRequest {
            units: Some(1),
            vcpus: Some(3),
            ..request("app01")
        };
        let errors = errors_of(&req, &host());
        assert_eq!(fields(&errors), vec!["vcpus"]);
        assert_eq!(
            errors[0].message,
            "1 unit give at most 2 vCPUs and 4096 MiB; choose more units or a smaller size."
        );
        let req = CreateVmRequest {
            units: Some(2),
            memory_mib: Some(9000),
            ..request("app01")
        };
        assert_eq!(fields(&errors_of(&req, &host())), vec!["memory_mib"]);

        for (units, vcpus, memory, at) in [
            (Some(0), None, None, vec!["units", "flavor"]),
            (None, Some(0), Some(1024), vec!["vcpus"]),
            (None, Some(1), Some(32), vec!["memory_mib"]),
            (None, Some(1), None, vec!["flavor"]),
        ] {
            let req = CreateVmRequest {
                units,
                vcpus,
                memory_mib: memory,
                ..request("app01")
            };
            assert_eq!(
                fields(&errors_of(&req, &host())),
                at,
                "{units:?} {vcpus:?} {memory:?}"
            );
        }
    }

    #[test]
    fn vcpus_and_memory_round_up_to_whole_units() {
        // 3 vCPUs need 2 units (2 a unit); 4097 MiB needs 2 units (4096 a unit).
        for (vcpus, memory, units) in [(1, 1024, 1), (3, 1024, 2), (1, 4097, 2), (5, 12_289, 4)] {
            let req = CreateVmRequest {
                units: None,
                vcpus: Some(vcpus),
                memory_mib: Some(memory),
                ..request("app01")
            };
            let p = plan_on(&req, &host()).unwrap();
            assert_eq!(p.units, units, "{vcpus} vCPUs, {memory} MiB");
            assert_eq!((p.spec.vcpus, p.spec.memory_mib), (vcpus, memory));
        }
    }

    #[test]
    fn a_disk_bigger_than_the_units_share_raises_the_charge() {
        // 2 units give 200 GiB of the pool; 350 GiB needs 4 units.
        let req = CreateVmRequest {
            disk: Some(DiskRequest::New {
                pool: "default".into(),
                size_gib: Some(350),
                format: None,
            }),
            ..request("app01")
        };
        let p = plan_on(&req, &host()).unwrap();
        assert_eq!((p.size_units, p.disk_units, p.units), (2, 4, 4));
        assert!(p.disk_decides());
        // The size is still the units' (the charge is not more vCPUs).
        assert_eq!((p.spec.vcpus, p.spec.memory_mib), (4, 8192));

        // A smaller disk leaves the charge to the size.
        let req = CreateVmRequest {
            disk: Some(DiskRequest::New {
                pool: "default".into(),
                size_gib: Some(50),
                format: None,
            }),
            ..request("app01")
        };
        let p = plan_on(&req, &host()).unwrap();
        assert_eq!((p.size_units, p.disk_units, p.units), (2, 1, 2));
        assert!(!p.disk_decides());
    }

    #[test]
    fn a_new_disk_is_checked_against_its_pool() {
        // More than the pool has free.
        let req = CreateVmRequest {
            disk: Some(DiskRequest::New {
                pool: "default".into(),
                size_gib: Some(600),
                format: None,
            }),
            ..request("app01")
        };
        let errors = errors_of(&req, &host());
        assert_eq!(fields(&errors), vec!["size_gib"]);
        assert!(errors[0].message.contains("default"), "{errors:?}");

        // An LVM pool takes raw volumes named as the VM.
        let lvm = |format| CreateVmRequest {
            disk: Some(DiskRequest::New {
                pool: "vg".into(),
                size_gib: None,
                format,
            }),
            ..request("app01")
        };
        let p = plan_on(&lvm(None), &host()).unwrap();
        assert!(p.spec.disks[0].block);
        assert_eq!(p.spec.disks[0].format, DiskFormat::Raw);
        assert_eq!(
            p.new_volume.unwrap().1,
            xml::volume_xml("app01", 20, DiskFormat::Raw)
        );
        let errors = errors_of(&lvm(Some(DiskFormat::Qcow2)), &host());
        assert_eq!(fields(&errors), vec!["format"]);

        // A volume of that name is there already.
        let errors = errors_of(
            &CreateVmRequest {
                name: "db01".into(),
                ..lvm(None)
            },
            &host(),
        );
        assert_eq!(fields(&errors), vec!["name"]);
        assert!(errors[0]
            .message
            .contains("Pool vg already has a volume db01"));

        // A stopped pool.
        let mut snap = host();
        snap.pools[0].active = false;
        let errors = errors_of(&request("app01"), &snap);
        assert_eq!(
            message_at(&errors, "pool"),
            "Storage pool default is not running; start it first."
        );
    }

    #[test]
    fn an_existing_volume_in_use_is_refused() {
        let existing = |path: &str| CreateVmRequest {
            disk: Some(DiskRequest::Existing { path: path.into() }),
            ..request("app01")
        };
        let errors = errors_of(&existing("/default/web01.qcow2"), &host());
        assert_eq!(fields(&errors), vec!["volume"]);
        assert!(
            errors[0].message.contains("in use by VM web01"),
            "{errors:?}"
        );
        // A seed, an ISO, or a volume being made.
        let mut snap = host();
        snap.being_made.insert("/default/spare.qcow2".into());
        for path in [
            "/default/web01-cidata.iso",
            "/default/debian.iso",
            "/default/spare.qcow2",
        ] {
            assert_eq!(
                fields(&errors_of(&existing(path), &snap)),
                vec!["volume"],
                "{path}"
            );
        }
        // One in no pool: and then there is no disk to boot either.
        assert_eq!(
            fields(&errors_of(&existing("/elsewhere/disk.img"), &snap)),
            vec!["volume", "install"]
        );

        // A free one is attached in the format it was checked in.
        let p = plan_on(&existing("/default/spare.qcow2"), &host()).unwrap();
        assert_eq!(p.spec.disks[0].path, "/default/spare.qcow2");
        assert_eq!(p.spec.disks[0].format, DiskFormat::Qcow2);
        assert!(p.new_volume.is_none());
        assert_eq!(p.disk_units, 0);

        // One whose check failed, or that was not looked at, is refused with why.
        let mut snap = host();
        snap.inspected.insert(
            "/default/spare.qcow2".into(),
            VolumeFacts {
                libvirt_format: Some("raw".into()),
                checked: Err("It names a backing file.".into()),
            },
        );
        let errors = errors_of(&existing("/default/spare.qcow2"), &snap);
        assert_eq!(message_at(&errors, "volume"), "It names a backing file.");
        snap.inspected.remove("/default/spare.qcow2");
        let errors = errors_of(&existing("/default/spare.qcow2"), &snap);
        assert_eq!(
            message_at(&errors, "volume"),
            "Volume spare.qcow2 could not be looked at; try again."
        );
    }

    #[test]
    fn an_installer_iso_is_a_cdrom_but_a_seed_is_not() {
        let cdrom = |volume: &str| CreateVmRequest {
            install: InstallRequest::Cdrom {
                volume: volume.into(),
            },
            ..request("app01")
        };
        let p = plan_on(&cdrom("/default/debian.iso"), &host()).unwrap();
        assert_eq!(p.spec.boot, BootSpec::Cdrom);
        assert_eq!(p.spec.disks.len(), 2);
        assert!(p.spec.disks[1].cdrom);
        assert_eq!(p.spec.disks[1].path, "/default/debian.iso");
        for volume in ["/default/web01-cidata.iso", "/nowhere.iso"] {
            assert_eq!(fields(&errors_of(&cdrom(volume), &host())), vec!["iso"]);
        }
    }

    fn cloud(base: &str, size_gib: Option<u64>) -> CreateVmRequest {
        CreateVmRequest {
            disk: Some(DiskRequest::CloudImage {
                base: base.into(),
                size_gib,
            }),
            cloud_init: Some(CloudInitRequest {
                user: "debian".into(),
                password: "secret".into(),
                ..Default::default()
            }),
            ..request("app01")
        }
    }

    #[test]
    fn a_cloud_image_is_copied_grown_and_seeded() {
        let p = plan_on(&cloud("/default/cloud.qcow2", None), &host()).unwrap();
        let seed = p.cloud.expect("a seed plan");
        assert_eq!(seed.pool, "default");
        assert_eq!(seed.base_path, "/default/cloud.qcow2");
        assert_eq!(seed.base_format, DiskFormat::Qcow2);
        assert_eq!(seed.disk_format, DiskFormat::Qcow2);
        assert_eq!(seed.seed_volume, "app01-cidata.iso");
        assert_eq!(seed.checked.hostname, "app01");
        assert_eq!(seed.checked.user, "debian");
        assert_eq!(seed.password, "secret");
        // Grown from 2 GiB to the 2 units' share, 200 GiB.
        assert_eq!(seed.grow_to_bytes, Some(200 * GIB_BYTES));
        assert_eq!(
            seed.disk_volume_xml,
            xml::volume_copy_xml("app01.qcow2", 2 * GIB_BYTES, DiskFormat::Qcow2)
        );
        assert_eq!(p.disk_units, 2);
        assert!(p.new_volume.is_none());
        assert_eq!(p.spec.disks.len(), 1);
        assert!(p.spec.disks[0].path.is_empty());
        // The password never shows in a debug print.
        assert!(!format!("{seed:?}").contains("secret"));

        // At the image's own size it is not grown.
        let p = plan_on(&cloud("/default/cloud.qcow2", Some(2)), &host()).unwrap();
        assert_eq!(p.cloud.unwrap().grow_to_bytes, None);
    }

    #[test]
    fn a_cloud_image_is_refused_with_every_reason() {
        // Smaller than the image, not booted from its disk, no cloud-init settings.
        let req = CreateVmRequest {
            install: InstallRequest::Pxe,
            cloud_init: None,
            nic: Some(NicRequest {
                network: Some("default".into()),
                ..Default::default()
            }),
            ..cloud("/default/cloud.qcow2", Some(1))
        };
        let errors = errors_of(&req, &host());
        assert_eq!(fields(&errors), vec!["install", "ci_user", "size_gib"]);
        assert_eq!(
            message_at(&errors, "size_gib"),
            "The image cloud.qcow2 is 2 GiB; the disk cannot be smaller."
        );

        // An ISO, a running VM's disk, one being made, one not looked at.
        let mut snap = host();
        snap.being_made.insert("/default/cloud.qcow2".into());
        let errors = errors_of(&cloud("/default/cloud.qcow2", None), &snap);
        assert_eq!(
            message_at(&errors, "base"),
            "cloud.qcow2 is still being made; wait for its job to finish."
        );
        let errors = errors_of(&cloud("/default/web01.qcow2", None), &host());
        assert!(message_at(&errors, "base").contains("is the disk of VM web01"));
        let errors = errors_of(&cloud("/default/debian.iso", None), &host());
        assert!(message_at(&errors, "base").contains("is an ISO"));
        let mut snap = host();
        snap.inspected.clear();
        let errors = errors_of(&cloud("/default/cloud.qcow2", None), &snap);
        assert_eq!(
            message_at(&errors, "base"),
            "cloud.qcow2 could not be looked at; try again."
        );
        assert_eq!(
            fields(&errors_of(&cloud("/none", None), &host())),
            vec!["base", "install"]
        );

        // The VM's seed volume name is taken in the pool; bad cloud-init fields.
        let mut snap = host();
        snap.pools[0]
            .volumes
            .push(volume("default", "app01-cidata.iso", 1));
        let req = CreateVmRequest {
            cloud_init: Some(CloudInitRequest {
                user: "Root User".into(),
                ..Default::default()
            }),
            ..cloud("/default/cloud.qcow2", None)
        };
        let errors = errors_of(&req, &snap);
        // (With no disk planned, booting "from the disk" is refused too.)
        assert_eq!(
            fields(&errors),
            vec!["ci_user", "ci_ssh_keys", "name", "install"]
        );
    }

    #[test]
    fn the_cloud_image_check_takes_its_parts_in_one_struct() {
        let snap = host();
        let ci = CloudInitRequest {
            user: "debian".into(),
            ssh_keys: Vec::new(),
            password: "pw".into(),
            ..Default::default()
        };
        let name = VmName::parse("app01").unwrap();
        let mut errors = Vec::new();
        let disk = plan_cloud_image(
            &CloudImageInput {
                base: "/default/cloud.qcow2",
                size_gib: Some(250),
                cloud_init: Some(&ci),
                install: &InstallRequest::Import,
                name: Some(&name),
                units: Some(1),
                snap: &snap,
            },
            &mut errors,
        )
        .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        // 250 GiB of a 1000 GiB pool split in 10: 3 units.
        assert_eq!(disk.units, 3);
        assert_eq!(disk.seed.grow_to_bytes, Some(250 * GIB_BYTES));

        // Without a valid name there is no plan, but the other checks still run.
        let mut errors = Vec::new();
        let none = plan_cloud_image(
            &CloudImageInput {
                base: "/default/cloud.qcow2",
                size_gib: Some(600),
                cloud_init: Some(&ci),
                install: &InstallRequest::Import,
                name: None,
                units: Some(1),
                snap: &snap,
            },
            &mut errors,
        );
        assert!(none.is_none());
        assert_eq!(fields(&errors), vec!["ci_hostname", "size_gib"]);
    }

    #[test]
    fn cloud_init_settings_need_a_cloud_image_disk() {
        let req = CreateVmRequest {
            cloud_init: Some(CloudInitRequest {
                user: "debian".into(),
                password: "pw".into(),
                ..Default::default()
            }),
            ..request("app01")
        };
        assert_eq!(fields(&errors_of(&req, &host())), vec!["disk_mode"]);
    }

    #[test]
    fn direct_kernel_boot_uses_the_files_looked_at_in_the_boot_directory() {
        let kernel = |initrd: Option<&str>, cmdline: &str| CreateVmRequest {
            install: InstallRequest::Kernel {
                kernel: "vmlinuz".into(),
                initrd: initrd.map(str::to_string),
                cmdline: cmdline.into(),
            },
            ..request("app01")
        };
        let mut snap = host();
        snap.boot_files
            .insert("vmlinuz".into(), Ok("/boot/virtdeck/vmlinuz".into()));
        snap.boot_files
            .insert("initrd.img".into(), Ok("/boot/virtdeck/initrd.img".into()));
        let p = plan_on(&kernel(Some("initrd.img"), "console=ttyS0"), &snap).unwrap();
        assert_eq!(
            p.spec.boot,
            BootSpec::Kernel {
                kernel: "/boot/virtdeck/vmlinuz".into(),
                initrd: Some("/boot/virtdeck/initrd.img".into()),
                cmdline: "console=ttyS0".into(),
            }
        );
        // A blank initrd means none.
        let p = plan_on(&kernel(Some("  "), ""), &snap).unwrap();
        assert!(matches!(p.spec.boot, BootSpec::Kernel { initrd: None, .. }));

        // A file outside the boot directory, one not looked at, arguments on two lines.
        snap.boot_files.insert(
            "vmlinuz".into(),
            Err(
                "Put the file in /boot/virtdeck and give its name; files elsewhere are not used."
                    .into(),
            ),
        );
        let errors = errors_of(&kernel(Some("other.img"), "a\nb"), &snap);
        assert_eq!(fields(&errors), vec!["cmdline", "kernel", "initrd"]);
        assert!(message_at(&errors, "kernel").starts_with("Put the file in /boot/virtdeck"));
        assert_eq!(
            message_at(&errors, "initrd"),
            "other.img could not be looked at; try again."
        );
    }

    #[test]
    fn a_network_install_needs_a_start_and_a_disk() {
        let req = CreateVmRequest {
            start: true,
            install: InstallRequest::Url {
                url: "http://deb.debian.org/debian/dists/bookworm/main/installer-amd64/".into(),
                kernel_args: "  auto=true ".into(),
                kickstart: None,
            },
            ..request("app01")
        };
        let p = plan_on(&req, &host()).unwrap();
        let (_, args) = p.network_install.unwrap();
        assert_eq!(args, "auto=true");
        assert_eq!(p.spec.boot, BootSpec::Disk);
        let req = CreateVmRequest {
            start: false,
            disk: None,
            ..req
        };
        assert_eq!(fields(&errors_of(&req, &host())), vec!["start", "install"]);
    }

    fn nic(bridge: Option<&str>, network: Option<&str>) -> CreateVmRequest {
        CreateVmRequest {
            nic: Some(NicRequest {
                bridge: bridge.map(str::to_string),
                network: network.map(str::to_string),
                ..Default::default()
            }),
            ..request("app01")
        }
    }

    #[test]
    fn a_nic_goes_on_a_libvirt_network_or_a_host_bridge() {
        let p = plan_on(&nic(None, Some("default")), &host()).unwrap();
        let card = p.spec.nic.unwrap();
        assert_eq!(card.source, NicSource::Network("default".into()));
        assert_eq!(card.model, NicModel::Virtio);
        // :01 is taken, so the next drawn address.
        assert_eq!(card.mac.to_string(), "52:54:00:00:00:02");

        // A bridge: a libvirt network's, or one the host has.
        let p = plan_on(&nic(Some("virbr0"), Some("")), &host()).unwrap();
        assert_eq!(
            p.spec.nic.unwrap().source,
            NicSource::Bridge("virbr0".into())
        );
        let mut snap = host();
        snap.host_bridges.insert("br0".into());
        let p = plan_on(&nic(Some("br0"), None), &snap).unwrap();
        assert_eq!(p.spec.nic.unwrap().source, NicSource::Bridge("br0".into()));

        // Unknown ones, a name no interface may have, both or neither.
        let errors = errors_of(&nic(Some("br9"), None), &host());
        assert_eq!(
            message_at(&errors, "bridge"),
            "There is no bridge named br9 on this host."
        );
        let mut snap = host();
        snap.host_bridges.insert("../../etc".into());
        assert_eq!(
            fields(&errors_of(&nic(Some("../../etc"), None), &snap)),
            vec!["bridge"]
        );
        assert_eq!(
            message_at(&errors_of(&nic(None, Some("lan")), &host()), "network"),
            "There is no libvirt network named lan."
        );
        for (b, n) in [(Some("virbr0"), Some("default")), (None, None)] {
            assert_eq!(fields(&errors_of(&nic(b, n), &host())), vec!["network"]);
        }
    }

    #[test]
    fn a_given_mac_must_be_free_and_valid() {
        let with_mac = |mac: &str| CreateVmRequest {
            nic: Some(NicRequest {
                network: Some("default".into()),
                mac: Some(mac.into()),
                model: Some(NicModel::E1000),
                ..Default::default()
            }),
            ..request("app01")
        };
        let p = plan_on(&with_mac(" 52:54:00:AA:BB:CC "), &host()).unwrap();
        let card = p.spec.nic.unwrap();
        assert_eq!(card.mac.to_string(), "52:54:00:aa:bb:cc");
        assert_eq!(card.model, NicModel::E1000);
        let errors = errors_of(&with_mac("52:54:00:00:00:01"), &host());
        assert_eq!(
            message_at(&errors, "mac"),
            "MAC address 52:54:00:00:00:01 is already used by another VM on this host."
        );
        assert_eq!(
            fields(&errors_of(&with_mac("01:00:5e:00:00:01"), &host())),
            vec!["mac"]
        );
    }

    #[test]
    fn a_name_taken_by_a_vm_or_a_create_under_way_is_refused() {
        let errors = errors_of(&request("web01"), &host());
        assert_eq!(
            message_at(&errors, "name"),
            "A VM named web01 exists already. Pick another name."
        );
        // A record only: a create still under way (no VM defined yet).
        let mut snap = host();
        snap.row_names.push("app02".into());
        let errors = errors_of(&request("app02"), &snap);
        assert_eq!(fields(&errors), vec!["name"]);
        // An invalid name is refused once, and the rest is still checked.
        let req = CreateVmRequest {
            disk: None,
            ..request("a/b")
        };
        assert_eq!(fields(&errors_of(&req, &host())), vec!["name", "install"]);
    }

    #[test]
    fn the_test_driver_keeps_no_serial_log_and_the_clock_is_as_asked() {
        let req = CreateVmRequest {
            clock: Some(Clock::Localtime),
            autostart: true,
            start: true,
            ..request("app01")
        };
        let mut n = 0u8;
        let p = plan(
            &req,
            &host(),
            &flavors(),
            VirtType::Test,
            "u".into(),
            || {
                n += 1;
                [0, 0, n]
            },
        )
        .unwrap();
        assert_eq!(p.spec.serial_log, None);
        assert_eq!(p.spec.virt_type, VirtType::Test);
        assert_eq!(p.spec.clock, Clock::Localtime);
        assert!(p.start && p.autostart);
    }

    #[test]
    fn interface_names_and_kernel_arguments() {
        assert!(valid_ifname("br0") && valid_ifname("bond0.100") && valid_ifname("v_1-x"));
        for bad in ["", "a/b", "../x", "br 0", "sixteen-chars-xx"] {
            assert!(!valid_ifname(bad), "{bad}");
        }
        assert!(cmdline_ok("console=ttyS0 quiet"));
        assert!(cmdline_ok(&"a".repeat(2048)));
        assert!(!cmdline_ok(&"a".repeat(2049)));
        assert!(!cmdline_ok("a\tb"));
    }
}
