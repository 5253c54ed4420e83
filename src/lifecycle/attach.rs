//! Disks and NICs added to or taken out of an existing VM, live while it runs and in its
//! definition. Checked in full (`domain::vm_attach`) before anything changes; a new
//! volume whose disk libvirt refuses is deleted again.

use super::changes::{find_vm, locked};
use super::devices::definition;
use super::{
    claims, images, inventory, random_mac_bytes, reason_in_plain_words, AdmissionLock, LcResult,
    LifecycleError,
};
use crate::config::LifecycleSettings;
use crate::domain::capacity::admit;
use crate::domain::create_plan::{field, valid_ifname, VolumeFacts};
use crate::domain::host_devices::{self, HostDevice};
use crate::domain::vm_attach::{self, AddDiskRequest, AddNicRequest, DeviceEdit, DiskVolume};
use crate::domain::vmspec::Mac;
use crate::domain::xml;
use crate::hypervisor::{Hypervisor, LiveChange};
use crate::store::Store;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// A disk after it was added.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DiskAdded {
    /// Its name in the guest's definition: `vdb`, `sda`…
    pub target: String,
    pub bus: String,
    /// The volume behind it.
    pub path: String,
    pub size_gib: u64,
    /// virtdeck made the volume for this disk (it is the VM's own, deleted with it on
    /// request).
    pub new_volume: bool,
    /// Plugged into the running VM (else it is there from the next start).
    pub live: bool,
    /// The VM's units after the change.
    pub units: u32,
}

/// Adds a disk: a new volume or a free existing one, plugged in live while the VM runs.
pub fn add_disk(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &LifecycleSettings,
    lock: &AdmissionLock,
    name: &str,
    req: &AddDiskRequest,
) -> LcResult<DiskAdded> {
    let _guard = locked(lock)?;
    let (mut inv, vm) = persistent_vm(hv, store, cfg, name)?;
    let (def_xml, def) = definition(hv, name)?;
    if let Some(path) = req
        .volume
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if let Some(v) = inv.volume(path).map(|(_, v)| v.clone()) {
            let found = images::inspect(hv, store, &v.name, path, None);
            inv.snapshot.inspected.insert(
                path.to_string(),
                VolumeFacts {
                    libvirt_format: found.libvirt_format,
                    checked: found.checked,
                },
            );
        }
    }
    let live = vm.state.is_active();
    let plan = vm_attach::plan_disk_add(
        req,
        &vm_attach::DiskAddInput {
            vm: name,
            def: &def,
            live,
            snap: &inv,
        },
    )
    .map_err(LifecycleError::Invalid)?;

    // Units: a managed VM whose disks hold more of the pool than its units take more.
    let all = claims(&inv.model, &inv.vms, &inv.rows);
    let previous_units = all
        .iter()
        .find(|c| c.vm == name)
        .map(|c| c.units)
        .unwrap_or(0);
    let managed = inv.rows.iter().any(|r| r.name == name);
    let disk_units = inv
        .model
        .units_for_disk(plan.vm_disk_gib_in_pool, plan.pool_capacity_gib);
    let units = if managed {
        previous_units.max(disk_units)
    } else {
        previous_units
    };
    if units > previous_units {
        let others: Vec<_> = all.into_iter().filter(|c| c.vm != name).collect();
        admit(&inv.model, &others, units, None)?;
    }

    let mut def_xml = def_xml;
    if plan.needs_scsi_controller {
        let controller = vm_attach::scsi_controller_xml();
        def_xml = change(
            hv,
            name,
            &def_xml,
            live,
            &DeviceEdit::Add(&controller),
            LiveChange::Attach,
            &controller,
        )
        .map_err(|e| e.about("The SCSI controller for the disk could not be added"))?;
    }
    let (path, new_volume) = match &plan.volume {
        DiskVolume::Existing { path } => (path.clone(), false),
        DiskVolume::New {
            pool, volume_xml, ..
        } => {
            let path = hv.create_volume(pool, volume_xml).map_err(|e| {
                ChangeFailed::Refused(e)
                    .about(&format!("The new volume in pool {pool} could not be made"))
            })?;
            (path, true)
        }
    };
    let disk = vm_attach::disk_xml(&plan, &path);
    if let Err(e) = change(
        hv,
        name,
        &def_xml,
        live,
        &DeviceEdit::Add(&disk),
        LiveChange::Attach,
        &disk,
    ) {
        if new_volume {
            if let Err(d) = hv.delete_volume(&path) {
                tracing::error!(vm = name, path = %path, error = %d, "could not delete the new volume of a disk libvirt refused");
            }
        }
        return Err(e.about(&format!("Disk {} could not be added", plan.target)));
    }
    if new_volume {
        if let Err(e) = store.record_vm_volume(name, &path, plan.format.as_str(), None) {
            tracing::error!(vm = name, path = %path, error = %e, "could not record a new disk's volume as the VM's");
        }
    }
    if managed && units != previous_units {
        store.set_vm_units(name, units)?;
    }
    Ok(DiskAdded {
        target: plan.target,
        bus: plan.bus.as_str().to_string(),
        path,
        size_gib: plan.size_gib,
        new_volume,
        live,
        units,
    })
}

/// A disk after it was taken out.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DiskDetached {
    pub target: String,
    /// The volume, which stays in its pool.
    pub path: Option<String>,
    /// The VM runs and the guest has not let go of the disk yet: it is gone from the
    /// definition and leaves at the next start at the latest.
    pub pending_in_guest: bool,
}

/// Takes the disk `target` out of the VM (live while it runs); its volume stays.
pub fn detach_disk(hv: &dyn Hypervisor, name: &str, target: &str) -> LcResult<DiskDetached> {
    let vm = super::changes::find_vm(&hv.list_vms()?, name)?;
    if !vm.persistent {
        return Err(transient(name));
    }
    let (def_xml, def) = definition(hv, name)?;
    let disk = def
        .disks
        .iter()
        .find(|d| d.target == target)
        .ok_or_else(|| {
            LifecycleError::Invalid(vec![field(
                "target",
                format!("{name} has no disk {target}."),
            )])
        })?;
    if disk.device != "disk" {
        return Err(LifecycleError::Invalid(vec![field(
            "target",
            format!(
                "{target} is a CD-ROM drive: eject its disc instead (a drive stays with the VM)."
            ),
        )]));
    }
    change(
        hv,
        name,
        &def_xml,
        vm.state.is_active(),
        &DeviceEdit::RemoveDisk(target),
        LiveChange::Detach,
        &vm_attach::disk_detach_xml(disk),
    )
    .map_err(|e| e.about(&format!("Disk {target} could not be taken out")))?;
    let pending_in_guest = vm.state.is_active()
        && still_live(hv, name, |d| d.disks.iter().any(|x| x.target == target));
    Ok(DiskDetached {
        target: target.to_string(),
        path: disk.source.clone(),
        pending_in_guest,
    })
}

/// A NIC after it was added.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NicAdded {
    pub mac: String,
    /// `bridge` or `network`.
    pub kind: String,
    pub source: String,
    pub model: String,
    pub live: bool,
}

/// Adds a NIC on a bridge or libvirt network, live while the VM runs.
pub fn add_nic(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &LifecycleSettings,
    lock: &AdmissionLock,
    name: &str,
    req: &AddNicRequest,
) -> LcResult<NicAdded> {
    // The admission lock keeps two additions from drawing the same MAC.
    let _guard = locked(lock)?;
    let (mut inv, vm) = persistent_vm(hv, store, cfg, name)?;
    if let Some(b) = req.bridge.as_deref().map(str::trim) {
        if valid_ifname(b) && Path::new("/sys/class/net").join(b).join("bridge").exists() {
            inv.snapshot.host_bridges.insert(b.to_string());
        }
    }
    let spec =
        vm_attach::plan_nic_add(req, &inv, random_mac_bytes).map_err(LifecycleError::Invalid)?;
    let mac = spec.mac.to_string();
    let (def_xml, _) = definition(hv, name)?;
    let nic = vm_attach::new_nic_xml(&spec);
    change(
        hv,
        name,
        &def_xml,
        vm.state.is_active(),
        &DeviceEdit::Add(&nic),
        LiveChange::Attach,
        &nic,
    )
    .map_err(|e| e.about("The network card could not be added"))?;
    let (kind, source) = match &spec.source {
        crate::domain::vmspec::NicSource::Bridge(b) => ("bridge", b.clone()),
        crate::domain::vmspec::NicSource::Network(n) => ("network", n.clone()),
    };
    Ok(NicAdded {
        mac,
        kind: kind.into(),
        source,
        model: spec.model.as_str().into(),
        live: vm.state.is_active(),
    })
}

/// A NIC after a change of its link, or its removal.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NicChanged {
    pub mac: String,
    /// The cable is plugged in (the guest sees a carrier).
    pub link_up: bool,
    /// Removed while the VM runs and the guest has not let go of it yet (it leaves at the
    /// next start at the latest).
    pub pending_in_guest: bool,
}

/// Plugs the NIC's cable in or pulls it (live while the VM runs, and in the definition).
pub fn set_nic_link(hv: &dyn Hypervisor, name: &str, mac: &str, up: bool) -> LcResult<NicChanged> {
    let vm = super::changes::find_vm(&hv.list_vms()?, name)?;
    if !vm.persistent {
        return Err(transient(name));
    }
    let (def_xml, def) = definition(hv, name)?;
    let nic = vm_attach::find_nic(&def, mac).map_err(LifecycleError::Invalid)?;
    let xml = vm_attach::nic_link_xml(nic, up).ok_or_else(|| {
        LifecycleError::Conflict(
            "This NIC has no source or MAC in its definition, so virtdeck cannot change it.".into(),
        )
    })?;
    change(
        hv,
        name,
        &def_xml,
        vm.state.is_active(),
        &DeviceEdit::NicLink(mac_of(nic)?, up),
        LiveChange::Update,
        &xml,
    )
    .map_err(|e| e.about("The link could not be changed"))?;
    Ok(NicChanged {
        mac: nic.mac.clone().unwrap_or_default(),
        link_up: up,
        pending_in_guest: false,
    })
}

/// Takes the NIC out of the VM (live while it runs).
pub fn remove_nic(hv: &dyn Hypervisor, name: &str, mac: &str) -> LcResult<NicChanged> {
    let vm = super::changes::find_vm(&hv.list_vms()?, name)?;
    if !vm.persistent {
        return Err(transient(name));
    }
    let (def_xml, def) = definition(hv, name)?;
    let nic = vm_attach::find_nic(&def, mac).map_err(LifecycleError::Invalid)?;
    let xml = vm_attach::nic_link_xml(nic, !nic.link_down).ok_or_else(|| {
        LifecycleError::Conflict(
            "This NIC has no source or MAC in its definition, so virtdeck cannot remove it.".into(),
        )
    })?;
    change(
        hv,
        name,
        &def_xml,
        vm.state.is_active(),
        &DeviceEdit::RemoveNic(mac_of(nic)?),
        LiveChange::Detach,
        &xml,
    )
    .map_err(|e| e.about("The network card could not be removed"))?;
    let the_mac = nic.mac.clone().unwrap_or_default();
    let pending_in_guest = vm.state.is_active()
        && still_live(hv, name, |d| {
            d.nics.iter().any(|n| {
                n.mac
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(&the_mac))
            })
        });
    Ok(NicChanged {
        mac: the_mac,
        link_up: false,
        pending_in_guest,
    })
}

/// Whether the running VM's live definition still has what `has` looks for.
fn still_live(hv: &dyn Hypervisor, name: &str, has: impl Fn(&xml::ParsedDomain) -> bool) -> bool {
    match hv.live_domain_xml(name) {
        Ok(Some(x)) => xml::parse_domain(&x).map(|d| has(&d)).unwrap_or(false),
        _ => false,
    }
}

/// The inventory and the VM `name`, which must have a stored definition.
fn persistent_vm(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &LifecycleSettings,
    name: &str,
) -> LcResult<(super::Inventory, crate::domain::vm::VmSummary)> {
    let inv = inventory(hv, store, cfg)?;
    let vm = find_vm(&inv.vms, name)?;
    if !vm.persistent {
        return Err(transient(name));
    }
    Ok((inv, vm))
}

fn transient(name: &str) -> LifecycleError {
    LifecycleError::Conflict(format!(
        "{name} is a transient VM (it has no stored definition): its devices cannot be changed."
    ))
}

fn mac_of(nic: &xml::ParsedNic) -> LcResult<Mac> {
    nic.mac
        .as_deref()
        .and_then(|m| Mac::parse(m).ok())
        .ok_or_else(|| {
            LifecycleError::Conflict("This NIC has no MAC address in its definition.".into())
        })
}

/// Why a device change did not happen.
enum ChangeFailed {
    /// libvirt refused it; nothing changed.
    Refused(crate::hypervisor::HypervisorError),
    /// The running VM changed, its definition did not (it comes back at the next start).
    DefinitionKept(crate::hypervisor::HypervisorError),
    /// virtdeck could not write the definition; nothing changed.
    Xml(String),
}

impl ChangeFailed {
    /// The sentence for the admin, starting with `what`.
    fn about(self, what: &str) -> LifecycleError {
        match self {
            ChangeFailed::Refused(e) => LifecycleError::failed_because(
                format!(
                    "{what}: {}. Nothing was changed.",
                    reason_in_plain_words(&e)
                ),
                e,
            ),
            ChangeFailed::DefinitionKept(e) => LifecycleError::failed_because(
                format!(
                    "{what} in the VM's definition ({}): the running VM has the change, but it \
                     is undone at the next start.",
                    reason_in_plain_words(&e)
                ),
                e,
            ),
            ChangeFailed::Xml(why) => {
                LifecycleError::failed(format!("{what}: {why}. Nothing was changed."))
            }
        }
    }
}

/// Makes one device change in the VM's definition (`def_xml`, rewritten by `edit`) and,
/// while it runs, live. An addition is defined first and undone when the running VM
/// refuses it; a removal or change happens live first, so a refusal leaves both as they
/// were. Returns the new definition.
fn change(
    hv: &dyn Hypervisor,
    name: &str,
    def_xml: &str,
    running: bool,
    edit: &DeviceEdit<'_>,
    live: LiveChange,
    device_xml: &str,
) -> Result<String, ChangeFailed> {
    let new_xml =
        vm_attach::edit_definition(def_xml, edit).map_err(|e| ChangeFailed::Xml(e.to_string()))?;
    if live == LiveChange::Attach {
        hv.define(&new_xml).map_err(ChangeFailed::Refused)?;
        if running {
            if let Err(e) = hv.change_device_live(name, live, device_xml) {
                if let Err(back) = hv.define(def_xml) {
                    tracing::error!(vm = name, error = %back, "could not restore a VM's definition after a refused device change");
                }
                return Err(ChangeFailed::Refused(e));
            }
        }
    } else {
        if running {
            hv.change_device_live(name, live, device_xml)
                .map_err(ChangeFailed::Refused)?;
        }
        hv.define(&new_xml).map_err(if running {
            ChangeFailed::DefinitionKept
        } else {
            ChangeFailed::Refused
        })?;
    }
    Ok(new_xml)
}

// ---- host devices ----

/// A host device as the pages and the API show it: who has it, and why it cannot be
/// passed through (if so).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostDeviceView {
    #[serde(flatten)]
    pub device: HostDevice,
    /// The VM it is passed through to.
    pub used_by: Option<String>,
    /// Why it cannot be passed through to a VM now; none when it can.
    pub refusal: Option<String>,
}

/// The host's PCI and USB devices.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostDevices {
    /// The host has an IOMMU turned on (PCI devices can be passed through).
    pub iommu: bool,
    pub devices: Vec<HostDeviceView>,
}

/// Which VM has each passed-through device, by address.
fn hostdevs_in_use(hv: &dyn Hypervisor) -> LcResult<HashMap<String, String>> {
    let mut out = HashMap::new();
    for x in hv.all_domain_xml()? {
        if let Ok(d) = xml::parse_domain(&x) {
            for h in d.hostdevs {
                out.insert(h.address, d.name.clone());
            }
        }
    }
    Ok(out)
}

/// The host's devices, each with its VM and its refusal for VM `for_vm` (empty: any VM).
pub fn host_devices(hv: &dyn Hypervisor, for_vm: &str) -> LcResult<HostDevices> {
    let all = hv.host_devices()?;
    let in_use = hostdevs_in_use(hv)?;
    let devices = all
        .iter()
        .map(|d| HostDeviceView {
            used_by: in_use.get(&d.address).cloned(),
            refusal: host_devices::attach_refusal(d, &all, &in_use, for_vm),
            device: d.clone(),
        })
        .collect();
    Ok(HostDevices {
        iommu: host_devices::iommu_on(&all),
        devices,
    })
}

/// A host device after it was passed through or given back.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostdevChanged {
    /// libvirt's node device name.
    pub device: String,
    pub address: String,
    pub live: bool,
    /// Taken out while the VM runs and the guest has not let go yet.
    pub pending_in_guest: bool,
}

/// Passes the host device `device` (its node device name) through to the VM: live while
/// it runs, and in its definition. PCI devices are taken from their host driver by
/// libvirt while the VM has them.
pub fn attach_hostdev(hv: &dyn Hypervisor, name: &str, device: &str) -> LcResult<HostdevChanged> {
    let vm = super::changes::find_vm(&hv.list_vms()?, name)?;
    if !vm.persistent {
        return Err(transient(name));
    }
    let all = hv.host_devices()?;
    let dev = all.iter().find(|d| d.name == device).ok_or_else(|| {
        LifecycleError::Invalid(vec![field(
            "device",
            "Choose one of the host's PCI or USB devices.",
        )])
    })?;
    let in_use = hostdevs_in_use(hv)?;
    if let Some(why) = host_devices::attach_refusal(dev, &all, &in_use, name) {
        return Err(LifecycleError::Invalid(vec![field("device", why)]));
    }
    let (def_xml, _) = definition(hv, name)?;
    let hostdev = host_devices::hostdev_xml(dev);
    let live = vm.state.is_active();
    change(
        hv,
        name,
        &def_xml,
        live,
        &DeviceEdit::Add(&hostdev),
        LiveChange::Attach,
        &hostdev,
    )
    .map_err(|e| e.about(&format!("{} could not be passed through", dev.address)))?;
    Ok(HostdevChanged {
        device: dev.name.clone(),
        address: dev.address.clone(),
        live,
        pending_in_guest: false,
    })
}

/// Gives the passed-through device at `address` back to the host (live while the VM runs).
pub fn detach_hostdev(hv: &dyn Hypervisor, name: &str, address: &str) -> LcResult<HostdevChanged> {
    let vm = super::changes::find_vm(&hv.list_vms()?, name)?;
    if !vm.persistent {
        return Err(transient(name));
    }
    let (def_xml, def) = definition(hv, name)?;
    let Some(h) = def.hostdevs.iter().find(|h| h.address == address) else {
        return Err(LifecycleError::Invalid(vec![field(
            "device",
            format!("{name} has no host device {address}."),
        )]));
    };
    let dev = hv
        .host_devices()?
        .into_iter()
        .find(|d| d.address == h.address);
    let device_xml = match &dev {
        Some(d) => host_devices::hostdev_xml(d),
        // Gone from the host: the definition alone is changed.
        None if vm.state.is_active() => {
            return Err(LifecycleError::Conflict(format!(
                "{address} is no longer on this host; shut {name} down to remove it from its definition."
            )))
        }
        None => String::new(),
    };
    let running = vm.state.is_active();
    change(
        hv,
        name,
        &def_xml,
        running,
        &DeviceEdit::RemoveHostdev(address),
        LiveChange::Detach,
        &device_xml,
    )
    .map_err(|e| e.about(&format!("{address} could not be given back")))?;
    let pending_in_guest = running
        && still_live(hv, name, |d| {
            d.hostdevs.iter().any(|x| x.address == address)
        });
    Ok(HostdevChanged {
        device: dev.map(|d| d.name).unwrap_or_default(),
        address: address.to_string(),
        live: running,
        pending_in_guest,
    })
}
