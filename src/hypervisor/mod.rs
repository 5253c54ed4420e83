//! The hypervisor port: what virtdeck asks of libvirt, as a trait, and its libvirt
//! implementation (the only module that imports `virt`).

pub mod kvm_probe;
pub mod libvirt;

use crate::domain::host::{HostFacts, KvmStatus};
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
    /// A libvirt call failed; `message` is libvirt's own text.
    #[error("libvirt {operation} failed: {message}")]
    Call {
        operation: &'static str,
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
            HypervisorError::Call { operation, message } => {
                format!("libvirt refused to {operation}: {message}")
            }
        }
    }
}

pub type HvResult<T> = Result<T, HypervisorError>;

/// Everything virtdeck needs from a hypervisor. Blocking calls: run them off the
/// async runtime.
pub trait Hypervisor: Send + Sync {
    /// The connection URI, e.g. `qemu:///system` or `test:///…/demo-host.xml`.
    fn uri(&self) -> &str;
    fn host_facts(&self) -> HvResult<HostFacts>;
    /// KVM usability as found at start-up.
    fn kvm_status(&self) -> KvmStatus;
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

    // ---- libvirt networks: creating and running them (no defaults: every hypervisor
    // says what it does) ----
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

    // ---- consoles (keep at the end; the defaults are for hypervisors without them) ----
    /// Where the running VM's VNC server listens (from its live definition).
    fn vnc_endpoint(&self, name: &str) -> Result<VncEndpoint, ConsoleError> {
        let _ = name;
        Err(ConsoleError::not_available())
    }
    /// Attaches to the VM's serial console through libvirt (virDomainOpenConsole).
    /// `force` takes the console over from whoever holds it.
    fn open_serial(&self, name: &str, force: bool) -> Result<SerialConsole, ConsoleError> {
        let _ = (name, force);
        Err(ConsoleError::not_available())
    }
    /// A screenshot of the VM's first screen: PNG (QEMU ≥ 7) or PPM bytes.
    fn screenshot(&self, name: &str) -> Result<Screenshot, ConsoleError> {
        let _ = name;
        Err(ConsoleError::not_available())
    }

    // ---- storage pools and libvirt networks (defaults: not available) ----
    /// Every storage pool with its state, autostart flag, capacity and source.
    fn pool_statuses(&self) -> HvResult<Vec<PoolStatus>> {
        Err(storage_not_available("list the storage pools"))
    }
    /// The volumes of a running pool, with their format.
    fn pool_volumes(&self, pool: &str) -> HvResult<Vec<PoolVolume>> {
        let _ = pool;
        Err(storage_not_available("list a pool's volumes"))
    }
    /// Defines (persistently, not started) a pool from pool XML.
    fn define_pool(&self, pool_xml: &str) -> HvResult<()> {
        let _ = pool_xml;
        Err(storage_not_available("define the pool"))
    }
    /// Makes the pool's storage: the directory or mount point, or the volume group.
    fn build_pool(&self, name: &str) -> HvResult<()> {
        let _ = name;
        Err(storage_not_available("build the pool"))
    }
    fn start_pool(&self, name: &str) -> HvResult<()> {
        let _ = name;
        Err(storage_not_available("start the pool"))
    }
    fn stop_pool(&self, name: &str) -> HvResult<()> {
        let _ = name;
        Err(storage_not_available("stop the pool"))
    }
    /// Re-reads the pool's volumes and sizes from its storage.
    fn refresh_pool(&self, name: &str) -> HvResult<()> {
        let _ = name;
        Err(storage_not_available("refresh the pool"))
    }
    fn set_pool_autostart(&self, name: &str, on: bool) -> HvResult<()> {
        let _ = (name, on);
        Err(storage_not_available("change the pool's autostart"))
    }
    /// Removes what building made (the directory, the volume group) from a stopped pool.
    fn delete_pool_storage(&self, name: &str) -> HvResult<()> {
        let _ = name;
        Err(storage_not_available("delete the pool's storage"))
    }
    /// Removes a stopped pool's definition.
    fn undefine_pool(&self, name: &str) -> HvResult<()> {
        let _ = name;
        Err(storage_not_available("remove the pool's definition"))
    }
    /// Every libvirt network with its state and forwarding.
    fn network_statuses(&self) -> HvResult<Vec<NetworkStatus>> {
        Err(storage_not_available("list the networks"))
    }
    /// Stops (if running) and undefines a libvirt network.
    fn remove_network(&self, name: &str) -> HvResult<()> {
        let _ = name;
        Err(storage_not_available("remove the network"))
    }
    /// A pool's definition as libvirt keeps it (for the host plan export).
    fn pool_xml(&self, name: &str) -> HvResult<String> {
        let _ = name;
        Err(storage_not_available("read the pool's definition"))
    }

    // ---- usage (the default is for hypervisors without statistics) ----
    /// Counters of the host and of every VM, read with one bulk call (never one per VM).
    fn usage_sample(&self) -> HvResult<crate::domain::usage::UsageSample> {
        Err(HypervisorError::Call {
            operation: "read usage statistics",
            message: "this hypervisor connection provides no usage statistics".into(),
        })
    }

    // ---- volume contents (defaults: not available) ----
    /// Changes the capacity of the volume at `path`; `shrink` allows making it smaller.
    fn resize_volume(&self, path: &str, capacity_bytes: u64, shrink: bool) -> HvResult<()> {
        let _ = (path, capacity_bytes, shrink);
        Err(storage_not_available("resize the volume"))
    }
    /// How many bytes a download of the volume sends (its file or device size).
    fn volume_download_bytes(&self, path: &str) -> HvResult<u64> {
        let _ = path;
        Err(storage_not_available("read the volume's size"))
    }
    /// Streams the first `length` bytes of the volume into `to` (libvirt's volume
    /// download); stops with an error when `to` fails. Returns the bytes written.
    fn download_volume(
        &self,
        path: &str,
        length: u64,
        to: &mut dyn std::io::Write,
    ) -> HvResult<u64> {
        let _ = (path, length, to);
        Err(storage_not_available("download the volume"))
    }
    /// Fills the volume with exactly `length` bytes read from `from` (libvirt's volume
    /// upload). The stream is aborted, and an error returned, when `from` fails or ends
    /// early or gives more than `length` bytes.
    fn upload_volume(&self, path: &str, length: u64, from: &mut dyn std::io::Read) -> HvResult<()> {
        let _ = (path, length, from);
        Err(storage_not_available("upload into the volume"))
    }

    // ---- templates (default: not available) ----
    /// The XML of the volume at `path` (its format and, for an overlay, its backing store).
    fn volume_xml(&self, path: &str) -> HvResult<String> {
        let _ = path;
        Err(storage_not_available("read the volume's description"))
    }

    // ---- kickstarts ----
    /// The live definition of one VM (a running install boot's kernel and arguments),
    /// or `None` if there is no such VM.
    fn live_domain_xml(&self, name: &str) -> HvResult<Option<String>> {
        Ok(self
            .all_domain_xml()?
            .into_iter()
            .find(|x| crate::domain::xml::parse_domain(x).is_ok_and(|d| d.name == name)))
    }
}

impl ConsoleError {
    fn not_available() -> Self {
        ConsoleError::NotAvailable {
            reason: "this hypervisor connection provides no consoles".into(),
        }
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

fn storage_not_available(operation: &'static str) -> HypervisorError {
    HypervisorError::Call {
        operation,
        message: "this hypervisor connection does not manage storage pools or networks".into(),
    }
}
