//! Migration, the libvirt half: what a VM needs of the host it moves to, what this host
//! offers a VM that arrives, volumes made for disks QEMU copies, the move itself with
//! its progress, and the clean-up when an arrival fails.

use super::{LcResult, LifecycleError};
use crate::domain::fleet::{DiskMove, DiskNeed, HostOffer, MigrationNeeds, PoolOffer};
use crate::domain::xml::parse_domain;
use crate::hypervisor::{Hypervisor, MigrateOptions, MigrationProgress};
use crate::store::Store;
use std::path::Path;

/// What moving `name` needs, and how it moves (live, or its definition only).
pub struct Departure {
    pub needs: MigrationNeeds,
    pub running: bool,
    /// Disk target names (`vda`) by path, for the disks QEMU may have to copy.
    pub targets: Vec<(String, String)>,
}

/// Reads what `name` needs of a destination: its units (as counted here), networks,
/// bridges, machine type, disks and boot files.
pub fn departure(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &crate::config::LifecycleSettings,
    name: &str,
) -> LcResult<Departure> {
    let vm = hv
        .list_vms()?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| LifecycleError::NotFound(format!("There is no VM named {name}.")))?;
    if store.is_template(name)? {
        return Err(LifecycleError::Conflict(format!(
            "{name} is a template: templates stay on their host. Make a VM from it there."
        )));
    }
    // libvirt moves no snapshot metadata (and internal qcow2 snapshots would be lost
    // with a copied disk): say so before anything starts.
    let snapshots = hv.snapshots(name).map(|s| s.len()).unwrap_or(0);
    if snapshots > 0 {
        return Err(LifecycleError::Conflict(format!(
            "{name} has {snapshots} snapshot{}: libvirt does not move snapshots, so they would \
             be lost. Delete them (or revert to the one you need and delete the rest) first.",
            if snapshots == 1 { "" } else { "s" }
        )));
    }
    let running = vm.state.is_active();
    if !running && vm.state != crate::domain::vm::VmState::ShutOff {
        return Err(LifecycleError::Conflict(format!(
            "{name} is {}: a VM moves when it runs or is shut off.",
            vm.state.label()
        )));
    }
    let xml = hv.domain_xml(name)?;
    let parsed = parse_domain(&xml).map_err(|e| {
        LifecycleError::failed(format!("{name}'s definition could not be read: {e}"))
    })?;
    let capacity = super::capacity(hv, store, cfg)?;
    let units = capacity
        .claims
        .iter()
        .find(|c| c.vm == name)
        .map(|c| c.units)
        .unwrap_or(1)
        .max(1);
    // (pool, volume) of every volume, to tell each disk's pool and size.
    let volumes: Vec<(String, crate::domain::inventory::VolumeInfo)> = hv
        .pools()
        .map(|ps| {
            ps.into_iter()
                .flat_map(|p| {
                    let name = p.name;
                    p.volumes.into_iter().map(move |v| (name.clone(), v))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut needs = MigrationNeeds {
        vm: name.to_string(),
        units,
        networks: Vec::new(),
        bridges: Vec::new(),
        machine: parsed.machine.clone().unwrap_or_default(),
        disks: Vec::new(),
        boot_files: Vec::new(),
        domain_type: parsed.domain_type.clone(),
        cpu_xml: crate::domain::fleet::cpu_element(&xml),
    };
    let mut targets = Vec::new();
    for nic in &parsed.nics {
        match (nic.kind.as_str(), &nic.source) {
            ("network", Some(n)) if !needs.networks.contains(n) => needs.networks.push(n.clone()),
            ("bridge", Some(b)) if !needs.bridges.contains(b) => needs.bridges.push(b.clone()),
            _ => {}
        }
    }
    for disk in &parsed.disks {
        let Some(path) = disk.source.clone() else {
            continue;
        };
        if disk.device != "disk" || disk.pool.is_some() || !path.starts_with('/') {
            // Installer media and other read-only files must be at the same path there.
            if path.starts_with('/') {
                needs.boot_files.push(path);
            }
            continue;
        }
        let volume = volumes.iter().find(|(_, v)| v.path == path);
        let capacity_bytes = volume
            .map(|(_, v)| v.capacity_bytes)
            .or_else(|| std::fs::metadata(&path).ok().map(|m| m.len()))
            .unwrap_or(0);
        targets.push((path.clone(), disk.target.clone()));
        needs.disks.push(DiskNeed {
            pool: volume.map(|(p, _)| p.clone()),
            path,
            capacity_bytes,
            format: disk.format.clone().unwrap_or_else(|| "raw".into()),
        });
    }
    needs.boot_files.extend(parsed.kernel.clone());
    needs.boot_files.extend(parsed.initrd.clone());
    Ok(Departure {
        needs,
        running,
        targets,
    })
}

/// What this host offers a VM that arrives: free units, networks, bridges, machine
/// types, directory pools, and which of `files` exist here already.
pub fn offer(
    hv: &dyn Hypervisor,
    store: &Store,
    cfg: &crate::config::LifecycleSettings,
    needs: &MigrationNeeds,
    shared_dirs: &[String],
) -> LcResult<HostOffer> {
    let files: Vec<String> = needs
        .disks
        .iter()
        .map(|d| d.path.clone())
        .chain(needs.boot_files.iter().cloned())
        .collect();
    let capacity = super::capacity(hv, store, cfg)?;
    let mut vm_names: Vec<String> = hv.list_vms()?.into_iter().map(|v| v.name).collect();
    vm_names.extend(store.vm_rows()?.into_iter().map(|r| r.name));
    let active_networks = hv
        .networks()?
        .into_iter()
        .filter(|n| n.active)
        .map(|n| n.name)
        .collect();
    let statuses = hv.pool_statuses().unwrap_or_default();
    let pools = statuses
        .iter()
        .filter(|p| p.active && matches!(p.kind.as_str(), "dir" | "fs" | "netfs"))
        .filter_map(|p| {
            Some(PoolOffer {
                path: p.target_path.clone()?,
                name: p.name.clone(),
                available_bytes: p.available_bytes,
            })
        })
        .collect();
    // Shared storage: network pools' directories, and the directories the admin listed.
    let mut shared: Vec<String> = statuses
        .iter()
        .filter(|p| p.active && matches!(p.kind.as_str(), "netfs" | "gluster"))
        .filter_map(|p| p.target_path.clone())
        .collect();
    shared.extend(shared_dirs.iter().cloned());
    // Only files in the places a VM's files may be (the boot directory, pools, shared
    // directories) are looked for: a peer cannot learn whether any other path exists here.
    let mut places: Vec<String> = statuses
        .iter()
        .filter_map(|p| p.target_path.clone())
        .collect();
    places.extend(shared.iter().cloned());
    places.push(cfg.boot_dir.display().to_string());
    let existing_files: Vec<String> = files
        .iter()
        .filter(|f| inside_any(f, &places) && Path::new(f).exists())
        .cloned()
        .collect();
    let shared_disks = existing_files
        .iter()
        .filter(|f| inside_any(f, &shared))
        .cloned()
        .collect();
    Ok(HostOffer {
        free_units: capacity.usage.free,
        vm_names,
        active_networks,
        bridges: host_bridges(),
        machines: hv.machine_types().unwrap_or_default(),
        pools,
        existing_files,
        shared_disks,
        // Set by the caller, which knows the host's guest type.
        kvm: false,
        cpu_ok: match &needs.cpu_xml {
            Some(cpu) => hv.cpu_runs_here(cpu, &needs.domain_type).unwrap_or(None),
            None => None,
        },
    })
}

/// Whether `path` is an absolute, plain path (no `.` or `..` parts) inside one of `dirs`.
fn inside_any(path: &str, dirs: &[String]) -> bool {
    use std::path::Component;
    let p = Path::new(path);
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && dirs
            .iter()
            .any(|d| !d.is_empty() && p.starts_with(Path::new(d)))
}

/// The host's Linux bridges.
fn host_bridges() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .flatten()
        .filter(|e| e.path().join("bridge").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Makes the volumes QEMU copies the disks into; answers (path there, path here) for
/// each. On a failure the ones already made are deleted.
pub fn make_disk_targets(
    hv: &dyn Hypervisor,
    moves: &[DiskMove],
) -> LcResult<Vec<(String, String)>> {
    let mut made = Vec::new();
    for m in moves {
        let DiskMove::Copied {
            path,
            pool,
            capacity_bytes,
            format,
        } = m
        else {
            continue;
        };
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let format = if format == "qcow2" {
            crate::domain::vmspec::DiskFormat::Qcow2
        } else {
            crate::domain::vmspec::DiskFormat::Raw
        };
        let xml = crate::domain::xml::volume_copy_xml(&name, *capacity_bytes, format);
        match hv.create_volume(pool, &xml) {
            Ok(p) => made.push((path.clone(), p)),
            Err(e) => {
                let paths: Vec<String> = made.into_iter().map(|(_, p)| p).collect();
                remove_volumes(hv, &paths);
                return Err(LifecycleError::failed_because(
                    format!("The volume for disk {path} could not be made in pool {pool}"),
                    e,
                ));
            }
        }
    }
    Ok(made)
}

/// Deletes volumes made for an arrival that did not happen.
pub fn remove_volumes(hv: &dyn Hypervisor, paths: &[String]) {
    for p in paths {
        if let Err(e) = hv.delete_volume(p) {
            tracing::warn!(path = %p, error = %e, "could not delete a volume of a failed arrival");
        }
    }
}

/// After a failed arrival: what libvirt left here for `name` goes — a definition, or the
/// paused incoming guest of a move that broke off (the VM runs on the source). A guest
/// that runs here is never touched. Answers false when libvirt could not be asked.
pub fn remove_leftover(hv: &dyn Hypervisor, name: &str) -> bool {
    let Ok(vms) = hv.list_vms() else {
        return false;
    };
    if let Some(vm) = vms.into_iter().find(|v| v.name == name) {
        if vm.state == crate::domain::vm::VmState::Running {
            tracing::warn!(vm = name, "a failed arrival left a running VM: kept");
            return true;
        }
        if vm.state.is_active() {
            if let Err(e) = hv.act(name, crate::domain::vm::VmAction::ForceOff) {
                tracing::warn!(vm = name, error = %e, "could not stop a failed arrival's guest");
            }
        }
        if let Err(e) = hv.undefine(name) {
            tracing::debug!(vm = name, error = %e, "no definition left by a failed arrival");
        }
    }
    true
}

/// Moves the VM, reporting progress every half second and stopping the move when
/// `cancelled` says so or `deadline` passes. Blocking.
pub fn run_move(
    hv: &dyn Hypervisor,
    name: &str,
    dest_uri: &str,
    options: &MigrateOptions,
    deadline: std::time::Instant,
    cancelled: &dyn Fn() -> bool,
    progress: &dyn Fn(&MigrationProgress),
) -> LcResult<Option<MigrationProgress>> {
    let last = std::sync::Mutex::new(None::<MigrationProgress>);
    let mut stop_reason: Option<&'static str> = None;
    let result = std::thread::scope(|scope| {
        // The move's end wakes this loop at once (no polling delay added to the move);
        // meanwhile it reads the progress and watches for Cancel twice a second.
        let (ended_tx, ended) = std::sync::mpsc::channel();
        let mover = scope.spawn(move || {
            let r = hv.migrate(name, dest_uri, options);
            let _ = ended_tx.send(());
            r
        });
        let mut aborted = false;
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            ended.recv_timeout(std::time::Duration::from_millis(500))
        {
            if let Ok(Some(p)) = hv.migration_progress(name) {
                progress(&p);
                if let Ok(mut l) = last.lock() {
                    *l = Some(p);
                }
            }
            if !aborted && (cancelled() || std::time::Instant::now() > deadline) {
                stop_reason = Some(if cancelled() {
                    "cancelled"
                } else {
                    "took longer than [fleet] migration_timeout_minutes"
                });
                aborted = true;
                if let Err(e) = hv.abort_migration(name) {
                    tracing::warn!(vm = name, error = %e, "could not abort the migration");
                }
            }
        }
        mover.join().unwrap_or_else(|_| {
            Err(crate::hypervisor::HypervisorError::Call {
                operation: "migrate the VM",
                message: "the migration thread panicked".into(),
            })
        })
    });
    match (result, stop_reason) {
        (Ok(()), _) => Ok(last.lock().ok().and_then(|l| *l)),
        (Err(_), Some("cancelled")) => Err(LifecycleError::Conflict(format!(
            "The migration of {name} was cancelled; {name} runs on here."
        ))),
        (Err(e), Some(why)) => Err(LifecycleError::failed_because(
            format!("The migration of {name} {why} and was stopped; {name} runs on here"),
            e,
        )),
        (Err(e), None) => Err(LifecycleError::failed_because(
            format!(
                "The migration of {name} failed ({}); {name} stays on this host",
                libvirt_words(&e)
            ),
            e,
        )),
    }
}

/// What libvirt said, without our wrapping.
fn libvirt_words(e: &crate::hypervisor::HypervisorError) -> String {
    match e {
        crate::hypervisor::HypervisorError::Libvirt { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::inside_any;

    #[test]
    fn only_plain_paths_inside_the_given_directories_are_looked_at() {
        let dirs = vec![
            "/var/lib/libvirt/images".to_string(),
            "/srv/shared/".to_string(),
        ];
        assert!(inside_any("/var/lib/libvirt/images/a.qcow2", &dirs));
        assert!(inside_any("/srv/shared/x/vmlinuz", &dirs));
        assert!(!inside_any("/etc/passwd", &dirs));
        assert!(!inside_any(
            "/var/lib/libvirt/images/../../../etc/passwd",
            &dirs
        ));
        // `.` parts are read away by the path parser and stay inside.
        assert!(inside_any("/var/lib/libvirt/images/./a", &dirs));
        assert!(!inside_any("relative/a", &dirs));
        assert!(!inside_any("/var/lib/libvirt/imagesX/a", &dirs));
    }
}
