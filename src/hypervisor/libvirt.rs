//! The libvirt implementation of [`Hypervisor`], through the `virt` crate.

use super::{HvResult, Hypervisor, HypervisorError};
use crate::domain::host::{HostFacts, KvmStatus, Version};
use crate::domain::vm::{VmState, VmSummary};
use std::sync::Mutex;
use virt::connect::Connect;
use virt::domain::{Domain, DomainState};

pub struct Libvirt {
    uri: String,
    conn: Mutex<Connect>,
    kvm: KvmStatus,
}

fn call(operation: &'static str) -> impl Fn(virt::error::Error) -> HypervisorError {
    move |e| HypervisorError::Call {
        operation,
        message: e.message().to_string(),
    }
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

    fn list_vms(&self) -> HvResult<Vec<VmSummary>> {
        let conn = self.conn()?;
        let domains = conn.list_all_domains(0).map_err(call("list the VMs"))?;
        let mut vms = domains
            .iter()
            .map(summarize)
            .collect::<HvResult<Vec<_>>>()?;
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(vms)
    }
}
