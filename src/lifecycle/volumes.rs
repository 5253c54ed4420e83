//! Volumes in a pool: the list with the VMs using each volume, create, resize and
//! delete (refused while a VM uses the volume). Uses only the hypervisor; knows no HTTP.
//! Every function blocks.

use super::{FieldError, LcResult, LifecycleError};
use crate::domain::storage::{PoolStatus, PoolVolume};
use crate::domain::vm::VmState;
use crate::domain::volumes::{
    check_resize, in_use_message, volume_users, NewVolumeRequest, Resize, VolumeFieldError,
};
use crate::domain::xml::{parse_domain, volume_xml, ParsedDomain};
use crate::hypervisor::Hypervisor;
use serde::Serialize;

/// A volume and the VMs with a disk on it.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeView {
    #[serde(flatten)]
    pub volume: PoolVolume,
    pub used_by: Vec<String>,
}

pub(crate) fn invalid(errors: Vec<VolumeFieldError>) -> LifecycleError {
    LifecycleError::Invalid(
        errors
            .into_iter()
            .map(|e| FieldError {
                field: e.field,
                message: e.message,
            })
            .collect(),
    )
}

fn domains(hv: &dyn Hypervisor) -> LcResult<Vec<ParsedDomain>> {
    Ok(hv
        .all_domain_xml()?
        .iter()
        .filter_map(|x| parse_domain(x).ok())
        .collect())
}

/// A running pool by name: `NotFound`, or `Conflict` while it is stopped.
pub fn running_pool(hv: &dyn Hypervisor, pool: &str) -> LcResult<PoolStatus> {
    let p = super::storage::pool(hv, pool)?;
    if !p.active {
        return Err(LifecycleError::Conflict(format!(
            "Pool {pool} is stopped; start it to work with its volumes."
        )));
    }
    Ok(p)
}

/// The pool's volumes, each with the VMs using it.
pub fn volumes(hv: &dyn Hypervisor, pool: &str) -> LcResult<Vec<VolumeView>> {
    let vols = hv.pool_volumes(pool)?;
    let doms = domains(hv)?;
    Ok(vols
        .into_iter()
        .map(|v| VolumeView {
            used_by: volume_users(&doms, pool, &v.name, &v.path),
            volume: v,
        })
        .collect())
}

/// One volume of a running pool, or `NotFound`.
pub fn volume(hv: &dyn Hypervisor, pool: &str, name: &str) -> LcResult<VolumeView> {
    running_pool(hv, pool)?;
    volumes(hv, pool)?
        .into_iter()
        .find(|v| v.volume.name == name)
        .ok_or_else(|| LifecycleError::NotFound(format!("Pool {pool} has no volume named {name}.")))
}

/// Refuses a name another volume of the pool has, at the `name` field.
pub fn check_name_free(hv: &dyn Hypervisor, pool: &str, name: &str) -> LcResult<()> {
    if hv.pool_volumes(pool)?.iter().any(|v| v.name == name) {
        return Err(invalid(vec![VolumeFieldError {
            field: "name",
            message: format!("Pool {pool} already has a volume named {name}; pick another name."),
        }]));
    }
    Ok(())
}

/// Creates an empty (sparse) volume.
pub fn create_volume(
    hv: &dyn Hypervisor,
    pool: &str,
    req: &NewVolumeRequest,
) -> LcResult<PoolVolume> {
    let spec = req.validate().map_err(invalid)?;
    running_pool(hv, pool)?;
    check_name_free(hv, pool, &spec.name)?;
    hv.create_volume(pool, &volume_xml(&spec.name, spec.size_gib, spec.format))
        .map_err(|e| {
            LifecycleError::failed_because(
                format!(
                    "Volume {} could not be created: {}",
                    spec.name,
                    e.user_message()
                ),
                e,
            )
        })?;
    Ok(volume(hv, pool, &spec.name)?.volume)
}

/// A resize that was done.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VolumeResized {
    pub name: String,
    pub previous_bytes: u64,
    pub capacity_bytes: u64,
}

/// Grows a volume, or shrinks a raw one down to no less than its allocation. Refused
/// while a running VM uses it (the guest would not see the change safely).
pub fn resize_volume(
    hv: &dyn Hypervisor,
    pool: &str,
    name: &str,
    size_gib: Option<u64>,
) -> LcResult<VolumeResized> {
    let v = volume(hv, pool, name)?;
    let (bytes, kind) = check_resize(
        v.volume.capacity_bytes,
        v.volume.allocation_bytes,
        v.volume.format.as_deref(),
        size_gib,
    )
    .map_err(|m| {
        invalid(vec![VolumeFieldError {
            field: "size_gib",
            message: m,
        }])
    })?;
    let running: Vec<String> = hv
        .list_vms()?
        .into_iter()
        .filter(|vm| {
            !matches!(vm.state, VmState::ShutOff | VmState::Crashed) && v.used_by.contains(&vm.name)
        })
        .map(|vm| vm.name)
        .collect();
    if !running.is_empty() {
        return Err(LifecycleError::Conflict(format!(
            "Volume {name} is a disk of running VM {}; shut it down before resizing.",
            running.join(", ")
        )));
    }
    hv.resize_volume(&v.volume.path, bytes, kind == Resize::Shrink)
        .map_err(|e| {
            LifecycleError::failed_because(
                format!("Volume {name} could not be resized: {}", e.user_message()),
                e,
            )
        })?;
    Ok(VolumeResized {
        name: name.to_string(),
        previous_bytes: v.volume.capacity_bytes,
        capacity_bytes: bytes,
    })
}

/// Deletes a volume no VM uses.
/// Deletes a volume no VM uses, and virtdeck's record of having made it (a later volume
/// at the same path must not inherit that record's format or backing file).
pub fn delete_volume(
    hv: &dyn Hypervisor,
    store: &crate::store::Store,
    pool: &str,
    name: &str,
) -> LcResult<PoolVolume> {
    let v = volume(hv, pool, name)?;
    if !v.used_by.is_empty() {
        return Err(LifecycleError::Conflict(in_use_message(name, &v.used_by)));
    }
    hv.delete_volume(&v.volume.path).map_err(|e| {
        LifecycleError::failed_because(
            format!("Volume {name} could not be deleted: {}", e.user_message()),
            e,
        )
    })?;
    if let Err(e) = store.forget_made_volume(&v.volume.path) {
        tracing::warn!(path = %v.volume.path, error = %e, "the deleted volume's record stays");
    }
    Ok(v.volume)
}
