//! Facts about the host and the rule that picks the guest virtualization type.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The `virt_type` setting: what kind of guests virtdeck defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VirtTypeSetting {
    /// Use KVM when it works on this host, plain QEMU (TCG) otherwise.
    #[default]
    Auto,
    /// Always KVM; creating guests fails on a host whose KVM does not work.
    Kvm,
    /// Always QEMU software emulation (TCG): slow but works everywhere.
    Qemu,
}

impl std::str::FromStr for VirtTypeSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "kvm" => Ok(Self::Kvm),
            "qemu" => Ok(Self::Qemu),
            other => Err(format!(
                "virt_type must be auto, kvm or qemu, not {other:?}"
            )),
        }
    }
}

/// The guest type virtdeck will put into domain XML (`<domain type=...>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtType {
    Kvm,
    Qemu,
    /// libvirt's test driver: no real guests at all.
    Test,
}

impl VirtType {
    pub fn as_str(self) -> &'static str {
        match self {
            VirtType::Kvm => "kvm",
            VirtType::Qemu => "qemu",
            VirtType::Test => "test",
        }
    }

    /// The guest type of a defined VM, from its `<domain type=…>` (anything but `kvm` and
    /// `test` runs as QEMU).
    pub fn of_domain(domain_type: &str) -> VirtType {
        match domain_type {
            "kvm" => VirtType::Kvm,
            "test" => VirtType::Test,
            _ => VirtType::Qemu,
        }
    }
}

/// What the KVM probe found on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum KvmStatus {
    /// `/dev/kvm` exists and a QEMU process could run a vCPU with it.
    Usable,
    /// `/dev/kvm` is missing: no hardware virtualization (or the module is not loaded).
    Missing,
    /// `/dev/kvm` exists but QEMU could not use it; `reason` is QEMU's own words.
    Broken { reason: String },
    /// Not applicable: the hypervisor is libvirt's test driver.
    NotApplicable,
}

impl KvmStatus {
    /// One sentence for the host page.
    pub fn describe(&self) -> String {
        match self {
            KvmStatus::Usable => "KVM works: guests run with hardware acceleration.".into(),
            KvmStatus::Missing => {
                "No /dev/kvm: guests run under QEMU software emulation (slow).".into()
            }
            KvmStatus::Broken { reason } => format!(
                "/dev/kvm exists but KVM does not work here ({reason}); guests run under QEMU software emulation (slow)."
            ),
            KvmStatus::NotApplicable => {
                "Simulated host (libvirt test driver): no guests really run.".into()
            }
        }
    }
}

/// Why a `virt_type` setting cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtTypeError {
    /// virt_type = kvm is set but KVM does not work on this host.
    #[error("virt_type is set to kvm but KVM does not work on this host: {0}. Set virt_type = \"auto\" or \"qemu\".")]
    KvmUnavailable(String),
}

/// Decides the guest type from the setting and the probe.
pub fn resolve_virt_type(
    setting: VirtTypeSetting,
    kvm: &KvmStatus,
) -> Result<VirtType, VirtTypeError> {
    match (kvm, setting) {
        (KvmStatus::NotApplicable, _) => Ok(VirtType::Test),
        (_, VirtTypeSetting::Qemu) => Ok(VirtType::Qemu),
        (KvmStatus::Usable, _) => Ok(VirtType::Kvm),
        (_, VirtTypeSetting::Auto) => Ok(VirtType::Qemu),
        (status, VirtTypeSetting::Kvm) => Err(VirtTypeError::KvmUnavailable(status.describe())),
    }
}

/// A libvirt-style version number (`major * 1_000_000 + minor * 1_000 + release`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Version(pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(f, "{}.{}.{}", v / 1_000_000, (v / 1_000) % 1_000, v % 1_000)
    }
}

/// Everything the Host overview shows about the machine.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostFacts {
    pub hostname: String,
    pub libvirt_uri: String,
    /// libvirt's name for the hypervisor driver, e.g. "QEMU" or "TEST".
    pub driver: String,
    pub libvirt_version: String,
    pub hypervisor_version: String,
    pub cpu_model: String,
    pub cpu_count: u32,
    pub cpu_sockets: u32,
    pub cpu_cores_per_socket: u32,
    pub cpu_threads_per_core: u32,
    pub cpu_mhz: u32,
    pub memory_mib: u64,
    pub free_memory_mib: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_defined_vms_guest_type_is_read_from_its_domain_type() {
        assert_eq!(VirtType::of_domain("kvm"), VirtType::Kvm);
        assert_eq!(VirtType::of_domain("test"), VirtType::Test);
        assert_eq!(VirtType::of_domain("qemu"), VirtType::Qemu);
        assert_eq!(VirtType::of_domain(""), VirtType::Qemu);
    }

    fn broken() -> KvmStatus {
        KvmStatus::Broken {
            reason: "kvm_put_msrs failed".into(),
        }
    }

    #[test]
    fn auto_uses_kvm_only_when_it_works() {
        assert_eq!(
            resolve_virt_type(VirtTypeSetting::Auto, &KvmStatus::Usable),
            Ok(VirtType::Kvm)
        );
        assert_eq!(
            resolve_virt_type(VirtTypeSetting::Auto, &broken()),
            Ok(VirtType::Qemu)
        );
        assert_eq!(
            resolve_virt_type(VirtTypeSetting::Auto, &KvmStatus::Missing),
            Ok(VirtType::Qemu)
        );
    }

    #[test]
    fn forced_kvm_on_broken_host_is_refused_with_the_reason() {
        let err = resolve_virt_type(VirtTypeSetting::Kvm, &broken()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("kvm_put_msrs failed"), "{text}");
        assert!(text.contains("virt_type"), "{text}");
    }

    #[test]
    fn forced_qemu_wins_even_when_kvm_works() {
        assert_eq!(
            resolve_virt_type(VirtTypeSetting::Qemu, &KvmStatus::Usable),
            Ok(VirtType::Qemu)
        );
    }

    #[test]
    fn test_driver_is_always_test() {
        assert_eq!(
            resolve_virt_type(VirtTypeSetting::Kvm, &KvmStatus::NotApplicable),
            Ok(VirtType::Test)
        );
    }

    #[test]
    fn versions_render_like_libvirt() {
        assert_eq!(Version(11_003_000).to_string(), "11.3.0");
        assert_eq!(Version(10_000_002).to_string(), "10.0.2");
        assert_eq!(Version(2).to_string(), "0.0.2");
    }

    #[test]
    fn setting_parses_and_rejects_unknown() {
        assert_eq!("auto".parse::<VirtTypeSetting>(), Ok(VirtTypeSetting::Auto));
        assert!("xen".parse::<VirtTypeSetting>().is_err());
    }
}
