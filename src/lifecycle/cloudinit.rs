//! Creating a VM from a cloud image: the disk is a full copy of a base volume (grown
//! to the requested size), and a NoCloud seed ISO (`cidata`) built from the form is
//! stored as a volume beside it and attached as a read-only CD-ROM.

use super::{field, FieldError, InstallRequest, Inventory};
use crate::domain::capacity::AdmissionError;
use crate::domain::cloudinit::{self, CheckedSeed, Seed, SeedInput};
use crate::domain::inventory::GIB;
use crate::domain::vmspec::{DiskFormat, DiskSpec, VmName, VmSpec};
use crate::domain::xml;
use crate::hypervisor::Hypervisor;
use crate::store::cloud_init::CloudInitRow;
use crate::store::Store;
use serde::Deserialize;

/// SHA-512 crypt rounds for the guest user's password.
const PASSWORD_ROUNDS: usize = 100_000;

/// The cloud-init fields of a create request.
#[derive(Clone, Default, Deserialize)]
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

/// What the build step makes, decided before anything is touched.
pub(super) struct SeedPlan {
    pool: String,
    base_path: String,
    base_name: String,
    /// The format the image was checked in (header, libvirt's view, virtdeck's record);
    /// checked again right before the copy, which libvirt reads in that format.
    base_format: DiskFormat,
    /// The copy's format.
    disk_format: DiskFormat,
    disk_volume_xml: String,
    /// The disk's final size, when bigger than the image.
    grow_to_bytes: Option<u64>,
    seed_volume: String,
    /// The pool holds block devices (the seed is one too).
    block: bool,
    checked: CheckedSeed,
    password: String,
}

#[allow(clippy::too_many_arguments)] // the parts of the request and inventory it checks
/// Checks a cloud-image disk and its cloud-init fields; returns the plan, the disk
/// (path filled in by the build) and the units the disk size claims.
pub(super) fn plan(
    base: &str,
    size_gib: Option<u64>,
    ci: Option<&CloudInitRequest>,
    install: &InstallRequest,
    name: Option<&VmName>,
    units: Option<u32>,
    inv: &Inventory,
    errors: &mut Vec<FieldError>,
) -> Option<(SeedPlan, DiskSpec, u32)> {
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
    let found = inv
        .pools
        .iter()
        .find_map(|p| p.volumes.iter().find(|v| v.path == base).map(|v| (p, v)));
    let Some((pool, image)) = found else {
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
    if let Some(user) = inv.disks_in_use.get(&image.path) {
        errors.push(field(
            "base",
            format!(
                "{} is the disk of VM {user}; copy a volume no VM runs from.",
                image.name
            ),
        ));
    }
    if inv.being_made.contains(&image.path) {
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
    let base_format = match inv.inspected.get(&image.path).map(|i| &i.checked) {
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
            .map(|u| inv.model.disk_gib_of(u, pool.capacity_gib()))
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
    let disk_volume = match (pool.is_block(), format) {
        (true, _) => name.to_string(),
        (false, DiskFormat::Qcow2) => format!("{name}.qcow2"),
        (false, DiskFormat::Raw) => format!("{name}.img"),
    };
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
    Some((
        SeedPlan {
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
        DiskSpec {
            path: String::new(),
            block: pool.is_block(),
            format,
            cdrom: false,
        },
        inv.model.units_for_disk(gib, pool.capacity_gib().max(1)),
    ))
}

/// The SHA-512 crypt hash of a guest password.
pub fn hash_password(password: &str) -> Result<String, String> {
    let params = sha_crypt::Sha512Params::new(PASSWORD_ROUNDS)
        .map_err(|e| format!("password hashing parameters: {e:?}"))?;
    sha_crypt::sha512_simple(password, &params).map_err(|e| format!("password hashing: {e:?}"))
}

/// Copies the image, grows it, builds and uploads the seed, and puts both into the
/// spec. Everything made is recorded first thing, so a failure removes it.
pub(super) fn make(
    hv: &dyn Hypervisor,
    store: &Store,
    plan: &SeedPlan,
    spec: &mut VmSpec,
) -> Result<(), String> {
    let name = spec.name.to_string();
    // Checked again right before libvirt reads it: nothing may have changed it since.
    super::images::inspect(
        hv,
        store,
        &plan.base_name,
        &plan.base_path,
        Some(plan.base_format),
    )
    .checked?;
    let disk = hv
        .clone_volume(&plan.base_path, &plan.disk_volume_xml)
        .map_err(|e| format!("copying the image: {}", super::reason_in_plain_words(&e)))?;
    super::record_volume(store, &name, &disk, plan.disk_format, None);
    if let Some(bytes) = plan.grow_to_bytes {
        hv.resize_volume(&disk, bytes, false).map_err(|e| {
            format!(
                "growing the disk to {} GiB: {}",
                bytes / GIB,
                super::reason_in_plain_words(&e)
            )
        })?;
    }
    let password_hash = if plan.password.is_empty() {
        None
    } else {
        Some(hash_password(&plan.password)?)
    };
    let seed = Seed {
        instance_id: spec.uuid.clone(),
        hostname: plan.checked.hostname.clone(),
        user: plan.checked.user.clone(),
        password_hash,
        ssh_keys: plan.checked.ssh_keys.clone(),
        extra_user_data: plan.checked.extra_user_data.clone(),
    };
    let iso = crate::adapters::seed_iso::build(
        &cloudinit::user_data(&seed),
        &cloudinit::meta_data(&seed),
    )
    .map_err(|e| e.to_string())?;
    let seed_xml = xml::volume_copy_xml(&plan.seed_volume, iso.len() as u64, DiskFormat::Raw);
    let seed_path = hv.create_volume(&plan.pool, &seed_xml).map_err(|e| {
        format!(
            "creating the seed volume: {}",
            super::reason_in_plain_words(&e)
        )
    })?;
    super::record_volume(store, &name, &seed_path, DiskFormat::Raw, None);
    hv.upload_volume(&seed_path, iso.len() as u64, &mut &iso[..])
        .map_err(|e| format!("writing the seed: {}", super::reason_in_plain_words(&e)))?;
    if let Some(d) = spec
        .disks
        .iter_mut()
        .find(|d| !d.cdrom && d.path.is_empty())
    {
        d.path = disk;
    }
    spec.disks.push(DiskSpec {
        path: seed_path.clone(),
        block: plan.block,
        format: DiskFormat::Raw,
        cdrom: true,
    });
    store
        .insert_cloud_init(&CloudInitRow {
            vm: name,
            user: seed.user,
            hostname: seed.hostname,
            ssh_keys: seed.ssh_keys.len() as u32,
            password: seed.password_hash.is_some(),
            base_volume: plan.base_path.clone(),
            seed_path,
        })
        .map_err(|e| format!("recording the seed: {e}"))
}
