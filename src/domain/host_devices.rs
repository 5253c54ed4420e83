//! The host's PCI and USB devices (libvirt node devices) and passing one through to a VM:
//! read from node device XML, the rules that refuse a device (no IOMMU, a group shared
//! with devices the host still drives, a bridge, a device another VM has), and the
//! `<hostdev>` element. No I/O.

use quick_xml::events::Event;
use quick_xml::{Reader, Writer};
use serde::Serialize;
use std::collections::HashMap;

/// A PCI or USB device of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HostDevice {
    /// libvirt's node device name, e.g. `pci_0000_03_00_0`, `usb_1_2`.
    pub name: String,
    /// `pci` or `usb`.
    pub kind: String,
    /// How it is named in a VM's `<hostdev>`: `0000:03:00.0`, or `usb 1234:5678`.
    pub address: String,
    pub vendor: String,
    pub product: String,
    /// The host driver bound to it (`igb`, `vfio-pci`…), if libvirt says.
    pub driver: Option<String>,
    /// The PCI IOMMU group; none without an IOMMU (and for USB).
    pub iommu_group: Option<u32>,
    /// Every PCI address in its IOMMU group, itself included.
    pub group: Vec<String>,
    /// The PCI class code (`0x020000` is Ethernet, `0x06….` a bridge).
    pub pci_class: Option<u32>,
    /// USB bus and device number.
    #[serde(skip)]
    pub usb_bus_device: Option<(u32, u32)>,
    #[serde(skip)]
    pub usb_ids: Option<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
#[error("a node device's XML could not be read: {0}")]
pub struct NodeDeviceXmlError(String);

fn err(e: impl std::fmt::Display) -> NodeDeviceXmlError {
    NodeDeviceXmlError(e.to_string())
}

/// A PCI address as `0000:03:00.0` from its four numbers.
pub fn pci_address(domain: u32, bus: u32, slot: u32, function: u32) -> String {
    format!("{domain:04x}:{bus:02x}:{slot:02x}.{function:x}")
}

fn number(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A node device of libvirt (`virsh nodedev-dumpxml`): a PCI or USB device, or `None`
/// for the other kinds (the computer, SCSI hosts, network interfaces…).
pub fn parse_node_device(xml: &str) -> Result<Option<HostDevice>, NodeDeviceXmlError> {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut name = String::new();
    let mut driver = None;
    let mut kind = None;
    let mut nums: HashMap<String, u32> = HashMap::new();
    let (mut vendor, mut product) = (String::new(), String::new());
    let (mut vendor_id, mut product_id) = (String::new(), String::new());
    let mut iommu_group = None;
    let mut group = Vec::new();
    loop {
        let ev = reader.read_event().map_err(err)?;
        let (e, empty) = match &ev {
            Event::Eof => break,
            Event::Start(e) => (e.clone(), false),
            Event::Empty(e) => (e.clone(), true),
            Event::Text(t) => {
                text.push_str(&t.xml10_content());
                continue;
            }
            Event::GeneralRef(r) => {
                match r.resolve_char_ref() {
                    Ok(Some(c)) => text.push(c),
                    _ => text
                        .push_str(quick_xml::escape::resolve_predefined_entity(r).unwrap_or("?")),
                }
                continue;
            }
            Event::End(_) => {
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                let t = text.trim().to_string();
                match p.as_slice() {
                    ["device", "name"] => name = t,
                    ["device", "driver", "name"] => driver = Some(t).filter(|d| !d.is_empty()),
                    ["device", "capability", "vendor"] => vendor = t,
                    ["device", "capability", "product"] => product = t,
                    ["device", "capability", field] => {
                        if let Some(n) = number(&t) {
                            nums.insert((*field).to_string(), n);
                        }
                    }
                    _ => {}
                }
                path.pop();
                text.clear();
                continue;
            }
            _ => continue,
        };
        path.push(e.name().as_ref().to_string());
        text.clear();
        let attr = |key: &str| {
            e.attributes().flatten().find_map(|a| {
                let k: &str = a.key.as_ref();
                (k == key).then(|| a.value.to_string())
            })
        };
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["device", "capability"] => kind = attr("type"),
            ["device", "capability", "vendor"] => vendor_id = attr("id").unwrap_or_default(),
            ["device", "capability", "product"] => product_id = attr("id").unwrap_or_default(),
            ["device", "capability", "iommuGroup"] => {
                iommu_group = attr("number").and_then(|n| number(&n))
            }
            ["device", "capability", "iommuGroup", "address"] => {
                let n = |k: &str| attr(k).and_then(|v| number(&v)).unwrap_or(0);
                group.push(pci_address(n("domain"), n("bus"), n("slot"), n("function")));
            }
            _ => {}
        }
        if empty {
            path.pop();
        }
    }
    let n = |k: &str| nums.get(k).copied().unwrap_or(0);
    Ok(match kind.as_deref() {
        Some("pci") => Some(HostDevice {
            address: pci_address(n("domain"), n("bus"), n("slot"), n("function")),
            name,
            kind: "pci".into(),
            vendor,
            product,
            driver,
            iommu_group,
            group,
            pci_class: nums.get("class").copied(),
            usb_bus_device: None,
            usb_ids: None,
        }),
        Some("usb_device") => Some(HostDevice {
            address: usb_key(&vendor_id, &product_id),
            name,
            kind: "usb".into(),
            vendor,
            product,
            driver,
            iommu_group: None,
            group: Vec::new(),
            pci_class: None,
            usb_bus_device: Some((n("bus"), n("device"))),
            usb_ids: Some((vendor_id, product_id)),
        }),
        _ => None,
    })
}

fn usb_key(vendor_id: &str, product_id: &str) -> String {
    let strip = |s: &str| s.trim_start_matches("0x").to_ascii_lowercase();
    format!("usb {}:{}", strip(vendor_id), strip(product_id))
}

/// The host has an IOMMU turned on: libvirt reports IOMMU groups for its PCI devices.
pub fn iommu_on(devices: &[HostDevice]) -> bool {
    devices.iter().any(|d| d.iommu_group.is_some())
}

/// Drivers that leave a device free for a VM.
fn free_driver(driver: Option<&str>) -> bool {
    matches!(driver, None | Some("vfio-pci") | Some("pci-stub"))
}

fn is_bridge(d: &HostDevice) -> bool {
    d.pci_class.is_some_and(|c| c >> 16 == 0x06)
}

/// Why `dev` cannot be passed to VM `vm`, or `None` when it can. `in_use` maps a
/// device's address to the VM that has it. (`vm` empty: to any VM.)
pub fn attach_refusal(
    dev: &HostDevice,
    all: &[HostDevice],
    in_use: &HashMap<String, String>,
    vm: &str,
) -> Option<String> {
    if let Some(vm) = in_use.get(&dev.address) {
        return Some(format!(
            "{} is passed through to VM {vm} already.",
            dev.address
        ));
    }
    if dev.kind != "pci" {
        return None;
    }
    if is_bridge(dev) {
        return Some(format!(
            "{} is a PCI bridge or host bridge; the host needs it, and it cannot be passed through.",
            dev.address
        ));
    }
    if !iommu_on(all) {
        return Some(
            "This host has no IOMMU turned on, so no PCI device can be passed through. Turn on \
             VT-d/AMD-Vi in the firmware and boot with intel_iommu=on (or amd_iommu=on)."
                .into(),
        );
    }
    if dev.iommu_group.is_none() {
        return Some(format!("{} is in no IOMMU group.", dev.address));
    }
    for member in dev.group.iter().filter(|a| **a != dev.address) {
        let Some(other) = all.iter().find(|d| d.kind == "pci" && &d.address == member) else {
            continue;
        };
        if is_bridge(other) {
            continue;
        }
        if let Some(other_vm) = in_use.get(member).filter(|v| v.as_str() != vm) {
            let vm = other_vm;
            return Some(format!(
                "{member}, in the same IOMMU group, is passed through to VM {vm}; a group goes to one VM."
            ));
        }
        if !free_driver(other.driver.as_deref()) && !in_use.contains_key(member) {
            return Some(format!(
                "{member} ({}), in the same IOMMU group, is in use by the host (driver {}); every \
                 device of a group must leave the host together.",
                other.product,
                other.driver.as_deref().unwrap_or("?")
            ));
        }
    }
    None
}

/// The `<hostdev>` element that passes `dev` through; PCI devices are `managed` (libvirt
/// takes them from their host driver while the VM has them, and gives them back).
pub fn hostdev_xml(dev: &HostDevice) -> String {
    let mut w = Writer::new(Vec::new());
    let _ = w
        .create_element("hostdev")
        .with_attribute(("mode", "subsystem"))
        .with_attribute(("type", dev.kind.as_str()))
        .with_attribute(("managed", "yes"))
        .write_inner_content(|w| {
            w.create_element("source").write_inner_content(|w| {
                match (&dev.usb_ids, dev.usb_bus_device) {
                    (Some((vendor, product)), _) => {
                        w.create_element("vendor")
                            .with_attribute(("id", vendor.as_str()))
                            .write_empty()?;
                        w.create_element("product")
                            .with_attribute(("id", product.as_str()))
                            .write_empty()?;
                    }
                    _ => {
                        let (domain, rest) = dev.address.split_once(':').unwrap_or(("0000", ""));
                        let (bus, rest) = rest.split_once(':').unwrap_or(("00", ""));
                        let (slot, function) = rest.split_once('.').unwrap_or(("00", "0"));
                        w.create_element("address")
                            .with_attribute(("domain", format!("0x{domain}").as_str()))
                            .with_attribute(("bus", format!("0x{bus}").as_str()))
                            .with_attribute(("slot", format!("0x{slot}").as_str()))
                            .with_attribute(("function", format!("0x{function}").as_str()))
                            .write_empty()?;
                    }
                }
                Ok(())
            })?;
            Ok(())
        });
    String::from_utf8(w.into_inner()).unwrap_or_default()
}

/// The address key of a VM's `<hostdev>` from its source's attributes, as
/// [`HostDevice::address`] has it: PCI `domain`/`bus`/`slot`/`function`, USB vendor and
/// product ids.
pub fn hostdev_key(kind: &str, attr: impl Fn(&str, &str) -> Option<String>) -> Option<String> {
    match kind {
        "pci" => {
            let n = |k: &str| attr("address", k).and_then(|v| number(&v));
            Some(pci_address(
                n("domain")?,
                n("bus")?,
                n("slot")?,
                n("function")?,
            ))
        }
        "usb" => Some(usb_key(&attr("vendor", "id")?, &attr("product", "id")?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IOMMU group: its number and its members' (bus, slot, function).
    type Group<'a> = (u32, &'a [(u32, u32, u32)]);

    fn pci(
        addr: (u32, u32, u32),
        class: &str,
        driver: Option<&str>,
        group: Option<Group<'_>>,
    ) -> String {
        let (bus, slot, function) = addr;
        let driver = driver
            .map(|d| format!("<driver><name>{d}</name></driver>"))
            .unwrap_or_default();
        let group = group
            .map(|(n, members)| {
                let m: String = members
                    .iter()
                    .map(|(b, s, f)| {
                        format!("<address domain='0x0000' bus='{b:#04x}' slot='{s:#04x}' function='{f:#x}'/>")
                    })
                    .collect();
                format!("<iommuGroup number='{n}'>{m}</iommuGroup>")
            })
            .unwrap_or_default();
        format!(
            "<device><name>pci_0000_{bus:02x}_{slot:02x}_{function:x}</name><parent>computer</parent>{driver}\
             <capability type='pci'><class>{class}</class><domain>0</domain><bus>{bus}</bus><slot>{slot}</slot>\
             <function>{function}</function><product id='0x10c9'>Thing {bus}</product>\
             <vendor id='0x8086'>Intel Corporation</vendor>{group}</capability></device>"
        )
    }

    fn parse(xml: &str) -> HostDevice {
        parse_node_device(xml).expect("parses").expect("a device")
    }

    #[test]
    fn pci_and_usb_devices_are_read_and_others_skipped() {
        let nic = parse(&pci(
            (3, 0, 0),
            "0x020000",
            Some("igb"),
            Some((12, &[(3, 0, 0)])),
        ));
        assert_eq!(nic.address, "0000:03:00.0");
        assert_eq!(nic.name, "pci_0000_03_00_0");
        assert_eq!(
            (nic.driver.as_deref(), nic.iommu_group),
            (Some("igb"), Some(12))
        );
        assert_eq!(nic.group, ["0000:03:00.0"]);
        assert_eq!(nic.pci_class, Some(0x020000));
        let usb = parse(
            "<device><name>usb_1_2</name><driver><name>usb</name></driver><capability type='usb_device'>\
             <bus>1</bus><device>2</device><product id='0x5678'>Smart card reader</product>\
             <vendor id='0x1234'>Acme</vendor></capability></device>",
        );
        assert_eq!(
            (usb.kind.as_str(), usb.address.as_str()),
            ("usb", "usb 1234:5678")
        );
        assert_eq!(usb.usb_bus_device, Some((1, 2)));
        assert_eq!(
            hostdev_xml(&usb),
            "<hostdev mode=\"subsystem\" type=\"usb\" managed=\"yes\"><source><vendor id=\"0x1234\"/>\
             <product id=\"0x5678\"/></source></hostdev>"
        );
        assert!(parse_node_device(
            "<device><name>computer</name><capability type='system'/></device>"
        )
        .expect("parses")
        .is_none());
        assert!(parse_node_device("<device><name>x</name").is_err());
    }

    #[test]
    fn the_hostdev_names_the_pci_address_and_is_read_back_to_it() {
        let dev = parse(&pci(
            (0x3b, 0x1f, 7),
            "0x030000",
            None,
            Some((4, &[(0x3b, 0x1f, 7)])),
        ));
        let xml = hostdev_xml(&dev);
        assert_eq!(
            xml,
            "<hostdev mode=\"subsystem\" type=\"pci\" managed=\"yes\"><source><address domain=\"0x0000\" \
             bus=\"0x3b\" slot=\"0x1f\" function=\"0x7\"/></source></hostdev>"
        );
        let attrs: HashMap<&str, &str> = [
            ("domain", "0x0000"),
            ("bus", "0x3b"),
            ("slot", "0x1f"),
            ("function", "0x7"),
        ]
        .into();
        assert_eq!(
            hostdev_key("pci", |el, k| (el == "address")
                .then(|| attrs.get(k).map(|v| v.to_string()))
                .flatten()),
            Some(dev.address.clone())
        );
    }

    #[test]
    fn refusals_say_why() {
        let gpu = parse(&pci(
            (1, 0, 0),
            "0x030000",
            Some("nouveau"),
            Some((1, &[(0, 1, 0), (1, 0, 0), (1, 0, 1)])),
        ));
        let audio = parse(&pci(
            (1, 0, 1),
            "0x040300",
            Some("snd_hda_intel"),
            Some((1, &[(0, 1, 0), (1, 0, 0), (1, 0, 1)])),
        ));
        let root_port = parse(&pci(
            (0, 1, 0),
            "0x060400",
            Some("pcieport"),
            Some((1, &[(0, 1, 0), (1, 0, 0), (1, 0, 1)])),
        ));
        let nic = parse(&pci(
            (3, 0, 0),
            "0x020000",
            Some("igb"),
            Some((12, &[(3, 0, 0)])),
        ));
        let all = vec![gpu.clone(), audio.clone(), root_port.clone(), nic.clone()];
        let none = HashMap::new();
        // Its own group, driven by the host: libvirt takes it over (managed).
        assert_eq!(attach_refusal(&nic, &all, &none, ""), None);
        // The audio function shares the GPU's group and the host still drives it.
        let why = attach_refusal(&gpu, &all, &none, "").expect("refused");
        assert!(
            why.contains("0000:01:00.1") && why.contains("snd_hda_intel"),
            "{why}"
        );
        // Bound to vfio-pci, it leaves the group free; the root port does not count.
        let mut audio_vfio = audio.clone();
        audio_vfio.driver = Some("vfio-pci".into());
        let freed = vec![gpu.clone(), audio_vfio, root_port.clone(), nic.clone()];
        assert_eq!(attach_refusal(&gpu, &freed, &none, ""), None);
        assert!(attach_refusal(&root_port, &all, &none, "")
            .expect("bridge")
            .contains("bridge"));
        let used: HashMap<String, String> =
            [("0000:03:00.0".to_string(), "db01".to_string())].into();
        assert!(attach_refusal(&nic, &all, &used, "")
            .expect("used")
            .contains("db01"));
        // A group goes to one VM: the GPU's audio function to the VM that has the GPU.
        let gpu_used: HashMap<String, String> =
            [("0000:01:00.0".to_string(), "desk".to_string())].into();
        let mut audio_free = audio.clone();
        audio_free.driver = None;
        let group_free = vec![gpu.clone(), audio_free.clone(), root_port.clone()];
        assert_eq!(
            attach_refusal(&audio_free, &group_free, &gpu_used, "desk"),
            None
        );
        assert!(attach_refusal(&audio_free, &group_free, &gpu_used, "other")
            .expect("other VM")
            .contains("desk"));
        // No IOMMU: no PCI device; USB still goes.
        let mut plain = nic.clone();
        plain.iommu_group = None;
        plain.group.clear();
        let why =
            attach_refusal(&plain, std::slice::from_ref(&plain), &none, "").expect("no iommu");
        assert!(why.contains("no IOMMU"), "{why}");
        assert!(!iommu_on(std::slice::from_ref(&plain)));
    }
}
