//! The hypervisor port: what virtdeck asks of libvirt, as a trait, and its libvirt
//! implementation (the only module that imports `virt`).

pub mod kvm_probe;
pub mod libvirt;

use crate::domain::host::{HostFacts, KvmStatus};
use crate::domain::vm::VmSummary;

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// libvirt could not be reached at all.
    #[error("cannot connect to libvirt at {uri}: {message}")]
    Connect { uri: String, message: String },
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
}
