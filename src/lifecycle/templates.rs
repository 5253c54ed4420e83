//! Templates: marking shut-off VMs, listing them with their disks, and making new VMs
//! from them as full or linked clones (optionally with their identity reset).

use super::changes::{build_clone, plan_clone, ClonePlan, CloneWatch, PrepareClone};
use super::{CloneRequest, Cloned, FieldError, LcResult, LifecycleError};
use crate::domain::templates::{backing_path, sysprep_args, CloneMode, SYSPREP_MISSING};
use crate::domain::vm::{VmAction, VmState, VmSummary};
use crate::domain::vmspec::DiskFormat;
use crate::domain::xml;
use crate::hypervisor::Hypervisor;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;

/// One disk of a template, as the Templates page shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateDisk {
    pub path: String,
    /// The pool holding it, if it is a volume in one.
    pub pool: Option<String>,
    pub format: Option<String>,
    pub capacity_bytes: u64,
    pub allocation_bytes: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<TemplateDisk>,
    /// VMs whose disks are overlays on this template's volumes.
    pub linked_clones: Vec<String>,
    pub marked_by: String,
    pub marked_at: i64,
}

impl TemplateView {
    pub fn capacity_bytes(&self) -> u64 {
        self.disks.iter().map(|d| d.capacity_bytes).sum()
    }
    pub fn allocation_bytes(&self) -> u64 {
        self.disks.iter().map(|d| d.allocation_bytes).sum()
    }
}

fn find_vm(hv: &dyn Hypervisor, name: &str) -> LcResult<VmSummary> {
    hv.list_vms()?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| LifecycleError::NotFound(format!("There is no VM named {name}.")))
}

fn disk_paths(hv: &dyn Hypervisor, name: &str) -> LcResult<Vec<String>> {
    let def = xml::parse_domain(&hv.domain_xml(name)?).map_err(|e| {
        LifecycleError::failed(format!("The VM's definition could not be read: {e}"))
    })?;
    Ok(def
        .disks
        .into_iter()
        .filter(|d| d.device == "disk")
        .filter_map(|d| d.source)
        .collect())
}

/// VMs (other than the template) with a disk whose backing file is one of `paths`.
pub fn linked_clones(hv: &dyn Hypervisor, template: &str, paths: &[String]) -> Vec<String> {
    let wanted: HashSet<&str> = paths.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for x in hv.all_domain_xml().unwrap_or_default() {
        let Ok(d) = xml::parse_domain(&x) else {
            continue;
        };
        if d.name == template {
            continue;
        }
        let uses = d
            .disks
            .iter()
            .filter(|disk| disk.device == "disk")
            .filter_map(|disk| disk.source.as_deref())
            .filter_map(|src| hv.volume_xml(src).ok())
            .filter_map(|vx| backing_path(&vx))
            .any(|b| wanted.contains(b.as_str()));
        if uses {
            out.push(d.name);
        }
    }
    out.sort();
    out
}

fn clones_of(hv: &dyn Hypervisor, name: &str) -> LcResult<Vec<String>> {
    Ok(linked_clones(hv, name, &disk_paths(hv, name)?))
}

/// What marking did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Marked {
    pub name: String,
    /// Autostart was on and has been turned off: a template never starts.
    pub autostart_turned_off: bool,
}

/// Marks a shut-off VM as a template.
pub fn mark(
    hv: &dyn Hypervisor,
    store: &Store,
    name: &str,
    actor: &str,
    now: i64,
) -> LcResult<Marked> {
    let vm = find_vm(hv, name)?;
    if store.is_template(name)? {
        return Err(LifecycleError::Conflict(format!(
            "{name} is a template already."
        )));
    }
    if vm.state != VmState::ShutOff {
        return Err(LifecycleError::Conflict(format!(
            "{name} is {}; shut it down before marking it as a template, so its disks stay as they are.",
            vm.state.label()
        )));
    }
    if vm.autostart {
        hv.set_autostart(name, false).map_err(|e| {
            LifecycleError::failed_because(
                format!(
                    "{name} was not marked: its autostart could not be turned off: {}",
                    super::reason_in_plain_words(&e)
                ),
                e,
            )
        })?;
    }
    store.mark_template(name, actor, now)?;
    Ok(Marked {
        name: name.to_string(),
        autostart_turned_off: vm.autostart,
    })
}

/// Turns a template back into an ordinary VM, unless linked clones depend on it.
pub fn unmark(hv: &dyn Hypervisor, store: &Store, name: &str) -> LcResult<()> {
    find_vm(hv, name)?;
    if !store.is_template(name)? {
        return Err(LifecycleError::Conflict(format!(
            "{name} is not a template."
        )));
    }
    let clones = clones_of(hv, name)?;
    if !clones.is_empty() {
        return Err(LifecycleError::Conflict(format!(
            "{name} stays a template: its disks are the backing files of the linked clones {}. \
             Starting or changing it would corrupt them; delete those clones first.",
            clones.join(", ")
        )));
    }
    store.unmark_template(name)?;
    Ok(())
}

/// Refuses to start a template.
pub(super) fn refuse_start(store: &Store, name: &str, action: VmAction) -> LcResult<()> {
    if action == VmAction::Start && store.is_template(name)? {
        return Err(LifecycleError::Conflict(format!(
            "{name} is a template and is never started: create a VM from it, or unmark it first."
        )));
    }
    Ok(())
}

/// Refuses to delete a template whose volumes back linked clones.
pub fn check_delete(hv: &dyn Hypervisor, store: &Store, name: &str) -> LcResult<()> {
    if !store.is_template(name)? {
        return Ok(());
    }
    let clones = clones_of(hv, name)?;
    if clones.is_empty() {
        return Ok(());
    }
    Err(LifecycleError::Conflict(format!(
        "{name} cannot be deleted: its disks are the backing files of the linked clones {}. \
         Delete those clones first.",
        clones.join(", ")
    )))
}

/// Every template that still exists, with its disks, sizes and linked clones.
pub fn list(hv: &dyn Hypervisor, store: &Store) -> LcResult<Vec<TemplateView>> {
    let marks = store.templates()?;
    if marks.is_empty() {
        return Ok(Vec::new());
    }
    let vms = hv.list_vms()?;
    let pools = hv.pools()?;
    let mut out = Vec::new();
    for m in marks {
        let Some(vm) = vms.iter().find(|v| v.name == m.name) else {
            continue;
        };
        let def = match hv.domain_xml(&m.name).map(|x| xml::parse_domain(&x)) {
            Ok(Ok(d)) => d,
            _ => continue,
        };
        let disks: Vec<TemplateDisk> = def
            .disks
            .iter()
            .filter(|d| d.device == "disk")
            .filter_map(|d| {
                let path = d.source.clone()?;
                let found = pools
                    .iter()
                    .find_map(|p| p.volumes.iter().find(|v| v.path == path).map(|v| (p, v)));
                Some(TemplateDisk {
                    pool: found.map(|(p, _)| p.name.clone()),
                    format: d.format.clone(),
                    capacity_bytes: found.map(|(_, v)| v.capacity_bytes).unwrap_or(0),
                    allocation_bytes: found.map(|(_, v)| v.allocation_bytes).unwrap_or(0),
                    path,
                })
            })
            .collect();
        let paths: Vec<String> = disks.iter().map(|d| d.path.clone()).collect();
        out.push(TemplateView {
            linked_clones: linked_clones(hv, &m.name, &paths),
            name: m.name,
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            disks,
            marked_by: m.marked_by,
            marked_at: m.marked_at,
        });
    }
    Ok(out)
}

/// A new VM from a template, from the form or the API.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FromTemplateRequest {
    pub name: String,
    #[serde(default)]
    pub mode: CloneMode,
    #[serde(default)]
    pub start: bool,
    /// Reset hostname, machine-id and SSH host keys with virt-sysprep before the start.
    #[serde(default)]
    pub reset_identity: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FromTemplate {
    #[serde(flatten)]
    pub vm: Cloned,
    pub template: String,
    pub mode: CloneMode,
    pub identity_reset: bool,
}

/// A checked "new VM from template", its units held: the clone's plan and, when the
/// identity is to be reset, where virt-sysprep is. [`FromTemplatePlan::build`] makes it.
pub struct FromTemplatePlan {
    pub plan: ClonePlan,
    pub template: String,
    sysprep: Option<PathBuf>,
}

/// Checks a new VM from a template. `sysprep` is where virt-sysprep is, if installed.
pub fn plan_from(
    ctx: super::Ctx<'_>,
    template: &str,
    req: &FromTemplateRequest,
    by: super::By<'_>,
    sysprep: Option<PathBuf>,
) -> LcResult<FromTemplatePlan> {
    let (hv, store) = (ctx.hv, ctx.store);
    if !store.is_template(template)? {
        find_vm(hv, template)?;
        return Err(LifecycleError::Conflict(format!(
            "{template} is not a template; mark it as one first (or clone it from its page)."
        )));
    }
    let program = match (req.reset_identity, sysprep) {
        (false, _) => None,
        (true, Some(p)) => Some(p),
        (true, None) => {
            return Err(LifecycleError::Invalid(vec![FieldError {
                field: "reset_identity",
                message: SYSPREP_MISSING.into(),
            }]))
        }
    };
    let clone_req = CloneRequest {
        name: req.name.clone(),
        start: req.start,
    };
    let plan = plan_clone(ctx, template, &clone_req, by, req.mode)?;
    Ok(FromTemplatePlan {
        plan,
        template: template.to_string(),
        sysprep: program,
    })
}

impl FromTemplatePlan {
    /// Makes the VM: disks copied or overlaid, identity reset if asked, started if asked.
    pub fn build(
        self,
        hv: &dyn Hypervisor,
        store: &Store,
        watch: &dyn CloneWatch,
    ) -> LcResult<FromTemplate> {
        let FromTemplatePlan {
            plan,
            template,
            sysprep,
        } = self;
        let mode = plan.mode;
        let identity_reset = sysprep.is_some();
        // virt-sysprep boots a small appliance VM; where KVM does not work, it must be told
        // to emulate (it tries KVM otherwise, and QEMU aborts).
        let emulate = !matches!(hv.kvm_status(), crate::domain::host::KvmStatus::Usable);
        let reset = |name: &str, disks: &[(String, DiskFormat)]| -> Result<(), String> {
            match &sysprep {
                Some(p) => crate::adapters::sysprep::run(p, &sysprep_args(name, disks), emulate),
                None => Ok(()),
            }
        };
        let prepare: PrepareClone<'_> = &reset;
        let vm = build_clone(
            hv,
            store,
            plan,
            identity_reset.then_some(("resetting the identity with virt-sysprep", prepare)),
            watch,
        )?;
        Ok(FromTemplate {
            vm,
            template,
            mode,
            identity_reset,
        })
    }
}
