//! The libvirt implementation of [`Hypervisor`], through the `virt` crate.

use crate::domain::guest_caps::{self, GuestCapabilities};
use crate::domain::host::{HostFacts, KvmStatus, Version, VirtType};
use crate::domain::inventory::{NetworkInfo, PoolInfo, VolumeInfo};
use crate::domain::snapshot::{parse_snapshot, SnapshotInfo};
use crate::domain::storage::{NetworkStatus, PoolStatus, PoolVolume};
use crate::domain::vm::{GuestAddress, VmAction, VmEvent, VmState, VmSummary};
use crate::hypervisor::{
    BackupStatus, ConsoleError, EventSink, HvResult, Hypervisor, HypervisorError, LiveChange,
    MigrateOptions, MigrationProgress, Screenshot, SerialConsole, SerialInput, VncEndpoint,
    SERIAL_CHUNK_MAX_BYTES, SERIAL_OUTPUT_CHUNKS,
};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::network::Network;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;

pub struct Libvirt {
    uri: String,
    conn: Mutex<Connect>,
    kvm: KvmStatus,
}

fn call(operation: &'static str) -> impl Fn(virt::error::Error) -> HypervisorError {
    move |e| HypervisorError::Libvirt {
        operation,
        code: e.code().to_raw(),
        message: e.message().to_string(),
    }
}

/// Registers libvirt's default event loop and runs it on a dedicated thread, once per
/// process. It must run before the first connection is opened: domain events and
/// non-blocking console streams are dispatched from it.
pub fn start_event_loop() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        if let Err(e) = virt::event::event_register_default_impl() {
            tracing::warn!(error = %e, "libvirt event loop unavailable; live updates are off");
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if let Err(e) = virt::event::event_run_default_impl() {
                    tracing::warn!(error = %e, "libvirt event loop iteration failed");
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the libvirt event thread");
        }
    });
}

/// Whether the URI names libvirt's in-process test driver, whose state lives and dies
/// with the connection.
pub fn is_test_uri(uri: &str) -> bool {
    uri.starts_with("test://")
}

impl Libvirt {
    /// Opens the connection. For a local QEMU host, `kvm` is the result of the KVM probe.
    pub fn open(uri: &str, kvm: KvmStatus) -> HvResult<Libvirt> {
        // libvirt prints every error to stderr unless told otherwise; we log them ourselves.
        virt::error::clear_error_callback();
        start_event_loop();
        let conn = Connect::open(Some(uri)).map_err(|e| HypervisorError::Connect {
            uri: uri.to_string(),
            message: e.message().to_string(),
        })?;
        let kvm = if is_test_uri(uri) {
            KvmStatus::NotApplicable
        } else {
            kvm
        };
        Ok(Libvirt {
            uri: uri.to_string(),
            conn: Mutex::new(conn),
            kvm,
        })
    }

    /// A handle on the connection, reopened if a daemon restart closed it. The test
    /// driver is never reopened: its state would be lost.
    fn conn(&self) -> HvResult<Connect> {
        let mut guard = self.conn.lock().map_err(|_| HypervisorError::Call {
            operation: "use the connection",
            message: "connection lock poisoned".into(),
        })?;
        if !is_test_uri(&self.uri) && !guard.is_alive().unwrap_or(false) {
            tracing::warn!(uri = %self.uri, "libvirt connection lost; reconnecting");
            *guard = Connect::open(Some(&self.uri)).map_err(|e| HypervisorError::Connect {
                uri: self.uri.clone(),
                message: e.message().to_string(),
            })?;
        }
        Ok(guard.clone())
    }
}

fn lookup(conn: &Connect, name: &str) -> HvResult<Domain> {
    conn.lookup_domain_by_name(name).map_err(|e| {
        if e.code().is(virt::error::ErrorNumber::NoDomain) {
            HypervisorError::NotFound {
                what: format!("VM {name}"),
            }
        } else {
            call("look up a VM")(e)
        }
    })
}

/// The text of the first `<tag …>…</tag>` or the value of `attr` in `<tag attr='…'>`,
/// enough for the few facts libvirt only gives in XML (pool type, network forward mode).
fn xml_attr(xml: &str, tag: &str, attr: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}"))?;
    let rest = &xml[start..];
    let end = rest.find('>')?;
    let element = &rest[..end];
    for quote in ['\'', '"'] {
        let key = format!("{attr}={quote}");
        if let Some(i) = element.find(&key) {
            let v = &element[i + key.len()..];
            return v.find(quote).map(|j| v[..j].to_string());
        }
    }
    None
}

fn pool_info(pool: &StoragePool) -> HvResult<PoolInfo> {
    let name = pool.name().map_err(call("read a pool's name"))?;
    let info = pool.info().map_err(call("read a pool's capacity"))?;
    let active = pool.is_active().unwrap_or(false);
    let xml = pool.xml_desc(0).unwrap_or_default();
    let kind = xml_attr(&xml, "pool", "type").unwrap_or_default();
    let mut volumes = Vec::new();
    if active {
        let listed = pool
            .list_all_volumes(0)
            .map_err(call("list a pool's volumes"))?;
        volumes.extend(existing_volumes(listed)?.into_iter().map(|(_, v)| v));
    }
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(PoolInfo {
        name,
        kind,
        active,
        capacity_bytes: info.capacity,
        allocation_bytes: info.allocation,
        available_bytes: info.available,
        volumes,
    })
}

/// libvirt's flags for a move: peer to peer, persisted there, undefined here; live or
/// offline; disks copied when asked; the migration stream over TLS when asked.
fn migrate_flags(options: &MigrateOptions) -> u32 {
    use virt::sys;
    let mut flags = sys::VIR_MIGRATE_PEER2PEER
        | sys::VIR_MIGRATE_PERSIST_DEST
        | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
    if options.offline {
        flags |= sys::VIR_MIGRATE_OFFLINE;
    } else {
        if options.live {
            flags |= sys::VIR_MIGRATE_LIVE;
        }
        if !options.copy_disks.is_empty() {
            flags |= sys::VIR_MIGRATE_NON_SHARED_DISK;
        }
        if options.tls {
            flags |= sys::VIR_MIGRATE_TLS;
        }
    }
    flags
}

/// A listed object read back, or nothing when libvirt says (`gone`, e.g. "no domain",
/// "no storage pool") it was removed in between, by virsh or another request: a listing
/// shows what exists, it does not fail.
fn still_there<T>(gone: u32, read: HvResult<T>) -> Option<HvResult<T>> {
    match read {
        Err(HypervisorError::Libvirt { code, .. }) if code == gone => None,
        other => Some(other),
    }
}

/// A pool's volumes that still exist: one whose file was removed behind libvirt's back
/// (libvirt answers "no storage vol") is left out with a warning, not an error for the
/// whole host.
fn existing_volumes(vols: Vec<StorageVol>) -> HvResult<Vec<(StorageVol, VolumeInfo)>> {
    let mut out = Vec::new();
    for vol in vols {
        match volume_info(&vol) {
            Ok(info) => out.push((vol, info)),
            Err(HypervisorError::Libvirt {
                code, ref message, ..
            }) if code == virt::sys::VIR_ERR_NO_STORAGE_VOL => {
                tracing::warn!(volume = %vol.name().unwrap_or_default(), %message, "a volume is gone from its pool (removed outside libvirt); left out");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn volume_info(vol: &StorageVol) -> HvResult<VolumeInfo> {
    let info = vol.info().map_err(call("read a volume's size"))?;
    Ok(VolumeInfo {
        name: vol.name().map_err(call("read a volume's name"))?,
        path: vol.path().map_err(call("read a volume's path"))?,
        capacity_bytes: info.capacity,
        allocation_bytes: info.allocation,
    })
}

fn vm_state(s: DomainState) -> VmState {
    match s {
        DomainState::Running | DomainState::Blocked => VmState::Running,
        DomainState::Paused => VmState::Paused,
        DomainState::Shutdown => VmState::ShuttingDown,
        DomainState::Shutoff => VmState::ShutOff,
        DomainState::Crashed => VmState::Crashed,
        DomainState::PMSuspended => VmState::Suspended,
        DomainState::NoState => VmState::Unknown,
    }
}

fn summarize(dom: &Domain) -> HvResult<VmSummary> {
    let info = dom.info().map_err(call("read a VM's info"))?;
    Ok(VmSummary {
        name: dom.name().map_err(call("read a VM's name"))?,
        uuid: dom.uuid_string().map_err(call("read a VM's UUID"))?,
        state: info.state.known().map(vm_state).unwrap_or(VmState::Unknown),
        vcpus: info.nr_virt_cpu,
        memory_mib: info.max_mem / 1024,
        autostart: dom.autostart().unwrap_or(false),
        persistent: dom.is_persistent().unwrap_or(false),
    })
}

impl Hypervisor for Libvirt {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn host_facts(&self) -> HvResult<HostFacts> {
        let conn = self.conn()?;
        let node = conn
            .node_info()
            .map_err(call("read the host's CPU and memory"))?;
        Ok(HostFacts {
            // The test driver answers with this machine's name, which is not the host it simulates.
            hostname: if is_test_uri(&self.uri) {
                "demo".into()
            } else {
                conn.hostname().unwrap_or_else(|_| "unknown".into())
            },
            libvirt_uri: self.uri.clone(),
            driver: conn.driver_type().unwrap_or_default(),
            libvirt_version: conn
                .lib_version()
                .map(|v| Version(v).to_string())
                .unwrap_or_default(),
            hypervisor_version: conn
                .hyp_version()
                .map(|v| Version(v).to_string())
                .unwrap_or_default(),
            cpu_model: node.model,
            cpu_count: node.cpus,
            cpu_sockets: node.sockets,
            cpu_cores_per_socket: node.cores,
            cpu_threads_per_core: node.threads,
            cpu_mhz: node.mhz,
            memory_mib: node.memory / 1024,
            free_memory_mib: conn
                .free_memory()
                .ok()
                .filter(|b| *b > 0)
                .map(|b| b / (1024 * 1024)),
        })
    }

    fn kvm_status(&self) -> KvmStatus {
        self.kvm.clone()
    }

    fn guest_capabilities(&self, virt_type: VirtType) -> HvResult<GuestCapabilities> {
        if is_test_uri(&self.uri) {
            // The demo host simulates a KVM host with OVMF and swtpm installed.
            return Ok(GuestCapabilities::simulated());
        }
        let conn = self.conn()?;
        let xml = conn
            .domain_capabilities(
                None,
                Some("x86_64"),
                Some("q35"),
                Some(virt_type.as_str()),
                0,
            )
            .map_err(call("read what the host can give guests"))?;
        Ok(guest_caps::parse(&xml))
    }

    fn list_vms(&self) -> HvResult<Vec<VmSummary>> {
        let conn = self.conn()?;
        let domains = conn.list_all_domains(0).map_err(call("list the VMs"))?;
        // A VM deleted between the listing and the reading of its info is left out: it
        // is gone, and the others are still to be listed.
        let mut vms = domains
            .iter()
            .map(summarize)
            .filter_map(|vm| still_there(virt::sys::VIR_ERR_NO_DOMAIN, vm))
            .collect::<HvResult<Vec<_>>>()?;
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(vms)
    }

    fn pools(&self) -> HvResult<Vec<PoolInfo>> {
        let conn = self.conn()?;
        let mut pools = conn
            .list_all_storage_pools(0)
            .map_err(call("list the storage pools"))?
            .iter()
            .map(pool_info)
            .filter_map(|pool| still_there(virt::sys::VIR_ERR_NO_STORAGE_POOL, pool))
            .collect::<HvResult<Vec<_>>>()?;
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pools)
    }

    fn networks(&self) -> HvResult<Vec<NetworkInfo>> {
        let conn = self.conn()?;
        let mut nets = Vec::new();
        for n in conn
            .list_all_networks(0)
            .map_err(call("list the networks"))?
        {
            let xml = n.xml_desc(0).unwrap_or_default();
            let forward_mode = xml_attr(&xml, "forward", "mode").unwrap_or_else(|| {
                if xml.contains("<forward") {
                    "nat".into()
                } else {
                    "isolated".into()
                }
            });
            nets.push(NetworkInfo {
                name: n.name().map_err(call("read a network's name"))?,
                bridge: n.bridge_name().ok(),
                forward_mode,
                active: n.is_active().unwrap_or(false),
            });
        }
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nets)
    }

    fn domain_xml(&self, name: &str) -> HvResult<String> {
        let conn = self.conn()?;
        lookup(&conn, name)?
            .xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(call("read a VM's definition"))
    }

    fn all_domain_xml(&self) -> HvResult<Vec<String>> {
        let conn = self.conn()?;
        conn.list_all_domains(0)
            .map_err(call("list the VMs"))?
            .iter()
            .map(|d| d.xml_desc(0).map_err(call("read a VM's definition")))
            .collect()
    }

    fn create_volume(&self, pool: &str, volume_xml: &str) -> HvResult<String> {
        let conn = self.conn()?;
        let p = conn
            .lookup_storage_pool_by_name(pool)
            .map_err(|_| HypervisorError::NotFound {
                what: format!("storage pool {pool}"),
            })?;
        let vol =
            StorageVol::create_xml(&p, volume_xml, 0).map_err(call("create the disk volume"))?;
        vol.path().map_err(call("read the new volume's path"))
    }

    fn delete_volume(&self, path: &str) -> HvResult<()> {
        let conn = self.conn()?;
        let vol = conn
            .lookup_storage_vol_by_path(path)
            .map_err(|_| HypervisorError::NotFound {
                what: format!("volume {path}"),
            })?;
        vol.delete(0).map_err(call("delete the volume"))
    }

    fn define(&self, domain_xml: &str) -> HvResult<()> {
        let conn = self.conn()?;
        conn.define_domain_xml(domain_xml)
            .map(drop)
            .map_err(call("define the VM"))
    }

    fn undefine(&self, name: &str) -> HvResult<()> {
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        if dom.is_active().unwrap_or(false) {
            dom.destroy().map_err(call("stop the VM"))?;
        }
        if !dom.is_persistent().unwrap_or(true) {
            // A transient VM (an install run that was never defined) is gone once stopped.
            return Ok(());
        }
        let flags = virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM;
        // A VM's emulated TPM state goes with it (libvirt keeps it unless told).
        if dom
            .undefine_flags(flags | virt::sys::VIR_DOMAIN_UNDEFINE_TPM)
            .is_ok()
        {
            return Ok(());
        }
        match dom.undefine_flags(flags) {
            Ok(()) => Ok(()),
            // The test driver and old daemons may not know every flag.
            Err(_) => dom.undefine().map_err(call("remove the VM's definition")),
        }
    }

    fn act(&self, name: &str, action: VmAction) -> HvResult<()> {
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        match action {
            VmAction::Start => dom.create().map(drop).map_err(call("start the VM")),
            VmAction::Shutdown => dom.shutdown().map(drop).map_err(call("shut the VM down")),
            VmAction::Reboot => dom.reboot(0).map_err(call("reboot the VM")),
            VmAction::ForceOff => dom.destroy().map_err(call("force the VM off")),
            VmAction::Pause => dom.suspend().map(drop).map_err(call("pause the VM")),
            VmAction::Resume => dom.resume().map(drop).map_err(call("resume the VM")),
        }
    }

    fn set_autostart(&self, name: &str, on: bool) -> HvResult<()> {
        let conn = self.conn()?;
        lookup(&conn, name)?
            .set_autostart(on)
            .map(drop)
            .map_err(call("change autostart"))
    }

    fn set_vm_metadata(&self, name: &str, element_xml: Option<&str>) -> HvResult<()> {
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        dom.set_metadata(
            virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            element_xml,
            Some(crate::domain::vm_labels::METADATA_PREFIX),
            Some(crate::domain::vm_labels::METADATA_NS),
            metadata_flags(&dom),
        )
        .map_err(call("change the VM's tags"))
    }

    fn grow_disk(&self, name: &str, target: &str, bytes: u64) -> HvResult<()> {
        let conn = self.conn()?;
        lookup(&conn, name)?
            .block_resize(target, bytes, virt::sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            .map_err(call("grow the VM's disk"))
    }

    fn update_device(&self, name: &str, device_xml: &str) -> HvResult<()> {
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        dom.update_device_flags(device_xml, metadata_flags(&dom))
            .map(drop)
            .map_err(call("change the VM's device"))
    }

    fn backup_begin(&self, name: &str, backup_xml: &str, checkpoint_xml: &str) -> HvResult<()> {
        let dom = lookup(&self.conn()?, name)?;
        let (Ok(backup), Ok(checkpoint)) = (CString::new(backup_xml), CString::new(checkpoint_xml))
        else {
            return Err(HypervisorError::Call {
                operation: "begin a backup",
                message: "the backup description has a NUL byte".into(),
            });
        };
        // SAFETY: `dom` holds a valid domain pointer; both strings outlive the call.
        let r = unsafe {
            virt::sys::virDomainBackupBegin(dom.as_ptr(), backup.as_ptr(), checkpoint.as_ptr(), 0)
        };
        if r < 0 {
            return Err(call("begin a backup")(virt::error::Error::last_error()));
        }
        Ok(())
    }

    fn backup_status(&self, name: &str) -> HvResult<BackupStatus> {
        let dom = lookup(&self.conn()?, name)?;
        let now = job_stats(&dom, 0)?;
        if now.kind != virt::sys::VIR_DOMAIN_JOB_NONE as i32 {
            return Ok(BackupStatus::Running {
                processed_bytes: now.processed.unwrap_or(0),
                total_bytes: now.total.unwrap_or(0),
            });
        }
        // Kept, so asking again (the job may end between the two questions) still answers.
        let last = job_stats(
            &dom,
            virt::sys::VIR_DOMAIN_JOB_STATS_COMPLETED
                | virt::sys::VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED,
        )?;
        Ok(match last.kind as u32 {
            virt::sys::VIR_DOMAIN_JOB_COMPLETED => BackupStatus::Completed,
            virt::sys::VIR_DOMAIN_JOB_FAILED | virt::sys::VIR_DOMAIN_JOB_CANCELLED => {
                BackupStatus::Failed(last.error.unwrap_or_else(|| "the backup job failed".into()))
            }
            _ => BackupStatus::None,
        })
    }

    fn freeze_filesystems(&self, name: &str) -> HvResult<u32> {
        let dom = lookup(&self.conn()?, name)?;
        // SAFETY: valid domain pointer; no mount point list (all of them).
        let r = unsafe { virt::sys::virDomainFSFreeze(dom.as_ptr(), std::ptr::null_mut(), 0, 0) };
        if r < 0 {
            return Err(call("freeze the guest's file systems")(
                virt::error::Error::last_error(),
            ));
        }
        Ok(r as u32)
    }

    fn thaw_filesystems(&self, name: &str) -> HvResult<()> {
        let dom = lookup(&self.conn()?, name)?;
        // SAFETY: as above.
        let r = unsafe { virt::sys::virDomainFSThaw(dom.as_ptr(), std::ptr::null_mut(), 0, 0) };
        if r < 0 {
            return Err(call("thaw the guest's file systems")(
                virt::error::Error::last_error(),
            ));
        }
        Ok(())
    }

    fn abort_backup(&self, name: &str) -> HvResult<()> {
        let dom = lookup(&self.conn()?, name)?;
        // SAFETY: `dom` holds a valid domain pointer for the duration of the call.
        let r = unsafe { virt::sys::virDomainAbortJob(dom.as_ptr()) };
        if r < 0 {
            return Err(call("stop the backup")(virt::error::Error::last_error()));
        }
        Ok(())
    }

    fn checkpoints(&self, name: &str) -> HvResult<Vec<String>> {
        let dom = lookup(&self.conn()?, name)?;
        let mut list: *mut virt::sys::virDomainCheckpointPtr = std::ptr::null_mut();
        // SAFETY: libvirt allocates `list` (n entries); each entry and the array are freed
        // below, names copied out first.
        let n = unsafe { virt::sys::virDomainListAllCheckpoints(dom.as_ptr(), &mut list, 0) };
        if n < 0 {
            return Err(call("list the VM's checkpoints")(
                virt::error::Error::last_error(),
            ));
        }
        let mut names = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            // SAFETY: `i < n`, so the entry is a valid checkpoint pointer.
            unsafe {
                let cp = *list.add(i);
                let name = virt::sys::virDomainCheckpointGetName(cp);
                if !name.is_null() {
                    names.push(
                        std::ffi::CStr::from_ptr(name)
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
                virt::sys::virDomainCheckpointFree(cp);
            }
        }
        // SAFETY: the array came from libvirt's allocator.
        unsafe { libc::free(list as *mut libc::c_void) };
        Ok(names)
    }

    fn delete_checkpoint(&self, name: &str, checkpoint: &str) -> HvResult<()> {
        let dom = lookup(&self.conn()?, name)?;
        let Ok(cname) = CString::new(checkpoint) else {
            return Ok(());
        };
        // SAFETY: valid domain pointer and string; the checkpoint is freed after use.
        unsafe {
            let cp = virt::sys::virDomainCheckpointLookupByName(dom.as_ptr(), cname.as_ptr(), 0);
            if cp.is_null() {
                return Err(HypervisorError::NotFound {
                    what: format!("Checkpoint {checkpoint}"),
                });
            }
            let r = virt::sys::virDomainCheckpointDelete(cp, 0);
            virt::sys::virDomainCheckpointFree(cp);
            if r < 0 {
                return Err(call("delete a checkpoint")(virt::error::Error::last_error()));
            }
        }
        Ok(())
    }

    fn host_devices(&self) -> HvResult<Vec<crate::domain::host_devices::HostDevice>> {
        let conn = self.conn()?;
        let flags = virt::sys::VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV
            | virt::sys::VIR_CONNECT_LIST_NODE_DEVICES_CAP_USB_DEV;
        let mut out = Vec::new();
        for dev in conn
            .list_all_node_devices(flags)
            .map_err(call("list the host's devices"))?
        {
            let xml = dev.xml_desc(0).map_err(call("read a host device"))?;
            match crate::domain::host_devices::parse_node_device(&xml) {
                Ok(Some(d)) => out.push(d),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "a host device could not be read"),
            }
        }
        out.sort_by(|a, b| (&a.kind, &a.address).cmp(&(&b.kind, &b.address)));
        Ok(out)
    }

    fn change_device_live(&self, name: &str, change: LiveChange, device_xml: &str) -> HvResult<()> {
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        let live = virt::sys::VIR_DOMAIN_AFFECT_LIVE;
        match change {
            LiveChange::Attach => dom
                .attach_device_flags(device_xml, live)
                .map_err(call("plug a device into the VM")),
            LiveChange::Detach => dom
                .detach_device_flags(device_xml, live)
                .map_err(call("take a device out of the VM")),
            LiveChange::Update => dom
                .update_device_flags(device_xml, live)
                .map_err(call("change a device of the VM")),
        }
        .map(drop)
    }

    fn set_description(&self, name: &str, text: &str) -> HvResult<()> {
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        dom.set_metadata(
            virt::sys::VIR_DOMAIN_METADATA_DESCRIPTION as i32,
            Some(text).filter(|t| !t.is_empty()),
            None,
            None,
            metadata_flags(&dom),
        )
        .map_err(call("change the VM's notes"))
    }

    fn set_size(&self, name: &str, vcpus: u32, memory_mib: u64) -> HvResult<()> {
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        if dom.is_active().unwrap_or(false) {
            return Err(HypervisorError::Call {
                operation: "resize the VM",
                message: "the VM is running; shut it down first".into(),
            });
        }
        let def = dom
            .xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(call("read a VM's definition"))?;
        let current =
            crate::domain::xml::parse_domain(&def).map_err(|e| HypervisorError::Call {
                operation: "read a VM's definition",
                message: e.to_string(),
            })?;
        let config = virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
        let max = config | virt::sys::VIR_DOMAIN_VCPU_MAXIMUM;
        // The current count may never exceed the maximum: grow the maximum first,
        // shrink it last.
        let order = if vcpus >= current.vcpus {
            [max, config]
        } else {
            [config, max]
        };
        for flags in order {
            dom.set_vcpus_flags(vcpus, flags)
                .map_err(call("change the vCPUs"))?;
        }
        let kib = memory_mib * 1024;
        if memory_mib >= current.memory_mib {
            dom.set_max_memory(kib).map_err(call("change the memory"))?;
            dom.set_memory_flags(kib, config)
                .map_err(call("change the memory"))?;
        } else {
            dom.set_memory_flags(kib, config)
                .map_err(call("change the memory"))?;
            dom.set_max_memory(kib).map_err(call("change the memory"))?;
        }
        Ok(())
    }

    fn clone_volume(&self, source_path: &str, volume_xml: &str) -> HvResult<String> {
        let conn = self.conn()?;
        let source = conn.lookup_storage_vol_by_path(source_path).map_err(|_| {
            HypervisorError::NotFound {
                what: format!("volume {source_path}"),
            }
        })?;
        let pool = source
            .lookup_storage_pool()
            .map_err(call("find the volume's pool"))?;
        let copy = StorageVol::create_xml_from(&pool, volume_xml, &source, 0)
            .map_err(call("copy the disk volume"))?;
        copy.path().map_err(call("read the copy's path"))
    }

    fn snapshots(&self, name: &str) -> HvResult<Vec<SnapshotInfo>> {
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        let mut out = Vec::new();
        for snap in dom
            .list_all_snapshots(0)
            .map_err(call("list the snapshots"))?
        {
            let xml = snap.xml_desc(0).map_err(call("read a snapshot"))?;
            let current = snap.is_current(0).unwrap_or(false);
            out.push(
                parse_snapshot(&xml, current).map_err(|message| HypervisorError::Call {
                    operation: "read a snapshot",
                    message,
                })?,
            );
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    fn create_snapshot(&self, name: &str, snapshot_xml: &str) -> HvResult<()> {
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        let xml = CString::new(snapshot_xml).map_err(|e| HypervisorError::Call {
            operation: "take a snapshot",
            message: e.to_string(),
        })?;
        // SAFETY: `dom` is a live domain handle for the whole call and `xml` a valid C
        // string; the returned snapshot reference is owned by the wrapper, which frees it.
        let ptr = unsafe { virt::sys::virDomainSnapshotCreateXML(dom.as_ptr(), xml.as_ptr(), 0) };
        if ptr.is_null() {
            return Err(call("take a snapshot")(virt::error::Error::last_error()));
        }
        // SAFETY: a non-null pointer just returned by libvirt, owned by us.
        drop(unsafe { virt::domain_snapshot::DomainSnapshot::from_ptr(ptr) });
        Ok(())
    }

    fn revert_snapshot(&self, name: &str, snapshot: &str) -> HvResult<()> {
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        lookup_snapshot(&dom, snapshot)?
            .revert(0)
            .map_err(call("revert to the snapshot"))
    }

    fn delete_snapshot(&self, name: &str, snapshot: &str) -> HvResult<()> {
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        lookup_snapshot(&dom, snapshot)?
            .delete(0)
            .map_err(call("delete the snapshot"))
    }

    fn guest_addresses(&self, name: &str) -> HvResult<Vec<GuestAddress>> {
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        if !dom.is_active().unwrap_or(false) {
            return Ok(Vec::new());
        }
        let sources = [
            virt::sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            virt::sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
        ];
        for source in sources {
            let found = interface_addresses(&dom, source);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Ok(Vec::new())
    }

    fn start_transient(&self, domain_xml: &str) -> HvResult<()> {
        let conn = self.conn()?;
        conn.create_domain_xml(domain_xml, 0)
            .map(drop)
            .map_err(call("boot the installer"))
    }

    fn watch_events(&self, sink: EventSink) -> HvResult<()> {
        let conn = self.conn()?;
        let opaque = Box::into_raw(Box::new(sink)) as *mut std::os::raw::c_void;
        // SAFETY: the callback has the lifecycle-event signature libvirt calls for
        // VIR_DOMAIN_EVENT_ID_LIFECYCLE (the generic type is how the C API takes it);
        // `opaque` is a leaked Box<EventSink> freed by `free_sink` when libvirt drops the
        // registration.
        let id = unsafe {
            let cb: unsafe extern "C" fn(
                virt::sys::virConnectPtr,
                virt::sys::virDomainPtr,
                std::os::raw::c_int,
                std::os::raw::c_int,
                *mut std::os::raw::c_void,
            ) -> std::os::raw::c_int = lifecycle_event;
            virt::sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                std::ptr::null_mut(),
                virt::sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as std::os::raw::c_int,
                Some(std::mem::transmute::<
                    unsafe extern "C" fn(
                        virt::sys::virConnectPtr,
                        virt::sys::virDomainPtr,
                        std::os::raw::c_int,
                        std::os::raw::c_int,
                        *mut std::os::raw::c_void,
                    ) -> std::os::raw::c_int,
                    unsafe extern "C" fn(
                        virt::sys::virConnectPtr,
                        virt::sys::virDomainPtr,
                        *mut std::os::raw::c_void,
                    ),
                >(cb)),
                opaque,
                Some(free_sink),
            )
        };
        if id < 0 {
            // SAFETY: libvirt did not take ownership; reclaim the box.
            drop(unsafe { Box::from_raw(opaque as *mut EventSink) });
            return Err(call("watch VM events")(virt::error::Error::last_error()));
        }
        Ok(())
    }

    // ---- migration ----

    fn machine_types(&self) -> HvResult<Vec<String>> {
        let caps = self
            .conn()?
            .capabilities()
            .map_err(call("read the host's capabilities"))?;
        Ok(crate::domain::xml::machine_types(&caps))
    }

    fn migrate(&self, name: &str, dest_uri: &str, options: &MigrateOptions) -> HvResult<()> {
        use virt::sys;
        let dom = lookup(&self.conn()?, name)?;
        let flags = migrate_flags(options);
        let mut params = virt::domain::MigrateParameters {
            migrate_disks: options.copy_disks.clone(),
            bandwidth: (options.bandwidth_mib_s > 0).then_some(options.bandwidth_mib_s),
            ..Default::default()
        };
        let moved: Vec<(String, String)> = options
            .disk_paths
            .iter()
            .filter(|(here, there)| here != there)
            .cloned()
            .collect();
        if !moved.is_empty() {
            // The copies live at other paths there: the definitions QEMU starts with and
            // libvirt keeps there name them.
            let xml_flags = sys::VIR_DOMAIN_XML_MIGRATABLE | sys::VIR_DOMAIN_XML_SECURE;
            let live = dom
                .xml_desc(xml_flags)
                .map_err(call("read the VM's definition"))?;
            let kept = dom
                .xml_desc(xml_flags | sys::VIR_DOMAIN_XML_INACTIVE)
                .map_err(call("read the VM's definition"))?;
            params.dest_xml = Some(crate::domain::fleet::rewrite_disk_paths(&live, &moved));
            params.persist_xml = Some(crate::domain::fleet::rewrite_disk_paths(&kept, &moved));
        }
        dom.migrate_to_uri3(Some(dest_uri), params, flags)
            .map_err(call("migrate the VM"))
    }

    fn migration_progress(&self, name: &str) -> HvResult<Option<MigrationProgress>> {
        let dom = lookup(&self.conn()?, name)?;
        // `virt`'s wrapper aborts on a job without parameters (none running): ask first.
        if job_stats(&dom, 0)?.kind == virt::sys::VIR_DOMAIN_JOB_NONE as i32 {
            return Ok(None);
        }
        let stats = dom
            .job_stats(0)
            .map_err(call("read the migration's progress"))?;
        // VIR_DOMAIN_JOB_NONE: nothing runs.
        if stats.r#type == virt::sys::VIR_DOMAIN_JOB_NONE as i32 {
            return Ok(None);
        }
        Ok(Some(MigrationProgress {
            data_total_bytes: stats.data_total.unwrap_or(0),
            data_processed_bytes: stats.data_processed.unwrap_or(0),
            data_remaining_bytes: stats.data_remaining.unwrap_or(0),
            memory_bps: stats.mem_bps.unwrap_or(0),
            downtime_ms: stats.downtime.unwrap_or(0),
        }))
    }

    fn cpu_runs_here(&self, cpu_xml: &str, domain_type: &str) -> HvResult<Option<bool>> {
        let conn = self.conn()?;
        let (Ok(xml), Ok(virttype)) = (CString::new(cpu_xml), CString::new(domain_type)) else {
            return Ok(None);
        };
        // SAFETY: the connection pointer is valid while `conn` lives; the strings outlive
        // the call; NULL emulator, arch and machine mean the defaults for `virttype`.
        let r = unsafe {
            virt::sys::virConnectCompareHypervisorCPU(
                conn.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                virttype.as_ptr(),
                xml.as_ptr(),
                0,
            )
        };
        Ok(match r {
            0 => Some(false),
            1 | 2 => Some(true),
            _ => {
                tracing::debug!(error = %virt::error::Error::last_error(), "libvirt could not compare a CPU");
                None
            }
        })
    }

    fn abort_migration(&self, name: &str) -> HvResult<()> {
        let dom = lookup(&self.conn()?, name)?;
        // SAFETY: `dom` holds a valid domain pointer for the duration of the call.
        let r = unsafe { virt::sys::virDomainAbortJob(dom.as_ptr()) };
        if r < 0 {
            return Err(call("abort the migration")(virt::error::Error::last_error()));
        }
        Ok(())
    }

    // ---- consoles (keep at the end) ----

    fn vnc_endpoint(&self, name: &str) -> Result<VncEndpoint, ConsoleError> {
        let dom = self.running_domain(name)?;
        let xml = dom
            .xml_desc(0)
            .map_err(call("read a VM's live definition"))?;
        let parsed = crate::domain::xml::parse_domain(&xml).map_err(|e| HypervisorError::Call {
            operation: "read a VM's live definition",
            message: e.to_string(),
        })?;
        let no_vnc = || ConsoleError::NoDevice {
            name: name.to_string(),
            what: "VNC display",
        };
        let g = parsed.vnc.ok_or_else(no_vnc)?;
        if let Some(socket) = g.socket {
            return Ok(VncEndpoint::Unix(socket.into()));
        }
        let port = g
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(no_vnc)?;
        // virtdeck defines VNC on loopback only; a VM defined elsewhere with another
        // address is still reached over loopback, never over the network.
        let ip = match g.listen.as_deref().map(str::parse::<std::net::IpAddr>) {
            Some(Ok(ip)) if ip.is_loopback() => ip,
            Some(Ok(std::net::IpAddr::V6(_))) => std::net::Ipv6Addr::LOCALHOST.into(),
            _ => std::net::Ipv4Addr::LOCALHOST.into(),
        };
        Ok(VncEndpoint::Tcp(std::net::SocketAddr::new(ip, port)))
    }

    fn open_serial(&self, name: &str, force: bool) -> Result<SerialConsole, ConsoleError> {
        use virt::stream::Stream;
        let dom = self.running_domain(name)?;
        let conn = self.conn()?;
        let stream = Stream::new(&conn, virt::sys::VIR_STREAM_NONBLOCK)
            .map_err(call("open a console stream"))?;
        let flags = if force {
            virt::sys::VIR_DOMAIN_CONSOLE_FORCE
        } else {
            0
        };
        if let Err(e) = dom.open_console(None, &stream, flags) {
            let message = e.message().to_string();
            return Err(if !force && message.contains("Active console session") {
                ConsoleError::Busy {
                    name: name.to_string(),
                }
            } else if message.contains("cannot find character device") {
                ConsoleError::NoDevice {
                    name: name.to_string(),
                    what: "serial console",
                }
            } else {
                HypervisorError::Call {
                    operation: "attach to the serial console",
                    message,
                }
                .into()
            });
        }
        let writer = stream.clone();
        // The callback keeps a raw pointer to the stream: it must stay boxed in place.
        let mut reader = Box::new(stream);
        // Bounded: a browser that stops reading never makes virtdeck hold more than
        // SERIAL_OUTPUT_CHUNKS chunks. When the channel is full the callback stops asking
        // for READABLE (it must never block the event loop) and the guest's output waits
        // in QEMU; `output_taken` asks for it again once the proxy has made room.
        let (tx, rx) = tokio::sync::mpsc::channel(SERIAL_OUTPUT_CHUNKS);
        let flow = Arc::new(SerialFlow {
            paused: AtomicBool::new(false),
            tx: tx.downgrade(),
        });
        let cb_flow = flow.clone();
        let mut tx = Some(tx);
        reader
            .event_add_callback(SERIAL_EVENTS_ALL, move |st: &Stream, ev| {
                let mut open = tx.is_some();
                if open && ev & virt::sys::VIR_STREAM_EVENT_READABLE != 0 {
                    if let Some(t) = tx.as_ref() {
                        open = read_serial(
                            t,
                            &cb_flow,
                            |buf| match st.recv(buf) {
                                Ok(-2) => SerialRead::Again,
                                Ok(n) if n > 0 => SerialRead::Data((n as usize).min(buf.len())),
                                // 0: end of stream; other values and errors: the stream is gone.
                                _ => SerialRead::End,
                            },
                            |readable| {
                                let _ = st.event_update_callback(if readable {
                                    SERIAL_EVENTS_ALL
                                } else {
                                    SERIAL_EVENTS_PAUSED
                                });
                            },
                        );
                    }
                }
                if ev & (virt::sys::VIR_STREAM_EVENT_HANGUP | virt::sys::VIR_STREAM_EVENT_ERROR)
                    != 0
                {
                    open = false;
                }
                if !open {
                    // Closing the channel tells the proxy; stop being woken for this stream.
                    tx = None;
                    let _ = st.event_update_callback(0);
                }
            })
            .map_err(call("watch the console stream"))?;
        Ok(SerialConsole {
            output: rx,
            input: Box::new(LibvirtSerialInput {
                writer: Some(writer),
                reader: Some(reader),
                flow,
            }),
        })
    }

    fn screenshot(&self, name: &str) -> Result<Screenshot, ConsoleError> {
        use virt::stream::Stream;
        let dom = self.running_domain(name)?;
        let conn = self.conn()?;
        let stream = Stream::new(&conn, 0).map_err(call("open a screenshot stream"))?;
        let mime = dom
            .screenshot(&stream, 0, 0)
            .map_err(call("take a screenshot"))?;
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.recv(&mut buf) {
                Ok(n) if n > 0 => bytes.extend_from_slice(&buf[..n as usize]),
                Ok(_) => break,
                Err(e) => {
                    let _ = stream.abort();
                    return Err(call("read a screenshot")(e).into());
                }
            }
            if bytes.len() > 64 * 1024 * 1024 {
                let _ = stream.abort();
                return Err(HypervisorError::Call {
                    operation: "read a screenshot",
                    message: "the screenshot is larger than 64 MiB".into(),
                }
                .into());
            }
        }
        let _ = stream.finish();
        Ok(Screenshot { mime, bytes })
    }

    // ---- storage pools and libvirt networks ----

    fn pool_statuses(&self) -> HvResult<Vec<PoolStatus>> {
        let conn = self.conn()?;
        let mut pools = conn
            .list_all_storage_pools(0)
            .map_err(call("list the storage pools"))?
            .iter()
            .map(pool_status)
            .filter_map(|pool| still_there(virt::sys::VIR_ERR_NO_STORAGE_POOL, pool))
            .collect::<HvResult<Vec<_>>>()?;
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pools)
    }

    fn pool_volumes(&self, pool: &str) -> HvResult<Vec<PoolVolume>> {
        let p = lookup_pool(&self.conn()?, pool)?;
        if !p.is_active().unwrap_or(false) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let listed = p
            .list_all_volumes(0)
            .map_err(call("list a pool's volumes"))?;
        for (vol, v) in existing_volumes(listed)? {
            let xml = vol.xml_desc(0).unwrap_or_default();
            out.push(PoolVolume {
                name: v.name,
                path: v.path,
                capacity_bytes: v.capacity_bytes,
                allocation_bytes: v.allocation_bytes,
                format: crate::domain::storage::parse_volume_format(&xml),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn define_pool(&self, pool_xml: &str) -> HvResult<()> {
        self.conn()?
            .define_storage_pool_xml(pool_xml, 0)
            .map(drop)
            .map_err(call("define the pool"))
    }

    fn build_pool(&self, name: &str) -> HvResult<()> {
        self.on_pool(name, "build the pool", |p| p.build(0))
    }

    fn start_pool(&self, name: &str) -> HvResult<()> {
        self.on_pool(name, "start the pool", |p| p.create(0))
    }

    fn stop_pool(&self, name: &str) -> HvResult<()> {
        self.on_pool(name, "stop the pool", |p| p.destroy())
    }

    fn refresh_pool(&self, name: &str) -> HvResult<()> {
        self.on_pool(name, "refresh the pool", |p| p.refresh(0))
    }

    fn set_pool_autostart(&self, name: &str, on: bool) -> HvResult<()> {
        self.on_pool(name, "change the pool's autostart", |p| {
            p.set_autostart(on).map(drop)
        })
    }

    fn delete_pool_storage(&self, name: &str) -> HvResult<()> {
        self.on_pool(name, "delete the pool's storage", |p| p.delete(0))
    }

    fn undefine_pool(&self, name: &str) -> HvResult<()> {
        self.on_pool(name, "remove the pool's definition", |p| p.undefine())
    }

    fn network_statuses(&self) -> HvResult<Vec<NetworkStatus>> {
        let conn = self.conn()?;
        let mut nets = Vec::new();
        for n in conn
            .list_all_networks(0)
            .map_err(call("list the networks"))?
        {
            let xml = n.xml_desc(0).unwrap_or_default();
            nets.push(NetworkStatus {
                name: n.name().map_err(call("read a network's name"))?,
                uuid: n.uuid_string().unwrap_or_default(),
                active: n.is_active().unwrap_or(false),
                autostart: n.autostart().unwrap_or(false),
                persistent: n.is_persistent().unwrap_or(false),
                forward_mode: crate::domain::storage::parse_forward_mode(&xml),
                bridge: n.bridge_name().ok().filter(|b| !b.is_empty()),
            });
        }
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nets)
    }

    fn remove_network(&self, name: &str) -> HvResult<()> {
        let conn = self.conn()?;
        let net = conn
            .lookup_network_by_name(name)
            .map_err(|_| HypervisorError::NotFound {
                what: format!("network {name}"),
            })?;
        let was_active = net.is_active().unwrap_or(false);
        if was_active {
            net.destroy().map_err(call("stop the network"))?;
        }
        if net.is_persistent().unwrap_or(true) {
            if let Err(e) = net.undefine() {
                // Leave it as it was: running again, still defined.
                if was_active {
                    let _ = net.create();
                }
                return Err(call("remove the network's definition")(e));
            }
        }
        Ok(())
    }

    fn network_xml(&self, name: &str) -> HvResult<String> {
        lookup_network(&self.conn()?, name)?
            .xml_desc(0)
            .map_err(call("read the network's definition"))
    }

    fn define_network(&self, network_xml: &str) -> HvResult<()> {
        self.conn()?
            .define_network_xml(network_xml)
            .map(drop)
            .map_err(call("define the network"))
    }

    fn start_network(&self, name: &str) -> HvResult<()> {
        self.on_network(name, "start the network", |n| n.create())
    }

    fn stop_network(&self, name: &str) -> HvResult<()> {
        self.on_network(name, "stop the network", |n| n.destroy())
    }

    fn set_network_autostart(&self, name: &str, on: bool) -> HvResult<()> {
        self.on_network(name, "change the network's autostart", |n| {
            n.set_autostart(on)
        })
    }

    fn undefine_network(&self, name: &str) -> HvResult<()> {
        self.on_network(name, "remove the network's definition", |n| n.undefine())
    }

    fn pool_xml(&self, name: &str) -> HvResult<String> {
        lookup_pool(&self.conn()?, name)?
            .xml_desc(0)
            .map_err(call("read the pool's definition"))
    }

    // ---- usage ----

    fn usage_sample(&self) -> HvResult<crate::domain::usage::UsageSample> {
        stats::usage_sample(&self.conn()?)
    }

    // ---- volume contents ----

    fn resize_volume(&self, path: &str, capacity_bytes: u64, shrink: bool) -> HvResult<()> {
        volumes::resize(&self.conn()?, path, capacity_bytes, shrink)
    }

    fn volume_download_bytes(&self, path: &str) -> HvResult<u64> {
        volumes::download_bytes(&self.conn()?, path)
    }

    fn download_volume(
        &self,
        path: &str,
        length: u64,
        to: &mut dyn std::io::Write,
    ) -> HvResult<u64> {
        volumes::download(&self.conn()?, path, length, to)
    }

    fn upload_volume(&self, path: &str, length: u64, from: &mut dyn std::io::Read) -> HvResult<()> {
        volumes::upload(&self.conn()?, path, length, from)
    }

    // ---- templates ----

    fn volume_xml(&self, path: &str) -> HvResult<String> {
        volumes::xml(&self.conn()?, path)
    }

    fn live_domain_xml(&self, name: &str) -> HvResult<Option<String>> {
        let conn = self.conn()?;
        match lookup(&conn, name) {
            Ok(d) => d
                .xml_desc(0)
                .map(Some)
                .map_err(call("read a VM's live definition")),
            Err(HypervisorError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Libvirt {
    /// The VM, if it is running; consoles need a running VM.
    fn running_domain(&self, name: &str) -> Result<Domain, ConsoleError> {
        if is_test_uri(&self.uri) {
            return Err(ConsoleError::NotAvailable {
                reason: "libvirt's test driver (the demo host) has no real VNC or serial consoles"
                    .into(),
            });
        }
        let conn = self.conn()?;
        let dom = lookup(&conn, name)?;
        if !dom.is_active().unwrap_or(false) {
            return Err(ConsoleError::NotRunning {
                name: name.to_string(),
            });
        }
        Ok(dom)
    }
}

/// Everything the serial stream's callback asks for.
const SERIAL_EVENTS_ALL: virt::sys::virStreamEventType = virt::sys::VIR_STREAM_EVENT_READABLE
    | virt::sys::VIR_STREAM_EVENT_HANGUP
    | virt::sys::VIR_STREAM_EVENT_ERROR;
/// What it asks for while the channel to the proxy is full (no READABLE).
const SERIAL_EVENTS_PAUSED: virt::sys::virStreamEventType =
    virt::sys::VIR_STREAM_EVENT_HANGUP | virt::sys::VIR_STREAM_EVENT_ERROR;
/// A paused serial reader resumes once this many chunks of room are free.
const SERIAL_RESUME_AT_CHUNKS: usize = SERIAL_OUTPUT_CHUNKS / 2;

/// Shared by a serial stream's callback (event-loop thread) and its proxy.
struct SerialFlow {
    /// The callback stopped reading because the channel was full.
    paused: AtomicBool,
    /// Room left in the channel, without keeping it open.
    tx: tokio::sync::mpsc::WeakSender<Vec<u8>>,
}

/// One read from a non-blocking serial stream.
enum SerialRead {
    Data(usize),
    /// Nothing more for now (EAGAIN).
    Again,
    /// End of stream, or the stream failed.
    End,
}

/// What the serial stream's callback does when the stream is readable: reads chunks into
/// `tx` until the stream has nothing more or `tx` is full. When full, it stops asking for
/// READABLE (`interest(false)`; the callback must never block the event loop) and marks
/// the flow paused: [`resume_serial`] asks again once the proxy has made room. Returns
/// false when the stream ended or the proxy is gone.
fn read_serial(
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    flow: &SerialFlow,
    mut recv: impl FnMut(&mut [u8]) -> SerialRead,
    mut interest: impl FnMut(bool),
) -> bool {
    let mut buf = [0u8; SERIAL_CHUNK_MAX_BYTES];
    loop {
        if tx.capacity() == 0 {
            interest(false);
            flow.paused.store(true, Ordering::SeqCst);
            // The proxy may have made room before it could see the pause.
            if tx.capacity() >= SERIAL_RESUME_AT_CHUNKS && flow.paused.swap(false, Ordering::SeqCst)
            {
                interest(true);
                continue;
            }
            return true;
        }
        match recv(&mut buf) {
            SerialRead::Again => return true,
            // Room was checked above and only this callback sends: this fails only when
            // the proxy is gone.
            SerialRead::Data(n) => {
                if tx.try_send(buf[..n].to_vec()).is_err() {
                    return false;
                }
            }
            SerialRead::End => return false,
        }
    }
}

/// After the proxy took output: asks for READABLE again if the reader paused and there
/// is room for half the channel.
fn resume_serial(flow: &SerialFlow, interest: impl FnOnce(bool)) {
    if !flow.paused.load(Ordering::SeqCst) {
        return;
    }
    let room = flow.tx.upgrade().map_or(0, |t| t.capacity());
    if room >= SERIAL_RESUME_AT_CHUNKS && flow.paused.swap(false, Ordering::SeqCst) {
        interest(true);
    }
}

/// Input side of an attached serial console; dropping it detaches from libvirt.
struct LibvirtSerialInput {
    writer: Option<virt::stream::Stream>,
    reader: Option<Box<virt::stream::Stream>>,
    flow: Arc<SerialFlow>,
}

impl SerialInput for LibvirtSerialInput {
    fn write_all(&self, mut data: &[u8]) -> Result<(), ConsoleError> {
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !data.is_empty() {
            match writer.send(data) {
                Ok(n) if n > 0 => data = &data[n as usize..],
                // -2: the stream is full for now (non-blocking); try again shortly.
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Ok(_) => {
                    return Err(HypervisorError::Call {
                        operation: "write to the serial console",
                        message: "the console has not accepted input for 5 seconds".into(),
                    }
                    .into())
                }
                Err(e) => return Err(call("write to the serial console")(e).into()),
            }
        }
        Ok(())
    }

    fn output_taken(&self) {
        resume_serial(&self.flow, |_| {
            if let Some(w) = &self.writer {
                // The same libvirt stream as the reader's (a clone is a reference):
                // libvirt guards its event state with the stream's own lock.
                let _ = w.event_update_callback(SERIAL_EVENTS_ALL);
            }
        });
    }
}

fn lookup_snapshot(
    dom: &Domain,
    snapshot: &str,
) -> HvResult<virt::domain_snapshot::DomainSnapshot> {
    dom.list_all_snapshots(0)
        .map_err(call("list the snapshots"))?
        .into_iter()
        .find(|s| s.name().is_ok_and(|n| n == snapshot))
        .ok_or_else(|| HypervisorError::NotFound {
            what: format!("snapshot {snapshot}"),
        })
}

unsafe extern "C" fn lifecycle_event(
    _conn: virt::sys::virConnectPtr,
    dom: virt::sys::virDomainPtr,
    event: std::os::raw::c_int,
    _detail: std::os::raw::c_int,
    opaque: *mut std::os::raw::c_void,
) -> std::os::raw::c_int {
    if opaque.is_null() || dom.is_null() {
        return 0;
    }
    // SAFETY: libvirt passes back the opaque pointer registered in `watch_events`, alive
    // until `free_sink`; `dom` is valid for the duration of the callback.
    let sink = unsafe { &*(opaque as *const EventSink) };
    let name_ptr = unsafe { virt::sys::virDomainGetName(dom) };
    if name_ptr.is_null() {
        return 0;
    }
    let vm = unsafe { std::ffi::CStr::from_ptr(name_ptr) }
        .to_string_lossy()
        .into_owned();
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let event = VmEvent {
        vm,
        kind: VmEvent::kind_name(event).to_string(),
        at,
    };
    // A panic must not unwind into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink(event)));
    0
}

unsafe extern "C" fn free_sink(opaque: *mut std::os::raw::c_void) {
    if !opaque.is_null() {
        // SAFETY: the pointer came from Box::into_raw in `watch_events`.
        drop(unsafe { Box::from_raw(opaque as *mut EventSink) });
    }
}

impl Drop for LibvirtSerialInput {
    fn drop(&mut self) {
        let writer = self.writer.take();
        if let Some(r) = &self.reader {
            // SAFETY: the pointer is valid while `reader` lives; abort ends the console
            // session in libvirtd so that another client may attach.
            unsafe {
                virt::sys::virStreamAbort(r.as_ptr());
            }
        }
        quietly(move || drop(writer));
        if let Some(reader) = self.reader.take() {
            drop_on_event_loop(reader);
        }
    }
}

/// Runs `f`, containing a panic: virt's Drop impls panic when libvirt reports an error
/// (e.g. removing the callback of a stream that already hung up).
fn quietly(f: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
}

/// Drops a stream that carries an event callback on libvirt's event-loop thread, where
/// that callback runs: dropping it on another thread could free the callback while the
/// event loop is running it.
fn drop_on_event_loop(stream: Box<virt::stream::Stream>) {
    use std::os::raw::{c_int, c_void};
    type Slot = Option<Box<virt::stream::Stream>>;
    unsafe extern "C" fn fire(timer: c_int, opaque: *mut c_void) {
        // SAFETY: `opaque` is the Slot below, alive until `free` runs.
        unsafe {
            virt::sys::virEventRemoveTimeout(timer);
            let slot = &mut *(opaque as *mut Slot);
            if let Some(st) = slot.take() {
                quietly(move || drop(st));
            }
        }
    }
    unsafe extern "C" fn free(opaque: *mut c_void) {
        // SAFETY: libvirt calls this once, after the timeout is removed.
        let slot = unsafe { Box::from_raw(opaque as *mut Slot) };
        quietly(move || drop(slot));
    }
    let opaque = Box::into_raw(Box::new(Some(stream))) as *mut c_void;
    // SAFETY: `fire` and `free` match libvirt's callback types and own `opaque`.
    let id = unsafe { virt::sys::virEventAddTimeout(0, Some(fire), opaque, Some(free)) };
    if id < 0 {
        // No event loop: nothing can be running the callback, drop it here.
        // SAFETY: libvirt did not take `opaque`.
        let slot = unsafe { Box::from_raw(opaque as *mut Slot) };
        quietly(move || drop(slot));
    }
}

fn lookup_pool(conn: &Connect, name: &str) -> HvResult<StoragePool> {
    conn.lookup_storage_pool_by_name(name).map_err(|e| {
        if e.code().is(virt::error::ErrorNumber::NoStoragePool) {
            HypervisorError::NotFound {
                what: format!("storage pool {name}"),
            }
        } else {
            call("look up a storage pool")(e)
        }
    })
}

fn pool_status(pool: &StoragePool) -> HvResult<PoolStatus> {
    let info = pool.info().map_err(call("read a pool's capacity"))?;
    let active = pool.is_active().unwrap_or(false);
    let facts = crate::domain::storage::parse_pool_xml(&pool.xml_desc(0).unwrap_or_default());
    Ok(PoolStatus {
        name: pool.name().map_err(call("read a pool's name"))?,
        uuid: pool.uuid_string().unwrap_or_default(),
        active,
        autostart: pool.autostart().unwrap_or(false),
        persistent: pool.is_persistent().unwrap_or(false),
        capacity_bytes: info.capacity,
        allocation_bytes: info.allocation,
        available_bytes: info.available,
        volume_count: if active {
            pool.num_of_volumes().unwrap_or(0) as usize
        } else {
            0
        },
        source: facts.source_summary(),
        target_path: facts.target_path,
        kind: facts.kind,
    })
}

fn lookup_network(conn: &Connect, name: &str) -> HvResult<Network> {
    conn.lookup_network_by_name(name).map_err(|e| {
        if e.code().is(virt::error::ErrorNumber::NoNetwork) {
            HypervisorError::NotFound {
                what: format!("network {name}"),
            }
        } else {
            call("look up a network")(e)
        }
    })
}

impl Libvirt {
    /// Runs one call on the named pool.
    fn on_pool(
        &self,
        name: &str,
        operation: &'static str,
        f: impl FnOnce(&StoragePool) -> Result<(), virt::error::Error>,
    ) -> HvResult<()> {
        f(&lookup_pool(&self.conn()?, name)?).map_err(call(operation))
    }

    /// Runs one call on the named network.
    fn on_network(
        &self,
        name: &str,
        operation: &'static str,
        f: impl FnOnce(&Network) -> Result<(), virt::error::Error>,
    ) -> HvResult<()> {
        f(&lookup_network(&self.conn()?, name)?).map_err(call(operation))
    }
}

mod stats;

/// The guest's interface addresses from one source (DHCP leases, ARP), empty when libvirt
/// cannot tell. `virt`'s `Domain::interface_addresses` leaks each interface record (it
/// never calls `virDomainInterfaceFree`), which adds up when the VM list asks for every
/// running VM on every request, so this calls libvirt directly and frees everything.
fn interface_addresses(dom: &Domain, source: u32) -> Vec<GuestAddress> {
    use std::ffi::CStr;
    let mut ifaces: *mut virt::sys::virDomainInterfacePtr = std::ptr::null_mut();
    // SAFETY: `dom` is a live domain handle; on success libvirt stores an array of `n`
    // interface records in `ifaces`, which we own and free below.
    let n = unsafe { virt::sys::virDomainInterfaceAddresses(dom.as_ptr(), &mut ifaces, source, 0) };
    if n < 0 || ifaces.is_null() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for i in 0..n as usize {
        // SAFETY: `i < n`, so the record pointer is valid until freed; its strings and
        // address array are owned by the record and only read here.
        unsafe {
            let iface = *ifaces.add(i);
            if iface.is_null() {
                continue;
            }
            let mac = (!(*iface).hwaddr.is_null()).then(|| {
                CStr::from_ptr((*iface).hwaddr)
                    .to_string_lossy()
                    .to_ascii_lowercase()
            });
            for a in 0..(*iface).naddrs as usize {
                let addr = (*iface).addrs.add(a);
                if (*addr).addr.is_null() {
                    continue;
                }
                found.push(GuestAddress {
                    mac: mac.clone(),
                    address: CStr::from_ptr((*addr).addr).to_string_lossy().into_owned(),
                    prefix: (*addr).prefix,
                });
            }
            virt::sys::virDomainInterfaceFree(iface);
        }
    }
    // SAFETY: the array itself was allocated by libvirt with malloc; its records are freed.
    unsafe { libc::free(ifaces as *mut libc::c_void) };
    found
}
mod volumes;

/// A job's type, bytes processed and total, and error message (virDomainGetJobStats).
struct JobStatsRaw {
    kind: i32,
    processed: Option<u64>,
    total: Option<u64>,
    error: Option<String>,
}

/// virDomainGetJobStats read directly: `virt`'s wrapper does not cope with a job that
/// has no parameters.
fn job_stats(dom: &Domain, flags: u32) -> HvResult<JobStatsRaw> {
    let mut kind: libc::c_int = 0;
    let mut params: virt::sys::virTypedParameterPtr = std::ptr::null_mut();
    let mut n: libc::c_int = 0;
    // SAFETY: valid domain pointer; libvirt allocates `params` (n entries), freed below.
    let r = unsafe {
        virt::sys::virDomainGetJobStats(dom.as_ptr(), &mut kind, &mut params, &mut n, flags)
    };
    if r < 0 {
        return Err(call("read the VM's job")(virt::error::Error::last_error()));
    }
    let ull = |key: &std::ffi::CStr| {
        let mut v: libc::c_ulonglong = 0;
        // SAFETY: `params` holds `n` entries (or is null with n = 0); `key` is a C string.
        let found = !params.is_null()
            && unsafe { virt::sys::virTypedParamsGetULLong(params, n, key.as_ptr(), &mut v) } == 1;
        found.then_some(v)
    };
    let processed = ull(c"data_processed");
    let total = ull(c"data_total");
    let mut msg: *const libc::c_char = std::ptr::null();
    // SAFETY: as above; the string is copied before the parameters are freed.
    let error = unsafe {
        (!params.is_null()
            && virt::sys::virTypedParamsGetString(params, n, c"errmsg".as_ptr(), &mut msg) == 1
            && !msg.is_null())
        .then(|| std::ffi::CStr::from_ptr(msg).to_string_lossy().into_owned())
    };
    if !params.is_null() {
        // SAFETY: the parameters came from libvirt and are not used after this.
        unsafe { virt::sys::virTypedParamsFree(params, n) };
    }
    Ok(JobStatsRaw {
        kind,
        processed,
        total,
        error,
    })
}

#[cfg(test)]
mod migrate_flag_tests {
    use super::*;
    use virt::sys;

    #[test]
    fn moves_are_peer_to_peer_persisted_there_and_undefined_here() {
        let base = sys::VIR_MIGRATE_PEER2PEER
            | sys::VIR_MIGRATE_PERSIST_DEST
            | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
        let live = MigrateOptions {
            live: true,
            ..Default::default()
        };
        assert_eq!(migrate_flags(&live), base | sys::VIR_MIGRATE_LIVE);
        let copying = MigrateOptions {
            live: true,
            copy_disks: vec!["vda".into()],
            tls: true,
            ..Default::default()
        };
        assert_eq!(
            migrate_flags(&copying),
            base | sys::VIR_MIGRATE_LIVE | sys::VIR_MIGRATE_NON_SHARED_DISK | sys::VIR_MIGRATE_TLS
        );
        // A shut-off VM moves its definition only: no live, copy or TLS flags.
        let offline = MigrateOptions {
            offline: true,
            live: true,
            copy_disks: vec!["vda".into()],
            tls: true,
            ..Default::default()
        };
        assert_eq!(migrate_flags(&offline), base | sys::VIR_MIGRATE_OFFLINE);
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    #[test]
    fn a_vm_undefined_while_the_host_is_listed_is_left_out_not_an_error() {
        let err = |code| -> HvResult<u32> {
            Err(HypervisorError::Libvirt {
                operation: "read a VM's info",
                code,
                message: String::new(),
            })
        };
        assert!(still_there(
            virt::sys::VIR_ERR_NO_DOMAIN,
            err(virt::sys::VIR_ERR_NO_DOMAIN)
        )
        .is_none());
        assert!(matches!(
            still_there(
                virt::sys::VIR_ERR_NO_DOMAIN,
                err(virt::sys::VIR_ERR_INTERNAL_ERROR)
            ),
            Some(Err(_))
        ));
        assert!(matches!(
            still_there(virt::sys::VIR_ERR_NO_DOMAIN, Ok(7)),
            Some(Ok(7))
        ));
    }
}

#[cfg(test)]
mod serial_tests {
    use super::*;

    #[tokio::test]
    async fn serial_output_is_bounded_and_reading_resumes_when_drained() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(SERIAL_OUTPUT_CHUNKS);
        let flow = SerialFlow {
            paused: AtomicBool::new(false),
            tx: tx.downgrade(),
        };
        // A guest that never stops printing (`yes`).
        let mut reads = 0usize;
        let mut readable = Vec::new();
        let open = read_serial(
            &tx,
            &flow,
            |buf| {
                reads += 1;
                buf[..4].copy_from_slice(b"y\r\ny");
                SerialRead::Data(SERIAL_CHUNK_MAX_BYTES)
            },
            |r| readable.push(r),
        );
        assert!(open);
        assert_eq!(
            reads, SERIAL_OUTPUT_CHUNKS,
            "stops reading when the channel is full"
        );
        assert_eq!(readable, [false], "and stops asking libvirt for READABLE");
        assert!(flow.paused.load(Ordering::SeqCst));
        // The proxy takes a few chunks: not enough room yet.
        let mut resumed = false;
        for _ in 0..SERIAL_RESUME_AT_CHUNKS - 1 {
            rx.recv().await.unwrap();
            resume_serial(&flow, |_| resumed = true);
        }
        assert!(!resumed);
        rx.recv().await.unwrap();
        resume_serial(&flow, |r| resumed = r);
        assert!(resumed, "half the channel free: reading resumes");
        assert!(!flow.paused.load(Ordering::SeqCst));
        resume_serial(&flow, |_| panic!("resumed twice"));
        // A proxy that went away ends the reader.
        drop(rx);
        assert!(!read_serial(&tx, &flow, |_| SerialRead::Data(1), |_| {}));
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    /// libvirt's refusal keeps its error number: the test driver refuses to resume a
    /// domain that runs with VIR_ERR_INTERNAL_ERROR (1), "domain 'test' not paused".
    #[test]
    fn a_refusal_keeps_libvirts_error_number() {
        let hv = Libvirt::open("test:///default", KvmStatus::NotApplicable).expect("test driver");
        let e = hv
            .act("test", VmAction::Resume)
            .expect_err("the test domain runs; resume is refused");
        assert_eq!(e.libvirt_code(), Some(1), "{e}");
        assert!(e.to_string().contains("libvirt error 1)"), "{e}");
        assert!(
            e.to_string().contains("not paused"),
            "libvirt's own text: {e}"
        );
    }
}

/// A metadata change goes to the definition (a persistent VM) and the running VM.
fn metadata_flags(dom: &Domain) -> u32 {
    let mut flags = 0;
    if dom.is_persistent().unwrap_or(true) {
        flags |= virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
    }
    if dom.is_active().unwrap_or(false) {
        flags |= virt::sys::VIR_DOMAIN_AFFECT_LIVE;
    }
    flags
}
