//! Cloning a VM: the source's definition rewritten for the copy (new name, UUID, MACs,
//! disk paths, serial log), the way virt-clone does it, event by event through
//! quick-xml so every value stays escaped and every other device is kept as it was.

use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer, XmlVersion};
use std::collections::HashMap;

/// What changes between a VM and its clone.
#[derive(Debug, Clone, Default)]
pub struct CloneEdits {
    pub name: String,
    pub uuid: String,
    /// Old MAC (lower case) → new MAC.
    pub macs: HashMap<String, String>,
    /// Old disk path → new disk path.
    pub disks: HashMap<String, String>,
    /// Old serial log path → new one.
    pub logs: HashMap<String, String>,
    /// The format every disk (not CD-ROM) of the clone has, when it differs from the
    /// source's: a linked clone's disks are qcow2 overlays whatever the template's are.
    pub disk_format: Option<String>,
    /// Media the clone must not share (a cloud-init seed belongs to its VM alone): a
    /// drive with one of these sources stays in the clone, empty.
    pub ejected: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("the VM's definition could not be rewritten for the clone: {0}")]
pub struct CloneXmlError(String);

fn err(e: impl std::fmt::Display) -> CloneXmlError {
    CloneXmlError(e.to_string())
}

/// Rewrites `source` (inactive domain XML) for the clone described by `edits`.
///
/// Besides the edits: a fixed VNC/SPICE port becomes automatic (two VMs cannot share
/// one), `<nvram>` is dropped so libvirt makes a fresh one for the clone, and generated
/// interface target names are dropped.
pub fn clone_domain_xml(source: &str, edits: &CloneEdits) -> Result<String, CloneXmlError> {
    let mut reader = Reader::from_str(source);
    let mut w = Writer::new(Vec::new());
    let mut path: Vec<String> = Vec::new();
    // Depth at which we are skipping a dropped element's content, if any.
    let mut skip_depth: Option<usize> = None;
    // Inside a `<disk device='disk'>` (not a CD-ROM or floppy).
    let mut in_data_disk = false;
    loop {
        let ev = reader.read_event().map_err(err)?;
        match ev {
            Event::Eof => break,
            Event::Start(e) => {
                let name = e.name().as_ref().to_string();
                path.push(name);
                if skip_depth.is_some() {
                    continue;
                }
                if dropped(&path) || ejected(&e, &path, edits) {
                    skip_depth = Some(path.len());
                    continue;
                }
                if is_disk(&path) {
                    in_data_disk = is_data_disk(&e);
                }
                let e = rewrite_attrs(&e, &path, edits, in_data_disk)?;
                w.write_event(Event::Start(e)).map_err(err)?;
            }
            Event::Empty(e) => {
                let name = e.name().as_ref().to_string();
                path.push(name);
                if skip_depth.is_none() && !dropped(&path) && !ejected(&e, &path, edits) {
                    let e = rewrite_attrs(&e, &path, edits, in_data_disk)?;
                    w.write_event(Event::Empty(e)).map_err(err)?;
                }
                path.pop();
            }
            Event::End(e) => {
                let depth = path.len();
                if is_disk(&path) {
                    in_data_disk = false;
                }
                path.pop();
                match skip_depth {
                    Some(d) if d == depth => skip_depth = None,
                    Some(_) => {}
                    None => w.write_event(Event::End(e)).map_err(err)?,
                }
            }
            Event::Text(t) => {
                if skip_depth.is_some() {
                    continue;
                }
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                match p.as_slice() {
                    ["domain", "name"] => {
                        w.write_event(Event::Text(BytesText::new(&edits.name)))
                            .map_err(err)?;
                    }
                    ["domain", "uuid"] => {
                        w.write_event(Event::Text(BytesText::new(&edits.uuid)))
                            .map_err(err)?;
                    }
                    _ => w.write_event(Event::Text(t)).map_err(err)?,
                }
            }
            other => {
                if skip_depth.is_none() {
                    w.write_event(other).map_err(err)?;
                }
            }
        }
    }
    String::from_utf8(w.into_inner()).map_err(err)
}

fn dropped(path: &[String]) -> bool {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    matches!(
        p.as_slice(),
        ["domain", "os", "nvram"] | ["domain", "devices", "interface", "target"]
    )
}

/// A drive's `<source>` naming one of the media the clone leaves out.
fn ejected(e: &BytesStart<'_>, path: &[String], edits: &CloneEdits) -> bool {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    p.as_slice() == ["domain", "devices", "disk", "source"]
        && e.attributes().flatten().any(|a| {
            let key: &str = a.key.as_ref();
            key == "file"
                && a.normalized_value(XmlVersion::Implicit1_0)
                    .is_ok_and(|v| edits.ejected.iter().any(|x| x.as_str() == v))
        })
}

fn is_disk(path: &[String]) -> bool {
    path.len() == 3 && path[0] == "domain" && path[1] == "devices" && path[2] == "disk"
}

/// A `<disk>` whose device is a disk (libvirt's default when `device` is left out).
fn is_data_disk(e: &BytesStart<'_>) -> bool {
    !e.attributes().flatten().any(|a| {
        let key: &str = a.key.as_ref();
        key == "device" && &*a.value != "disk"
    })
}

fn rewrite_attrs<'a>(
    e: &BytesStart<'a>,
    path: &[String],
    edits: &CloneEdits,
    in_data_disk: bool,
) -> Result<BytesStart<'static>, CloneXmlError> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let mut out = BytesStart::new(e.name().as_ref().to_string());
    let is_graphics = matches!(p.as_slice(), ["domain", "devices", "graphics"]);
    for a in e.attributes() {
        let a = a.map_err(err)?;
        let key = a.key.as_ref().to_string();
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(err)?
            .into_owned();
        let new_value = match (p.as_slice(), key.as_str()) {
            (["domain", "devices", "interface", "mac"], "address") => edits
                .macs
                .get(&value.to_ascii_lowercase())
                .cloned()
                .unwrap_or(value),
            (["domain", "devices", "disk", "source"], "file" | "dev") => {
                edits.disks.get(&value).cloned().unwrap_or(value)
            }
            (["domain", "devices", "disk", "driver"], "type") if in_data_disk => {
                edits.disk_format.clone().unwrap_or(value)
            }
            (["domain", "devices", "serial" | "console", "log"], "file") => {
                edits.logs.get(&value).cloned().unwrap_or(value)
            }
            (_, "port" | "tlsPort" | "websocket") if is_graphics => continue,
            (_, "autoport") if is_graphics => continue,
            _ => value,
        };
        out.push_attribute((key.as_str(), new_value.as_str()));
    }
    if is_graphics {
        out.push_attribute(("autoport", "yes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::xml::parse_domain;

    const SOURCE: &str = r#"<domain type='qemu'>
  <name>web01</name>
  <uuid>11111111-2222-4333-8444-555555555555</uuid>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><nvram>/var/lib/libvirt/qemu/nvram/web01_VARS.fd</nvram></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web01.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/isos/debian &amp; co.iso'/>
      <target dev='hda' bus='ide'/>
      <readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:AA:BB:CC'/>
      <source bridge='br0'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'><log file='/var/log/libvirt/qemu/web01-serial.log' append='on'/><target port='0'/></serial>
    <graphics type='vnc' port='5901' autoport='no' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics>
  </devices>
</domain>"#;

    fn edits() -> CloneEdits {
        CloneEdits {
            name: "web02".into(),
            uuid: "99999999-2222-4333-8444-555555555555".into(),
            macs: [(
                "52:54:00:aa:bb:cc".to_string(),
                "52:54:00:01:02:03".to_string(),
            )]
            .into(),
            disks: [(
                "/var/lib/libvirt/images/web01.qcow2".to_string(),
                "/var/lib/libvirt/images/web02.qcow2".to_string(),
            )]
            .into(),
            logs: [(
                "/var/log/libvirt/qemu/web01-serial.log".to_string(),
                "/var/log/libvirt/qemu/web02-serial.log".to_string(),
            )]
            .into(),
            disk_format: None,
            ejected: Vec::new(),
        }
    }

    #[test]
    fn the_clone_gets_its_own_identity_disks_and_log() {
        let xml = clone_domain_xml(SOURCE, &edits()).unwrap();
        let d = parse_domain(&xml).unwrap();
        assert_eq!(d.name, "web02");
        assert_eq!(d.uuid, "99999999-2222-4333-8444-555555555555");
        assert_eq!(d.nics[0].mac.as_deref(), Some("52:54:00:01:02:03"));
        assert_eq!(
            d.disks[0].source.as_deref(),
            Some("/var/lib/libvirt/images/web02.qcow2")
        );
        // The CD-ROM is shared, and its escaped path survives.
        assert_eq!(d.disks[1].source.as_deref(), Some("/isos/debian & co.iso"));
        assert_eq!(
            d.serial_log.as_deref(),
            Some("/var/log/libvirt/qemu/web02-serial.log")
        );
        assert!(!xml.contains("web01"), "{xml}");
        assert!(!xml.contains("nvram"));
        assert!(!xml.contains("vnet3"));
        assert!(!xml.contains("5901"));
        assert!(xml.contains("autoport=\"yes\""));
        assert_eq!(d.memory_mib, 1024);
        assert_eq!(d.vcpus, 2);
    }

    #[test]
    fn a_linked_clone_gets_qcow2_disks_and_the_cdrom_keeps_its_format() {
        let raw = SOURCE
            .replace("type='qcow2'", "type='raw'")
            .replace("<readonly/>", "<driver name='qemu' type='raw'/><readonly/>");
        let mut e = edits();
        e.disk_format = Some("qcow2".into());
        let d = parse_domain(&clone_domain_xml(&raw, &e).unwrap()).unwrap();
        assert_eq!(d.disks[0].format.as_deref(), Some("qcow2"));
        assert_eq!(d.disks[1].format.as_deref(), Some("raw"));
        // Without the edit, formats stay as they were.
        let d = parse_domain(&clone_domain_xml(&raw, &edits()).unwrap()).unwrap();
        assert_eq!(d.disks[0].format.as_deref(), Some("raw"));
    }

    #[test]
    fn an_ejected_medium_leaves_its_drive_empty() {
        let mut e = edits();
        e.ejected = vec!["/isos/debian & co.iso".into()];
        let xml = clone_domain_xml(SOURCE, &e).unwrap();
        let d = parse_domain(&xml).unwrap();
        assert_eq!(d.disks.len(), 2, "the drive stays: {xml}");
        assert_eq!(d.disks[1].device, "cdrom");
        assert_eq!(d.disks[1].source, None, "{xml}");
        assert!(!xml.contains("debian"), "{xml}");
        assert!(xml.contains("<target dev=\"hda\""), "{xml}");
        // The disk itself is still copied.
        assert_eq!(
            d.disks[0].source.as_deref(),
            Some("/var/lib/libvirt/images/web02.qcow2")
        );
    }

    #[test]
    fn broken_xml_is_an_error_not_a_panic() {
        assert!(clone_domain_xml("<domain><name>x</domain>", &edits()).is_err());
    }
}
