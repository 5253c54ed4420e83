//! The hypervisor port: what virtdeck asks of libvirt, as a trait, and its libvirt
//! implementation (the only module that imports `virt`).

use crate::domain::guest_caps::GuestCapabilities;
use crate::domain::host::{HostFacts, KvmStatus, VirtType};
use crate::domain::inventory::{NetworkInfo, PoolInfo};
use crate::domain::snapshot::SnapshotInfo;
use crate::domain::storage::{NetworkStatus, PoolStatus, PoolVolume};
use crate::domain::vm::{GuestAddress, VmAction, VmEvent, VmSummary};
use std::sync::Arc;

/// Where VM lifecycle events go; called on libvirt's event thread, so it must be quick.
pub type EventSink = Arc<dyn Fn(VmEvent) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// libvirt could not be reached at all.
    #[error("cannot connect to libvirt at {uri}: {message}")]
    Connect { uri: String, message: String },
    /// The named object does not exist (any more).
    #[error("{what} not found")]
    NotFound { what: String },
    /// A step around a libvirt call failed (a definition that cannot be read back, a
    /// broken lock); `message` says what.
    #[error("libvirt {operation} failed: {message}")]
    Call {
        operation: &'static str,
        message: String,
    },
    /// libvirt refused a call: its error number (`virErrorNumber`, e.g. 55 for an
    /// operation invalid in the domain's state) and its own text, kept for the log and
    /// for callers that act on the reason.
    #[error("libvirt {operation} failed (libvirt error {code}): {message}")]
    Libvirt {
        operation: &'static str,
        code: u32,
        message: String,
    },
}

impl HypervisorError {
    /// A sentence for the admin: what went wrong and what to do.
    pub fn user_message(&self) -> String {
        match self {
            HypervisorError::Connect { uri, message } => format!(
                "virtdeck cannot reach libvirt at {uri} ({message}). Check that libvirtd is running \
                 and that virtdeck may use its socket."
            ),
            HypervisorError::NotFound { what } => format!("{what} does not exist (any more)."),
            HypervisorError::Call { operation, message }
            | HypervisorError::Libvirt {
                operation, message, ..
            } => {
                format!("libvirt refused to {operation}: {message}")
            }
        }
    }

    /// libvirt's error number, when libvirt refused the call.
    pub fn libvirt_code(&self) -> Option<u32> {
        match self {
            HypervisorError::Libvirt { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type HvResult<T> = Result<T, HypervisorError>;

/// Everything virtdeck needs from a hypervisor. Blocking calls: run them off the
/// async runtime.
///
/// No method has a default body, on purpose: every implementation answers every method
/// itself. A wrapper (the fault-injecting hypervisor of the tests, the bench's) that
/// inherited a default would silently stop forwarding to the hypervisor it wraps, and a
/// test could pass while the real path was never exercised; without defaults, a method
/// added here does not compile until every implementation has said what it does. A
/// hypervisor that lacks a part answers explicitly with [`consoles_not_available`],
/// [`storage_not_available`] or [`usage_not_available`]; [`live_domain_xml_from_all`]
/// composes `live_domain_xml` from `all_domain_xml`. (A unit test keeps bodies out of
/// this block.)
pub trait Hypervisor: Send + Sync {
    /// The connection URI, e.g. `qemu:///system` or `test:///…/demo-host.xml`.
    fn uri(&self) -> &str;
    fn host_facts(&self) -> HvResult<HostFacts>;
    /// KVM usability as found at start-up.
    fn kvm_status(&self) -> KvmStatus;
    /// The firmware, TPM and CPU models this host can give a guest of `virt_type`
    /// (libvirt's domain capabilities for the q35 machine).
    fn guest_capabilities(&self, virt_type: VirtType) -> HvResult<GuestCapabilities>;
    fn list_vms(&self) -> HvResult<Vec<VmSummary>>;
    /// Storage pools with their volumes.
    fn pools(&self) -> HvResult<Vec<PoolInfo>>;
    fn networks(&self) -> HvResult<Vec<NetworkInfo>>;
    /// The inactive (persistent) definition of a VM; `NotFound` if there is none.
    fn domain_xml(&self, name: &str) -> HvResult<String>;
    /// The definitions of every VM, for MACs and disks in use.
    fn all_domain_xml(&self) -> HvResult<Vec<String>>;
    /// Creates a volume in a pool from volume XML; returns its path.
    fn create_volume(&self, pool: &str, volume_xml: &str) -> HvResult<String>;
    /// Deletes the volume at `path`.
    fn delete_volume(&self, path: &str) -> HvResult<()>;
    /// Defines (persistently) a VM from domain XML.
    fn define(&self, domain_xml: &str) -> HvResult<()>;
    /// Removes a VM's definition (with its snapshot metadata and NVRAM), stopping it first.
    fn undefine(&self, name: &str) -> HvResult<()>;
    fn act(&self, name: &str, action: VmAction) -> HvResult<()>;
    fn set_autostart(&self, name: &str, on: bool) -> HvResult<()>;
    /// Replaces virtdeck's element under `<metadata>` (`None` removes it) in the VM's
    /// definition and, while it runs, live.
    fn set_vm_metadata(&self, name: &str, element_xml: Option<&str>) -> HvResult<()>;
    /// Replaces the VM's `<description>` likewise.
    fn set_description(&self, name: &str, text: &str) -> HvResult<()>;
    /// Grows a running VM's disk `target` to `bytes` (virDomainBlockResize): the guest
    /// sees the new size at once.
    fn grow_disk(&self, name: &str, target: &str, bytes: u64) -> HvResult<()>;
    /// Changes a device in place (a CD-ROM's medium), in the definition and, while the
    /// VM runs, live (virDomainUpdateDeviceFlags).
    fn update_device(&self, name: &str, device_xml: &str) -> HvResult<()>;
    /// Plugs a device (a disk, a NIC, a controller) into the running VM, takes one out
    /// (the guest may let go of it after this returns) or changes one (a NIC's link):
    /// live only. The definition is changed through [`Hypervisor::define`].
    fn change_device_live(&self, name: &str, change: LiveChange, device_xml: &str) -> HvResult<()>;
    // ---- backups (without them: [`storage_not_available`]) ----
    /// Starts a push-mode backup of the running VM (virDomainBackupBegin) with a new
    /// checkpoint; returns at once, the copy runs as the VM's job.
    fn backup_begin(&self, name: &str, backup_xml: &str, checkpoint_xml: &str) -> HvResult<()>;
    /// How the VM's backup job is doing, or how the last one ended.
    fn backup_status(&self, name: &str) -> HvResult<BackupStatus>;
    /// Freezes the guest's file systems through its guest agent (virDomainFSFreeze);
    /// the number frozen.
    fn freeze_filesystems(&self, name: &str) -> HvResult<u32>;
    /// Thaws them again (virDomainFSThaw).
    fn thaw_filesystems(&self, name: &str) -> HvResult<()>;
    /// Stops the VM's running backup job.
    fn abort_backup(&self, name: &str) -> HvResult<()>;
    /// The names of the VM's checkpoints.
    fn checkpoints(&self, name: &str) -> HvResult<Vec<String>>;
    /// Deletes a checkpoint (its change bitmap is merged into the one before it).
    fn delete_checkpoint(&self, name: &str, checkpoint: &str) -> HvResult<()>;
    /// The host's PCI and USB devices (libvirt's node devices).
    fn host_devices(&self) -> HvResult<Vec<crate::domain::host_devices::HostDevice>>;
    /// Changes the vCPUs and memory in a shut-off VM's definition.
    fn set_size(&self, name: &str, vcpus: u32, memory_mib: u64) -> HvResult<()>;
    /// Copies the volume at `source_path` into a new volume of the same pool, described
    /// by `volume_xml`; returns the copy's path.
    fn clone_volume(&self, source_path: &str, volume_xml: &str) -> HvResult<String>;
    /// A VM's snapshots, oldest first.
    fn snapshots(&self, name: &str) -> HvResult<Vec<SnapshotInfo>>;
    fn create_snapshot(&self, name: &str, snapshot_xml: &str) -> HvResult<()>;
    fn revert_snapshot(&self, name: &str, snapshot: &str) -> HvResult<()>;
    fn delete_snapshot(&self, name: &str, snapshot: &str) -> HvResult<()>;
    /// A running VM's IP addresses as libvirt knows them (DHCP leases, else ARP).
    fn guest_addresses(&self, name: &str) -> HvResult<Vec<GuestAddress>>;
    /// Boots a defined VM once from other XML (an installer kernel) without changing
    /// its definition: the next boot uses the definition again.
    fn start_transient(&self, domain_xml: &str) -> HvResult<()>;
    /// Sends every VM lifecycle event to `sink` from now on.
    fn watch_events(&self, sink: EventSink) -> HvResult<()>;

    // ---- libvirt networks: creating and running them ----
    /// A network's definition as libvirt keeps it (its `<ip>` subnets, DHCP ranges).
    fn network_xml(&self, name: &str) -> HvResult<String>;
    /// Defines (persistently, not started) a network from network XML.
    fn define_network(&self, network_xml: &str) -> HvResult<()>;
    /// Starts a defined network (its bridge, NAT rules, dnsmasq).
    fn start_network(&self, name: &str) -> HvResult<()>;
    /// Stops a running network (libvirt's destroy); its definition stays.
    fn stop_network(&self, name: &str) -> HvResult<()>;
    fn set_network_autostart(&self, name: &str, on: bool) -> HvResult<()>;
    /// Removes a stopped network's definition.
    fn undefine_network(&self, name: &str) -> HvResult<()>;

    // ---- consoles (keep at the end) ----
    /// Where the running VM's VNC server listens (from its live definition).
    /// A hypervisor without consoles answers [`consoles_not_available`].
    fn vnc_endpoint(&self, name: &str) -> Result<VncEndpoint, ConsoleError>;
    /// Attaches to the VM's serial console through libvirt (virDomainOpenConsole).
    /// `force` takes the console over from whoever holds it.
    fn open_serial(&self, name: &str, force: bool) -> Result<SerialConsole, ConsoleError>;
    /// A screenshot of the VM's first screen: PNG (QEMU ≥ 7) or PPM bytes.
    fn screenshot(&self, name: &str) -> Result<Screenshot, ConsoleError>;

    // ---- storage pools and libvirt networks (a hypervisor without them answers
    // [`storage_not_available`]) ----
    /// Every storage pool with its state, autostart flag, capacity and source.
    fn pool_statuses(&self) -> HvResult<Vec<PoolStatus>>;
    /// The volumes of a running pool, with their format.
    fn pool_volumes(&self, pool: &str) -> HvResult<Vec<PoolVolume>>;
    /// Defines (persistently, not started) a pool from pool XML.
    fn define_pool(&self, pool_xml: &str) -> HvResult<()>;
    /// Makes the pool's storage: the directory or mount point, or the volume group.
    fn build_pool(&self, name: &str) -> HvResult<()>;
    fn start_pool(&self, name: &str) -> HvResult<()>;
    fn stop_pool(&self, name: &str) -> HvResult<()>;
    /// Re-reads the pool's volumes and sizes from its storage.
    fn refresh_pool(&self, name: &str) -> HvResult<()>;
    fn set_pool_autostart(&self, name: &str, on: bool) -> HvResult<()>;
    /// Removes what building made (the directory, the volume group) from a stopped pool.
    fn delete_pool_storage(&self, name: &str) -> HvResult<()>;
    /// Removes a stopped pool's definition.
    fn undefine_pool(&self, name: &str) -> HvResult<()>;
    /// Every libvirt network with its state and forwarding.
    fn network_statuses(&self) -> HvResult<Vec<NetworkStatus>>;
    /// Stops (if running) and undefines a libvirt network.
    fn remove_network(&self, name: &str) -> HvResult<()>;
    /// A pool's definition as libvirt keeps it (for the host plan export).
    fn pool_xml(&self, name: &str) -> HvResult<String>;

    // ---- usage (a hypervisor without statistics answers [`usage_not_available`]) ----
    /// Counters of the host and of every VM, read with one bulk call (never one per VM).
    fn usage_sample(&self) -> HvResult<crate::domain::usage::UsageSample>;

    // ---- volume contents (without them: [`storage_not_available`]) ----
    /// Changes the capacity of the volume at `path`; `shrink` allows making it smaller.
    fn resize_volume(&self, path: &str, capacity_bytes: u64, shrink: bool) -> HvResult<()>;
    /// How many bytes a download of the volume sends (its file or device size).
    fn volume_download_bytes(&self, path: &str) -> HvResult<u64>;
    /// Streams the first `length` bytes of the volume into `to` (libvirt's volume
    /// download); stops with an error when `to` fails. Returns the bytes written.
    fn download_volume(
        &self,
        path: &str,
        length: u64,
        to: &mut dyn std::io::Write,
    ) -> HvResult<u64>;
    /// Fills the volume with exactly `length` bytes read from `from` (libvirt's volume
    /// upload). The stream is aborted, and an error returned, when `from` fails or ends
    /// early or gives more than `length` bytes.
    fn upload_volume(&self, path: &str, length: u64, from: &mut dyn std::io::Read) -> HvResult<()>;

    // ---- templates (without them: [`storage_not_available`]) ----
    /// The XML of the volume at `path` (its format and, for an overlay, its backing store).
    fn volume_xml(&self, path: &str) -> HvResult<String>;

    // ---- kickstarts ----
    /// The live definition of one VM (a running install boot's kernel and arguments),
    /// or `None` if there is no such VM. A hypervisor without a direct lookup can answer
    /// [`live_domain_xml_from_all`].
    fn live_domain_xml(&self, name: &str) -> HvResult<Option<String>>;

    // ---- migration (a hypervisor without it answers [`migration_not_available`]) ----
    /// The machine types this host's QEMU offers (from libvirt's capabilities).
    fn machine_types(&self) -> HvResult<Vec<String>>;
    /// Moves the VM to the libvirt at `dest_uri`, peer to peer (this host's libvirtd
    /// connects there): live when it runs, its definition only when it is shut off.
    /// Blocks until the move ended; on failure the VM stays here.
    fn migrate(&self, name: &str, dest_uri: &str, options: &MigrateOptions) -> HvResult<()>;
    /// The progress of the VM's running migration, if one runs.
    fn migration_progress(&self, name: &str) -> HvResult<Option<MigrationProgress>>;
    /// Stops the VM's running migration; the VM goes on running here.
    fn abort_migration(&self, name: &str) -> HvResult<()>;
    /// Whether a VM's `<cpu>` (a named model) can run on this host's hypervisor for
    /// guests of `domain_type` (libvirt's comparison); `None` when it cannot tell.
    fn cpu_runs_here(&self, cpu_xml: &str, domain_type: &str) -> HvResult<Option<bool>>;
}

/// A VM's backup job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupStatus {
    /// Copying: bytes done of the total.
    Running {
        processed_bytes: u64,
        total_bytes: u64,
    },
    /// The last backup job completed.
    Completed,
    /// The last backup job failed, with libvirt's reason.
    Failed(String),
    /// No backup job runs, and none has ended (yet: libvirt records a job's end a moment
    /// after it stops running).
    None,
}

/// What [`Hypervisor::change_device_live`] does with the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveChange {
    Attach,
    Detach,
    Update,
}

/// How a VM moves to another host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrateOptions {
    /// Running VM: move it while it runs (else it is paused for the move).
    pub live: bool,
    /// Shut-off VM: move only its definition (its disks must be on shared storage).
    pub offline: bool,
    /// Disks (target names, e.g. `vda`) QEMU copies to the destination, which has
    /// volumes made for them; empty when all storage is shared.
    pub copy_disks: Vec<String>,
    /// (path here, path there) of each copied disk whose volume there has another path.
    pub disk_paths: Vec<(String, String)>,
    /// Most MiB/s the move may use; 0 for no limit.
    pub bandwidth_mib_s: u64,
    /// Memory and disks travel over TLS (QEMU's migration TLS, set up in libvirt's
    /// qemu.conf on both hosts).
    pub tls: bool,
}

/// A running migration's progress, from libvirt's job statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct MigrationProgress {
    pub data_total_bytes: u64,
    pub data_processed_bytes: u64,
    pub data_remaining_bytes: u64,
    /// Memory transfer speed, bytes per second.
    pub memory_bps: u64,
    /// Expected (while running) or measured (at the end) downtime, milliseconds.
    pub downtime_ms: u64,
}

/// What a hypervisor without migration answers.
pub fn migration_not_available(operation: &'static str) -> HypervisorError {
    HypervisorError::Call {
        operation,
        message: "this hypervisor cannot migrate VMs".into(),
    }
}

// ---- answers for hypervisors that lack a part of the trait ----
//
// These were the trait's default bodies. They are free functions now, so that an
// implementation without consoles, storage or statistics says so in its own impl block,
// method by method, instead of inheriting it without a word.

/// `live_domain_xml` composed from `all_domain_xml`: the live definition (libvirt's
/// `xml_desc(0)`) of the VM named `name`, found by parsing every VM's definition; `None`
/// if no VM has that name.
pub fn live_domain_xml_from_all<H: Hypervisor + ?Sized>(
    hv: &H,
    name: &str,
) -> HvResult<Option<String>> {
    Ok(hv
        .all_domain_xml()?
        .into_iter()
        .find(|x| crate::domain::xml::parse_domain(x).is_ok_and(|d| d.name == name)))
}

/// The answer of a hypervisor connection without consoles (VNC, serial, screenshots).
pub fn consoles_not_available() -> ConsoleError {
    ConsoleError::NotAvailable {
        reason: "this hypervisor connection provides no consoles".into(),
    }
}

/// The answer of a hypervisor connection that manages no storage pools, volumes' contents
/// or libvirt networks; `operation` says what was asked (e.g. "list the storage pools").
pub fn storage_not_available(operation: &'static str) -> HypervisorError {
    HypervisorError::Call {
        operation,
        message: "this hypervisor connection does not manage storage pools or networks".into(),
    }
}

/// The answer of a hypervisor connection that provides no usage statistics.
pub fn usage_not_available() -> HypervisorError {
    HypervisorError::Call {
        operation: "read usage statistics",
        message: "this hypervisor connection provides no usage statistics".into(),
    }
}

/// Why a console cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The VM is not running, so it has no console to show.
    #[error("VM {name} is not running; start it to use its console")]
    NotRunning { name: String },
    /// The VM has no device of this kind.
    #[error("VM {name} has no {what}")]
    NoDevice { name: String, what: &'static str },
    /// Someone else holds the serial console and `force` was not given.
    #[error("the serial console of VM {name} is in use by another session; take it over to disconnect them")]
    Busy { name: String },
    /// This hypervisor cannot provide consoles (libvirt's test driver).
    #[error("consoles are not available on this host: {reason}")]
    NotAvailable { reason: String },
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
}

/// Where a VNC server listens. Only loopback addresses and UNIX sockets are returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VncEndpoint {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

/// An attached serial console. Output arrives on `output` (closed on hang-up or EOF);
/// input is written with `input`. Dropping it detaches from libvirt.
pub struct SerialConsole {
    /// The guest's output, at most [`SERIAL_OUTPUT_CHUNKS`] chunks of at most
    /// [`SERIAL_CHUNK_MAX_BYTES`] waiting: when it is full, the hypervisor stops reading
    /// the console (the guest waits) until [`SerialInput::output_taken`] says there is room.
    pub output: tokio::sync::mpsc::Receiver<Vec<u8>>,
    pub input: Box<dyn SerialInput>,
}

/// Chunks of guest output a serial console holds for a browser that is slow to read.
pub const SERIAL_OUTPUT_CHUNKS: usize = 256;
/// The largest chunk of serial output (so at most 2 MiB wait per console).
pub const SERIAL_CHUNK_MAX_BYTES: usize = 8 * 1024;

/// Writes keystrokes to a serial console. Blocking (briefly): call it off the runtime.
pub trait SerialInput: Send + Sync {
    fn write_all(&self, data: &[u8]) -> Result<(), ConsoleError>;
    /// Called after output was taken from [`SerialConsole::output`]: lets a reader that
    /// paused on a full channel resume. Cheap; never blocks.
    fn output_taken(&self) {}
}

/// A screenshot as libvirt returned it.
pub struct Screenshot {
    /// e.g. `image/png` or `image/x-portable-pixmap`.
    pub mime: String,
    pub bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Hypervisor` trait keeps no default bodies (see its doc comment): its block,
    /// comments aside, holds signatures only, so no brace.
    #[test]
    fn the_hypervisor_trait_has_no_default_bodies() {
        let src = include_str!("mod.rs");
        let start = src.find("pub trait Hypervisor:").expect("the trait");
        let block = &src[start..];
        let block = &block[..block.find("\n}\n").expect("the trait's end")];
        let inner = &block[block.find('{').expect("the trait's opening brace") + 1..];
        let code: Vec<&str> = inner
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect();
        let methods = code
            .iter()
            .filter(|l| l.trim_start().starts_with("fn "))
            .count();
        assert!(
            methods >= 40,
            "found only {methods} methods: is this the trait?"
        );
        for line in &code {
            assert!(
                !line.contains('{') && !line.contains('}'),
                "a default body in the Hypervisor trait: {line:?}"
            );
        }
    }

    #[test]
    fn live_domain_xml_from_all_finds_what_libvirt_finds() {
        let hv =
            crate::adapters::libvirt::Libvirt::open("test:///default", KvmStatus::NotApplicable)
                .expect("libvirt's test driver");
        let direct = hv.live_domain_xml("test").expect("a lookup");
        assert!(direct.is_some(), "the test driver's default VM");
        assert_eq!(
            live_domain_xml_from_all(&hv, "test").expect("a listing"),
            direct
        );
        assert_eq!(
            live_domain_xml_from_all(&hv, "no-such-vm").expect("a listing"),
            None
        );
        assert_eq!(hv.live_domain_xml("no-such-vm").expect("a lookup"), None);
    }
}
