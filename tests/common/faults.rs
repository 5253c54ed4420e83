//! A hypervisor that passes every call to the real one, except one step that fails, the
//! way libvirt would fail it. Used to prove that a failed create leaves nothing behind.
//! Every method of the trait forwards to the wrapped hypervisor (the trait has no default
//! bodies, so none can be skipped by accident).

use std::sync::Arc;
use virtdeck::domain::host::{HostFacts, KvmStatus};
use virtdeck::domain::inventory::{NetworkInfo, PoolInfo};
use virtdeck::domain::snapshot::SnapshotInfo;
use virtdeck::domain::storage::{NetworkStatus, PoolStatus, PoolVolume};
use virtdeck::domain::vm::{GuestAddress, VmAction, VmSummary};
use virtdeck::hypervisor::{
    ConsoleError, EventSink, HvResult, Hypervisor, HypervisorError, LiveChange, MigrateOptions,
    MigrationProgress, Screenshot, SerialConsole, VncEndpoint,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    CreateVolume,
    Define,
    Autostart,
    Start,
    CloneVolume,
    SetSize,
    /// Fails the second volume copy of a clone, after the first succeeded.
    SecondCloneVolume,
    BuildPool,
    StartPool,
    PoolAutostart,
    /// Fails creating a volume with a backing store (a linked clone's overlay) only.
    CreateOverlay,
    /// Holds every volume copy at the gate until the test opens it (fails nothing).
    HoldCloneVolume,
    /// Holds every volume create at the gate until the test opens it (fails nothing).
    HoldCreateVolume,
    /// Fails starting a libvirt network (after its define).
    StartNetwork,
    /// Fails turning a libvirt network's autostart on or off.
    NetworkAutostart,
    /// Fails the migration itself (libvirt refused or the destination went away).
    Migrate,
    /// Fails writing a VM's notes (after its tags were written).
    SetDescription,
    /// Fails plugging a device (a disk or NIC) into a running VM.
    AttachDevice,
}

/// Where a held step waits until the test opens it; counts the calls that arrived.
#[derive(Default)]
pub struct Gate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    pub arrived: std::sync::atomic::AtomicUsize,
}

impl Gate {
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn pass(&self) {
        self.arrived
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }
}

pub struct FailAt {
    pub inner: Arc<dyn Hypervisor>,
    pub step: Step,
    pub clones: std::sync::atomic::AtomicUsize,
    /// Where the `Hold…` steps wait.
    pub gate: Arc<Gate>,
}

impl FailAt {
    pub fn new(inner: Arc<dyn Hypervisor>, step: Step) -> FailAt {
        FailAt::holding(inner, step, Arc::default())
    }

    /// A hypervisor whose `step` (one of the `Hold…` steps) waits at `gate`.
    pub fn holding(inner: Arc<dyn Hypervisor>, step: Step, gate: Arc<Gate>) -> FailAt {
        FailAt {
            inner,
            step,
            clones: std::sync::atomic::AtomicUsize::new(0),
            gate,
        }
    }
}

fn injected(operation: &'static str) -> HypervisorError {
    HypervisorError::Call {
        operation,
        message: "injected failure for the test".into(),
    }
}

impl Hypervisor for FailAt {
    fn uri(&self) -> &str {
        self.inner.uri()
    }
    fn host_facts(&self) -> HvResult<HostFacts> {
        self.inner.host_facts()
    }
    fn kvm_status(&self) -> KvmStatus {
        self.inner.kvm_status()
    }
    fn guest_capabilities(
        &self,
        virt_type: virtdeck::domain::host::VirtType,
    ) -> HvResult<virtdeck::domain::guest_caps::GuestCapabilities> {
        self.inner.guest_capabilities(virt_type)
    }
    fn list_vms(&self) -> HvResult<Vec<VmSummary>> {
        self.inner.list_vms()
    }
    fn pools(&self) -> HvResult<Vec<PoolInfo>> {
        self.inner.pools()
    }
    fn networks(&self) -> HvResult<Vec<NetworkInfo>> {
        self.inner.networks()
    }
    fn domain_xml(&self, name: &str) -> HvResult<String> {
        self.inner.domain_xml(name)
    }
    fn all_domain_xml(&self) -> HvResult<Vec<String>> {
        self.inner.all_domain_xml()
    }
    fn create_volume(&self, pool: &str, xml: &str) -> HvResult<String> {
        if self.step == Step::CreateVolume
            || (self.step == Step::CreateOverlay && xml.contains("<backingStore>"))
        {
            return Err(injected("create the disk volume"));
        }
        if self.step == Step::HoldCreateVolume {
            self.gate.pass();
        }
        self.inner.create_volume(pool, xml)
    }
    fn delete_volume(&self, path: &str) -> HvResult<()> {
        self.inner.delete_volume(path)
    }
    fn define(&self, xml: &str) -> HvResult<()> {
        if self.step == Step::Define {
            return Err(injected("define the VM"));
        }
        self.inner.define(xml)
    }
    fn undefine(&self, name: &str) -> HvResult<()> {
        self.inner.undefine(name)
    }
    fn act(&self, name: &str, action: VmAction) -> HvResult<()> {
        if self.step == Step::Start && action == VmAction::Start {
            return Err(injected("start the VM"));
        }
        self.inner.act(name, action)
    }
    fn set_autostart(&self, name: &str, on: bool) -> HvResult<()> {
        if self.step == Step::Autostart {
            return Err(injected("change autostart"));
        }
        self.inner.set_autostart(name, on)
    }
    fn set_vm_metadata(&self, name: &str, element_xml: Option<&str>) -> HvResult<()> {
        self.inner.set_vm_metadata(name, element_xml)
    }
    fn grow_disk(&self, name: &str, target: &str, bytes: u64) -> HvResult<()> {
        self.inner.grow_disk(name, target, bytes)
    }
    fn update_device(&self, name: &str, device_xml: &str) -> HvResult<()> {
        self.inner.update_device(name, device_xml)
    }
    fn backup_begin(&self, name: &str, backup_xml: &str, checkpoint_xml: &str) -> HvResult<()> {
        self.inner.backup_begin(name, backup_xml, checkpoint_xml)
    }
    fn backup_status(&self, name: &str) -> HvResult<virtdeck::hypervisor::BackupStatus> {
        self.inner.backup_status(name)
    }
    fn freeze_filesystems(&self, name: &str) -> HvResult<u32> {
        self.inner.freeze_filesystems(name)
    }
    fn thaw_filesystems(&self, name: &str) -> HvResult<()> {
        self.inner.thaw_filesystems(name)
    }
    fn abort_backup(&self, name: &str) -> HvResult<()> {
        self.inner.abort_backup(name)
    }
    fn checkpoints(&self, name: &str) -> HvResult<Vec<String>> {
        self.inner.checkpoints(name)
    }
    fn delete_checkpoint(&self, name: &str, checkpoint: &str) -> HvResult<()> {
        self.inner.delete_checkpoint(name, checkpoint)
    }
    fn host_devices(&self) -> HvResult<Vec<virtdeck::domain::host_devices::HostDevice>> {
        self.inner.host_devices()
    }
    fn change_device_live(&self, name: &str, change: LiveChange, device_xml: &str) -> HvResult<()> {
        if self.step == Step::AttachDevice && change == LiveChange::Attach {
            return Err(injected("plug a device into the VM"));
        }
        self.inner.change_device_live(name, change, device_xml)
    }
    fn set_description(&self, name: &str, text: &str) -> HvResult<()> {
        if self.step == Step::SetDescription {
            return Err(injected("change the VM's notes"));
        }
        self.inner.set_description(name, text)
    }
    fn set_size(&self, name: &str, vcpus: u32, memory_mib: u64) -> HvResult<()> {
        if self.step == Step::SetSize {
            return Err(injected("change the vCPUs"));
        }
        self.inner.set_size(name, vcpus, memory_mib)
    }
    fn clone_volume(&self, source_path: &str, xml: &str) -> HvResult<String> {
        let n = self
            .clones
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.step == Step::CloneVolume || (self.step == Step::SecondCloneVolume && n == 1) {
            return Err(injected("copy the disk volume"));
        }
        if self.step == Step::HoldCloneVolume {
            self.gate.pass();
        }
        self.inner.clone_volume(source_path, xml)
    }
    fn snapshots(&self, name: &str) -> HvResult<Vec<SnapshotInfo>> {
        self.inner.snapshots(name)
    }
    fn create_snapshot(&self, name: &str, xml: &str) -> HvResult<()> {
        self.inner.create_snapshot(name, xml)
    }
    fn revert_snapshot(&self, name: &str, snapshot: &str) -> HvResult<()> {
        self.inner.revert_snapshot(name, snapshot)
    }
    fn delete_snapshot(&self, name: &str, snapshot: &str) -> HvResult<()> {
        self.inner.delete_snapshot(name, snapshot)
    }
    fn guest_addresses(&self, name: &str) -> HvResult<Vec<GuestAddress>> {
        self.inner.guest_addresses(name)
    }
    fn start_transient(&self, xml: &str) -> HvResult<()> {
        if self.step == Step::Start {
            return Err(injected("boot the installer"));
        }
        self.inner.start_transient(xml)
    }
    fn watch_events(&self, sink: EventSink) -> HvResult<()> {
        self.inner.watch_events(sink)
    }
    // ---- storage pools and libvirt networks ----
    fn pool_statuses(&self) -> HvResult<Vec<PoolStatus>> {
        self.inner.pool_statuses()
    }
    fn pool_volumes(&self, pool: &str) -> HvResult<Vec<PoolVolume>> {
        self.inner.pool_volumes(pool)
    }
    fn define_pool(&self, xml: &str) -> HvResult<()> {
        self.inner.define_pool(xml)
    }
    fn build_pool(&self, name: &str) -> HvResult<()> {
        if self.step == Step::BuildPool {
            return Err(injected("build the pool"));
        }
        self.inner.build_pool(name)
    }
    fn start_pool(&self, name: &str) -> HvResult<()> {
        if self.step == Step::StartPool {
            return Err(injected("start the pool"));
        }
        self.inner.start_pool(name)
    }
    fn stop_pool(&self, name: &str) -> HvResult<()> {
        self.inner.stop_pool(name)
    }
    fn refresh_pool(&self, name: &str) -> HvResult<()> {
        self.inner.refresh_pool(name)
    }
    fn set_pool_autostart(&self, name: &str, on: bool) -> HvResult<()> {
        if self.step == Step::PoolAutostart {
            return Err(injected("change the pool's autostart"));
        }
        self.inner.set_pool_autostart(name, on)
    }
    fn delete_pool_storage(&self, name: &str) -> HvResult<()> {
        self.inner.delete_pool_storage(name)
    }
    fn undefine_pool(&self, name: &str) -> HvResult<()> {
        self.inner.undefine_pool(name)
    }
    fn network_statuses(&self) -> HvResult<Vec<NetworkStatus>> {
        self.inner.network_statuses()
    }
    fn remove_network(&self, name: &str) -> HvResult<()> {
        self.inner.remove_network(name)
    }
    fn pool_xml(&self, name: &str) -> HvResult<String> {
        self.inner.pool_xml(name)
    }
    fn network_xml(&self, name: &str) -> HvResult<String> {
        self.inner.network_xml(name)
    }
    fn define_network(&self, xml: &str) -> HvResult<()> {
        self.inner.define_network(xml)
    }
    fn start_network(&self, name: &str) -> HvResult<()> {
        if self.step == Step::StartNetwork {
            return Err(injected("start the network"));
        }
        self.inner.start_network(name)
    }
    fn stop_network(&self, name: &str) -> HvResult<()> {
        self.inner.stop_network(name)
    }
    fn set_network_autostart(&self, name: &str, on: bool) -> HvResult<()> {
        if self.step == Step::NetworkAutostart {
            return Err(injected("change the network's autostart"));
        }
        self.inner.set_network_autostart(name, on)
    }
    fn undefine_network(&self, name: &str) -> HvResult<()> {
        self.inner.undefine_network(name)
    }
    // ---- consoles ----
    fn vnc_endpoint(&self, name: &str) -> Result<VncEndpoint, ConsoleError> {
        self.inner.vnc_endpoint(name)
    }
    fn open_serial(&self, name: &str, force: bool) -> Result<SerialConsole, ConsoleError> {
        self.inner.open_serial(name, force)
    }
    fn screenshot(&self, name: &str) -> Result<Screenshot, ConsoleError> {
        self.inner.screenshot(name)
    }
    // ---- usage ----
    fn usage_sample(&self) -> HvResult<virtdeck::domain::usage::UsageSample> {
        self.inner.usage_sample()
    }
    // ---- volume contents ----
    fn resize_volume(&self, path: &str, capacity_bytes: u64, shrink: bool) -> HvResult<()> {
        self.inner.resize_volume(path, capacity_bytes, shrink)
    }
    fn volume_download_bytes(&self, path: &str) -> HvResult<u64> {
        self.inner.volume_download_bytes(path)
    }
    fn download_volume(
        &self,
        path: &str,
        length: u64,
        to: &mut dyn std::io::Write,
    ) -> HvResult<u64> {
        self.inner.download_volume(path, length, to)
    }
    fn upload_volume(&self, path: &str, length: u64, from: &mut dyn std::io::Read) -> HvResult<()> {
        self.inner.upload_volume(path, length, from)
    }
    // ---- templates and kickstarts ----
    fn volume_xml(&self, path: &str) -> HvResult<String> {
        self.inner.volume_xml(path)
    }
    fn live_domain_xml(&self, name: &str) -> HvResult<Option<String>> {
        self.inner.live_domain_xml(name)
    }
    // ---- migration ----
    fn machine_types(&self) -> HvResult<Vec<String>> {
        self.inner.machine_types()
    }
    fn migrate(&self, name: &str, dest_uri: &str, options: &MigrateOptions) -> HvResult<()> {
        if self.step == Step::Migrate {
            return Err(injected("migrate the VM"));
        }
        self.inner.migrate(name, dest_uri, options)
    }
    fn migration_progress(&self, name: &str) -> HvResult<Option<MigrationProgress>> {
        self.inner.migration_progress(name)
    }
    fn abort_migration(&self, name: &str) -> HvResult<()> {
        self.inner.abort_migration(name)
    }
    fn cpu_runs_here(&self, cpu_xml: &str, domain_type: &str) -> HvResult<Option<bool>> {
        self.inner.cpu_runs_here(cpu_xml, domain_type)
    }
}
