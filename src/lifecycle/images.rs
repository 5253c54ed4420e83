//! Looking at a volume before a VM takes or copies it: libvirt's view (format, backing
//! store), the first bytes of its file, and what virtdeck recorded when it made it; the
//! rule itself is `domain::volumes::check_image`.

use crate::domain::storage::parse_volume_format;
use crate::domain::templates::backing_path;
use crate::domain::vmspec::DiskFormat;
use crate::domain::volumes::{check_image, read_image_header, ImageFacts, IMAGE_HEADER_BYTES};
use crate::hypervisor::Hypervisor;
use crate::store::Store;
use std::io::Read;

/// What virtdeck found about one volume.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// libvirt's `<target><format>` for it.
    pub libvirt_format: Option<String>,
    /// The format to attach or copy it in, or why it must not be used.
    pub checked: Result<DiskFormat, String>,
}

/// Up to [`IMAGE_HEADER_BYTES`] of the file at `path`; `None` when there is no such
/// file here (libvirt's test driver) or it cannot be read, so libvirt's view decides.
fn first_bytes(path: &str) -> Option<Vec<u8>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path, error = %e, "could not read a volume's header; going by libvirt's format");
            return None;
        }
    };
    let mut bytes = Vec::with_capacity(IMAGE_HEADER_BYTES);
    match file.take(IMAGE_HEADER_BYTES as u64).read_to_end(&mut bytes) {
        Ok(_) => Some(bytes),
        Err(e) => {
            tracing::warn!(path, error = %e, "could not read a volume's header; going by libvirt's format");
            None
        }
    }
}

/// Checks the volume `name` at `path`: `expected` is the format its VM used (a clone's
/// source), else the format virtdeck recorded when it made it, if it did.
pub fn inspect(
    hv: &dyn Hypervisor,
    store: &Store,
    name: &str,
    path: &str,
    expected: Option<DiskFormat>,
) -> Inspected {
    let volume_xml = match hv.volume_xml(path) {
        Ok(x) => x,
        Err(e) => {
            return Inspected {
                libvirt_format: None,
                checked: Err(format!(
                    "Volume {name} could not be looked at: {}",
                    super::reason_in_plain_words(&e)
                )),
            }
        }
    };
    let made = store.made_volume(path).unwrap_or_else(|e| {
        tracing::error!(path, error = %e, "could not read what virtdeck made");
        None
    });
    let recorded = made.as_ref().and_then(|m| match m.format.as_str() {
        "qcow2" => Some(DiskFormat::Qcow2),
        "raw" => Some(DiskFormat::Raw),
        _ => None,
    });
    let libvirt_format = parse_volume_format(&volume_xml);
    let libvirt_backing = backing_path(&volume_xml);
    let header = first_bytes(path).map(|b| read_image_header(&b));
    let checked = check_image(&ImageFacts {
        name,
        expected: expected.or(recorded),
        made_backing: made.as_ref().and_then(|m| m.backing.as_deref()),
        libvirt_format: libvirt_format.as_deref(),
        libvirt_backing: libvirt_backing.as_deref(),
        header: header.as_ref(),
    });
    Inspected {
        libvirt_format,
        checked,
    }
}
