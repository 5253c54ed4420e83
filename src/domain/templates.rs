//! Templates: how a new VM is made from one (full or linked clone), the overlay volume
//! of a linked clone, and the identity reset with virt-sysprep. Plain values, no I/O.

use crate::domain::storage::{is, walk};
use crate::domain::vmspec::DiskFormat;
use quick_xml::events::BytesText;
use quick_xml::Writer;
use serde::{Deserialize, Serialize};

/// How a VM made from a template gets its disks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloneMode {
    /// Every disk copied in full by libvirt: an independent VM.
    #[default]
    Full,
    /// Every disk a qcow2 overlay whose backing file is the template's volume.
    Linked,
}

impl CloneMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CloneMode::Full => "full",
            CloneMode::Linked => "linked",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CloneMode::Full => "Full clone",
            CloneMode::Linked => "Linked clone",
        }
    }

    /// One line for the form, saying what the admin gets.
    pub fn explanation(self) -> &'static str {
        match self {
            CloneMode::Full => {
                "An independent copy of every disk: takes as much space as the template and \
                 keeps working whatever happens to the template."
            }
            CloneMode::Linked => {
                "A qcow2 overlay whose backing file is the template's volume: fast and small, \
                 but the template must not change or be deleted while linked clones exist."
            }
        }
    }

    pub fn parse(s: &str) -> Option<CloneMode> {
        match s {
            "full" => Some(CloneMode::Full),
            "linked" => Some(CloneMode::Linked),
            _ => None,
        }
    }
}

/// Pool types whose volumes are files, so a qcow2 overlay can live in them.
pub fn pool_takes_overlays(kind: &str) -> bool {
    matches!(kind, "dir" | "fs" | "netfs")
}

/// The sentence when a linked clone's disk would land in a pool that cannot hold it.
pub fn overlay_refusal(pool: &str, kind: &str) -> String {
    format!(
        "A linked clone needs qcow2 overlays, which pool {pool} ({kind}) cannot hold: only \
         directory, filesystem and NFS pools can. Make a full clone instead."
    )
}

/// Volume XML for a linked clone's disk: a qcow2 volume of the template volume's size,
/// backed by the template's volume (path and format), written with quick-xml.
pub fn overlay_volume_xml(
    name: &str,
    capacity_bytes: u64,
    backing_path: &str,
    backing_format: DiskFormat,
) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let cap = capacity_bytes.to_string();
    w.create_element("volume")
        .write_inner_content(|w| {
            w.create_element("name")
                .write_text_content(BytesText::new(name))?;
            w.create_element("capacity")
                .with_attribute(("unit", "bytes"))
                .write_text_content(BytesText::new(&cap))?;
            w.create_element("allocation")
                .with_attribute(("unit", "bytes"))
                .write_text_content(BytesText::new("0"))?;
            w.create_element("target").write_inner_content(|w| {
                w.create_element("format")
                    .with_attribute(("type", "qcow2"))
                    .write_empty()?;
                Ok(())
            })?;
            w.create_element("backingStore").write_inner_content(|w| {
                w.create_element("path")
                    .write_text_content(BytesText::new(backing_path))?;
                w.create_element("format")
                    .with_attribute(("type", backing_format.as_str()))
                    .write_empty()?;
                Ok(())
            })?;
            Ok(())
        })
        .expect("writing XML into a Vec cannot fail");
    String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
}

/// The `<backingStore><path>` of a volume's XML: the file a qcow2 overlay reads from.
pub fn backing_path(volume_xml: &str) -> Option<String> {
    let mut found = None;
    walk(
        volume_xml,
        |_, _| {},
        |path, text| {
            if is(path, &["volume", "backingStore", "path"]) && !text.is_empty() {
                found = Some(text.to_string());
            }
        },
    );
    found
}

/// What "Reset identity" removes or regenerates.
pub const SYSPREP_OPERATIONS: &str = "machine-id,ssh-hostkeys,net-hostname,customize";

/// Why the identity cannot be reset on this host.
pub const SYSPREP_MISSING: &str =
    "virt-sysprep is not installed on this host: the clone keeps the template's identity.";

/// virt-sysprep's arguments for a new clone: its disks by path (each with its format, so
/// nothing is probed), the identity operations, and the clone's name as its hostname.
pub fn sysprep_args(hostname: &str, disks: &[(String, DiskFormat)]) -> Vec<String> {
    let mut args = vec![
        "--quiet".to_string(),
        "--operations".to_string(),
        SYSPREP_OPERATIONS.to_string(),
        "--hostname".to_string(),
        hostname.to_string(),
    ];
    for (path, format) in disks {
        args.push("--format".into());
        args.push(format.as_str().into());
        args.push("-a".into());
        args.push(path.clone());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_names_its_backing_file_and_format_escaped() {
        let xml = overlay_volume_xml("web02.qcow2", 2 << 30, "/pool/a & b.img", DiskFormat::Raw);
        assert!(xml.contains("<format type=\"qcow2\"/>"), "{xml}");
        assert!(xml.contains("<path>/pool/a &amp; b.img</path>"), "{xml}");
        assert!(xml.contains("<capacity unit=\"bytes\">2147483648</capacity>"));
        assert!(xml.contains("<backingStore>") && xml.contains("<format type=\"raw\"/>"));
        assert_eq!(backing_path(&xml).as_deref(), Some("/pool/a & b.img"));
        assert_eq!(
            crate::domain::storage::parse_volume_format(&xml).as_deref(),
            Some("qcow2")
        );
    }

    #[test]
    fn a_volume_without_backing_store_has_no_backing_path() {
        assert_eq!(
            backing_path("<volume><name>x</name><target><path>/p/x</path></target></volume>"),
            None
        );
        assert_eq!(backing_path("<volume><backingStore/></volume>"), None);
        assert_eq!(backing_path("not xml <"), None);
    }

    #[test]
    fn modes_parse_and_explain_themselves() {
        assert_eq!(CloneMode::parse("linked"), Some(CloneMode::Linked));
        assert_eq!(CloneMode::parse("full"), Some(CloneMode::Full));
        assert_eq!(CloneMode::parse("thin"), None);
        assert!(CloneMode::Linked
            .explanation()
            .contains("must not change or be deleted"));
        assert!(CloneMode::Full.explanation().contains("independent"));
    }

    #[test]
    fn only_file_pools_take_overlays() {
        for k in ["dir", "fs", "netfs"] {
            assert!(pool_takes_overlays(k), "{k}");
        }
        for k in ["logical", "disk", "iscsi", "rbd"] {
            assert!(!pool_takes_overlays(k), "{k}");
        }
        assert!(overlay_refusal("vg_vms", "logical").contains("pool vg_vms (logical)"));
    }

    #[test]
    fn sysprep_gets_every_disk_with_its_format_and_the_new_hostname() {
        let args = sysprep_args(
            "web02",
            &[
                ("/p/web02.qcow2".into(), DiskFormat::Qcow2),
                ("/p/web02-disk1.img".into(), DiskFormat::Raw),
            ],
        );
        assert_eq!(
            args.join(" "),
            "--quiet --operations machine-id,ssh-hostkeys,net-hostname,customize --hostname web02 \
             --format qcow2 -a /p/web02.qcow2 --format raw -a /p/web02-disk1.img"
        );
    }
}
