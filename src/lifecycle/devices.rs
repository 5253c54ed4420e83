//! Boot order, boot menu, watchdog, RNG and memory balloon of an existing VM: written into
//! its persistent definition (`domain::vm_devices`), applying from its next start.

use super::{LcResult, LifecycleError};
use crate::domain::guest_caps;
use crate::domain::host::VirtType;
use crate::domain::vm_devices::{self, BootDev, DeviceOptions};
use crate::domain::vmspec::{CpuSpec, Firmware};
use crate::domain::xml;
use crate::hypervisor::Hypervisor;
use serde::Serialize;

/// What to change; `None` leaves it as it is.
#[derive(Debug, Clone, Default)]
pub struct DeviceChange {
    pub boot: Option<Vec<BootDev>>,
    pub boot_menu: Option<bool>,
    pub watchdog: Option<bool>,
    pub rng: Option<bool>,
    pub balloon: Option<bool>,
    pub serial_log: Option<bool>,
    /// `default`, `host-passthrough`, `host-model` or a named model of this host.
    pub cpu: Option<String>,
}

impl DeviceChange {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none()
            && self.boot.is_none()
            && self.boot_menu.is_none()
            && self.watchdog.is_none()
            && self.rng.is_none()
            && self.balloon.is_none()
            && self.serial_log.is_none()
    }
}

/// The options after the change, and whether the VM must be restarted for them.
#[derive(Debug, Clone, Serialize)]
pub struct DevicesSet {
    pub options: DeviceOptions,
    pub changed: bool,
    /// The VM runs: the change applies from its next start.
    pub at_next_start: bool,
}

/// The VM's stored definition, as text and read; a VM that is gone is "not found".
pub(super) fn definition(hv: &dyn Hypervisor, name: &str) -> LcResult<(String, xml::ParsedDomain)> {
    let text = hv.domain_xml(name).map_err(|e| match e {
        crate::hypervisor::HypervisorError::NotFound { .. } => {
            LifecycleError::NotFound(format!("There is no VM named {name}."))
        }
        other => other.into(),
    })?;
    let parsed = xml::parse_domain(&text).map_err(|e| {
        LifecycleError::failed(format!("The VM's definition could not be read: {e}"))
    })?;
    Ok((text, parsed))
}

pub fn set_devices(hv: &dyn Hypervisor, name: &str, change: DeviceChange) -> LcResult<DevicesSet> {
    let vm = hv
        .list_vms()?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| LifecycleError::NotFound(format!("There is no VM named {name}.")))?;
    if !vm.persistent {
        return Err(LifecycleError::Conflict(format!(
            "{name} is a transient VM (it has no stored definition): its devices cannot be \
             changed for a next start."
        )));
    }
    let (def_xml, parsed) = definition(hv, name)?;
    let current = vm_devices::read(&def_xml, &parsed.boot_devs)
        .map_err(|e| LifecycleError::failed(e.to_string()))?;
    let mut wanted = current.clone();
    if let Some(boot) = change.boot {
        vm_devices::check_boot(&boot).map_err(LifecycleError::Invalid)?;
        wanted.boot = boot;
    }
    wanted.boot_menu = change.boot_menu.unwrap_or(wanted.boot_menu);
    wanted.watchdog = change.watchdog.unwrap_or(wanted.watchdog);
    wanted.rng = change.rng.unwrap_or(wanted.rng);
    wanted.balloon = change.balloon.unwrap_or(wanted.balloon);
    wanted.serial_log = change.serial_log.unwrap_or(wanted.serial_log);
    if wanted.serial_log && !parsed.has_serial {
        return Err(LifecycleError::Invalid(vec![
            crate::domain::create_plan::field(
                "serial_log",
                "This VM has no serial port, so there is no serial output to keep.",
            ),
        ]));
    }
    // Where the log goes: the file it had, else libvirt's log directory.
    let log_file = parsed.serial_log.clone().unwrap_or_else(|| {
        format!(
            "{}/{name}-serial.log",
            crate::domain::create_plan::SERIAL_LOG_DIR
        )
    });
    // The CPU, checked against what this host offers a guest of the VM's type.
    let cpu = match change.cpu.as_deref() {
        Some(value) => cpu_change(hv, &parsed, value)?,
        None => None,
    };
    let at_next_start = vm.state.is_active();
    if wanted == current && cpu.is_none() {
        return Ok(DevicesSet {
            options: current,
            changed: false,
            at_next_start: false,
        });
    }
    let mut new_xml = if wanted == current {
        def_xml
    } else {
        vm_devices::apply(&def_xml, &wanted, &log_file)
            .map_err(|e| LifecycleError::failed(e.to_string()))?
    };
    if let Some((cpu, virt_type)) = &cpu {
        new_xml = xml::with_cpu(&new_xml, cpu, *virt_type)
            .map_err(|e| LifecycleError::failed(e.to_string()))?;
    }
    hv.define(&new_xml)?;
    Ok(DevicesSet {
        options: wanted,
        changed: true,
        at_next_start,
    })
}

/// The CPU `value` for the VM defined as `parsed`, checked against what this host offers
/// a guest of its type: the change to make, or none when it has that CPU already.
fn cpu_change(
    hv: &dyn Hypervisor,
    parsed: &xml::ParsedDomain,
    value: &str,
) -> LcResult<Option<(CpuSpec, VirtType)>> {
    let cpu = CpuSpec::from_value(value);
    let virt_type = VirtType::of_domain(&parsed.domain_type);
    let caps = hv.guest_capabilities(virt_type)?;
    let errors: Vec<_> = guest_caps::check_choice(&caps, Firmware::Bios, false, &cpu)
        .into_iter()
        .map(|(at, m)| crate::domain::create_plan::field(at, m))
        .collect();
    if !errors.is_empty() {
        return Err(LifecycleError::Invalid(errors));
    }
    let wanted_cpu = match cpu.for_guest(virt_type) {
        CpuSpec::Default => None,
        c => Some(c.as_value().to_string()),
    };
    Ok((parsed.cpu != wanted_cpu).then_some((cpu, virt_type)))
}

/// Checks the CPU `value` for VM `name` without changing anything (422 at `cpu` when
/// this host cannot give it), so a form that changes more can check it first.
pub fn check_cpu(hv: &dyn Hypervisor, name: &str, value: &str) -> LcResult<()> {
    let (_, parsed) = definition(hv, name)?;
    cpu_change(hv, &parsed, value).map(|_| ())
}

/// A CD-ROM drive after a media change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CdromChanged {
    /// The drive (`sda`, `hdc`, …).
    pub target: String,
    /// The ISO now in it; none when ejected.
    pub iso: Option<String>,
}

/// Puts `iso` (an ISO image volume of a pool, not a VM's cloud-init seed) into the VM's
/// CD-ROM drive `target` (or its first), or ejects it (`None`): live while the VM runs,
/// and in its definition.
pub fn change_cdrom(
    hv: &dyn Hypervisor,
    store: &crate::store::Store,
    name: &str,
    target: Option<&str>,
    iso: Option<&str>,
) -> LcResult<CdromChanged> {
    use crate::domain::create_plan::field;
    let (_, parsed) = definition(hv, name)?;
    let drives: Vec<&xml::ParsedDisk> = parsed
        .disks
        .iter()
        .filter(|d| d.device == "cdrom")
        .collect();
    let drive = match target {
        Some(t) => drives.iter().find(|d| d.target == t),
        None => drives.first(),
    }
    .ok_or_else(|| {
        if drives.is_empty() {
            LifecycleError::Conflict(format!(
                "{name} has no CD-ROM drive. A drive can only be added while the VM is off \
                 (QEMU cannot plug one into a running VM)."
            ))
        } else {
            LifecycleError::Invalid(vec![field(
                "target",
                "The VM has no CD-ROM drive by that name.",
            )])
        }
    })?;
    let (target_dev, bus) = (drive.target.clone(), drive.bus.clone());
    let iso = match iso.map(str::trim).filter(|p| !p.is_empty()) {
        None => None,
        Some(path) => {
            let volume = hv
                .pools()?
                .into_iter()
                .flat_map(|p| p.volumes)
                .find(|v| v.path == path);
            match volume {
                Some(v) if v.is_iso() => {}
                Some(_) => {
                    return Err(LifecycleError::Invalid(vec![field(
                        "iso",
                        "Only ISO images (.iso volumes) go into a CD-ROM drive.",
                    )]))
                }
                None => {
                    return Err(LifecycleError::Invalid(vec![field(
                        "iso",
                        "Choose an ISO volume from a storage pool.",
                    )]))
                }
            }
            if store.seed_paths()?.contains(path) && drive.source.as_deref() != Some(path) {
                return Err(LifecycleError::Invalid(vec![field(
                    "iso",
                    "That is another VM's cloud-init seed, which belongs to that VM alone.",
                )]));
            }
            Some(path.to_string())
        }
    };
    let device = crate::domain::vm_devices::cdrom_xml(&target_dev, &bus, iso.as_deref());
    hv.update_device(name, &device)?;
    Ok(CdromChanged {
        target: target_dev,
        iso,
    })
}
