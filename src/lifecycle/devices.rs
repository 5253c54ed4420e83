//! Boot order, boot menu, watchdog, RNG and memory balloon of an existing VM: written into
//! its persistent definition (`domain::vm_devices`), applying from its next start.

use super::{LcResult, LifecycleError};
use crate::domain::vm_devices::{self, BootDev, DeviceOptions};
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
}

impl DeviceChange {
    pub fn is_empty(&self) -> bool {
        self.boot.is_none()
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
    let def_xml = hv.domain_xml(name)?;
    let parsed = xml::parse_domain(&def_xml).map_err(|e| {
        LifecycleError::failed(format!("The VM's definition could not be read: {e}"))
    })?;
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
    let at_next_start = vm.state.is_active();
    if wanted == current {
        return Ok(DevicesSet {
            options: current,
            changed: false,
            at_next_start: false,
        });
    }
    let new_xml = vm_devices::apply(&def_xml, &wanted, &log_file)
        .map_err(|e| LifecycleError::failed(e.to_string()))?;
    hv.define(&new_xml)?;
    Ok(DevicesSet {
        options: wanted,
        changed: true,
        at_next_start,
    })
}
