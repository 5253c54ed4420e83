//! Creating a VM from a cloud image: the disk is a full copy of a base volume (grown
//! to the requested size), and a NoCloud seed ISO (`cidata`) built from the form is
//! stored as a volume beside it and attached as a read-only CD-ROM. The request is
//! checked and the copy planned by `domain::create_plan::plan_cloud_image`; this module
//! makes what that plan says.

use crate::domain::cloudinit::{self, Seed};
pub use crate::domain::create_plan::CloudInitRequest;
use crate::domain::create_plan::SeedPlan;
use crate::domain::inventory::GIB;
use crate::domain::vmspec::{DiskFormat, DiskSpec, VmSpec};
use crate::domain::xml;
use crate::hypervisor::Hypervisor;
use crate::store::cloud_init::CloudInitRow;
use crate::store::Store;

/// SHA-512 crypt rounds for the guest user's password.
const PASSWORD_ROUNDS: usize = 100_000;

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
