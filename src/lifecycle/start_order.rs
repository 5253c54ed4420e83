//! The host's start order: VMs virtdeck starts itself when the host boots, one after the
//! other with a wait after each (libvirt's own autostart starts every VM at once). A VM in
//! the order has libvirt's autostart off; the order runs once per boot of the host, which
//! a marker in the run directory (a tmpfs) tells apart from a restart of virtdeck.

use super::{field, LcResult, LifecycleError};
use crate::domain::vm::VmAction;
use crate::hypervisor::Hypervisor;
use crate::store::Store;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

pub const MAX_POSITION: u32 = 999;
pub const MAX_DELAY_SECONDS: u32 = 600;

/// A VM's place in the start order after a change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StartOrderSet {
    pub vm: String,
    /// None: out of the order (libvirt's autostart starts it with the host again).
    pub position: Option<u32>,
    pub delay_seconds: u32,
}

/// Puts the VM at `position` (1 first) with `delay_seconds` to wait after it, or takes it
/// out of the order (`None`: it goes back to libvirt's autostart, starting with the host).
pub fn set_start_order(
    hv: &dyn Hypervisor,
    store: &Store,
    name: &str,
    position: Option<u32>,
    delay_seconds: u32,
) -> LcResult<StartOrderSet> {
    let mut errors = Vec::new();
    if position.is_some_and(|p| p == 0 || p > MAX_POSITION) {
        errors.push(field(
            "position",
            format!("A place in the start order is 1 to {MAX_POSITION} (1 starts first)."),
        ));
    }
    if delay_seconds > MAX_DELAY_SECONDS {
        errors.push(field(
            "delay_seconds",
            format!("Wait at most {MAX_DELAY_SECONDS} seconds after a VM."),
        ));
    }
    if !errors.is_empty() {
        return Err(LifecycleError::Invalid(errors));
    }
    let vm = super::changes::find_vm(&hv.list_vms()?, name)?;
    if !vm.persistent {
        return Err(LifecycleError::Conflict(format!(
            "{name} is a transient VM: it is gone when it stops, so it cannot start with the host."
        )));
    }
    if store.is_template(name)? {
        return Err(LifecycleError::Conflict(format!(
            "{name} is a template, which is never started."
        )));
    }
    let was_in_order = store.start_order()?.iter().any(|o| o.vm == name);
    match position {
        Some(p) => {
            // virtdeck starts it, so libvirt must not (it would start every VM at once).
            hv.set_autostart(name, false)?;
            if let Err(e) = store.set_start_order(name, Some((p, delay_seconds))) {
                if let Err(undo) = hv.set_autostart(name, vm.autostart) {
                    tracing::error!(vm = name, error = %undo, "autostart could not be put back");
                }
                return Err(e.into());
            }
        }
        None => {
            store.set_start_order(name, None)?;
            if was_in_order {
                hv.set_autostart(name, true)?;
            }
        }
    }
    Ok(StartOrderSet {
        vm: name.to_string(),
        position,
        delay_seconds: if position.is_some() { delay_seconds } else { 0 },
    })
}

/// What the start order did at this boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootStart {
    pub started: Vec<String>,
    /// VMs not started, with why.
    pub skipped: Vec<(String, String)>,
}

/// The marker of a boot whose start order ran.
pub fn marker(run_dir: &Path) -> std::path::PathBuf {
    run_dir.join("start-order-done")
}

/// Starts the start order's VMs, first first, telling `report` of each (started, or why
/// not) at once and calling `wait` with each one's delay after it started; once per boot
/// of the host (`None` when it already ran). The marker is written before the first
/// start, so a crash halfway never starts a VM twice; a run directory that cannot be
/// written starts nothing.
pub fn start_in_order(
    hv: &dyn Hypervisor,
    store: &Store,
    run_dir: &Path,
    wait: &dyn Fn(Duration),
    report: &dyn Fn(&str, Result<(), &str>),
) -> LcResult<Option<BootStart>> {
    let order = store.start_order()?;
    let marker = marker(run_dir);
    if marker.exists() {
        return Ok(None);
    }
    let written = std::fs::create_dir_all(run_dir).and_then(|()| std::fs::write(&marker, b"1\n"));
    if let Err(e) = written {
        return Err(LifecycleError::failed(format!(
            "The start order was not run: {} cannot be written ({e}).",
            marker.display()
        )));
    }
    let mut done = BootStart::default();
    let vms = hv.list_vms()?;
    for o in order {
        let why = match vms.iter().find(|v| v.name == o.vm) {
            None => "there is no such VM".to_string(),
            Some(vm) if vm.state.is_active() => "it runs already".to_string(),
            Some(_) => match hv.act(&o.vm, VmAction::Start) {
                Ok(()) => {
                    report(&o.vm, Ok(()));
                    done.started.push(o.vm);
                    if o.delay_seconds > 0 {
                        wait(Duration::from_secs(u64::from(o.delay_seconds)));
                    }
                    continue;
                }
                Err(e) => super::reason_in_plain_words(&e),
            },
        };
        report(&o.vm, Err(&why));
        done.skipped.push((o.vm, why));
    }
    Ok(Some(done))
}
