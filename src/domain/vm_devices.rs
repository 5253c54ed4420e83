//! Boot order, boot menu, and the small devices an admin turns on or off after a VM
//! exists (watchdog, random number generator, memory balloon): read from a definition,
//! and written back into it event by event through quick-xml, every other element kept
//! as it was. The result applies from the VM's next start.

use super::create_plan::{field, FieldError};
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, Writer};
use serde::{Deserialize, Serialize};

/// A device the firmware boots from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootDev {
    /// The first disk.
    Hd,
    /// The CD-ROM drive.
    Cdrom,
    /// PXE from the first NIC.
    Network,
}

impl BootDev {
    pub fn as_str(self) -> &'static str {
        match self {
            BootDev::Hd => "hd",
            BootDev::Cdrom => "cdrom",
            BootDev::Network => "network",
        }
    }

    pub fn parse(s: &str) -> Option<BootDev> {
        match s.trim() {
            "hd" => Some(BootDev::Hd),
            "cdrom" => Some(BootDev::Cdrom),
            "network" => Some(BootDev::Network),
            _ => None,
        }
    }

    pub const ALL: [BootDev; 3] = [BootDev::Hd, BootDev::Cdrom, BootDev::Network];
}

/// What the VM page's "Boot and devices" form shows and changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceOptions {
    /// Boot order, first first (1 to 3 devices, each once).
    pub boot: Vec<BootDev>,
    /// The firmware's boot menu (press Esc/F12 at start).
    pub boot_menu: bool,
    /// An i6300esb watchdog that resets the VM when the guest stops feeding it.
    pub watchdog: bool,
    /// A virtio random number generator fed from the host's /dev/urandom.
    pub rng: bool,
    /// The virtio memory balloon (memory statistics, giving memory back).
    pub balloon: bool,
    /// The serial console's output kept in a file on the host (`<serial><log>`).
    pub serial_log: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("the VM's definition could not be changed: {0}")]
pub struct DevicesXmlError(String);

fn err(e: impl std::fmt::Display) -> DevicesXmlError {
    DevicesXmlError(e.to_string())
}

/// Checks a requested boot order: 1 to 3 devices, none twice.
pub fn check_boot(boot: &[BootDev]) -> Result<(), Vec<FieldError>> {
    if boot.is_empty() {
        return Err(vec![field(
            "boot",
            "Choose at least one device to boot from.",
        )]);
    }
    for (i, d) in boot.iter().enumerate() {
        if boot[..i].contains(d) {
            return Err(vec![field(
                "boot",
                format!("{} is in the boot order twice.", d.as_str()),
            )]);
        }
    }
    Ok(())
}

fn attr(e: &BytesStart<'_>, key: &str) -> Option<String> {
    e.attributes().flatten().find_map(|a| {
        let k: &str = a.key.as_ref();
        (k == key).then(|| a.value.to_string())
    })
}

/// The options as a definition has them. A definition without `<memballoon>` has one
/// (libvirt adds it); `boot_devs` is what the XML reader found (`xml::ParsedDomain`).
pub fn read(domain_xml: &str, boot_devs: &[String]) -> Result<DeviceOptions, DevicesXmlError> {
    let mut reader = Reader::from_str(domain_xml);
    let mut path: Vec<String> = Vec::new();
    let mut opts = DeviceOptions {
        boot: boot_devs.iter().filter_map(|d| BootDev::parse(d)).collect(),
        boot_menu: false,
        watchdog: false,
        rng: false,
        balloon: true,
        serial_log: false,
    };
    loop {
        let ev = reader.read_event().map_err(err)?;
        let (e, empty) = match &ev {
            Event::Eof => break,
            Event::Start(e) => (e.clone(), false),
            Event::Empty(e) => (e.clone(), true),
            Event::End(_) => {
                path.pop();
                continue;
            }
            _ => continue,
        };
        path.push(e.name().as_ref().to_string());
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["domain", "os", "bootmenu"] => {
                opts.boot_menu = attr(&e, "enable").as_deref() == Some("yes")
            }
            ["domain", "devices", "watchdog"] => opts.watchdog = true,
            ["domain", "devices", "rng"] => opts.rng = true,
            ["domain", "devices", "memballoon"] => {
                opts.balloon = attr(&e, "model").as_deref() != Some("none")
            }
            ["domain", "devices", "serial", "log"] => opts.serial_log = true,
            _ => {}
        }
        if empty {
            path.pop();
        }
    }
    if opts.boot.is_empty() {
        opts.boot.push(BootDev::Hd);
    }
    Ok(opts)
}

/// Elements [`apply`] writes itself, so the old ones are left out: the boot order (also
/// per-device `<boot order>`, which libvirt refuses beside `<os><boot>`), the boot menu,
/// and the three devices.
fn replaced(path: &[String]) -> bool {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    matches!(
        p.as_slice(),
        ["domain", "os", "boot" | "bootmenu"]
            | ["domain", "devices", "watchdog" | "rng" | "memballoon"]
            | ["domain", "devices", "serial", "log"]
            | ["domain", "devices", _, "boot"]
    )
}

/// `domain_xml` (inactive) with `opts` written into it; the serial log, when on, goes
/// to `serial_log_file` (on the first serial port; a VM without one is refused).
pub fn apply(
    domain_xml: &str,
    opts: &DeviceOptions,
    serial_log_file: &str,
) -> Result<String, DevicesXmlError> {
    let mut reader = Reader::from_str(domain_xml);
    let mut w = Writer::new(Vec::new());
    let mut path: Vec<String> = Vec::new();
    let mut skip_depth: Option<usize> = None;
    let mut os_done = false;
    let mut devices_done = false;
    let mut serial_seen = false;
    loop {
        let ev = reader.read_event().map_err(err)?;
        match ev {
            Event::Eof => break,
            Event::Start(e) => {
                path.push(e.name().as_ref().to_string());
                if skip_depth.is_some() {
                    continue;
                }
                if replaced(&path) {
                    skip_depth = Some(path.len());
                    continue;
                }
                w.write_event(Event::Start(e)).map_err(err)?;
            }
            Event::Empty(e) => {
                path.push(e.name().as_ref().to_string());
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                if skip_depth.is_none() && !replaced(&path) {
                    // An empty `<devices/>` (rare) gets the devices inside it.
                    if p.as_slice() == ["domain", "devices"] {
                        w.write_event(Event::Start(e.to_owned())).map_err(err)?;
                        write_devices(&mut w, opts)?;
                        w.write_event(Event::End(e.to_end().into_owned()))
                            .map_err(err)?;
                        devices_done = true;
                    } else {
                        w.write_event(Event::Empty(e)).map_err(err)?;
                    }
                }
                path.pop();
            }
            Event::End(e) => {
                let depth = path.len();
                let at: Vec<String> = path.clone();
                path.pop();
                match skip_depth {
                    Some(d) if d == depth => {
                        skip_depth = None;
                        continue;
                    }
                    Some(_) => continue,
                    None => {}
                }
                let at: Vec<&str> = at.iter().map(String::as_str).collect();
                match at.as_slice() {
                    ["domain", "devices", "serial"] if !serial_seen => {
                        serial_seen = true;
                        if opts.serial_log {
                            w.create_element("log")
                                .with_attributes([("file", serial_log_file), ("append", "on")])
                                .write_empty()
                                .map_err(err)?;
                        }
                    }
                    ["domain", "os"] => {
                        write_boot(&mut w, opts)?;
                        os_done = true;
                    }
                    ["domain", "devices"] => {
                        write_devices(&mut w, opts)?;
                        devices_done = true;
                    }
                    _ => {}
                }
                w.write_event(Event::End(e)).map_err(err)?;
            }
            other => {
                if skip_depth.is_none() {
                    w.write_event(other).map_err(err)?;
                }
            }
        }
    }
    if !os_done || !devices_done {
        return Err(DevicesXmlError(
            "it has no <os> or no <devices> element".into(),
        ));
    }
    if opts.serial_log && !serial_seen {
        return Err(DevicesXmlError(
            "it has no serial port whose output could be kept".into(),
        ));
    }
    String::from_utf8(w.into_inner()).map_err(err)
}

fn write_boot(w: &mut Writer<Vec<u8>>, opts: &DeviceOptions) -> Result<(), DevicesXmlError> {
    for d in &opts.boot {
        w.create_element("boot")
            .with_attribute(("dev", d.as_str()))
            .write_empty()
            .map_err(err)?;
    }
    w.create_element("bootmenu")
        .with_attribute(("enable", if opts.boot_menu { "yes" } else { "no" }))
        .write_empty()
        .map_err(err)?;
    Ok(())
}

fn write_devices(w: &mut Writer<Vec<u8>>, opts: &DeviceOptions) -> Result<(), DevicesXmlError> {
    if opts.watchdog {
        w.create_element("watchdog")
            .with_attributes([("model", "i6300esb"), ("action", "reset")])
            .write_empty()
            .map_err(err)?;
    }
    if opts.rng {
        w.create_element("rng")
            .with_attribute(("model", "virtio"))
            .write_inner_content(|w| {
                w.create_element("backend")
                    .with_attribute(("model", "random"))
                    .write_text_content(quick_xml::events::BytesText::new("/dev/urandom"))?;
                Ok::<_, std::io::Error>(())
            })
            .map_err(err)?;
    }
    w.create_element("memballoon")
        .with_attribute(("model", if opts.balloon { "virtio" } else { "none" }))
        .write_empty()
        .map_err(err)?;
    Ok(())
}

/// A CD-ROM drive's `<disk>` with `iso` in it (`None`: empty), for libvirt's device
/// update (media change): same target and bus as the drive has, read-only.
pub fn cdrom_xml(target_dev: &str, bus: &str, iso: Option<&str>) -> String {
    let mut w = Writer::new(Vec::new());
    let written = w
        .create_element("disk")
        .with_attributes([("type", "file"), ("device", "cdrom")])
        .write_inner_content(|w| {
            w.create_element("driver")
                .with_attributes([("name", "qemu"), ("type", "raw")])
                .write_empty()?;
            if let Some(path) = iso {
                w.create_element("source")
                    .with_attribute(("file", path))
                    .write_empty()?;
            }
            w.create_element("target")
                .with_attributes([("dev", target_dev), ("bus", bus)])
                .write_empty()?;
            w.create_element("readonly").write_empty()?;
            Ok::<_, std::io::Error>(())
        });
    match written {
        Ok(_) => String::from_utf8(w.into_inner()).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::xml::parse_domain;

    const VM: &str = r#"<domain type='qemu'>
  <name>web01</name>
  <uuid>11111111-2222-4333-8444-555555555555</uuid>
  <description>a &amp; b</description>
  <memory unit='MiB'>1024</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/web01.qcow2'/><target dev='vda' bus='virtio'/><boot order='1'/></disk>
    <interface type='bridge'><mac address='52:54:00:aa:bb:cc'/><source bridge='br0'/><model type='virtio'/></interface>
    <serial type='pty'><target port='0'/></serial>
    <memballoon model='virtio'/>
  </devices>
</domain>"#;

    fn opts(xml: &str) -> DeviceOptions {
        let parsed = parse_domain(xml).unwrap();
        read(xml, &parsed.boot_devs).unwrap()
    }

    #[test]
    fn options_are_read_from_a_definition() {
        let o = opts(VM);
        assert_eq!(o.boot, vec![BootDev::Hd]);
        assert!(!o.boot_menu && !o.watchdog && !o.rng && o.balloon);
    }

    #[test]
    fn options_are_written_and_read_back_with_everything_else_kept() {
        let want = DeviceOptions {
            boot: vec![BootDev::Cdrom, BootDev::Hd, BootDev::Network],
            boot_menu: true,
            watchdog: true,
            rng: true,
            balloon: false,
            serial_log: true,
        };
        let xml = apply(VM, &want, "/var/log/libvirt/qemu/web01-serial.log").unwrap();
        assert_eq!(opts(&xml), want, "{xml}");
        // Per-device boot order is gone (libvirt refuses both kinds at once).
        assert!(!xml.contains("<boot order"), "{xml}");
        assert!(xml.contains("<memballoon model=\"none\"/>"), "{xml}");
        assert!(
            xml.contains("<serial type='pty'><target port='0'/><log file=\"/var/log/libvirt/qemu/web01-serial.log\" append=\"on\"/></serial>"),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<rng model=\"virtio\"><backend model=\"random\">/dev/urandom</backend></rng>"
            ),
            "{xml}"
        );
        let before = parse_domain(VM).unwrap();
        let after = parse_domain(&xml).unwrap();
        assert_eq!(after.description, "a & b");
        assert_eq!(after.disks, before.disks);
        assert_eq!(after.nics, before.nics);
        // And back: off again, one boot device.
        let back = apply(
            &xml,
            &DeviceOptions {
                boot: vec![BootDev::Hd],
                boot_menu: false,
                watchdog: false,
                rng: false,
                balloon: true,
                serial_log: false,
            },
            "/unused",
        )
        .unwrap();
        assert_eq!(opts(&back), opts(VM), "{back}");
        assert!(
            !back.contains("watchdog") && !back.contains("<rng"),
            "{back}"
        );
        crate::domain::xml::tests::virt_xml_validate(&xml, "domain");
        crate::domain::xml::tests::virt_xml_validate(&back, "domain");
    }

    #[test]
    fn a_cdrom_change_names_the_drive_and_escapes_the_path() {
        assert_eq!(
            cdrom_xml("sdb", "sata", Some("/isos/a&b.iso")),
            "<disk type=\"file\" device=\"cdrom\"><driver name=\"qemu\" type=\"raw\"/><source file=\"/isos/a&amp;b.iso\"/><target dev=\"sdb\" bus=\"sata\"/><readonly/></disk>"
        );
        assert!(!cdrom_xml("hdc", "ide", None).contains("<source"));
    }

    #[test]
    fn a_boot_order_needs_a_device_and_none_twice() {
        assert!(check_boot(&[BootDev::Hd, BootDev::Cdrom]).is_ok());
        assert_eq!(check_boot(&[]).unwrap_err()[0].field, "boot");
        assert!(check_boot(&[BootDev::Hd, BootDev::Hd]).unwrap_err()[0]
            .message
            .contains("twice"));
    }

    #[test]
    fn a_definition_without_os_or_devices_is_refused() {
        assert!(apply("<domain><name>x</name></domain>", &opts(VM), "/x").is_err());
        // The serial log needs a serial port.
        let no_serial = VM.replace("<serial type='pty'><target port='0'/></serial>", "");
        let mut o = opts(VM);
        o.serial_log = true;
        assert!(apply(&no_serial, &o, "/x").is_err());
    }
}
