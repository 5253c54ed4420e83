//! Host storage pools and libvirt networks: defining a pool (rolled back when a step
//! fails), starting, stopping, refreshing and deleting pools; creating a NAT or isolated
//! network (rolled back the same way), starting, stopping, autostart, and removing one.
//! Uses only the hypervisor; knows no HTTP. Every function blocks.

use super::{field, FieldError, LcResult, LifecycleError};
use crate::domain::libvirt_network::{
    network_xml, parse_network_addressing, NetworkFieldError, NetworkRequest, TakenSubnet,
};
use crate::domain::storage::{
    pool_xml, vm_disks_in_pool, vms_on_network, NetworkStatus, PoolFieldError, PoolRequest,
    PoolSpec, PoolStatus, PoolVolume,
};
use crate::domain::vm::VmState;
use crate::domain::xml::{parse_domain, ParsedDomain};
use crate::hypervisor::{Hypervisor, HypervisorError};
use serde::Serialize;

fn invalid(errors: Vec<PoolFieldError>) -> LifecycleError {
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

fn failed(message: String) -> LifecycleError {
    LifecycleError::failed(message)
}

/// Every VM's definition that can be read (a VM whose XML cannot be parsed is skipped:
/// it cannot be on a virtdeck-visible network or pool either).
fn parsed_domains(hv: &dyn Hypervisor) -> LcResult<Vec<ParsedDomain>> {
    Ok(hv
        .all_domain_xml()?
        .iter()
        .filter_map(|x| parse_domain(x).ok())
        .collect())
}

/// A pool by name, or `NotFound`.
pub fn pool(hv: &dyn Hypervisor, name: &str) -> LcResult<PoolStatus> {
    hv.pool_statuses()?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| LifecycleError::NotFound(format!("There is no storage pool named {name}.")))
}

// ---- define ----

/// What a successful define made.
#[derive(Debug, Clone, Serialize)]
pub struct PoolDefined {
    pub name: String,
    pub kind: &'static str,
    pub target_path: String,
    pub built: bool,
    pub autostart: bool,
    /// Devices a new volume group was built on (their previous contents are gone).
    pub wiped_devices: Vec<String>,
}

/// Steps done so far, to undo in reverse.
#[derive(Default)]
struct Done {
    built: bool,
    started: bool,
}

/// Defines, builds (directory, mount point or volume group), starts and (optionally)
/// marks a pool autostart. A failure at any step after the define undoes the earlier
/// steps, so no half-made pool is left.
/// A target inside `data_dir` (virtdeck's database and keys) is refused like a system
/// directory.
pub fn define_pool(
    hv: &dyn Hypervisor,
    req: &PoolRequest,
    data_dir: &std::path::Path,
) -> LcResult<PoolDefined> {
    let spec = req.validate_for(&[data_dir]).map_err(invalid)?;
    check_conflicts(hv, &spec)?;
    let name = spec.name.clone();
    hv.define_pool(&pool_xml(&spec)).map_err(|e| {
        failed(format!(
            "Pool {name} could not be defined: {} Nothing was changed.",
            e.user_message()
        ))
    })?;
    let mut done = Done::default();
    let steps = (|| -> Result<(), HypervisorError> {
        if spec.needs_build() {
            hv.build_pool(&name)?;
            done.built = true;
        }
        hv.start_pool(&name)?;
        done.started = true;
        if spec.autostart {
            hv.set_pool_autostart(&name, true)?;
        }
        Ok(())
    })();
    if let Err(e) = steps {
        let undone = roll_back(hv, &name, &done);
        return Err(failed(format!(
            "Pool {name} could not be set up: {} {undone}",
            e.user_message()
        )));
    }
    Ok(PoolDefined {
        kind: spec.kind().as_str(),
        target_path: spec.target_path.clone(),
        built: done.built,
        autostart: spec.autostart,
        wiped_devices: spec.wiped_devices().to_vec(),
        name,
    })
}

/// Refuses names and storage another pool already has, at the field.
fn check_conflicts(hv: &dyn Hypervisor, spec: &PoolSpec) -> LcResult<()> {
    let pools = hv.pool_statuses()?;
    let mut errors = Vec::new();
    if pools.iter().any(|p| p.name == spec.name) {
        errors.push(field(
            "name",
            format!(
                "A storage pool named {} already exists; pick another name.",
                spec.name
            ),
        ));
    }
    if let Some(other) = pools
        .iter()
        .find(|p| p.target_path.as_deref() == Some(spec.target_path.as_str()))
    {
        let at = if spec.kind() == crate::domain::storage::PoolKind::Logical {
            "vg_name"
        } else {
            "target_path"
        };
        errors.push(field(
            at,
            format!(
                "Pool {} already uses {}; two pools on the same storage would each count it.",
                other.name, spec.target_path
            ),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LifecycleError::Invalid(errors))
    }
}

/// Undoes a define: stop, remove what building made, undefine. Says what was undone and
/// what could not be.
fn roll_back(hv: &dyn Hypervisor, name: &str, done: &Done) -> String {
    let mut undone = Vec::new();
    let mut left = Vec::new();
    if done.started {
        match hv.stop_pool(name) {
            Ok(()) => undone.push("stopped it"),
            Err(e) => left.push(format!("stopping it failed ({})", e.user_message())),
        }
    }
    if done.built {
        match hv.delete_pool_storage(name) {
            Ok(()) => undone.push("removed the storage it built"),
            Err(e) => left.push(format!(
                "the storage it built was kept ({})",
                e.user_message()
            )),
        }
    }
    match hv.undefine_pool(name) {
        Ok(()) => undone.push("removed its definition"),
        Err(e) => left.push(format!(
            "its definition could not be removed ({}); remove it with `virsh pool-undefine {name}`",
            e.user_message()
        )),
    }
    let mut out = format!("Undone: {}.", undone.join(", "));
    if !left.is_empty() {
        out.push_str(&format!(" Not undone: {}.", left.join("; ")));
    }
    out
}

// ---- actions ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolAction {
    Start,
    Stop,
    Refresh,
    Autostart(bool),
}

impl PoolAction {
    pub fn parse(s: &str) -> Option<PoolAction> {
        match s {
            "start" => Some(PoolAction::Start),
            "stop" => Some(PoolAction::Stop),
            "refresh" => Some(PoolAction::Refresh),
            "autostart" => Some(PoolAction::Autostart(true)),
            "no-autostart" => Some(PoolAction::Autostart(false)),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PoolAction::Start => "start",
            PoolAction::Stop => "stop",
            PoolAction::Refresh => "refresh",
            PoolAction::Autostart(true) => "autostart",
            PoolAction::Autostart(false) => "no-autostart",
        }
    }

    /// What the admin sees after it worked.
    pub fn done(self, pool: &str) -> String {
        match self {
            PoolAction::Start => format!("Pool {pool} started."),
            PoolAction::Stop => format!("Pool {pool} stopped."),
            PoolAction::Refresh => format!("Pool {pool} refreshed."),
            PoolAction::Autostart(true) => format!("Pool {pool} now starts with the host."),
            PoolAction::Autostart(false) => {
                format!("Pool {pool} no longer starts with the host.")
            }
        }
    }
}

pub fn pool_action(hv: &dyn Hypervisor, name: &str, action: PoolAction) -> LcResult<()> {
    let p = pool(hv, name)?;
    let conflict = |m: &str| Err(LifecycleError::Conflict(format!("Pool {name} {m}")));
    let r = match action {
        PoolAction::Start if p.active => return conflict("is already running."),
        PoolAction::Stop if !p.active => return conflict("is already stopped."),
        PoolAction::Refresh if !p.active => {
            return conflict("is stopped; start it before refreshing.")
        }
        PoolAction::Start => hv.start_pool(name),
        PoolAction::Stop => hv.stop_pool(name),
        PoolAction::Refresh => hv.refresh_pool(name),
        PoolAction::Autostart(on) => hv.set_pool_autostart(name, on),
    };
    r.map_err(|e| LifecycleError::failed_because(e.user_message(), e))
}

// ---- delete ----

/// What deleting a pool would touch, for the confirm page.
#[derive(Debug, Clone, Serialize)]
pub struct PoolDeletePlan {
    pub pool: PoolStatus,
    pub volumes: Vec<PoolVolume>,
    /// `(vm, disk)` for VM disks stored in this pool.
    pub used_by: Vec<(String, String)>,
}

pub fn pool_delete_plan(hv: &dyn Hypervisor, name: &str) -> LcResult<PoolDeletePlan> {
    let pool = pool(hv, name)?;
    let volumes = hv.pool_volumes(name)?;
    let paths: Vec<String> = volumes.iter().map(|v| v.path.clone()).collect();
    let used_by = vm_disks_in_pool(
        &parsed_domains(hv)?,
        name,
        pool.target_path.as_deref(),
        &paths,
    );
    Ok(PoolDeletePlan {
        pool,
        volumes,
        used_by,
    })
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PoolDeleted {
    pub name: String,
    pub volumes_deleted: Vec<String>,
    /// The directory or volume group was removed too.
    pub storage_deleted: bool,
}

/// Stops and undefines a pool. With `delete_contents`, first deletes every volume and
/// afterwards the pool's own storage (directory, volume group); refused while a VM has
/// a disk there.
pub fn delete_pool(
    hv: &dyn Hypervisor,
    name: &str,
    delete_contents: bool,
) -> LcResult<PoolDeleted> {
    let plan = pool_delete_plan(hv, name)?;
    let mut volumes_deleted = Vec::new();
    if delete_contents {
        if !plan.used_by.is_empty() {
            let vms: Vec<&str> = plan.used_by.iter().map(|(vm, _)| vm.as_str()).collect();
            return Err(LifecycleError::Conflict(format!(
                "VMs have disks in pool {name} ({}); delete those VMs or their disks first, \
                 or remove the pool and keep its contents.",
                vms.join(", ")
            )));
        }
        if !plan.pool.active {
            return Err(LifecycleError::Conflict(format!(
                "Pool {name} is stopped, so its volumes cannot be listed; start it first, \
                 or remove the pool and keep its contents."
            )));
        }
        for v in &plan.volumes {
            if let Err(e) = hv.delete_volume(&v.path) {
                return Err(failed(format!(
                    "Deleting volume {} failed: {} {}The pool is still defined.",
                    v.name,
                    e.user_message(),
                    deleted_so_far(&volumes_deleted)
                )));
            }
            volumes_deleted.push(v.name.clone());
        }
    }
    if plan.pool.active {
        hv.stop_pool(name).map_err(|e| {
            failed(format!(
                "Stopping pool {name} failed: {} {}",
                e.user_message(),
                deleted_so_far(&volumes_deleted)
            ))
        })?;
    }
    if delete_contents {
        hv.delete_pool_storage(name).map_err(|e| {
            failed(format!(
                "Removing the storage of pool {name} failed: {} {}The pool is stopped and still defined.",
                e.user_message(),
                deleted_so_far(&volumes_deleted)
            ))
        })?;
    }
    hv.undefine_pool(name).map_err(|e| {
        failed(format!(
            "Removing the definition of pool {name} failed: {}",
            e.user_message()
        ))
    })?;
    Ok(PoolDeleted {
        name: name.to_string(),
        volumes_deleted,
        storage_deleted: delete_contents,
    })
}

fn deleted_so_far(volumes: &[String]) -> String {
    if volumes.is_empty() {
        String::new()
    } else {
        format!("Already deleted: {}. ", volumes.join(", "))
    }
}

// ---- networks ----

/// A libvirt network and the VMs with a NIC on it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NetworkView {
    #[serde(flatten)]
    pub network: NetworkStatus,
    pub vms: Vec<String>,
    /// Its IPv4 addresses with prefix (`192.168.122.1/24`), empty for none.
    pub ipv4: String,
    /// Its DHCP ranges (`192.168.122.2–192.168.122.254`), empty for none.
    pub dhcp: String,
    /// Offered for removal: NAT and isolated networks (libvirt's own, not a host bridge's).
    pub removable: bool,
}

/// NAT and isolated networks may be removed; bridge (and other forwarding) networks front
/// the host's own devices.
fn removable(n: &NetworkStatus) -> bool {
    n.removable() || n.forward_mode == "isolated"
}

/// A network's definition, or `None` when it vanished meanwhile.
fn network_definition(hv: &dyn Hypervisor, name: &str) -> LcResult<Option<String>> {
    match hv.network_xml(name) {
        Ok(x) => Ok(Some(x)),
        Err(HypervisorError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn network_view(
    hv: &dyn Hypervisor,
    domains: &[ParsedDomain],
    n: NetworkStatus,
) -> LcResult<NetworkView> {
    let addressing =
        parse_network_addressing(&network_definition(hv, &n.name)?.unwrap_or_default());
    Ok(NetworkView {
        vms: vms_on_network(domains, &n.name),
        ipv4: addressing.summary(),
        dhcp: addressing.dhcp_summary(),
        removable: removable(&n),
        network: n,
    })
}

pub fn networks(hv: &dyn Hypervisor) -> LcResult<Vec<NetworkView>> {
    let domains = parsed_domains(hv)?;
    hv.network_statuses()?
        .into_iter()
        .map(|n| network_view(hv, &domains, n))
        .collect()
}

/// A network's status by name, or `NotFound`.
fn network_status(hv: &dyn Hypervisor, name: &str) -> LcResult<NetworkStatus> {
    hv.network_statuses()?
        .into_iter()
        .find(|n| n.name == name)
        .ok_or_else(|| {
            LifecycleError::NotFound(format!("There is no libvirt network named {name}."))
        })
}

/// One network as the list shows it, or `NotFound`.
pub fn network(hv: &dyn Hypervisor, name: &str) -> LcResult<NetworkView> {
    let n = network_status(hv, name)?;
    network_view(hv, &parsed_domains(hv)?, n)
}

#[derive(Debug, Clone, Serialize)]
pub struct VmUse {
    pub name: String,
    pub state: VmState,
}

/// What removing or stopping a network would cut off, for the confirm page.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkRemovePlan {
    pub network: NetworkStatus,
    pub vms: Vec<VmUse>,
}

pub fn network_remove_plan(hv: &dyn Hypervisor, name: &str) -> LcResult<NetworkRemovePlan> {
    let network = network_status(hv, name)?;
    if !removable(&network) {
        return Err(LifecycleError::Conflict(format!(
            "Network {name} forwards in {} mode; virtdeck only removes NAT and isolated networks such as libvirt's default.",
            network.forward_mode
        )));
    }
    network_users(hv, network)
}

/// What stopping a network would cut off, for the confirm page: refused when it is not
/// running.
pub fn network_stop_plan(hv: &dyn Hypervisor, name: &str) -> LcResult<NetworkRemovePlan> {
    let network = network_status(hv, name)?;
    if !network.active {
        return Err(LifecycleError::Conflict(format!(
            "Network {name} is already stopped."
        )));
    }
    network_users(hv, network)
}

/// The VMs with a NIC on `network`, with their states.
fn network_users(hv: &dyn Hypervisor, network: NetworkStatus) -> LcResult<NetworkRemovePlan> {
    let name = network.name.clone();
    let users = vms_on_network(&parsed_domains(hv)?, &name);
    let states = hv.list_vms()?;
    let vms = users
        .into_iter()
        .map(|vm| VmUse {
            state: states
                .iter()
                .find(|s| s.name == vm)
                .map(|s| s.state)
                .unwrap_or(VmState::Unknown),
            name: vm,
        })
        .collect();
    Ok(NetworkRemovePlan { network, vms })
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NetworkRemoved {
    pub name: String,
    /// VMs that had a NIC on it: they have no network there until their NIC is changed.
    pub vms_affected: Vec<String>,
}

/// Stops and undefines a NAT network.
pub fn remove_network(hv: &dyn Hypervisor, name: &str) -> LcResult<NetworkRemoved> {
    let plan = network_remove_plan(hv, name)?;
    hv.remove_network(name).map_err(|e| {
        failed(format!(
            "Network {name} could not be removed: {}",
            e.user_message()
        ))
    })?;
    Ok(NetworkRemoved {
        name: name.to_string(),
        vms_affected: plan.vms.into_iter().map(|v| v.name).collect(),
    })
}

// ---- creating and running networks ----

/// What a successful create made.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkCreated {
    pub name: String,
    /// `nat` or `isolated`.
    pub mode: &'static str,
    /// The gateway with its prefix, e.g. `192.168.100.1/24`.
    pub address: String,
    pub subnet: String,
    /// `start–end`, or none.
    pub dhcp: Option<String>,
    pub autostart: bool,
}

fn invalid_network(errors: Vec<NetworkFieldError>) -> LifecycleError {
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

/// Checks the request against the rules and the existing networks (name, overlapping
/// subnets), then defines, starts and (optionally) marks the network autostart. A
/// failure after the define undoes the earlier steps (stop, undefine), so no half-made
/// network is left.
pub fn create_network(hv: &dyn Hypervisor, req: &NetworkRequest) -> LcResult<NetworkCreated> {
    let existing = hv.network_statuses()?;
    let mut taken = Vec::new();
    for n in &existing {
        let Some(xml) = network_definition(hv, &n.name)? else {
            continue;
        };
        taken.extend(
            parse_network_addressing(&xml)
                .subnets()
                .map(|subnet| TakenSubnet {
                    network: n.name.clone(),
                    subnet,
                }),
        );
    }
    let name = req.name.trim();
    let name_taken = existing.iter().any(|n| n.name == name);
    let spec = match req.validate(&taken) {
        Ok(spec) if !name_taken => spec,
        r => {
            let mut errors = r.err().unwrap_or_default();
            if name_taken {
                errors.insert(
                    0,
                    NetworkFieldError {
                        field: "name",
                        message: format!(
                            "A libvirt network named {name} already exists; pick another name."
                        ),
                    },
                );
            }
            return Err(invalid_network(errors));
        }
    };
    let name = spec.name.clone();
    hv.define_network(&network_xml(&spec)).map_err(|e| {
        failed(format!(
            "Network {name} could not be defined: {} Nothing was changed.",
            e.user_message()
        ))
    })?;
    let mut started = false;
    let steps = (|| -> Result<(), HypervisorError> {
        hv.start_network(&name)?;
        started = true;
        if spec.autostart {
            hv.set_network_autostart(&name, true)?;
        }
        Ok(())
    })();
    if let Err(e) = steps {
        let undone = undo_network(hv, &name, started);
        return Err(failed(format!(
            "Network {name} could not be started: {} {undone}",
            e.user_message()
        )));
    }
    Ok(NetworkCreated {
        mode: spec.mode.as_str(),
        address: format!("{}/{}", spec.gateway, spec.prefix),
        subnet: spec.subnet().to_string(),
        dhcp: spec.dhcp.map(|r| format!("{}–{}", r.start, r.end)),
        autostart: spec.autostart,
        name,
    })
}

/// Undoes a create: stop (when started), undefine. Says what was undone and what not.
fn undo_network(hv: &dyn Hypervisor, name: &str, started: bool) -> String {
    let mut undone = Vec::new();
    let mut left = Vec::new();
    if started {
        match hv.stop_network(name) {
            Ok(()) => undone.push("stopped it".to_string()),
            Err(e) => left.push(format!("stopping it failed ({})", e.user_message())),
        }
    }
    match hv.undefine_network(name) {
        Ok(()) => undone.push("removed its definition".to_string()),
        Err(e) => left.push(format!(
            "its definition could not be removed ({}); remove it with `virsh net-undefine {name}`",
            e.user_message()
        )),
    }
    let mut out = String::new();
    if !undone.is_empty() {
        out.push_str(&format!("Undone: {}.", undone.join(", ")));
    }
    if !left.is_empty() {
        out.push_str(&format!(" Not undone: {}.", left.join("; ")));
    }
    out.trim().to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkAction {
    Start,
    Stop,
    Autostart(bool),
}

impl NetworkAction {
    pub fn parse(s: &str) -> Option<NetworkAction> {
        match s {
            "start" => Some(NetworkAction::Start),
            "stop" => Some(NetworkAction::Stop),
            "autostart" => Some(NetworkAction::Autostart(true)),
            "no-autostart" => Some(NetworkAction::Autostart(false)),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkAction::Start => "start",
            NetworkAction::Stop => "stop",
            NetworkAction::Autostart(true) => "autostart",
            NetworkAction::Autostart(false) => "no-autostart",
        }
    }

    /// What the admin sees after it worked.
    pub fn done(self, network: &str) -> String {
        match self {
            NetworkAction::Start => format!("Network {network} started."),
            NetworkAction::Stop => format!("Network {network} stopped."),
            NetworkAction::Autostart(true) => {
                format!("Network {network} now starts with the host.")
            }
            NetworkAction::Autostart(false) => {
                format!("Network {network} no longer starts with the host.")
            }
        }
    }
}

/// What a network action did.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkChanged {
    pub name: String,
    pub action: &'static str,
    /// For a stop: the VMs with a NIC on it (running ones lost that connection).
    pub vms_affected: Vec<String>,
}

pub fn start_network(hv: &dyn Hypervisor, name: &str) -> LcResult<NetworkChanged> {
    network_action(hv, name, NetworkAction::Start)
}

pub fn stop_network(hv: &dyn Hypervisor, name: &str) -> LcResult<NetworkChanged> {
    network_action(hv, name, NetworkAction::Stop)
}

pub fn set_network_autostart(
    hv: &dyn Hypervisor,
    name: &str,
    on: bool,
) -> LcResult<NetworkChanged> {
    network_action(hv, name, NetworkAction::Autostart(on))
}

/// Starts or stops a network or turns its autostart on or off; refused (`Conflict`) when
/// a start or stop would change nothing, or for autostart of a transient network.
pub fn network_action(
    hv: &dyn Hypervisor,
    name: &str,
    action: NetworkAction,
) -> LcResult<NetworkChanged> {
    let n = network_status(hv, name)?;
    let conflict = |m: &str| Err(LifecycleError::Conflict(format!("Network {name} {m}")));
    let mut vms_affected = Vec::new();
    let r = match action {
        NetworkAction::Start if n.active => return conflict("is already running."),
        NetworkAction::Stop if !n.active => return conflict("is already stopped."),
        NetworkAction::Autostart(_) if !n.persistent => {
            return conflict("is transient (not defined), so it cannot start with the host.")
        }
        NetworkAction::Start => hv.start_network(name),
        NetworkAction::Stop => {
            vms_affected = vms_on_network(&parsed_domains(hv)?, name);
            hv.stop_network(name)
        }
        NetworkAction::Autostart(on) => hv.set_network_autostart(name, on),
    };
    r.map_err(|e| LifecycleError::failed_because(e.user_message(), e))?;
    Ok(NetworkChanged {
        name: name.to_string(),
        action: action.as_str(),
        vms_affected,
    })
}
