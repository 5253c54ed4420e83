//! A VM as the admin asked for it: typed, validated, ready to be rendered to XML.

use super::host::VirtType;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A validated VM name: 1–64 characters, letters, digits, '.', '_' and '-', starting with
/// a letter or digit. Stricter than libvirt (which only forbids '/'), so names are also
/// safe as volume names, file names and URL segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct VmName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmNameError {
    #[error("Enter a name.")]
    Empty,
    #[error("Use at most 64 characters.")]
    TooLong,
    #[error("Use only letters, digits, '.', '_' and '-', starting with a letter or digit.")]
    Characters,
}

impl VmName {
    pub fn parse(s: &str) -> Result<VmName, VmNameError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(VmNameError::Empty);
        }
        if s.len() > 64 {
            return Err(VmNameError::TooLong);
        }
        let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !first_ok
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(VmNameError::Characters);
        }
        Ok(VmName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A unicast MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Mac([u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("Write the MAC address as six pairs of hex digits separated by colons, e.g. 52:54:00:12:34:56.")]
    Format,
    #[error(
        "That is a multicast address; a NIC needs a unicast one (the first byte must be even)."
    )]
    Multicast,
    #[error("The all-zero MAC address cannot be used.")]
    Zero,
}

impl Mac {
    pub fn parse(s: &str) -> Result<Mac, MacError> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        if parts.len() != 6 {
            return Err(MacError::Format);
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(MacError::Format);
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| MacError::Format)?;
        }
        if b == [0; 6] {
            return Err(MacError::Zero);
        }
        if b[0] & 1 == 1 {
            return Err(MacError::Multicast);
        }
        Ok(Mac(b))
    }

    /// A MAC in QEMU's locally administered range 52:54:00, from three random bytes.
    pub fn qemu_local(random: [u8; 3]) -> Mac {
        Mac([0x52, 0x54, 0x00, random[0], random[1], random[2]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    Virtio,
    E1000,
}

impl NicModel {
    pub fn as_str(self) -> &'static str {
        match self {
            NicModel::Virtio => "virtio",
            NicModel::E1000 => "e1000",
        }
    }
}

/// Where a NIC is plugged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "name", rename_all = "lowercase")]
pub enum NicSource {
    /// A Linux bridge on the host, e.g. br0.
    Bridge(String),
    /// A libvirt network, e.g. default.
    Network(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicSpec {
    pub source: NicSource,
    pub model: NicModel,
    pub mac: Mac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

/// A disk or CD-ROM attached to the VM, by the path libvirt gave its volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskSpec {
    /// Absolute path of the volume (file, or block device for LVM pools).
    pub path: String,
    /// Whether the path is a block device (`<disk type='block'>`) or a file.
    pub block: bool,
    pub format: DiskFormat,
    /// A read-only CD-ROM (IDE) instead of a virtio disk.
    pub cdrom: bool,
}

/// What the VM boots first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BootSpec {
    /// From its disk (imported or already installed).
    Disk,
    /// From the CD-ROM, then the disk.
    Cdrom,
    /// PXE from the NIC, then the disk.
    Network,
    /// Direct kernel boot with arguments (used for network installs and tiny guests).
    Kernel {
        kernel: String,
        initrd: Option<String>,
        cmdline: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    Utc,
    Localtime,
}

/// The firmware a VM boots with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    /// SeaBIOS on the `pc` (i440fx) machine: what every OS boots with.
    #[default]
    Bios,
    /// OVMF (UEFI) on the `q35` machine, Secure Boot off.
    Uefi,
    /// OVMF with Secure Boot on and Microsoft's and the distributions' keys enrolled
    /// (what Windows 11 and signed Linux boot loaders expect); needs SMM.
    UefiSecureBoot,
}

impl Firmware {
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::UefiSecureBoot => "uefi_secure_boot",
        }
    }

    pub fn parse(s: &str) -> Option<Firmware> {
        [Firmware::Bios, Firmware::Uefi, Firmware::UefiSecureBoot]
            .into_iter()
            .find(|f| f.as_str() == s)
    }

    /// How the VM page and the form name it.
    pub fn label(self) -> &'static str {
        match self {
            Firmware::Bios => "BIOS",
            Firmware::Uefi => "UEFI",
            Firmware::UefiSecureBoot => "UEFI + Secure Boot",
        }
    }

    pub fn is_uefi(self) -> bool {
        self != Firmware::Bios
    }

    /// The machine type: UEFI guests get `q35` (Secure Boot needs its SMM), BIOS guests
    /// keep `pc`, whose IDE CD-ROM works with kernels that lack AHCI.
    pub fn machine(self) -> &'static str {
        if self.is_uefi() {
            "q35"
        } else {
            "pc"
        }
    }
}

/// The virtual CPU a VM sees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", content = "model", rename_all = "kebab-case")]
pub enum CpuSpec {
    /// The hypervisor's default: `host-passthrough` under KVM, QEMU's own CPU under TCG.
    #[default]
    Default,
    /// The host's CPU as it is (fastest; migrates only to identical hosts).
    HostPassthrough,
    /// The named model closest to the host's CPU, with its extra features.
    HostModel,
    /// A named model from libvirt's list for this host (e.g. `Nehalem`): what hosts with
    /// different CPUs have in common, so VMs can migrate between them.
    Custom(String),
}

impl CpuSpec {
    /// The form's and the API's value: `default`, `host-passthrough`, `host-model`, or a
    /// model name.
    pub fn as_value(&self) -> &str {
        match self {
            CpuSpec::Default => "default",
            CpuSpec::HostPassthrough => "host-passthrough",
            CpuSpec::HostModel => "host-model",
            CpuSpec::Custom(m) => m,
        }
    }

    pub fn from_value(v: &str) -> CpuSpec {
        match v.trim() {
            "" | "default" => CpuSpec::Default,
            "host-passthrough" => CpuSpec::HostPassthrough,
            "host-model" => CpuSpec::HostModel,
            m => CpuSpec::Custom(m.to_string()),
        }
    }

    /// The CPU a guest of `virt_type` gets for this choice: the default is the host's
    /// own CPU under KVM, and QEMU's default model (no `<cpu>` at all) otherwise.
    pub fn for_guest(&self, virt_type: VirtType) -> CpuSpec {
        match self {
            CpuSpec::Default if virt_type == VirtType::Kvm => CpuSpec::HostPassthrough,
            other => other.clone(),
        }
    }
}

/// Everything needed to define a VM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmSpec {
    pub name: VmName,
    pub uuid: String,
    pub virt_type: VirtType,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<DiskSpec>,
    pub boot: BootSpec,
    pub nic: Option<NicSpec>,
    pub clock: Clock,
    /// Free text shown in `virsh dominfo` and the UI.
    pub description: String,
    /// A file where libvirt keeps everything the serial console printed.
    pub serial_log: Option<String>,
    pub firmware: Firmware,
    /// An emulated TPM 2.0 (swtpm), its state kept by libvirt per VM.
    pub tpm: bool,
    pub cpu: CpuSpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cpu_is_the_hosts_own_only_under_kvm() {
        assert_eq!(
            CpuSpec::Default.for_guest(VirtType::Kvm),
            CpuSpec::HostPassthrough
        );
        assert_eq!(CpuSpec::Default.for_guest(VirtType::Qemu), CpuSpec::Default);
        let named = CpuSpec::Custom("Nehalem".into());
        assert_eq!(named.for_guest(VirtType::Kvm), named);
        assert_eq!(
            CpuSpec::HostModel.for_guest(VirtType::Qemu),
            CpuSpec::HostModel
        );
    }

    #[test]
    fn names() {
        assert!(VmName::parse("web01").is_ok());
        assert_eq!(
            VmName::parse("  db-1.prod_a ").unwrap().as_str(),
            "db-1.prod_a"
        );
        assert_eq!(VmName::parse(""), Err(VmNameError::Empty));
        assert_eq!(VmName::parse("a/b"), Err(VmNameError::Characters));
        assert_eq!(VmName::parse("-x"), Err(VmNameError::Characters));
        assert_eq!(VmName::parse("x y"), Err(VmNameError::Characters));
        assert_eq!(VmName::parse("<b>"), Err(VmNameError::Characters));
        assert_eq!(VmName::parse(&"a".repeat(65)), Err(VmNameError::TooLong));
    }

    #[test]
    fn macs() {
        let m = Mac::parse("52:54:00:AB:cd:0f").unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!(Mac::parse("52:54:00:ab:cd"), Err(MacError::Format));
        assert_eq!(Mac::parse("52-54-00-ab-cd-0f"), Err(MacError::Format));
        assert_eq!(Mac::parse("zz:54:00:ab:cd:0f"), Err(MacError::Format));
        assert_eq!(Mac::parse("01:00:5e:00:00:01"), Err(MacError::Multicast));
        assert_eq!(Mac::parse("00:00:00:00:00:00"), Err(MacError::Zero));
        assert_eq!(Mac::qemu_local([1, 2, 3]).to_string(), "52:54:00:01:02:03");
    }

    #[test]
    fn firmware_and_cpu_values_round_trip() {
        for f in [Firmware::Bios, Firmware::Uefi, Firmware::UefiSecureBoot] {
            assert_eq!(Firmware::parse(f.as_str()), Some(f));
        }
        assert_eq!(Firmware::parse("efi"), None);
        assert_eq!(Firmware::Bios.machine(), "pc");
        assert_eq!(Firmware::UefiSecureBoot.machine(), "q35");
        for v in ["default", "host-passthrough", "host-model", "Nehalem"] {
            assert_eq!(CpuSpec::from_value(v).as_value(), v);
        }
        assert_eq!(CpuSpec::from_value(""), CpuSpec::Default);
    }
}
