//! libvirt XML: rendering a typed [`VmSpec`] to domain XML, volume XML, and reading back
//! the devices of domain XML written by anyone (virtdeck, virsh, virt-install, libvirt).
//!
//! Everything goes through quick-xml's writer and reader: user values are only ever
//! passed as attribute values or text events, so the writer escapes them. Never build
//! markup by pasting strings here.

use super::host::VirtType;
use super::vmspec::{BootSpec, Clock, CpuSpec, DiskFormat, Firmware, NicSource, VmSpec};
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer, XmlVersion};
use serde::Serialize;
use std::io::{self, Write};

/// Where VNC listens. Always loopback: the browser reaches it only through the
/// authenticated websocket proxy.
const VNC_LISTEN: &str = "127.0.0.1";

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

/// Renders the libvirt domain XML for a VM spec.
pub fn domain_xml(spec: &VmSpec) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_domain(&mut w, spec, "restart").expect("writing XML into a Vec cannot fail");
    String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
}

/// Renders the XML of a network install's first boot: the VM's spec booting the
/// installer's kernel, and ending (not rebooting) when the installer reboots, so the
/// next start boots the installed disk from the persistent definition.
pub fn install_domain_xml(spec: &VmSpec, kernel: &str, initrd: &str, cmdline: &str) -> String {
    let mut run = spec.clone();
    run.boot = BootSpec::Kernel {
        kernel: kernel.to_string(),
        initrd: Some(initrd.to_string()),
        cmdline: cmdline.to_string(),
    };
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_domain(&mut w, &run, "destroy").expect("writing XML into a Vec cannot fail");
    String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
}

/// Renders the libvirt storage volume XML for a new, empty (sparse) volume.
pub fn volume_xml(name: &str, capacity_gib: u64, format: DiskFormat) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_volume(&mut w, name, capacity_gib, format).expect("writing XML into a Vec cannot fail");
    String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
}

/// Renders the volume XML for a copy of another volume: same size, the given format.
pub fn volume_copy_xml(name: &str, capacity_bytes: u64, format: DiskFormat) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_volume_sized(&mut w, name, &capacity_bytes.to_string(), "bytes", format)
        .expect("writing XML into a Vec cannot fail");
    String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
}

fn write_volume<W: Write>(
    w: &mut Writer<W>,
    name: &str,
    capacity_gib: u64,
    format: DiskFormat,
) -> io::Result<()> {
    write_volume_sized(w, name, &capacity_gib.to_string(), "GiB", format)
}

fn write_volume_sized<W: Write>(
    w: &mut Writer<W>,
    name: &str,
    capacity: &str,
    unit: &str,
    format: DiskFormat,
) -> io::Result<()> {
    w.create_element("volume").write_inner_content(|w| {
        text_el(w, "name", &[], name)?;
        text_el(w, "capacity", &[("unit", unit)], capacity)?;
        text_el(w, "allocation", &[("unit", unit)], "0")?;
        w.create_element("target")
            .write_inner_content(|w| empty_el(w, "format", &[("type", format.as_str())]))?;
        Ok(())
    })?;
    Ok(())
}

fn write_domain<W: Write>(w: &mut Writer<W>, spec: &VmSpec, on_reboot: &str) -> io::Result<()> {
    let vcpus = spec.vcpus.to_string();
    let memory = spec.memory_mib.to_string();
    w.create_element("domain")
        .with_attribute(("type", spec.virt_type.as_str()))
        .write_inner_content(|w| {
            text_el(w, "name", &[], spec.name.as_str())?;
            text_el(w, "uuid", &[], &spec.uuid)?;
            if !spec.description.is_empty() {
                text_el(w, "description", &[], &spec.description)?;
            }
            text_el(w, "memory", &[("unit", "MiB")], &memory)?;
            text_el(w, "currentMemory", &[("unit", "MiB")], &memory)?;
            text_el(w, "vcpu", &[("placement", "static")], &vcpus)?;
            write_os(w, &spec.boot, spec.firmware)?;
            w.create_element("features").write_inner_content(|w| {
                empty_el(w, "acpi", &[])?;
                empty_el(w, "apic", &[])?;
                if spec.firmware == Firmware::UefiSecureBoot {
                    // OVMF's Secure Boot build keeps its variables safe only in SMM.
                    empty_el(w, "smm", &[("state", "on")])?;
                }
                Ok(())
            })?;
            write_cpu(w, &spec.cpu, spec.virt_type)?;
            let offset = match spec.clock {
                Clock::Utc => "utc",
                Clock::Localtime => "localtime",
            };
            empty_el(w, "clock", &[("offset", offset)])?;
            text_el(w, "on_poweroff", &[], "destroy")?;
            text_el(w, "on_reboot", &[], on_reboot)?;
            text_el(w, "on_crash", &[], "destroy")?;
            w.create_element("devices")
                .write_inner_content(|w| write_devices(w, spec))?;
            Ok(())
        })?;
    Ok(())
}

fn write_os<W: Write>(w: &mut Writer<W>, boot: &BootSpec, firmware: Firmware) -> io::Result<()> {
    let mut os = w.create_element("os");
    if firmware.is_uefi() {
        // libvirt picks the OVMF build from the firmware descriptors and makes the VM's
        // own variable store (NVRAM) from its template.
        os = os.with_attribute(("firmware", "efi"));
    }
    os.write_inner_content(|w| {
        // i440fx ('pc') for BIOS on purpose: its IDE CD-ROM works with kernels that lack
        // AHCI. UEFI guests get q35 (CD-ROMs on virtio-scsi there, for the same reason).
        text_el(
            w,
            "type",
            &[("arch", "x86_64"), ("machine", firmware.machine())],
            "hvm",
        )?;
        if firmware.is_uefi() {
            let secure = if firmware == Firmware::UefiSecureBoot {
                "yes"
            } else {
                "no"
            };
            w.create_element("firmware").write_inner_content(|w| {
                empty_el(
                    w,
                    "feature",
                    &[("enabled", secure), ("name", "enrolled-keys")],
                )?;
                empty_el(
                    w,
                    "feature",
                    &[("enabled", secure), ("name", "secure-boot")],
                )
            })?;
        }
        match boot {
            BootSpec::Disk => empty_el(w, "boot", &[("dev", "hd")])?,
            BootSpec::Cdrom => {
                empty_el(w, "boot", &[("dev", "cdrom")])?;
                empty_el(w, "boot", &[("dev", "hd")])?;
            }
            BootSpec::Network => {
                empty_el(w, "boot", &[("dev", "network")])?;
                empty_el(w, "boot", &[("dev", "hd")])?;
            }
            BootSpec::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                text_el(w, "kernel", &[], kernel)?;
                if let Some(initrd) = initrd {
                    text_el(w, "initrd", &[], initrd)?;
                }
                text_el(w, "cmdline", &[], cmdline)?;
                empty_el(w, "boot", &[("dev", "hd")])?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

fn write_devices<W: Write>(w: &mut Writer<W>, spec: &VmSpec) -> io::Result<()> {
    let mut virtio_index = 0;
    // CD-ROMs start at hdc: the secondary IDE master, where installers look first. On
    // q35 (no IDE) they go on a virtio-scsi controller, sda first.
    let q35 = spec.firmware.machine() == "q35";
    let mut ide_index = if q35 { 0 } else { 2 };
    let cdrom_prefix = if q35 { "sd" } else { "hd" };
    let cdrom_bus = if q35 { "scsi" } else { "ide" };
    for disk in &spec.disks {
        let target = if disk.cdrom {
            ide_index += 1;
            disk_target(cdrom_prefix, ide_index - 1)
        } else {
            virtio_index += 1;
            disk_target("vd", virtio_index - 1)
        };
        let (kind, source_attr) = if disk.block {
            ("block", "dev")
        } else {
            ("file", "file")
        };
        let device = if disk.cdrom { "cdrom" } else { "disk" };
        let bus = if disk.cdrom { cdrom_bus } else { "virtio" };
        w.create_element("disk")
            .with_attribute(("type", kind))
            .with_attribute(("device", device))
            .write_inner_content(|w| {
                empty_el(
                    w,
                    "driver",
                    &[("name", "qemu"), ("type", disk.format.as_str())],
                )?;
                empty_el(w, "source", &[(source_attr, disk.path.as_str())])?;
                empty_el(w, "target", &[("dev", target.as_str()), ("bus", bus)])?;
                if disk.cdrom {
                    empty_el(w, "readonly", &[])?;
                }
                Ok(())
            })?;
    }

    if q35 && spec.disks.iter().any(|d| d.cdrom) {
        empty_el(
            w,
            "controller",
            &[("type", "scsi"), ("model", "virtio-scsi")],
        )?;
    }

    if let Some(nic) = &spec.nic {
        let (kind, attr, name) = match &nic.source {
            NicSource::Bridge(name) => ("bridge", "bridge", name),
            NicSource::Network(name) => ("network", "network", name),
        };
        let mac = nic.mac.to_string();
        w.create_element("interface")
            .with_attribute(("type", kind))
            .write_inner_content(|w| {
                empty_el(w, "source", &[(attr, name.as_str())])?;
                empty_el(w, "mac", &[("address", mac.as_str())])?;
                empty_el(w, "model", &[("type", nic.model.as_str())])
            })?;
    }

    w.create_element("serial")
        .with_attribute(("type", "pty"))
        .write_inner_content(|w| {
            if let Some(log) = &spec.serial_log {
                empty_el(w, "log", &[("file", log.as_str()), ("append", "on")])?;
            }
            empty_el(w, "target", &[("port", "0")])
        })?;
    // The guest agent's channel: a guest with qemu-guest-agent (every cloud image has it)
    // reports its addresses and freezes its file systems for backups.
    w.create_element("channel")
        .with_attribute(("type", "unix"))
        .write_inner_content(|w| {
            empty_el(
                w,
                "target",
                &[("type", "virtio"), ("name", "org.qemu.guest_agent.0")],
            )
        })?;
    w.create_element("console")
        .with_attribute(("type", "pty"))
        .write_inner_content(|w| empty_el(w, "target", &[("type", "serial"), ("port", "0")]))?;
    w.create_element("graphics")
        .with_attribute(("type", "vnc"))
        .with_attribute(("port", "-1"))
        .with_attribute(("autoport", "yes"))
        .with_attribute(("listen", VNC_LISTEN))
        .write_inner_content(|w| {
            empty_el(w, "listen", &[("type", "address"), ("address", VNC_LISTEN)])
        })?;
    w.create_element("video")
        .write_inner_content(|w| empty_el(w, "model", &[("type", "vga")]))?;
    empty_el(w, "input", &[("type", "tablet"), ("bus", "usb")])?;
    if spec.tpm {
        let model = if q35 { "tpm-crb" } else { "tpm-tis" };
        w.create_element("tpm")
            .with_attribute(("model", model))
            .write_inner_content(|w| {
                empty_el(w, "backend", &[("type", "emulator"), ("version", "2.0")])
            })?;
    }
    empty_el(w, "memballoon", &[("model", "virtio")])?;
    // Randomness from the host from the first boot on (as virt-install gives one): a
    // fresh guest makes its SSH host keys and seeds its own generator without waiting.
    // The VM page's devices can take it out again.
    w.create_element("rng")
        .with_attribute(("model", "virtio"))
        .write_inner_content(|w| {
            w.create_element("backend")
                .with_attribute(("model", "random"))
                .write_text_content(BytesText::new("/dev/urandom"))
                .map(|_| ())
        })?;
    Ok(())
}

/// libvirt's disk naming: `vda`…`vdz`, `vdaa`, `vdab`… for index 0, 1, … 25, 26, 27….
pub(crate) fn disk_target(prefix: &str, index: usize) -> String {
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        letters.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
    }
    let mut out = String::from(prefix);
    out.extend(letters.iter().rev());
    out
}

/// `<name a="v"...>text</name>`; the writer escapes both attribute values and text.
fn text_el<W: Write>(
    w: &mut Writer<W>,
    name: &str,
    attrs: &[(&str, &str)],
    text: &str,
) -> io::Result<()> {
    w.create_element(name)
        .with_attributes(attrs.iter().copied())
        .write_text_content(BytesText::new(text))?;
    Ok(())
}

/// `<name a="v".../>`; the writer escapes attribute values.
fn empty_el<W: Write>(w: &mut Writer<W>, name: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
    w.create_element(name)
        .with_attributes(attrs.iter().copied())
        .write_empty()?;
    Ok(())
}

/// `domain_xml` with its `<cpu>` replaced by `cpu` (removed for the default under TCG;
/// host-passthrough for the default under KVM); every other element kept as it was.
pub fn with_cpu(domain_xml: &str, cpu: &CpuSpec, virt_type: VirtType) -> Result<String, XmlError> {
    let mut reader = Reader::from_str(domain_xml);
    let mut w = Writer::new(Vec::new());
    let mut depth = 0usize;
    let mut skipping = false;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| invalid(format!("{e} (near byte {})", reader.error_position())))?;
        match &ev {
            Event::Eof if depth > 0 => return Err(invalid("the document ends inside an element")),
            Event::Eof => break,
            Event::Start(e) => {
                depth += 1;
                if depth == 2 && e.name().as_ref() == "cpu" {
                    skipping = true;
                }
                if skipping {
                    continue;
                }
            }
            Event::Empty(e) if depth == 1 && e.name().as_ref() == "cpu" => continue,
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                if skipping {
                    if depth == 1 {
                        skipping = false;
                    }
                    continue;
                }
                if depth == 0 && e.name().as_ref() == "domain" {
                    write_cpu(&mut w, cpu, virt_type).map_err(|e| invalid(e.to_string()))?;
                }
            }
            _ if skipping => continue,
            _ => {}
        }
        w.write_event(ev).map_err(|e| invalid(e.to_string()))?;
    }
    String::from_utf8(w.into_inner()).map_err(|e| invalid(e.to_string()))
}

fn write_cpu<W: Write>(w: &mut Writer<W>, cpu: &CpuSpec, virt_type: VirtType) -> io::Result<()> {
    match cpu.for_guest(virt_type) {
        CpuSpec::Default => Ok(()),
        CpuSpec::HostPassthrough => empty_el(w, "cpu", &[("mode", "host-passthrough")]),
        CpuSpec::HostModel => empty_el(w, "cpu", &[("mode", "host-model")]),
        CpuSpec::Custom(model) => {
            w.create_element("cpu")
                .with_attribute(("mode", "custom"))
                .with_attribute(("match", "exact"))
                .write_inner_content(|w| text_el(w, "model", &[("fallback", "forbid")], &model))?;
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

/// Why domain XML could not be read.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("Invalid domain XML: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> XmlError {
    XmlError::Invalid(msg.into())
}

/// The parts of an existing domain's XML that virtdeck shows and acts on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, utoipa::ToSchema)]
pub struct ParsedDomain {
    pub name: String,
    pub uuid: String,
    /// `<domain type=...>`: kvm, qemu, test, …
    pub domain_type: String,
    pub vcpus: u32,
    /// `<memory>` (the maximum allocation), converted to MiB (rounded down).
    pub memory_mib: u64,
    pub description: String,
    /// The tags under `<metadata>` in virtdeck's namespace (`domain::vm_labels`).
    pub tags: Vec<String>,
    pub disks: Vec<ParsedDisk>,
    pub nics: Vec<ParsedNic>,
    /// The first `<graphics type='vnc'>`, if any (other graphics types are ignored).
    pub vnc: Option<ParsedGraphics>,
    pub has_serial: bool,
    /// A qemu-guest-agent channel (`org.qemu.guest_agent.0`) is defined.
    pub guest_agent: bool,
    /// A `<controller type='scsi'>` exists (SCSI disks have a bus to go on).
    pub scsi_controller: bool,
    /// Host devices passed through (`<hostdev>`): PCI and USB.
    pub hostdevs: Vec<ParsedHostdev>,
    /// `<serial><log file=...>`: where libvirt keeps the serial output.
    pub serial_log: Option<String>,
    /// `<os><kernel>`: the path of a directly booted kernel.
    pub kernel: Option<String>,
    /// `<os><initrd>`: the initrd booted with it.
    pub initrd: Option<String>,
    /// `<os><type machine=...>`: the machine type, e.g. `pc-q35-10.0`.
    pub machine: Option<String>,
    /// Boot order as `<os><boot dev=...>` values (hd, cdrom, network, fd). When the XML
    /// uses per-device `<boot order=...>` instead, derived from those in order.
    pub boot_devs: Vec<String>,
    /// `bios` or `uefi` (`<os firmware='efi'>` or a pflash `<loader>`).
    pub firmware: String,
    /// UEFI with Secure Boot (`secure-boot` firmware feature, or a secure loader).
    pub secure_boot: bool,
    /// The TPM device: its model and version, e.g. `tpm-crb 2.0`.
    pub tpm: Option<String>,
    /// The CPU: `host-passthrough`, `host-model`, `maximum` or a named model; none for
    /// the hypervisor's default.
    pub cpu: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, utoipa::ToSchema)]
pub struct ParsedDisk {
    /// disk, cdrom, floppy or lun.
    pub device: String,
    /// `file=`, `dev=`, `dir=`, `volume=` or (network disks) `name=` of `<source>`.
    pub source: Option<String>,
    /// The storage pool of a `<source pool=... volume=...>`.
    pub pool: Option<String>,
    /// Guest device name: vda, hdc, sda…
    pub target: String,
    /// virtio, ide, sata, scsi, usb…
    pub bus: String,
    /// `<driver type=...>`: qcow2, raw…
    pub format: Option<String>,
}

/// A host device passed through to the VM.
#[derive(Debug, Clone, PartialEq, Default, Serialize, utoipa::ToSchema)]
pub struct ParsedHostdev {
    /// `pci` or `usb`.
    pub kind: String,
    /// `0000:03:00.0` or `usb 1234:5678` (`domain::host_devices::HostDevice::address`).
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, utoipa::ToSchema)]
pub struct ParsedNic {
    pub mac: Option<String>,
    /// bridge, network, direct, user, ethernet…
    pub kind: String,
    /// The bridge, network or host device the NIC is plugged into.
    pub source: Option<String>,
    /// virtio, e1000, rtl8139…
    pub model: Option<String>,
    /// `<link state='down'/>`: the cable is unplugged (the guest sees no carrier).
    pub link_down: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, utoipa::ToSchema)]
pub struct ParsedGraphics {
    pub kind: String,
    /// The listen address (`listen=` or `<listen type='address' address=...>`).
    pub listen: Option<String>,
    /// The port; -1 while autoport has not assigned one (defined but not running).
    pub port: Option<i32>,
    /// A UNIX socket path, for `<listen type='socket'>`.
    pub socket: Option<String>,
}

/// The machine types in libvirt's capabilities XML (`<guest><arch><machine>`, and the
/// `canonical=` names their aliases stand for), sorted, without repeats.
pub fn machine_types(capabilities_xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = capabilities_xml;
    while let Some(start) = rest.find("<machine") {
        let after = &rest[start + "<machine".len()..];
        let Some(close) = after.find('>') else { break };
        let attrs = &after[..close];
        for key in ["canonical='", "canonical=\""] {
            if let Some(i) = attrs.find(key) {
                let v = &attrs[i + key.len()..];
                if let Some(j) = v.find(['\'', '"']) {
                    out.push(v[..j].to_string());
                }
            }
        }
        let body = &after[close + 1..];
        if !attrs.ends_with('/') {
            if let Some(end) = body.find("</machine>") {
                let name = body[..end].trim();
                if !name.is_empty() {
                    out.push(name.to_string());
                }
            }
        }
        rest = body;
    }
    out.sort();
    out.dedup();
    out
}

/// Reads the devices and sizing of domain XML. Unknown elements are ignored; the XML must
/// be well-formed and have a `<domain>` root with a `<name>`.
pub fn parse_domain(xml: &str) -> Result<ParsedDomain, XmlError> {
    let mut reader = Reader::from_str(xml);
    let mut p = Parser::default();
    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| invalid(format!("{e} (near byte {})", reader.error_position())))?;
        let at = |e: XmlError| match e {
            XmlError::Invalid(m) => invalid(format!("{m} (near byte {pos})")),
        };
        match event {
            Event::Start(e) => p.open(&e).map_err(at)?,
            Event::Empty(e) => {
                p.open(&e).map_err(at)?;
                p.close().map_err(at)?;
            }
            Event::End(_) => p.close().map_err(at)?,
            Event::Text(t) => p.text(&t.xml10_content()).map_err(at)?,
            Event::CData(t) => p.text(&t.xml10_content()).map_err(at)?,
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => resolve_predefined_entity(&r)
                        .ok_or_else(|| invalid(format!("unknown entity &{};", &*r)))
                        .map_err(at)?
                        .to_string(),
                    Err(e) => return Err(at(invalid(e.to_string()))),
                };
                p.text(&resolved).map_err(at)?;
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    p.finish()
}

/// The MAC addresses of a domain's NICs, lower-case. Empty if the XML cannot be read.
pub fn macs_in(xml: &str) -> Vec<String> {
    parse_domain(xml)
        .map(|d| {
            d.nics
                .into_iter()
                .filter_map(|n| n.mac)
                .map(|m| m.to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

/// The attributes of one element, decoded and unescaped.
struct Attrs(Vec<(String, String)>);

impl Attrs {
    fn of(e: &BytesStart) -> Result<Attrs, XmlError> {
        let mut out = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|e| invalid(e.to_string()))?;
            let value = a
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| invalid(e.to_string()))?;
            out.push((a.key.as_ref().to_string(), value.into_owned()));
        }
        Ok(Attrs(out))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn owned(&self, key: &str) -> Option<String> {
        self.get(key).map(str::to_string)
    }
}

/// An attribute of an element under a `<hostdev>`'s `<source>`: (element, name, value).
type SourceAttr = (String, String, String);

#[derive(Default)]
struct Parser {
    out: ParsedDomain,
    /// Names of the open elements, root first.
    path: Vec<String>,
    /// Text collected since the innermost element opened.
    text: String,
    seen_root: bool,
    seen_name: bool,
    seen_vcpu: bool,
    memory_unit: Option<String>,
    disk: Option<ParsedDisk>,
    nic: Option<ParsedNic>,
    /// An open `<hostdev>`: its type and its source's attributes by (element, name).
    hostdev: Option<(String, Vec<SourceAttr>)>,
    vnc: Option<ParsedGraphics>,
    /// Per-device `<boot order=N/>`: (N, dev).
    device_boot: Vec<(u32, String)>,
}

impl Parser {
    fn open(&mut self, e: &BytesStart) -> Result<(), XmlError> {
        let name = e.name().as_ref().to_string();
        if self.path.is_empty() {
            if self.seen_root {
                return Err(invalid(format!("a second root element <{name}>")));
            }
            if name != "domain" {
                return Err(invalid(format!(
                    "the root element is <{name}>, not <domain>"
                )));
            }
            self.seen_root = true;
        }
        self.path.push(name);
        self.text.clear();
        let a = Attrs::of(e)?;
        let path: Vec<&str> = self.path.iter().map(String::as_str).collect();
        match path.as_slice() {
            ["domain"] => self.out.domain_type = a.owned("type").unwrap_or_default(),
            ["domain", "memory"] => self.memory_unit = a.owned("unit"),
            ["domain", "os"] if a.get("firmware") == Some("efi") => {
                self.out.firmware = "uefi".into();
            }
            ["domain", "os", "loader"] => {
                if a.get("type") == Some("pflash") {
                    self.out.firmware = "uefi".into();
                }
                if a.get("secure") == Some("yes") {
                    self.out.secure_boot = true;
                }
            }
            ["domain", "os", "firmware", "feature"]
                if a.get("name") == Some("secure-boot") && a.get("enabled") == Some("yes") =>
            {
                self.out.secure_boot = true;
            }
            ["domain", "cpu"] => {
                self.out.cpu = a.get("mode").filter(|m| *m != "custom").map(str::to_string)
            }
            ["domain", "devices", "tpm"] => {
                self.out.tpm = Some(a.owned("model").unwrap_or_else(|| "tpm-tis".into()))
            }
            ["domain", "devices", "tpm", "backend"] => {
                if let (Some(t), Some(v)) = (self.out.tpm.as_mut(), a.get("version")) {
                    t.push(' ');
                    t.push_str(v);
                }
            }
            ["domain", "os", "type"] => self.out.machine = a.owned("machine"),
            ["domain", "os", "boot"] => {
                if let Some(dev) = a.get("dev") {
                    self.out.boot_devs.push(dev.to_string());
                }
            }
            ["domain", "devices", "disk"] => {
                self.disk = Some(ParsedDisk {
                    device: a.owned("device").unwrap_or_else(|| "disk".into()),
                    ..ParsedDisk::default()
                });
            }
            ["domain", "devices", "disk", child] => {
                let child = *child;
                if let Some(disk) = self.disk.as_mut() {
                    match child {
                        "source" => {
                            disk.source = ["file", "dev", "dir", "volume", "name"]
                                .iter()
                                .find_map(|k| a.owned(k));
                            disk.pool = a.owned("pool");
                        }
                        "target" => {
                            disk.target = a.owned("dev").unwrap_or_default();
                            disk.bus = a.owned("bus").unwrap_or_default();
                        }
                        "driver" => disk.format = a.owned("type"),
                        "boot" => {
                            if let Some(order) = a.get("order").and_then(|o| o.parse().ok()) {
                                let dev = match disk.device.as_str() {
                                    "cdrom" => "cdrom",
                                    "floppy" => "fd",
                                    _ => "hd",
                                };
                                self.device_boot.push((order, dev.to_string()));
                            }
                        }
                        _ => {}
                    }
                }
            }
            ["domain", "devices", "hostdev"] => {
                self.hostdev = Some((a.owned("type").unwrap_or_default(), Vec::new()));
            }
            ["domain", "devices", "hostdev", "source", el] => {
                let el = el.to_string();
                if let Some((_, attrs)) = self.hostdev.as_mut() {
                    for (k, v) in &a.0 {
                        attrs.push((el.clone(), k.clone(), v.clone()));
                    }
                }
            }
            ["domain", "devices", "controller"] if a.get("type") == Some("scsi") => {
                self.out.scsi_controller = true;
            }
            ["domain", "devices", "interface"] => {
                self.nic = Some(ParsedNic {
                    kind: a.owned("type").unwrap_or_default(),
                    ..ParsedNic::default()
                });
            }
            ["domain", "devices", "interface", child] => {
                let child = *child;
                if let Some(nic) = self.nic.as_mut() {
                    match child {
                        "mac" => nic.mac = a.owned("address"),
                        "source" => {
                            // The attribute named after the NIC type first: a running
                            // network NIC has both network= and bridge=.
                            let own = match nic.kind.as_str() {
                                "bridge" => "bridge",
                                "network" => "network",
                                _ => "dev",
                            };
                            nic.source = [own, "bridge", "network", "dev", "name", "path"]
                                .iter()
                                .find_map(|k| a.owned(k));
                        }
                        "model" => nic.model = a.owned("type"),
                        "link" => nic.link_down = a.get("state") == Some("down"),
                        "boot" => {
                            if let Some(order) = a.get("order").and_then(|o| o.parse().ok()) {
                                self.device_boot.push((order, "network".to_string()));
                            }
                        }
                        _ => {}
                    }
                }
            }
            ["domain", "devices", "graphics"]
                if a.get("type") == Some("vnc") && self.out.vnc.is_none() && self.vnc.is_none() =>
            {
                let port = a.get("port").map(parse_port).transpose()?;
                self.vnc = Some(ParsedGraphics {
                    kind: "vnc".into(),
                    listen: a.owned("listen"),
                    port,
                    socket: a.owned("socket"),
                });
            }
            ["domain", "devices", "graphics", "listen"] => {
                if let Some(g) = self.vnc.as_mut() {
                    match a.get("type") {
                        Some("address") if g.listen.is_none() => g.listen = a.owned("address"),
                        Some("socket") if g.socket.is_none() => g.socket = a.owned("socket"),
                        _ => {}
                    }
                }
            }
            ["domain", "devices", "serial"] => self.out.has_serial = true,
            ["domain", "devices", "channel", "target"]
                if a.get("name") == Some("org.qemu.guest_agent.0") =>
            {
                self.out.guest_agent = true
            }
            ["domain", "devices", "serial", "log"] if self.out.serial_log.is_none() => {
                self.out.serial_log = a.owned("file")
            }
            _ => {}
        }
        Ok(())
    }

    fn text(&mut self, s: &str) -> Result<(), XmlError> {
        if self.path.is_empty() {
            if s.trim().is_empty() {
                return Ok(());
            }
            return Err(invalid("text outside the root element"));
        }
        self.text.push_str(s);
        Ok(())
    }

    fn close(&mut self) -> Result<(), XmlError> {
        let text = std::mem::take(&mut self.text);
        let path: Vec<&str> = self.path.iter().map(String::as_str).collect();
        match path.as_slice() {
            [] => return Err(invalid("an end tag without a start tag")),
            ["domain", "name"] => {
                self.out.name = text.trim().to_string();
                self.seen_name = true;
            }
            ["domain", "uuid"] => self.out.uuid = text.trim().to_string(),
            ["domain", "description"] => self.out.description = text,
            ["domain", "metadata", "virtdeck:vm", "virtdeck:tag"] => {
                let tag = text.trim();
                if super::vm_labels::tag_is_valid(tag) && !self.out.tags.iter().any(|t| t == tag) {
                    self.out.tags.push(tag.to_string());
                }
            }
            ["domain", "vcpu"] => {
                self.out.vcpus = text
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("<vcpu> {:?} is not a number", text.trim())))?;
                self.seen_vcpu = true;
            }
            ["domain", "memory"] => {
                self.out.memory_mib = memory_to_mib(text.trim(), self.memory_unit.as_deref())?;
            }
            ["domain", "cpu", "model"] if self.out.cpu.is_none() => {
                self.out.cpu = Some(text.trim().to_string())
            }
            ["domain", "os", "kernel"] => self.out.kernel = Some(text.trim().to_string()),
            ["domain", "os", "initrd"] => self.out.initrd = Some(text.trim().to_string()),
            ["domain", "devices", "disk"] => {
                if let Some(disk) = self.disk.take() {
                    self.out.disks.push(disk);
                }
            }
            ["domain", "devices", "hostdev"] => {
                if let Some((kind, attrs)) = self.hostdev.take() {
                    let key = super::host_devices::hostdev_key(&kind, |el, k| {
                        attrs
                            .iter()
                            .find(|(e, n, _)| e == el && n == k)
                            .map(|(_, _, v)| v.clone())
                    });
                    if let Some(address) = key {
                        self.out.hostdevs.push(ParsedHostdev { kind, address });
                    }
                }
            }
            ["domain", "devices", "interface"] => {
                if let Some(nic) = self.nic.take() {
                    self.out.nics.push(nic);
                }
            }
            ["domain", "devices", "graphics"] => {
                if let Some(g) = self.vnc.take() {
                    self.out.vnc = Some(g);
                }
            }
            _ => {}
        }
        self.path.pop();
        Ok(())
    }

    fn finish(mut self) -> Result<ParsedDomain, XmlError> {
        if let Some(open) = self.path.last() {
            return Err(invalid(format!("the document ends inside <{open}>")));
        }
        if !self.seen_root {
            return Err(invalid("no <domain> element"));
        }
        if !self.seen_name || self.out.name.is_empty() {
            return Err(invalid("the domain has no <name>"));
        }
        if !self.seen_vcpu {
            // libvirt's default when <vcpu> is absent.
            self.out.vcpus = 1;
        }
        if self.out.firmware.is_empty() {
            self.out.firmware = "bios".into();
        }
        if self.out.boot_devs.is_empty() && !self.device_boot.is_empty() {
            self.device_boot.sort_by_key(|(order, _)| *order);
            for (_, dev) in self.device_boot {
                if !self.out.boot_devs.contains(&dev) {
                    self.out.boot_devs.push(dev);
                }
            }
        }
        Ok(self.out)
    }
}

fn parse_port(p: &str) -> Result<i32, XmlError> {
    p.trim()
        .parse()
        .map_err(|_| invalid(format!("the VNC port {p:?} is not a number")))
}

/// Converts a libvirt memory value to MiB (rounded down). Units as libvirt reads them:
/// `b`/`bytes`; `k`/`KiB` (the default), `M`/`MiB`, `G`/`GiB`, `T`/`TiB`, `P`, `E`
/// (powers of 1024); `KB`, `MB`, `GB`, `TB`, `PB`, `EB` (powers of 1000).
fn memory_to_mib(value: &str, unit: Option<&str>) -> Result<u64, XmlError> {
    let n: u128 = value
        .parse()
        .map_err(|_| invalid(format!("<memory> {value:?} is not a number")))?;
    let unit = unit.unwrap_or("KiB").trim();
    let lower = unit.to_ascii_lowercase();
    let bytes_per_unit: u128 = if lower == "b" || lower == "bytes" {
        1
    } else {
        let mut chars = lower.chars();
        let exponent = match chars.next() {
            Some('k') => 1,
            Some('m') => 2,
            Some('g') => 3,
            Some('t') => 4,
            Some('p') => 5,
            Some('e') => 6,
            _ => return Err(invalid(format!("unknown memory unit {unit:?}"))),
        };
        let base: u128 = match chars.as_str() {
            "" | "ib" => 1024,
            "b" => 1000,
            _ => return Err(invalid(format!("unknown memory unit {unit:?}"))),
        };
        base.pow(exponent)
    };
    let mib = n
        .checked_mul(bytes_per_unit)
        .map(|bytes| bytes / (1024 * 1024))
        .and_then(|mib| u64::try_from(mib).ok())
        .ok_or_else(|| invalid(format!("<memory> {value} {unit} is too large")))?;
    Ok(mib)
}

#[cfg(test)]
pub(crate) mod tests {

    #[test]
    fn machine_types_come_from_the_capabilities_with_their_canonical_names() {
        let caps = "<capabilities><guest><arch name='x86_64'>\
            <machine maxCpus='255'>pc-i440fx-10.0</machine>\
            <machine canonical='pc-i440fx-10.0' maxCpus='255'>pc</machine>\
            <machine maxCpus='4096'>pc-q35-10.0</machine>\
            <machine canonical='pc-q35-10.0' maxCpus='4096'>q35</machine>\
            </arch></guest></capabilities>";
        assert_eq!(
            machine_types(caps),
            vec!["pc", "pc-i440fx-10.0", "pc-q35-10.0", "q35"]
        );
    }

    #[test]
    fn machine_type_and_initrd_are_read() {
        let d = parse_domain(
            "<domain type='qemu'><name>a</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc-q35-10.0'>hvm</type><kernel>/b/k</kernel>\
             <initrd>/b/i</initrd></os></domain>",
        )
        .unwrap();
        assert_eq!(d.machine.as_deref(), Some("pc-q35-10.0"));
        assert_eq!(d.initrd.as_deref(), Some("/b/i"));
    }

    use super::*;
    use crate::domain::vmspec::{DiskSpec, Mac, NicModel, NicSpec, VmName};

    const UUID: &str = "6f1c2a4e-9b1d-4c3e-8f2a-0123456789ab";

    fn base_spec(virt_type: VirtType) -> VmSpec {
        VmSpec {
            name: VmName::parse("web01").unwrap(),
            uuid: UUID.into(),
            virt_type,
            vcpus: 2,
            memory_mib: 2048,
            disks: vec![DiskSpec {
                path: "/var/lib/libvirt/images/web01.qcow2".into(),
                block: false,
                format: DiskFormat::Qcow2,
                cdrom: false,
            }],
            boot: BootSpec::Disk,
            nic: Some(NicSpec {
                source: NicSource::Bridge("br0".into()),
                model: NicModel::Virtio,
                mac: Mac::qemu_local([0xab, 0xcd, 0x0f]),
            }),
            clock: Clock::Utc,
            description: String::new(),
            serial_log: None,
            firmware: Firmware::Bios,
            tpm: false,
            cpu: CpuSpec::Default,
        }
    }

    #[test]
    fn uefi_secure_boot_with_a_tpm_on_q35() {
        let mut spec = cdrom_spec(VirtType::Qemu);
        spec.firmware = Firmware::UefiSecureBoot;
        spec.tpm = true;
        let xml = domain_xml(&spec);
        assert!(xml.contains("<os firmware=\"efi\">"), "{xml}");
        assert!(xml.contains("machine=\"q35\""), "{xml}");
        assert!(
            xml.contains("<feature enabled=\"yes\" name=\"secure-boot\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<feature enabled=\"yes\" name=\"enrolled-keys\"/>"),
            "{xml}"
        );
        assert!(xml.contains("<smm state=\"on\"/>"), "{xml}");
        assert!(xml.contains("<tpm model=\"tpm-crb\">"), "{xml}");
        assert!(
            xml.contains("<backend type=\"emulator\" version=\"2.0\"/>"),
            "{xml}"
        );
        // q35 has no IDE: the CD-ROM is on virtio-scsi, which the cloud kernel has.
        assert!(xml.contains("bus=\"scsi\""), "{xml}");
        assert!(
            xml.contains("<controller type=\"scsi\" model=\"virtio-scsi\"/>"),
            "{xml}"
        );
        assert!(!xml.contains("bus=\"ide\""), "{xml}");
        let d = parse_domain(&xml).unwrap();
        assert!(d.guest_agent, "every new VM has the guest agent's channel");
        assert_eq!(d.firmware, "uefi");
        assert!(d.secure_boot);
        assert_eq!(d.tpm.as_deref(), Some("tpm-crb 2.0"));
        assert!(d.scsi_controller);
    }

    #[test]
    fn plain_uefi_turns_secure_boot_off_and_bios_stays_on_pc() {
        let mut spec = base_spec(VirtType::Qemu);
        spec.firmware = Firmware::Uefi;
        let xml = domain_xml(&spec);
        assert!(
            xml.contains("<feature enabled=\"no\" name=\"secure-boot\"/>"),
            "{xml}"
        );
        assert!(!xml.contains("smm"), "{xml}");
        assert!(!xml.contains("<tpm"), "{xml}");
        let d = parse_domain(&xml).unwrap();
        assert_eq!((d.firmware.as_str(), d.secure_boot), ("uefi", false));
        let bios = domain_xml(&base_spec(VirtType::Qemu));
        assert!(!bios.contains("firmware"), "{bios}");
        assert!(bios.contains("machine=\"pc\""), "{bios}");
        assert_eq!(parse_domain(&bios).unwrap().firmware, "bios");
    }

    #[test]
    fn firmware_as_libvirt_expands_it_is_read_back() {
        // What libvirt stores after define: loader and NVRAM filled in, no firmware attribute.
        let d = parse_domain(
            "<domain type='qemu'><name>a</name><memory unit='KiB'>65536</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc-q35-10.0'>hvm</type>\
             <loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>\
             <nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>/var/lib/libvirt/qemu/nvram/a_VARS.fd</nvram></os>\
             <cpu mode='custom' match='exact'><model fallback='forbid'>Nehalem</model></cpu>\
             <devices><tpm model='tpm-tis'><backend type='emulator' version='2.0'/></tpm></devices></domain>",
        )
        .unwrap();
        assert_eq!(d.firmware, "uefi");
        assert!(d.secure_boot);
        assert_eq!(d.tpm.as_deref(), Some("tpm-tis 2.0"));
        assert_eq!(d.cpu.as_deref(), Some("Nehalem"));
    }

    #[test]
    fn the_cpu_of_a_definition_is_replaced_and_nothing_else() {
        let xml = domain_xml(&base_spec(VirtType::Qemu));
        let named = with_cpu(&xml, &CpuSpec::Custom("Nehalem".into()), VirtType::Qemu).unwrap();
        let d = parse_domain(&named).unwrap();
        assert_eq!(d.cpu.as_deref(), Some("Nehalem"));
        let before = parse_domain(&xml).unwrap();
        assert_eq!(
            (d.disks, d.nics, d.vnc),
            (before.disks, before.nics, before.vnc)
        );
        let model = with_cpu(&named, &CpuSpec::HostModel, VirtType::Qemu).unwrap();
        assert_eq!(
            parse_domain(&model).unwrap().cpu.as_deref(),
            Some("host-model")
        );
        assert_eq!(model.matches("<cpu").count(), 1, "{model}");
        let back = with_cpu(&model, &CpuSpec::Default, VirtType::Qemu).unwrap();
        assert!(!back.contains("<cpu"), "{back}");
        let kvm = with_cpu(&back, &CpuSpec::Default, VirtType::Kvm).unwrap();
        assert_eq!(
            parse_domain(&kvm).unwrap().cpu.as_deref(),
            Some("host-passthrough")
        );
        assert!(with_cpu("<domain><cpu>", &CpuSpec::HostModel, VirtType::Qemu).is_err());
    }

    #[test]
    fn cpu_choices_render() {
        let mut spec = base_spec(VirtType::Qemu);
        assert!(!domain_xml(&spec).contains("<cpu"));
        spec.cpu = CpuSpec::HostModel;
        assert!(domain_xml(&spec).contains("<cpu mode=\"host-model\"/>"));
        spec.cpu = CpuSpec::Custom("Nehalem<".into());
        let xml = domain_xml(&spec);
        assert!(
            xml.contains("<cpu mode=\"custom\" match=\"exact\">"),
            "{xml}"
        );
        assert!(
            xml.contains("<model fallback=\"forbid\">Nehalem&lt;</model>"),
            "{xml}"
        );
        assert_eq!(parse_domain(&xml).unwrap().cpu.as_deref(), Some("Nehalem<"));
        spec.cpu = CpuSpec::HostPassthrough;
        assert_eq!(
            parse_domain(&domain_xml(&spec)).unwrap().cpu.as_deref(),
            Some("host-passthrough")
        );
    }

    /// Kernel boot + a CD-ROM + a bridge NIC.
    fn kernel_spec(virt_type: VirtType) -> VmSpec {
        let mut s = base_spec(virt_type);
        s.disks.push(DiskSpec {
            path: "/var/lib/libvirt/images/debian.iso".into(),
            block: false,
            format: DiskFormat::Raw,
            cdrom: true,
        });
        s.boot = BootSpec::Kernel {
            kernel: "/var/lib/virtdeck/vmlinuz".into(),
            initrd: Some("/var/lib/virtdeck/initrd.img".into()),
            cmdline: "console=ttyS0 ks=http://10.0.0.1/ks.cfg?a=1&b=2".into(),
        };
        s.clock = Clock::Localtime;
        s.serial_log = Some("/var/log/libvirt/qemu/web01-serial.log".into());
        s
    }

    #[test]
    fn the_serial_log_round_trips() {
        let p = parse_domain(&domain_xml(&kernel_spec(VirtType::Qemu))).unwrap();
        assert_eq!(
            p.serial_log.as_deref(),
            Some("/var/log/libvirt/qemu/web01-serial.log")
        );
        let p = parse_domain(&domain_xml(&base_spec(VirtType::Qemu))).unwrap();
        assert_eq!(p.serial_log, None);
    }

    /// Network boot + a libvirt network NIC with e1000.
    fn pxe_spec(virt_type: VirtType) -> VmSpec {
        let mut s = base_spec(virt_type);
        s.boot = BootSpec::Network;
        s.nic = Some(NicSpec {
            source: NicSource::Network("default".into()),
            model: NicModel::E1000,
            mac: Mac::parse("52:54:00:AA:BB:CC").unwrap(),
        });
        s
    }

    /// A single raw block device, no NIC.
    fn block_spec(virt_type: VirtType) -> VmSpec {
        let mut s = base_spec(virt_type);
        s.disks = vec![DiskSpec {
            path: "/dev/vg0/cu-web01".into(),
            block: true,
            format: DiskFormat::Raw,
            cdrom: false,
        }];
        s.nic = None;
        s
    }

    /// CD-ROM install: two disks and two CD-ROMs.
    fn cdrom_spec(virt_type: VirtType) -> VmSpec {
        let mut s = base_spec(virt_type);
        s.disks = vec![
            DiskSpec {
                path: "/img/a.qcow2".into(),
                block: false,
                format: DiskFormat::Qcow2,
                cdrom: false,
            },
            DiskSpec {
                path: "/img/install.iso".into(),
                block: false,
                format: DiskFormat::Raw,
                cdrom: true,
            },
            DiskSpec {
                path: "/img/b.raw".into(),
                block: false,
                format: DiskFormat::Raw,
                cdrom: false,
            },
            DiskSpec {
                path: "/img/drivers.iso".into(),
                block: false,
                format: DiskFormat::Raw,
                cdrom: true,
            },
        ];
        s.boot = BootSpec::Cdrom;
        s
    }

    const NASTY: &str = "Tom & Jerry's <b>\"VM\"</b> ]]> </description><devices><disk/>";

    fn escaping_spec(virt_type: VirtType) -> VmSpec {
        let mut s = base_spec(virt_type);
        s.description = NASTY.into();
        s
    }

    fn all_specs(virt_type: VirtType) -> Vec<VmSpec> {
        vec![
            base_spec(virt_type),
            kernel_spec(virt_type),
            pxe_spec(virt_type),
            block_spec(virt_type),
            cdrom_spec(virt_type),
            escaping_spec(virt_type),
        ]
    }

    fn roundtrip(spec: &VmSpec) -> ParsedDomain {
        let xml = domain_xml(spec);
        parse_domain(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"))
    }

    #[test]
    fn every_spec_round_trips_its_sizing_and_identity() {
        for vt in [VirtType::Kvm, VirtType::Qemu, VirtType::Test] {
            for spec in all_specs(vt) {
                let p = roundtrip(&spec);
                assert_eq!(p.name, spec.name.as_str());
                assert_eq!(p.uuid, spec.uuid);
                assert_eq!(p.domain_type, vt.as_str());
                assert_eq!(p.vcpus, spec.vcpus);
                assert_eq!(p.memory_mib, spec.memory_mib);
                assert_eq!(p.description, spec.description);
                assert!(p.has_serial);
                assert_eq!(p.disks.len(), spec.disks.len());
                for (d, s) in p.disks.iter().zip(&spec.disks) {
                    assert_eq!(d.source.as_deref(), Some(s.path.as_str()));
                    assert_eq!(d.format.as_deref(), Some(s.format.as_str()));
                    assert_eq!(d.device, if s.cdrom { "cdrom" } else { "disk" });
                    assert_eq!(d.bus, if s.cdrom { "ide" } else { "virtio" });
                    assert_eq!(d.pool, None);
                }
                assert_eq!(p.nics.len(), usize::from(spec.nic.is_some()));
                let vnc = p.vnc.expect("every VM has VNC");
                assert_eq!(vnc.kind, "vnc");
                assert_eq!(vnc.listen.as_deref(), Some("127.0.0.1"));
                assert_eq!(vnc.port, Some(-1));
                assert_eq!(vnc.socket, None);
            }
        }
    }

    #[test]
    fn kernel_boot_with_cdrom_and_bridge() {
        let spec = kernel_spec(VirtType::Qemu);
        let xml = domain_xml(&spec);
        let p = parse_domain(&xml).unwrap();
        assert_eq!(p.kernel.as_deref(), Some("/var/lib/virtdeck/vmlinuz"));
        assert_eq!(p.boot_devs, vec!["hd"]);
        assert_eq!(
            p.disks,
            vec![
                ParsedDisk {
                    device: "disk".into(),
                    source: Some("/var/lib/libvirt/images/web01.qcow2".into()),
                    pool: None,
                    target: "vda".into(),
                    bus: "virtio".into(),
                    format: Some("qcow2".into()),
                },
                ParsedDisk {
                    device: "cdrom".into(),
                    source: Some("/var/lib/libvirt/images/debian.iso".into()),
                    pool: None,
                    target: "hdc".into(),
                    bus: "ide".into(),
                    format: Some("raw".into()),
                },
            ]
        );
        assert_eq!(
            p.nics,
            vec![ParsedNic {
                mac: Some("52:54:00:ab:cd:0f".into()),
                kind: "bridge".into(),
                source: Some("br0".into()),
                model: Some("virtio".into()),
                link_down: false,
            }]
        );
        // initrd and cmdline are there, the cmdline's '&' escaped by the writer.
        assert!(
            xml.contains("<initrd>/var/lib/virtdeck/initrd.img</initrd>"),
            "{xml}"
        );
        assert!(
            xml.contains("<cmdline>console=ttyS0 ks=http://10.0.0.1/ks.cfg?a=1&amp;b=2</cmdline>"),
            "{xml}"
        );
        assert!(xml.contains("<clock offset=\"localtime\"/>"), "{xml}");
        assert!(xml.contains("<readonly/>"), "{xml}");
        // QEMU (TCG) guests get no host-passthrough CPU.
        assert!(!xml.contains("<cpu"), "{xml}");
    }

    #[test]
    fn kernel_boot_without_initrd() {
        let mut spec = kernel_spec(VirtType::Qemu);
        spec.boot = BootSpec::Kernel {
            kernel: "/k".into(),
            initrd: None,
            cmdline: String::new(),
        };
        let xml = domain_xml(&spec);
        assert!(!xml.contains("<initrd"), "{xml}");
        assert!(xml.contains("<kernel>/k</kernel>"), "{xml}");
        assert_eq!(parse_domain(&xml).unwrap().kernel.as_deref(), Some("/k"));
    }

    #[test]
    fn network_boot_with_network_nic_and_e1000() {
        let spec = pxe_spec(VirtType::Kvm);
        let xml = domain_xml(&spec);
        let p = parse_domain(&xml).unwrap();
        assert_eq!(p.boot_devs, vec!["network", "hd"]);
        assert_eq!(p.kernel, None);
        assert_eq!(
            p.nics,
            vec![ParsedNic {
                mac: Some("52:54:00:aa:bb:cc".into()),
                kind: "network".into(),
                source: Some("default".into()),
                model: Some("e1000".into()),
                link_down: false,
            }]
        );
        assert_eq!(macs_in(&xml), vec!["52:54:00:aa:bb:cc"]);
        assert!(xml.contains("<cpu mode=\"host-passthrough\"/>"), "{xml}");
        assert!(xml.contains("<domain type=\"kvm\">"), "{xml}");
    }

    #[test]
    fn disk_only_with_block_device() {
        let spec = block_spec(VirtType::Qemu);
        let xml = domain_xml(&spec);
        let p = parse_domain(&xml).unwrap();
        assert_eq!(p.boot_devs, vec!["hd"]);
        assert!(p.nics.is_empty());
        assert!(macs_in(&xml).is_empty());
        assert_eq!(
            p.disks,
            vec![ParsedDisk {
                device: "disk".into(),
                source: Some("/dev/vg0/cu-web01".into()),
                pool: None,
                target: "vda".into(),
                bus: "virtio".into(),
                format: Some("raw".into()),
            }]
        );
        assert!(
            xml.contains("<disk type=\"block\" device=\"disk\">"),
            "{xml}"
        );
        assert!(xml.contains("<source dev=\"/dev/vg0/cu-web01\"/>"), "{xml}");
        assert!(!xml.contains("<description"), "{xml}");
        assert!(xml.contains("<clock offset=\"utc\"/>"), "{xml}");
    }

    #[test]
    fn cdrom_boot_numbers_disks_and_cdroms_separately() {
        let p = roundtrip(&cdrom_spec(VirtType::Qemu));
        assert_eq!(p.boot_devs, vec!["cdrom", "hd"]);
        let targets: Vec<(&str, &str)> = p
            .disks
            .iter()
            .map(|d| (d.target.as_str(), d.bus.as_str()))
            .collect();
        assert_eq!(
            targets,
            vec![
                ("vda", "virtio"),
                ("hdc", "ide"),
                ("vdb", "virtio"),
                ("hdd", "ide")
            ]
        );
    }

    #[test]
    fn description_is_escaped_not_injected() {
        let spec = escaping_spec(VirtType::Kvm);
        let xml = domain_xml(&spec);
        assert!(!xml.contains("<b>"), "{xml}");
        assert!(!xml.contains("Tom & Jerry"), "{xml}");
        assert!(xml.contains("Tom &amp; Jerry"), "{xml}");
        assert!(xml.contains("&lt;/description&gt;"), "{xml}");
        let p = parse_domain(&xml).unwrap();
        assert_eq!(p.description, NASTY);
        // The injected "<disk/>" stayed text: only the real disk is a device.
        assert_eq!(p.disks.len(), 1);
    }

    #[test]
    fn attribute_values_are_escaped() {
        let mut spec = base_spec(VirtType::Qemu);
        spec.disks[0].path = "/img/a'b\"c<d>&e.qcow2".into();
        spec.nic = Some(NicSpec {
            source: NicSource::Bridge("br'0\"><evil/>".into()),
            model: NicModel::Virtio,
            mac: Mac::qemu_local([1, 2, 3]),
        });
        let xml = domain_xml(&spec);
        assert!(!xml.contains("<evil/>"), "{xml}");
        let p = parse_domain(&xml).unwrap();
        assert_eq!(p.disks[0].source.as_deref(), Some("/img/a'b\"c<d>&e.qcow2"));
        assert_eq!(p.nics[0].source.as_deref(), Some("br'0\"><evil/>"));
    }

    #[test]
    fn rendered_document_layout() {
        let xml = domain_xml(&base_spec(VirtType::Qemu));
        for needle in [
            "<domain type=\"qemu\">",
            "<name>web01</name>",
            "<uuid>6f1c2a4e-9b1d-4c3e-8f2a-0123456789ab</uuid>",
            "<memory unit=\"MiB\">2048</memory>",
            "<currentMemory unit=\"MiB\">2048</currentMemory>",
            "<vcpu placement=\"static\">2</vcpu>",
            "<type arch=\"x86_64\" machine=\"pc\">hvm</type>",
            "<boot dev=\"hd\"/>",
            "<acpi/>",
            "<apic/>",
            "<on_poweroff>destroy</on_poweroff>",
            "<on_reboot>restart</on_reboot>",
            "<on_crash>destroy</on_crash>",
            "<driver name=\"qemu\" type=\"qcow2\"/>",
            "<source file=\"/var/lib/libvirt/images/web01.qcow2\"/>",
            "<target dev=\"vda\" bus=\"virtio\"/>",
            "<interface type=\"bridge\">",
            "<source bridge=\"br0\"/>",
            "<mac address=\"52:54:00:ab:cd:0f\"/>",
            "<model type=\"virtio\"/>",
            "<serial type=\"pty\">",
            "<target port=\"0\"/>",
            "<console type=\"pty\">",
            "<target type=\"serial\" port=\"0\"/>",
            "<graphics type=\"vnc\" port=\"-1\" autoport=\"yes\" listen=\"127.0.0.1\">",
            "<listen type=\"address\" address=\"127.0.0.1\"/>",
            "<model type=\"vga\"/>",
            "<input type=\"tablet\" bus=\"usb\"/>",
            "<memballoon model=\"virtio\"/>",
            "<rng model=\"virtio\">",
            "<backend model=\"random\">/dev/urandom</backend>",
        ] {
            assert!(xml.contains(needle), "missing {needle} in\n{xml}");
        }
        assert!(!xml.contains("0.0.0.0"), "{xml}");
    }

    #[test]
    fn disk_targets_follow_libvirt_naming() {
        assert_eq!(disk_target("vd", 0), "vda");
        assert_eq!(disk_target("vd", 25), "vdz");
        assert_eq!(disk_target("vd", 26), "vdaa");
        assert_eq!(disk_target("vd", 27), "vdab");
        assert_eq!(disk_target("vd", 26 + 26 * 26), "vdaaa");
        assert_eq!(disk_target("hd", 2), "hdc");
    }

    #[test]
    fn volume_xml_renders_and_escapes() {
        let xml = volume_xml("web01-disk0.qcow2", 20, DiskFormat::Qcow2);
        for needle in [
            "<volume>",
            "<name>web01-disk0.qcow2</name>",
            "<capacity unit=\"GiB\">20</capacity>",
            "<allocation unit=\"GiB\">0</allocation>",
            "<format type=\"qcow2\"/>",
        ] {
            assert!(xml.contains(needle), "missing {needle} in\n{xml}");
        }
        let raw = volume_xml("a<b>&c", 1, DiskFormat::Raw);
        assert!(raw.contains("<name>a&lt;b&gt;&amp;c</name>"), "{raw}");
        assert!(raw.contains("<format type=\"raw\"/>"), "{raw}");
    }

    /// What `virsh dumpxml` prints for a running virt-install'ed guest.
    const VIRSH_DUMP: &str = r#"<domain type='kvm' id='3'>
  <name>legacy-db</name>
  <uuid>0f8e7d6c-5b4a-4392-8170-6e5d4c3b2a19</uuid>
  <description>Installed by hand &amp; "kept" &lt;forever&gt;</description>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
    <vd:info xmlns:vd="urn:example"><name>not-the-name</name><disk device="disk"/></vd:info>
  </metadata>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static'>4</vcpu>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <boot dev='cdrom'/>
    <boot dev='hd'/>
    <bootmenu enable='no'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <vmport state='off'/>
  </features>
  <cpu mode='host-passthrough' check='none' migratable='on'/>
  <clock offset='utc'>
    <timer name='rtc' tickpolicy='catchup'/>
  </clock>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source pool='default' volume='x.qcow2' index='2'/>
      <backingStore type='file' index='3'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/base.qcow2'/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source dev='/dev/vg0/legacy-db-data' index='1'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'/>
    <interface type='network'>
      <mac address='52:54:00:DE:AD:01'/>
      <source network='default' portid='1c2b3a49-5867-4e3f-9a1b-2c3d4e5f6a7b' bridge='virbr0'/>
      <target dev='vnet2'/>
      <model type='virtio'/>
      <alias name='net0'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:de:ad:02'/>
      <source bridge='br0'/>
      <target dev='vnet3'/>
      <model type='e1000'/>
    </interface>
    <interface type='direct'>
      <mac address='52:54:00:de:ad:03'/>
      <source dev='eno1' mode='bridge'/>
    </interface>
    <interface type='user'>
      <mac address='52:54:00:de:ad:04'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/4'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
      <alias name='serial0'/>
    </serial>
    <console type='pty' tty='/dev/pts/4'>
      <source path='/dev/pts/4'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0' state='disconnected'/>
    </channel>
    <input type='tablet' bus='usb'/>
    <graphics type='spice' port='5901' autoport='no' listen='0.0.0.0'/>
    <graphics type='vnc' port='5900' autoport='no' listen='0.0.0.0'>
      <listen type='address' address='0.0.0.0'/>
    </graphics>
    <video>
      <model type='virtio' heads='1' primary='yes'/>
    </video>
    <memballoon model='virtio'/>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+994</label>
  </seclabel>
</domain>
"#;

    #[test]
    fn parses_a_virsh_dump() {
        let p = parse_domain(VIRSH_DUMP).unwrap();
        assert_eq!(p.name, "legacy-db");
        assert_eq!(p.uuid, "0f8e7d6c-5b4a-4392-8170-6e5d4c3b2a19");
        assert_eq!(p.domain_type, "kvm");
        assert_eq!(p.vcpus, 4);
        assert_eq!(p.memory_mib, 2048);
        assert_eq!(p.description, "Installed by hand & \"kept\" <forever>");
        assert_eq!(p.boot_devs, vec!["cdrom", "hd"]);
        assert_eq!(p.kernel, None);
        assert!(p.has_serial);
        assert_eq!(
            p.disks,
            vec![
                ParsedDisk {
                    device: "disk".into(),
                    source: Some("x.qcow2".into()),
                    pool: Some("default".into()),
                    target: "vda".into(),
                    bus: "virtio".into(),
                    format: Some("qcow2".into()),
                },
                ParsedDisk {
                    device: "disk".into(),
                    source: Some("/dev/vg0/legacy-db-data".into()),
                    pool: None,
                    target: "vdb".into(),
                    bus: "virtio".into(),
                    format: Some("raw".into()),
                },
                ParsedDisk {
                    device: "cdrom".into(),
                    source: None,
                    pool: None,
                    target: "sda".into(),
                    bus: "sata".into(),
                    format: Some("raw".into()),
                },
            ]
        );
        assert_eq!(
            p.nics,
            vec![
                ParsedNic {
                    mac: Some("52:54:00:DE:AD:01".into()),
                    kind: "network".into(),
                    source: Some("default".into()),
                    model: Some("virtio".into()),
                    link_down: false,
                },
                ParsedNic {
                    mac: Some("52:54:00:de:ad:02".into()),
                    kind: "bridge".into(),
                    source: Some("br0".into()),
                    model: Some("e1000".into()),
                    link_down: false,
                },
                ParsedNic {
                    mac: Some("52:54:00:de:ad:03".into()),
                    kind: "direct".into(),
                    source: Some("eno1".into()),
                    model: None,
                    link_down: false,
                },
                ParsedNic {
                    mac: Some("52:54:00:de:ad:04".into()),
                    kind: "user".into(),
                    source: None,
                    model: None,
                    link_down: false,
                },
            ]
        );
        assert_eq!(
            p.vnc,
            Some(ParsedGraphics {
                kind: "vnc".into(),
                listen: Some("0.0.0.0".into()),
                port: Some(5900),
                socket: None,
            })
        );
        assert_eq!(
            macs_in(VIRSH_DUMP),
            vec![
                "52:54:00:de:ad:01",
                "52:54:00:de:ad:02",
                "52:54:00:de:ad:03",
                "52:54:00:de:ad:04"
            ]
        );
    }

    #[test]
    fn vnc_listen_from_child_element_and_unix_socket() {
        let xml = r#"<domain type='qemu'><name>a</name>
            <devices>
              <graphics type='vnc' port='5905'><listen type='address' address='::1'/></graphics>
            </devices></domain>"#;
        let vnc = parse_domain(xml).unwrap().vnc.unwrap();
        assert_eq!(vnc.listen.as_deref(), Some("::1"));
        assert_eq!(vnc.port, Some(5905));

        let xml = r#"<domain type='qemu'><name>a</name>
            <devices>
              <graphics type='vnc'><listen type='socket' socket='/run/vnc.sock'/></graphics>
            </devices></domain>"#;
        let vnc = parse_domain(xml).unwrap().vnc.unwrap();
        assert_eq!(vnc.socket.as_deref(), Some("/run/vnc.sock"));
        assert_eq!(vnc.listen, None);
        assert_eq!(vnc.port, None);

        let xml = "<domain><name>a</name><devices><graphics type='spice'/></devices></domain>";
        assert_eq!(parse_domain(xml).unwrap().vnc, None);
    }

    #[test]
    fn per_device_boot_order_becomes_boot_devs() {
        let xml = r#"<domain type='kvm'><name>a</name><os><type>hvm</type><kernel> /boot/vmlinuz </kernel></os>
            <devices>
              <disk type='file' device='disk'><source file='/a'/><target dev='vda' bus='virtio'/><boot order='2'/></disk>
              <disk type='file' device='disk'><source file='/b'/><target dev='vdb' bus='virtio'/><boot order='4'/></disk>
              <disk type='file' device='cdrom'><source file='/c.iso'/><target dev='hdc' bus='ide'/><boot order='3'/></disk>
              <interface type='bridge'><source bridge='br0'/><boot order='1'/></interface>
            </devices></domain>"#;
        let p = parse_domain(xml).unwrap();
        assert_eq!(p.boot_devs, vec!["network", "hd", "cdrom"]);
        assert_eq!(p.kernel.as_deref(), Some("/boot/vmlinuz"));
        // No <vcpu>: libvirt's default of one; no <memory>: zero.
        assert_eq!(p.vcpus, 1);
        assert_eq!(p.memory_mib, 0);
        assert!(!p.has_serial);
    }

    #[test]
    fn memory_units() {
        let mem = |unit: &str, value: &str| {
            let attr = if unit.is_empty() {
                String::new()
            } else {
                format!(" unit='{unit}'")
            };
            let xml = format!("<domain><name>a</name><memory{attr}>{value}</memory></domain>");
            parse_domain(&xml).map(|d| d.memory_mib)
        };
        assert_eq!(mem("", "2097152").unwrap(), 2048);
        assert_eq!(mem("KiB", "2097152").unwrap(), 2048);
        assert_eq!(mem("k", "1048576").unwrap(), 1024);
        assert_eq!(mem("b", "1073741824").unwrap(), 1024);
        assert_eq!(mem("bytes", "1048576").unwrap(), 1);
        assert_eq!(mem("MiB", "512").unwrap(), 512);
        assert_eq!(mem("M", "512").unwrap(), 512);
        assert_eq!(mem("GiB", "4").unwrap(), 4096);
        assert_eq!(mem("G", "4").unwrap(), 4096);
        assert_eq!(mem("TiB", "1").unwrap(), 1024 * 1024);
        assert_eq!(mem("T", "2").unwrap(), 2 * 1024 * 1024);
        assert_eq!(mem("MB", "1048576").unwrap(), 1_000_000);
        assert_eq!(mem("GB", "1").unwrap(), 953);
        assert_eq!(mem("KiB", " 1024 ").unwrap(), 1);
        assert!(mem("furlongs", "1").is_err());
        assert!(mem("KiB", "lots").is_err());
        assert!(mem("KiB", "-1").is_err());
        assert!(mem("EiB", "99999999999").is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            "",
            "   ",
            "hello, world",
            "{\"name\": \"web01\"}",
            "<domain><name>a</name>",
            "<domain><name>a</domain>",
            "<domain><name>a</name></domain><domain/>",
            "<network><name>default</name></network>",
            "<domain type='kvm'></domain>",
            "<domain><name>a</name><vcpu>two</vcpu></domain>",
            "<domain><name>a&bogus;</name></domain>",
            "<domain a='1' a='2'><name>a</name></domain>",
            "<domain><name>a</name><devices><graphics type='vnc' port='x'/></devices></domain>",
            "stray <domain><name>a</name></domain>",
        ] {
            let r = parse_domain(bad);
            assert!(r.is_err(), "{bad:?} parsed as {r:?}");
            assert!(macs_in(bad).is_empty());
            let msg = r.unwrap_err().to_string();
            assert!(msg.starts_with("Invalid domain XML: "), "{msg}");
        }
    }

    #[test]
    fn prolog_comments_and_cdata_are_fine() {
        let xml = "<?xml version='1.0'?>\n<!-- made by hand -->\n<domain type='qemu'>\
            <name><![CDATA[cd]]>ata</name><vcpu>&#51;</vcpu></domain>\n";
        let p = parse_domain(xml).unwrap();
        assert_eq!(p.name, "cdata");
        assert_eq!(p.vcpus, 3);
    }

    /// libvirt's own schema check. `make test` installs libvirt-clients, which ships it.
    pub(crate) fn virt_xml_validate(xml: &str, kind: &str) {
        use std::io::Write as _;
        let mut file = tempfile::Builder::new()
            .suffix(".xml")
            .tempfile()
            .expect("temp file");
        file.write_all(xml.as_bytes()).expect("write temp file");
        file.flush().expect("flush temp file");
        let out = std::process::Command::new("virt-xml-validate")
            .arg(file.path())
            .arg(kind)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run virt-xml-validate ({e}); it is in the libvirt-clients package, \
                     which `make test` installs"
                )
            });
        assert!(
            out.status.success(),
            "virt-xml-validate {kind} rejected:\n{xml}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn rendered_domains_pass_libvirts_schema() {
        for vt in [VirtType::Kvm, VirtType::Qemu, VirtType::Test] {
            for spec in all_specs(vt) {
                virt_xml_validate(&domain_xml(&spec), "domain");
            }
        }
    }

    #[test]
    fn rendered_volumes_pass_libvirts_schema() {
        virt_xml_validate(
            &volume_xml("web01-disk0", 20, DiskFormat::Qcow2),
            "storagevol",
        );
        virt_xml_validate(&volume_xml("web01-disk1", 1, DiskFormat::Raw), "storagevol");
    }
}
