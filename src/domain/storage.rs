//! Storage pools and libvirt networks as the admin defines and sees them: the typed pool
//! spec and its validation, pool XML written with quick-xml's writer, and reading pool,
//! volume and network XML for display. No I/O.

use super::vmspec::VmName;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, Writer, XmlVersion};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

/// The pool types virtdeck defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    /// Files in a directory of the host.
    Dir,
    /// LVM logical volumes in a volume group.
    Logical,
    /// Files on an NFS export mounted by libvirt.
    Netfs,
}

impl PoolKind {
    pub fn parse(s: &str) -> Option<PoolKind> {
        match s.trim() {
            "dir" => Some(PoolKind::Dir),
            "logical" => Some(PoolKind::Logical),
            "netfs" => Some(PoolKind::Netfs),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PoolKind::Dir => "dir",
            PoolKind::Logical => "logical",
            PoolKind::Netfs => "netfs",
        }
    }
}

/// How libvirt mounts a network file system pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NetfsFormat {
    Nfs,
    /// Let `mount` find out.
    Auto,
}

impl NetfsFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            NetfsFormat::Nfs => "nfs",
            NetfsFormat::Auto => "auto",
        }
    }
}

/// Where a pool's storage comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PoolSource {
    Dir,
    /// An LVM volume group; `devices` empty means the group already exists, otherwise
    /// building the pool creates it on these devices (wiping them).
    Logical {
        vg_name: String,
        devices: Vec<String>,
    },
    Netfs {
        host: String,
        export_path: String,
        format: NetfsFormat,
    },
}

/// A validated pool definition, ready to be rendered to pool XML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolSpec {
    pub name: String,
    pub source: PoolSource,
    /// The directory (dir), mount point (netfs) or `/dev/VG` (logical).
    pub target_path: String,
    pub autostart: bool,
}

impl PoolSpec {
    pub fn kind(&self) -> PoolKind {
        match self.source {
            PoolSource::Dir => PoolKind::Dir,
            PoolSource::Logical { .. } => PoolKind::Logical,
            PoolSource::Netfs { .. } => PoolKind::Netfs,
        }
    }

    /// Whether libvirt must build the pool before it can start: create the directory or
    /// mount point, or create the volume group on its devices.
    pub fn needs_build(&self) -> bool {
        match &self.source {
            PoolSource::Dir | PoolSource::Netfs { .. } => true,
            PoolSource::Logical { devices, .. } => !devices.is_empty(),
        }
    }

    /// The devices that building this pool erases.
    pub fn wiped_devices(&self) -> &[String] {
        match &self.source {
            PoolSource::Logical { devices, .. } => devices,
            _ => &[],
        }
    }
}

/// A pool definition as typed (form or JSON): every field text, so that bad input can be
/// shown back at its field.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PoolRequest {
    pub name: String,
    /// dir, logical or netfs.
    pub kind: String,
    /// dir: the directory; netfs: the mount point. Ignored for logical pools.
    pub target_path: String,
    /// logical: the volume group.
    pub vg_name: String,
    /// logical: `existing` (default) or `build`.
    pub logical_mode: String,
    /// logical + build: the block devices to put the new volume group on.
    pub devices: Vec<String>,
    /// logical + build: must repeat the volume group name, to confirm the wipe.
    pub confirm_wipe: String,
    /// netfs: the NFS server.
    pub nfs_host: String,
    /// netfs: the exported directory on the server.
    pub nfs_export: String,
    /// netfs: `nfs` (default) or `auto`.
    pub nfs_format: String,
    /// Start the pool when the host boots (default on).
    pub autostart: Option<bool>,
}

/// A problem with one field of a pool definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolFieldError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> PoolFieldError {
    PoolFieldError {
        field,
        message: message.into(),
    }
}

/// Directories that must never become a pool: deleting a pool's contents would wipe them.
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/var/lib",
    "/var/lib/libvirt",
    "/var/tmp",
];

/// An absolute, normalized path: starts with `/`, no empty, `.` or `..` segments, no
/// trailing `/`, no control characters.
pub fn check_absolute_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("Enter a path.".into());
    }
    if !path.starts_with('/') {
        return Err("Enter an absolute path, starting with /.".into());
    }
    if path.len() > 1024 {
        return Err("Use at most 1024 characters.".into());
    }
    if path.chars().any(char::is_control) {
        return Err("The path may not contain control characters.".into());
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err("Remove the trailing /.".into());
    }
    if path[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("Write the path without //, /./ or /../ (normalized).".into());
    }
    Ok(())
}

/// Directories that may hold neither a pool nor anything inside them: the system's
/// configuration and programs, root's home, and virtdeck's own data (its database, keys
/// and certificates). The data dir in use is added by [`PoolRequest::validate_for`].
pub const PROTECTED_TREES: &[&str] = &[
    "/etc",
    "/usr",
    "/boot",
    "/root",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/var/lib/virtdeck",
];

/// `path` with `.` and `..` resolved by its components (no file system access), or
/// `None` when it is not absolute. `..` above `/` stays at `/`.
pub fn normalize_path(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

/// The system tree `path` lies in (itself or below it), if any: `/` only exactly, the
/// [`PROTECTED_TREES`] and `extra` (the data dir) with everything inside them. Compared
/// by path components after resolving `.` and `..`, so `/etc2` is not `/etc` and
/// `/tmp/../etc/x` is.
pub fn protected_tree(path: &str, extra: &[&Path]) -> Option<PathBuf> {
    let p = normalize_path(path)?;
    if p == Path::new("/") {
        return Some(p);
    }
    PROTECTED_TREES
        .iter()
        .map(Path::new)
        .chain(extra.iter().copied())
        .filter_map(|t| normalize_path(&t.to_string_lossy()))
        .filter(|t| t != Path::new("/"))
        .find(|t| p.starts_with(t))
}

/// A pool's directory or mount point: normalized, and not a system directory.
fn check_target(path: &str, protected: &[&Path]) -> Result<(), String> {
    if let Some(tree) = protected_tree(path, protected) {
        let shown = normalize_path(path).unwrap_or_else(|| tree.clone());
        let what = if shown.as_os_str() == path {
            path.to_string()
        } else {
            format!("{path} (normalized: {})", shown.display())
        };
        return Err(if shown == tree {
            format!(
                "{what} is a system directory; use a directory of its own, e.g. /srv/pools/NAME."
            )
        } else {
            format!(
                "{what} is inside the system directory {}; use a directory of its own, e.g. /srv/pools/NAME.",
                tree.display()
            )
        });
    }
    check_absolute_path(path)?;
    if SYSTEM_DIRS.contains(&path) {
        return Err(format!(
            "{path} is a system directory; use a directory of its own, e.g. /srv/pools/NAME."
        ));
    }
    for special in ["/proc/", "/sys/", "/dev/"] {
        if path.starts_with(special) {
            return Err(format!(
                "{} holds no files for VMs; choose a directory on a disk.",
                special.trim_end_matches('/')
            ));
        }
    }
    Ok(())
}

/// An LVM volume group name: letters, digits and `+ _ . -`, not starting with `-`, at
/// most 127 characters, not `.` or `..`.
pub fn check_vg_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Enter the volume group name.".into());
    }
    if name.len() > 127 {
        return Err("Use at most 127 characters.".into());
    }
    if name == "." || name == ".." || name.starts_with('-') {
        return Err("A volume group name cannot be . or .. or start with -.".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '_' | '.' | '-'))
    {
        return Err("Use only letters, digits, '+', '_', '.' and '-'.".into());
    }
    Ok(())
}

/// A block device path under /dev.
pub fn check_device(path: &str) -> Result<(), String> {
    check_absolute_path(path).map_err(|e| format!("{path}: {e}"))?;
    if !path.starts_with("/dev/") {
        return Err(format!("{path} is not a device: use a path under /dev/."));
    }
    Ok(())
}

/// An NFS server: an IP address or a DNS name.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("Enter the NFS server's name or address.".into());
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err("Enter a host name (letters, digits, '-' and dots) or an IP address.".into());
    }
    Ok(())
}

impl PoolRequest {
    /// The typed spec, or every field that is wrong.
    pub fn validate(&self) -> Result<PoolSpec, Vec<PoolFieldError>> {
        self.validate_for(&[])
    }

    /// [`PoolRequest::validate`], refusing also a target inside `protected` (virtdeck's
    /// data dir).
    pub fn validate_for(&self, protected: &[&Path]) -> Result<PoolSpec, Vec<PoolFieldError>> {
        let mut errors = Vec::new();
        let name = match VmName::parse(&self.name) {
            Ok(n) => n.as_str().to_string(),
            Err(e) => {
                errors.push(err("name", e.to_string()));
                String::new()
            }
        };
        let kind = PoolKind::parse(&self.kind);
        if kind.is_none() {
            errors.push(err("kind", "Choose the pool type: dir, logical or netfs."));
        }
        let target = self.target_path.trim().to_string();
        let target_ok = |errors: &mut Vec<PoolFieldError>| {
            if let Err(e) = check_target(&target, protected) {
                errors.push(err("target_path", e));
            }
        };
        let source = match kind {
            None => None,
            Some(PoolKind::Dir) => {
                target_ok(&mut errors);
                Some(PoolSource::Dir)
            }
            Some(PoolKind::Netfs) => {
                target_ok(&mut errors);
                let host = self.nfs_host.trim().to_string();
                if let Err(e) = check_host(&host) {
                    errors.push(err("nfs_host", e));
                }
                let export_path = self.nfs_export.trim().to_string();
                if let Err(e) = check_absolute_path(&export_path) {
                    errors.push(err("nfs_export", format!("Export path: {e}")));
                }
                let format = match self.nfs_format.trim() {
                    "" | "nfs" => Some(NetfsFormat::Nfs),
                    "auto" => Some(NetfsFormat::Auto),
                    _ => {
                        errors.push(err("nfs_format", "Choose nfs or auto."));
                        None
                    }
                };
                format.map(|format| PoolSource::Netfs {
                    host,
                    export_path,
                    format,
                })
            }
            Some(PoolKind::Logical) => self.logical_source(&mut errors),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let source = source.ok_or_else(|| vec![err("kind", "Choose the pool type.")])?;
        let target_path = match &source {
            PoolSource::Logical { vg_name, .. } => format!("/dev/{vg_name}"),
            _ => target,
        };
        Ok(PoolSpec {
            name,
            source,
            target_path,
            autostart: self.autostart.unwrap_or(true),
        })
    }

    fn logical_source(&self, errors: &mut Vec<PoolFieldError>) -> Option<PoolSource> {
        let vg_name = self.vg_name.trim().to_string();
        if let Err(e) = check_vg_name(&vg_name) {
            errors.push(err("vg_name", e));
        }
        let devices: Vec<String> = self
            .devices
            .iter()
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty())
            .collect();
        match self.logical_mode.trim() {
            "" | "existing" => {
                if !devices.is_empty() {
                    errors.push(err(
                        "devices",
                        "An existing volume group needs no devices; leave them empty or choose \"build a new volume group\".",
                    ));
                }
                Some(PoolSource::Logical {
                    vg_name,
                    devices: Vec::new(),
                })
            }
            "build" => {
                if devices.is_empty() {
                    errors.push(err(
                        "devices",
                        "List the block devices for the new volume group, e.g. /dev/sdb.",
                    ));
                }
                for d in &devices {
                    if let Err(e) = check_device(d) {
                        errors.push(err("devices", e));
                    }
                }
                let mut seen = std::collections::HashSet::new();
                if let Some(dup) = devices.iter().find(|d| !seen.insert(d.as_str())) {
                    errors.push(err("devices", format!("{dup} is listed twice.")));
                }
                if !vg_name.is_empty() && self.confirm_wipe.trim() != vg_name {
                    errors.push(err(
                        "confirm_wipe",
                        format!(
                            "Building erases everything on {}. Type the volume group name ({vg_name}) to confirm.",
                            if devices.is_empty() { "the devices".to_string() } else { devices.join(", ") }
                        ),
                    ));
                }
                Some(PoolSource::Logical { vg_name, devices })
            }
            _ => {
                errors.push(err(
                    "logical_mode",
                    "Choose an existing volume group or build a new one.",
                ));
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

/// Renders the libvirt storage pool XML for a spec. Every user value is written as an
/// attribute value or a text event, so quick-xml escapes it.
pub fn pool_xml(spec: &PoolSpec) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_pool(&mut w, spec).expect("writing XML into a Vec cannot fail");
    String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
}

fn write_pool<W: Write>(w: &mut Writer<W>, spec: &PoolSpec) -> io::Result<()> {
    w.create_element("pool")
        .with_attribute(("type", spec.kind().as_str()))
        .write_inner_content(|w| {
            w.create_element("name")
                .write_text_content(text(&spec.name))?;
            match &spec.source {
                PoolSource::Dir => {}
                PoolSource::Logical { vg_name, devices } => {
                    w.create_element("source").write_inner_content(|w| {
                        for d in devices {
                            w.create_element("device")
                                .with_attribute(("path", d.as_str()))
                                .write_empty()?;
                        }
                        w.create_element("name").write_text_content(text(vg_name))?;
                        w.create_element("format")
                            .with_attribute(("type", "lvm2"))
                            .write_empty()?;
                        Ok(())
                    })?;
                }
                PoolSource::Netfs {
                    host,
                    export_path,
                    format,
                } => {
                    w.create_element("source").write_inner_content(|w| {
                        w.create_element("host")
                            .with_attribute(("name", host.as_str()))
                            .write_empty()?;
                        w.create_element("dir")
                            .with_attribute(("path", export_path.as_str()))
                            .write_empty()?;
                        w.create_element("format")
                            .with_attribute(("type", format.as_str()))
                            .write_empty()?;
                        Ok(())
                    })?;
                }
            }
            w.create_element("target").write_inner_content(|w| {
                w.create_element("path")
                    .write_text_content(text(&spec.target_path))?;
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(())
}

fn text(s: &str) -> quick_xml::events::BytesText<'_> {
    quick_xml::events::BytesText::new(s)
}

// ---------------------------------------------------------------------------------------
// Reading pool, volume and network XML
// ---------------------------------------------------------------------------------------

/// What a pool's XML says about where its storage is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolXmlFacts {
    /// `<pool type=...>`: dir, logical, netfs, fs, disk…
    pub kind: String,
    pub target_path: Option<String>,
    pub source_host: Option<String>,
    pub source_dir: Option<String>,
    pub source_devices: Vec<String>,
    /// The volume group (logical) or other source name.
    pub source_name: Option<String>,
    pub source_format: Option<String>,
}

impl PoolXmlFacts {
    /// One line for the admin: where the storage lives.
    pub fn source_summary(&self) -> String {
        match self.kind.as_str() {
            "netfs" => format!(
                "{}:{}",
                self.source_host.as_deref().unwrap_or("?"),
                self.source_dir.as_deref().unwrap_or("?")
            ),
            "logical" => {
                let vg = self.source_name.as_deref().unwrap_or("?");
                if self.source_devices.is_empty() {
                    format!("volume group {vg}")
                } else {
                    format!("volume group {vg} on {}", self.source_devices.join(", "))
                }
            }
            _ => self.target_path.clone().unwrap_or_default(),
        }
    }
}

fn attr(e: &BytesStart, key: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| a.normalized_value(XmlVersion::Implicit1_0).ok())
        .map(|v| v.into_owned())
}

/// Walks an XML document, calling `on_start` with the path of element names leading to
/// each start (or empty) element, and `on_text` with the path and the text of each
/// element when it closes. Stops at the first malformed part (display only: what was
/// read so far is kept).
pub(crate) fn walk(
    xml: &str,
    mut on_start: impl FnMut(&[String], &BytesStart),
    mut on_text: impl FnMut(&[String], &str),
) {
    let mut r = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) => {
                path.push(e.name().as_ref().to_string());
                text.clear();
                on_start(&path, &e);
            }
            Ok(Event::Empty(e)) => {
                path.push(e.name().as_ref().to_string());
                on_start(&path, &e);
                path.pop();
            }
            Ok(Event::End(_)) => {
                on_text(&path, text.trim());
                text.clear();
                path.pop();
            }
            Ok(Event::Text(t)) => text.push_str(&t.xml10_content()),
            Ok(Event::CData(t)) => text.push_str(&t.xml10_content()),
            Ok(Event::GeneralRef(g)) => match g.resolve_char_ref() {
                Ok(Some(c)) => text.push(c),
                _ => text.push_str(resolve_predefined_entity(&g).unwrap_or_default()),
            },
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

pub(crate) fn is(path: &[String], want: &[&str]) -> bool {
    path.len() == want.len() && path.iter().zip(want).all(|(a, b)| a == b)
}

/// Reads the facts shown for a pool from its XML.
pub fn parse_pool_xml(xml: &str) -> PoolXmlFacts {
    let mut f = PoolXmlFacts::default();
    let mut target = None;
    let mut source_name = None;
    walk(
        xml,
        |path, e| {
            if is(path, &["pool"]) {
                f.kind = attr(e, "type").unwrap_or_default();
            } else if is(path, &["pool", "source", "host"]) {
                f.source_host = attr(e, "name");
            } else if is(path, &["pool", "source", "dir"]) {
                f.source_dir = attr(e, "path");
            } else if is(path, &["pool", "source", "device"]) {
                f.source_devices.extend(attr(e, "path"));
            } else if is(path, &["pool", "source", "format"]) {
                f.source_format = attr(e, "type");
            }
        },
        |path, t| {
            if is(path, &["pool", "target", "path"]) && !t.is_empty() {
                target = Some(t.to_string());
            } else if is(path, &["pool", "source", "name"]) && !t.is_empty() {
                source_name = Some(t.to_string());
            }
        },
    );
    f.target_path = target;
    f.source_name = source_name;
    f
}

/// A volume's format (`<target><format type=...>`): qcow2, raw, iso…
pub fn parse_volume_format(xml: &str) -> Option<String> {
    let mut format = None;
    walk(
        xml,
        |path, e| {
            if is(path, &["volume", "target", "format"]) {
                format = attr(e, "type");
            }
        },
        |_, _| {},
    );
    format
}

/// A network's forwarding: the `<forward mode=...>` (nat when the mode is left out), or
/// `isolated` when there is no `<forward>`.
pub fn parse_forward_mode(network_xml: &str) -> String {
    let mut mode: Option<String> = None;
    walk(
        network_xml,
        |path, e| {
            if is(path, &["network", "forward"]) {
                mode = Some(attr(e, "mode").unwrap_or_else(|| "nat".into()));
            }
        },
        |_, _| {},
    );
    mode.unwrap_or_else(|| "isolated".into())
}

// ---------------------------------------------------------------------------------------
// What the pages show
// ---------------------------------------------------------------------------------------

/// A storage pool with its state, as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PoolStatus {
    pub name: String,
    pub uuid: String,
    pub kind: String,
    pub active: bool,
    pub autostart: bool,
    pub persistent: bool,
    pub capacity_bytes: u64,
    pub allocation_bytes: u64,
    pub available_bytes: u64,
    /// Where the storage lives, from the pool's XML.
    pub target_path: Option<String>,
    pub source: String,
    pub volume_count: usize,
}

impl PoolStatus {
    pub fn capacity_gib(&self) -> u64 {
        self.capacity_bytes / super::inventory::GIB
    }
    pub fn allocation_gib(&self) -> u64 {
        self.allocation_bytes / super::inventory::GIB
    }
    pub fn available_gib(&self) -> u64 {
        self.available_bytes / super::inventory::GIB
    }
    /// Per cent of the capacity in use, 0–100.
    pub fn used_percent(&self) -> u64 {
        if self.capacity_bytes == 0 {
            0
        } else {
            (self.allocation_bytes.min(self.capacity_bytes) as u128 * 100
                / self.capacity_bytes as u128) as u64
        }
    }
}

/// A volume in a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PoolVolume {
    pub name: String,
    pub path: String,
    pub capacity_bytes: u64,
    pub allocation_bytes: u64,
    pub format: Option<String>,
}

/// Bytes in a short human form: `20.0 GiB`, `512.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A libvirt network with its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NetworkStatus {
    pub name: String,
    pub uuid: String,
    pub active: bool,
    pub autostart: bool,
    pub persistent: bool,
    /// nat, route, bridge, open, isolated…
    pub forward_mode: String,
    pub bridge: Option<String>,
}

impl NetworkStatus {
    /// Only NAT networks (like libvirt's `default`) are offered for removal: they are
    /// libvirt's own, while bridge networks front the host's bridges.
    pub fn removable(&self) -> bool {
        self.forward_mode == "nat"
    }
}

/// Names of the VMs with a NIC on `network`, from their parsed definitions.
pub fn vms_on_network(domains: &[super::xml::ParsedDomain], network: &str) -> Vec<String> {
    let mut names: Vec<String> = domains
        .iter()
        .filter(|d| {
            d.nics
                .iter()
                .any(|n| n.kind == "network" && n.source.as_deref() == Some(network))
        })
        .map(|d| d.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// VM disks that live in a pool: `(vm, disk source)` for every disk whose source is one
/// of the pool's volume paths, lies under its target path, or names the pool.
pub fn vm_disks_in_pool(
    domains: &[super::xml::ParsedDomain],
    pool: &str,
    target_path: Option<&str>,
    volume_paths: &[String],
) -> Vec<(String, String)> {
    let prefix = target_path.filter(|t| *t != "/").map(|t| format!("{t}/"));
    let mut out = Vec::new();
    for d in domains {
        for disk in &d.disks {
            let source = disk.source.clone().unwrap_or_default();
            let hit = disk.pool.as_deref() == Some(pool)
                || (!source.is_empty() && volume_paths.contains(&source))
                || prefix.as_deref().is_some_and(|p| source.starts_with(p));
            if hit {
                out.push((d.name.clone(), source));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: &str) -> PoolRequest {
        PoolRequest {
            name: "fast".into(),
            kind: kind.into(),
            ..Default::default()
        }
    }

    fn fields(r: Result<PoolSpec, Vec<PoolFieldError>>) -> Vec<&'static str> {
        r.expect_err("should be refused")
            .iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn dir_pool_renders() {
        let spec = PoolRequest {
            target_path: "/srv/pools/fast".into(),
            ..req("dir")
        }
        .validate()
        .unwrap();
        assert!(spec.needs_build());
        assert!(spec.autostart);
        let xml = pool_xml(&spec);
        assert!(xml.starts_with("<pool type=\"dir\">"), "{xml}");
        assert!(xml.contains("<name>fast</name>"), "{xml}");
        assert!(xml.contains("<path>/srv/pools/fast</path>"), "{xml}");
        assert!(!xml.contains("<source"), "{xml}");
        let facts = parse_pool_xml(&xml);
        assert_eq!(facts.kind, "dir");
        assert_eq!(facts.target_path.as_deref(), Some("/srv/pools/fast"));
        assert_eq!(facts.source_summary(), "/srv/pools/fast");
    }

    #[test]
    fn netfs_pool_renders_and_escapes() {
        let spec = PoolRequest {
            target_path: "/mnt/nas & co".into(),
            nfs_host: "nas.example.com".into(),
            nfs_export: "/export/vms".into(),
            nfs_format: "auto".into(),
            autostart: Some(false),
            ..req("netfs")
        }
        .validate()
        .unwrap();
        assert!(!spec.autostart);
        let xml = pool_xml(&spec);
        for needle in [
            "<pool type=\"netfs\">",
            "<host name=\"nas.example.com\"/>",
            "<dir path=\"/export/vms\"/>",
            "<format type=\"auto\"/>",
            "<path>/mnt/nas &amp; co</path>",
        ] {
            assert!(xml.contains(needle), "missing {needle} in\n{xml}");
        }
        let facts = parse_pool_xml(&xml);
        assert_eq!(facts.source_summary(), "nas.example.com:/export/vms");
        assert_eq!(facts.target_path.as_deref(), Some("/mnt/nas & co"));
        assert_eq!(facts.source_format.as_deref(), Some("auto"));
    }

    #[test]
    fn logical_existing_and_build() {
        let existing = PoolRequest {
            vg_name: "vg_vms".into(),
            ..req("logical")
        }
        .validate()
        .unwrap();
        assert!(!existing.needs_build());
        assert!(existing.wiped_devices().is_empty());
        assert_eq!(existing.target_path, "/dev/vg_vms");
        let xml = pool_xml(&existing);
        assert!(xml.contains("<name>vg_vms</name>"), "{xml}");
        assert!(xml.contains("<format type=\"lvm2\"/>"), "{xml}");
        assert!(!xml.contains("<device"), "{xml}");

        let build = PoolRequest {
            vg_name: "vg_new".into(),
            logical_mode: "build".into(),
            devices: vec![
                "/dev/sdb".into(),
                " /dev/disk/by-id/ata-X ".into(),
                "".into(),
            ],
            confirm_wipe: "vg_new".into(),
            ..req("logical")
        }
        .validate()
        .unwrap();
        assert!(build.needs_build());
        assert_eq!(build.wiped_devices(), ["/dev/sdb", "/dev/disk/by-id/ata-X"]);
        let xml = pool_xml(&build);
        assert!(xml.contains("<device path=\"/dev/sdb\"/>"), "{xml}");
        assert!(
            xml.contains("<device path=\"/dev/disk/by-id/ata-X\"/>"),
            "{xml}"
        );
        assert!(xml.contains("<path>/dev/vg_new</path>"), "{xml}");
        let facts = parse_pool_xml(&xml);
        assert_eq!(
            facts.source_summary(),
            "volume group vg_new on /dev/sdb, /dev/disk/by-id/ata-X"
        );
    }

    #[test]
    fn building_needs_the_typed_confirmation() {
        let base = PoolRequest {
            vg_name: "vg_new".into(),
            logical_mode: "build".into(),
            devices: vec!["/dev/sdb".into()],
            ..req("logical")
        };
        let e = base.validate().unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "confirm_wipe");
        assert!(e[0].message.contains("/dev/sdb"), "{}", e[0].message);
        let wrong = PoolRequest {
            confirm_wipe: "yes".into(),
            ..base.clone()
        };
        assert_eq!(fields(wrong.validate()), ["confirm_wipe"]);
    }

    #[test]
    fn system_trees_are_refused_with_their_children() {
        let data_dir = Path::new("/srv/virtdeck-data");
        let target = |t: &str| {
            PoolRequest {
                target_path: t.into(),
                ..req("dir")
            }
            .validate_for(&[data_dir])
        };
        for bad in [
            "/",
            "/etc",
            "/etc/libvirt-x",
            "/usr/x",
            "/usr/local/pools",
            "/boot/efi",
            "/root/vms",
            "/var/lib/virtdeck",
            "/var/lib/virtdeck/x",
            "/tmp/../etc",
            "/tmp/../etc/x",
            "/srv/virtdeck-data/pool",
            "/srv/a/../../etc/ssh",
        ] {
            let r = target(bad);
            assert_eq!(fields(r), ["target_path"], "{bad:?}");
        }
        let msg = target("/tmp/../etc/x").unwrap_err()[0].message.clone();
        assert!(
            msg.contains("/tmp/../etc/x (normalized: /etc/x) is inside the system directory /etc"),
            "{msg}"
        );
        for ok in [
            "/var/lib/libvirt/images",
            "/var/lib/libvirt/images/x",
            "/etc2",
            "/srv/pools/a",
            "/var/lib/virtdeck2",
        ] {
            assert!(target(ok).is_ok(), "{ok:?}");
        }
        assert_eq!(
            protected_tree("/a/./b/../../usr/bin", &[]),
            Some(PathBuf::from("/usr"))
        );
        assert_eq!(protected_tree("/srv/x", &[]), None);
        assert_eq!(normalize_path("/../.."), Some(PathBuf::from("/")));
        assert_eq!(normalize_path("relative"), None);
    }

    #[test]
    fn bad_input_is_refused_at_its_field() {
        assert_eq!(fields(req("zfs").validate()), ["kind"]);
        assert_eq!(
            fields(
                PoolRequest {
                    name: "bad/name".into(),
                    target_path: "relative/dir".into(),
                    ..req("dir")
                }
                .validate()
            ),
            ["name", "target_path"]
        );
        for bad in [
            "",
            "/srv/../etc",
            "/srv//x",
            "/srv/x/",
            "/srv/./x",
            "/etc",
            "/",
            "/var/lib/libvirt",
            "/proc/x",
            "/srv/a\nb",
        ] {
            let r = PoolRequest {
                target_path: bad.into(),
                ..req("dir")
            }
            .validate();
            assert_eq!(fields(r), ["target_path"], "{bad:?}");
        }
        let logical = |vg: &str, mode: &str, devices: &[&str]| PoolRequest {
            vg_name: vg.into(),
            logical_mode: mode.into(),
            devices: devices.iter().map(|d| d.to_string()).collect(),
            confirm_wipe: vg.into(),
            ..req("logical")
        };
        assert_eq!(fields(logical("-vg", "", &[]).validate()), ["vg_name"]);
        assert_eq!(fields(logical("vg a", "", &[]).validate()), ["vg_name"]);
        assert_eq!(fields(logical("", "", &[]).validate()), ["vg_name"]);
        assert_eq!(
            fields(logical("vg", "", &["/dev/sdb"]).validate()),
            ["devices"]
        );
        assert_eq!(fields(logical("vg", "build", &[]).validate()), ["devices"]);
        assert_eq!(
            fields(logical("vg", "build", &["/tmp/disk.img"]).validate()),
            ["devices"]
        );
        assert_eq!(
            fields(logical("vg", "build", &["/dev/../etc/passwd"]).validate()),
            ["devices"]
        );
        assert_eq!(
            fields(logical("vg", "build", &["/dev/sdb", "/dev/sdb"]).validate()),
            ["devices"]
        );
        assert_eq!(
            fields(logical("vg", "wipe", &[]).validate()),
            ["logical_mode"]
        );
        let nfs = |host: &str, export: &str, format: &str| PoolRequest {
            target_path: "/mnt/nas".into(),
            nfs_host: host.into(),
            nfs_export: export.into(),
            nfs_format: format.into(),
            ..req("netfs")
        };
        assert!(nfs("10.0.0.5", "/", "").validate().is_ok());
        assert!(nfs("fd00::5", "/export", "nfs").validate().is_ok());
        assert_eq!(fields(nfs("", "/export", "").validate()), ["nfs_host"]);
        assert_eq!(
            fields(nfs("bad host", "/export", "").validate()),
            ["nfs_host"]
        );
        assert_eq!(fields(nfs("-nas", "/export", "").validate()), ["nfs_host"]);
        assert_eq!(fields(nfs("nas", "export", "").validate()), ["nfs_export"]);
        assert_eq!(
            fields(nfs("nas", "/export", "cifs").validate()),
            ["nfs_format"]
        );
    }

    #[test]
    fn reads_volumes_and_networks() {
        let vol = "<volume type='file'><name>a.qcow2</name><target><path>/x/a.qcow2</path>\
                   <format type='qcow2'/></target></volume>";
        assert_eq!(parse_volume_format(vol).as_deref(), Some("qcow2"));
        assert_eq!(parse_volume_format("<volume><name>x</name></volume>"), None);
        assert_eq!(
            parse_forward_mode(
                "<network><name>d</name><forward mode='nat'><nat/></forward></network>"
            ),
            "nat"
        );
        assert_eq!(
            parse_forward_mode("<network><name>d</name><forward/></network>"),
            "nat"
        );
        assert_eq!(
            parse_forward_mode("<network><forward mode=\"bridge\"/><bridge name='br0'/></network>"),
            "bridge"
        );
        assert_eq!(
            parse_forward_mode("<network><name>iso</name></network>"),
            "isolated"
        );
    }

    #[test]
    fn finds_vms_on_a_network_and_in_a_pool() {
        use super::super::xml::parse_domain;
        let a = parse_domain(
            "<domain><name>a</name><devices>\
             <disk type='file' device='disk'><source file='/srv/p/a.qcow2'/><target dev='vda'/></disk>\
             <interface type='network'><source network='default'/></interface></devices></domain>",
        )
        .unwrap();
        let b = parse_domain(
            "<domain><name>b</name><devices>\
             <disk type='block' device='disk'><source dev='/dev/vg/b'/><target dev='vda'/></disk>\
             <interface type='bridge'><source bridge='default'/></interface></devices></domain>",
        )
        .unwrap();
        let c = parse_domain(
            "<domain><name>c</name><devices>\
             <disk type='volume' device='disk'><source pool='p' volume='c.raw'/><target dev='vda'/></disk>\
             <interface type='network'><source network='other'/></interface></devices></domain>",
        )
        .unwrap();
        let all = [a, b, c];
        assert_eq!(vms_on_network(&all, "default"), ["a"]);
        assert_eq!(vms_on_network(&all, "other"), ["c"]);
        assert!(vms_on_network(&all, "none").is_empty());
        let in_p = vm_disks_in_pool(&all, "p", Some("/srv/p"), &[]);
        assert_eq!(
            in_p,
            [
                ("a".to_string(), "/srv/p/a.qcow2".to_string()),
                ("c".to_string(), "c.raw".to_string())
            ]
        );
        let in_vg = vm_disks_in_pool(&all, "vg", Some("/dev/vg"), &["/dev/vg/b".into()]);
        assert_eq!(in_vg, [("b".to_string(), "/dev/vg/b".to_string())]);
        assert!(vm_disks_in_pool(&all, "q", Some("/srv/p2"), &[]).is_empty());
    }

    #[test]
    fn status_numbers() {
        let p = PoolStatus {
            name: "p".into(),
            uuid: String::new(),
            kind: "dir".into(),
            active: true,
            autostart: false,
            persistent: true,
            capacity_bytes: 100 * super::super::inventory::GIB,
            allocation_bytes: 25 * super::super::inventory::GIB,
            available_bytes: 75 * super::super::inventory::GIB,
            target_path: None,
            source: String::new(),
            volume_count: 0,
        };
        assert_eq!(p.used_percent(), 25);
        assert_eq!(
            (p.capacity_gib(), p.allocation_gib(), p.available_gib()),
            (100, 25, 75)
        );
        assert_eq!(
            PoolStatus {
                capacity_bytes: 0,
                ..p
            }
            .used_percent(),
            0
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(20 * super::super::inventory::GIB), "20.0 GiB");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
    }
}
