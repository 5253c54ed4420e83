//! What this host can give a guest, from libvirt's domain capabilities
//! (`virConnectGetDomainCapabilities` for the `q35` machine): UEFI firmware (OVMF) with
//! and without Secure Boot, an emulated TPM (swtpm), and the CPU modes and named models
//! usable here (under TCG, the ones QEMU emulates). Pure: XML in, plain values out, and
//! the form's checks of a firmware/TPM/CPU choice against them.

use super::vmspec::{CpuSpec, Firmware};
use quick_xml::events::Event;
use quick_xml::Reader;
use serde::Serialize;

/// What the host offers guests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GuestCapabilities {
    /// libvirt can pick UEFI firmware (an OVMF build is installed and described).
    pub uefi: bool,
    /// A Secure Boot capable OVMF build is installed.
    pub secure_boot: bool,
    /// An emulated TPM (swtpm) can be given.
    pub tpm_emulator: bool,
    pub host_passthrough: bool,
    pub host_model: bool,
    /// Named CPU models usable on this host, in libvirt's order.
    pub cpu_models: Vec<String>,
}

impl GuestCapabilities {
    /// Everything, for libvirt's test driver (the demo host simulates a full KVM host).
    pub fn simulated() -> GuestCapabilities {
        GuestCapabilities {
            uefi: true,
            secure_boot: true,
            tpm_emulator: true,
            host_passthrough: true,
            host_model: true,
            cpu_models: ["Nehalem", "Westmere", "SandyBridge", "Haswell", "EPYC"]
                .map(String::from)
                .to_vec(),
        }
    }

    /// What an admin must install for a firmware or TPM choice this host lacks (empty
    /// when nothing is missing), as Debian package names with what they give.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.uefi || !self.secure_boot {
            out.push("ovmf (UEFI firmware, with Secure Boot)");
        }
        if !self.tpm_emulator {
            out.push("swtpm and swtpm-tools (an emulated TPM 2.0)");
        }
        out
    }
}

/// Reads libvirt's domain capabilities XML. Anything unreadable counts as "not offered".
pub fn parse(xml: &str) -> GuestCapabilities {
    let mut caps = GuestCapabilities::default();
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    // The innermost `<enum name=...>` and whether the open `<model>` is usable.
    let mut enum_name = String::new();
    let mut model_usable = false;
    let mut tpm_supported = false;
    let mut tpm_emulator = false;
    let mut firmware_efi = false;
    let mut loader_supported = false;
    loop {
        let (start, empty) = match reader.read_event() {
            Ok(Event::Start(e)) => (Some(e), false),
            Ok(Event::Empty(e)) => (Some(e), true),
            Ok(Event::End(_)) => {
                path.pop();
                continue;
            }
            Ok(Event::Text(t)) => {
                let text = t.xml10_content().trim().to_string();
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                match p.as_slice() {
                    [.., "os", "enum", "value"] if enum_name == "firmware" && text == "efi" => {
                        firmware_efi = true
                    }
                    [.., "os", "loader", "enum", "value"]
                        if enum_name == "secure" && text == "yes" =>
                    {
                        caps.secure_boot = true
                    }
                    [.., "tpm", "enum", "value"]
                        if enum_name == "backendModel" && text == "emulator" =>
                    {
                        tpm_emulator = true
                    }
                    [.., "cpu", "mode", "model"] if model_usable && !text.is_empty() => {
                        caps.cpu_models.push(text)
                    }
                    _ => {}
                }
                continue;
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => continue,
        };
        let Some(e) = start else { continue };
        let name = e.name().as_ref().to_string();
        let attr = |key: &str| {
            e.attributes()
                .flatten()
                .find(|a| a.key.as_ref() == key)
                .map(|a| a.value.to_string())
        };
        let parent = path.last().map(String::as_str).unwrap_or("");
        match (parent, name.as_str()) {
            (_, "enum") => enum_name = attr("name").unwrap_or_default(),
            ("os", "loader") => loader_supported = attr("supported").as_deref() == Some("yes"),
            ("devices", "tpm") => tpm_supported = attr("supported").as_deref() == Some("yes"),
            ("cpu", "mode") => {
                let supported = attr("supported").as_deref() == Some("yes");
                match attr("name").as_deref() {
                    Some("host-passthrough") => caps.host_passthrough = supported,
                    Some("host-model") => caps.host_model = supported,
                    _ => {}
                }
            }
            ("mode", "model") => model_usable = attr("usable").as_deref() == Some("yes"),
            _ => {}
        }
        if !empty {
            path.push(name);
        }
    }
    caps.uefi = firmware_efi && loader_supported;
    caps.secure_boot &= caps.uefi;
    caps.tpm_emulator = tpm_supported && tpm_emulator;
    caps
}

/// Why a firmware/TPM/CPU choice cannot be made on this host: (form field, message),
/// each saying what to install or pick instead.
pub fn check_choice(
    caps: &GuestCapabilities,
    firmware: Firmware,
    tpm: bool,
    cpu: &CpuSpec,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match firmware {
        Firmware::Bios => {}
        Firmware::Uefi if !caps.uefi => out.push((
            "firmware",
            "This host has no UEFI firmware for guests: install the ovmf package (apt install ovmf), or choose BIOS.".to_string(),
        )),
        Firmware::UefiSecureBoot if !caps.secure_boot => out.push((
            "firmware",
            "This host has no Secure Boot capable UEFI firmware: install the ovmf package (apt install ovmf), or choose UEFI or BIOS.".to_string(),
        )),
        _ => {}
    }
    if tpm && !caps.tpm_emulator {
        out.push((
            "tpm",
            "This host cannot emulate a TPM: install swtpm and swtpm-tools (apt install swtpm swtpm-tools), or leave TPM off.".to_string(),
        ));
    }
    match cpu {
        CpuSpec::Default => {}
        CpuSpec::HostPassthrough if !caps.host_passthrough => out.push((
            "cpu",
            "This host's hypervisor cannot pass its CPU through (QEMU emulates the CPU here): choose the default, host-model or a named model.".to_string(),
        )),
        CpuSpec::HostModel if !caps.host_model => out.push((
            "cpu",
            "libvirt offers no host-model CPU on this host: choose the default or a named model.".to_string(),
        )),
        CpuSpec::Custom(m) if !caps.cpu_models.iter().any(|c| c == m) => out.push((
            "cpu",
            format!(
                "{} is not a CPU model this host can give: pick one from the list.",
                m.chars().take(64).collect::<String>()
            ),
        )),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q35_TCG: &str = r#"<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <domain>qemu</domain>
  <machine>pc-q35-10.0</machine>
  <os supported='yes'>
    <enum name='firmware'>
      <value>efi</value>
    </enum>
    <loader supported='yes'>
      <value>/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</value>
      <enum name='type'><value>rom</value><value>pflash</value></enum>
      <enum name='secure'>
        <value>yes</value>
        <value>no</value>
      </enum>
    </loader>
  </os>
  <cpu>
    <mode name='host-passthrough' supported='no'/>
    <mode name='host-model' supported='yes'>
      <model fallback='forbid'>EPYC</model>
    </mode>
    <mode name='custom' supported='yes'>
      <model usable='yes' vendor='Intel' canonical='Nehalem-v1'>Nehalem</model>
      <model usable='no' vendor='Intel'>Skylake-Server</model>
      <model usable='yes' vendor='AMD'>Opteron_G2</model>
    </mode>
  </cpu>
  <devices>
    <tpm supported='yes'>
      <enum name='model'><value>tpm-tis</value><value>tpm-crb</value></enum>
      <enum name='backendModel'>
        <value>passthrough</value>
        <value>emulator</value>
      </enum>
    </tpm>
  </devices>
</domainCapabilities>"#;

    #[test]
    fn a_tcg_host_with_ovmf_and_swtpm() {
        let caps = parse(Q35_TCG);
        assert!(
            caps.uefi && caps.secure_boot && caps.tpm_emulator,
            "{caps:?}"
        );
        assert!(!caps.host_passthrough);
        assert!(caps.host_model);
        // The host-model's own <model> is not a usable named model; unusable ones are left out.
        assert_eq!(caps.cpu_models, ["Nehalem", "Opteron_G2"]);
        assert!(caps.missing().is_empty());
    }

    #[test]
    fn a_host_without_ovmf_or_swtpm_says_what_to_install() {
        let xml = r#"<domainCapabilities><os supported='yes'>
            <loader supported='yes'><enum name='type'><value>rom</value></enum></loader></os>
            <devices><tpm supported='no'/></devices></domainCapabilities>"#;
        let caps = parse(xml);
        assert!(!caps.uefi && !caps.secure_boot && !caps.tpm_emulator);
        assert_eq!(caps.missing().len(), 2);
        let errs = check_choice(&caps, Firmware::UefiSecureBoot, true, &CpuSpec::Default);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].0, "firmware");
        assert!(errs[0].1.contains("apt install ovmf"), "{}", errs[0].1);
        assert_eq!(errs[1].0, "tpm");
        assert!(errs[1].1.contains("swtpm"), "{}", errs[1].1);
        assert!(check_choice(&caps, Firmware::Bios, false, &CpuSpec::Default).is_empty());
        assert_eq!(parse("not xml"), GuestCapabilities::default());
    }

    #[test]
    fn cpu_choices_are_checked_against_the_list() {
        let caps = parse(Q35_TCG);
        let ok = |cpu: CpuSpec| check_choice(&caps, Firmware::Uefi, true, &cpu).is_empty();
        assert!(ok(CpuSpec::Default));
        assert!(ok(CpuSpec::HostModel));
        assert!(ok(CpuSpec::Custom("Nehalem".into())));
        assert!(!ok(CpuSpec::HostPassthrough));
        assert!(!ok(CpuSpec::Custom("Skylake-Server".into())));
        assert!(!ok(CpuSpec::Custom("<script>".into())));
    }
}
