//! A hypervisor that passes every call to the real one, except one step that fails, the
//! way libvirt would fail it. Used to prove that a failed create leaves nothing behind.

use std::sync::Arc;
use virtdeck::domain::host::{HostFacts, KvmStatus};
use virtdeck::domain::inventory::{NetworkInfo, PoolInfo};
use virtdeck::domain::vm::{VmAction, VmSummary};
use virtdeck::hypervisor::{HvResult, Hypervisor, HypervisorError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    CreateVolume,
    Define,
    Autostart,
    Start,
}

pub struct FailAt {
    pub inner: Arc<dyn Hypervisor>,
    pub step: Step,
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
        if self.step == Step::CreateVolume {
            return Err(injected("create the disk volume"));
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
}
