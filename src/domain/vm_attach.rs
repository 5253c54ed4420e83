//! Disks and NICs added to or taken out of an existing VM: the request's rules, checked
//! against a snapshot of the host in plain values (every field error at once), and the
//! device XML libvirt attaches, detaches or updates. No I/O.

use super::create_plan::{field, plan_nic, FieldError, NicRequest, Snapshot};
use super::inventory::GIB;
use super::vmspec::{DiskFormat, Mac, NicSource, NicSpec};
use super::volumes::existing_disk_refusal;
use super::xml::{ParsedDisk, ParsedDomain, ParsedNic};
use quick_xml::Writer;
use serde::{Deserialize, Serialize};

/// The bus a new disk goes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// Paravirtual, `vdX`; plugs into a running VM.
    #[default]
    Virtio,
    /// AHCI, `sdX`; only while the VM is off (QEMU cannot hot-plug SATA).
    Sata,
    /// virtio-scsi, `sdX`; plugs into a running VM (a controller is added first if needed).
    Scsi,
}

impl DiskBus {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Sata => "sata",
            DiskBus::Scsi => "scsi",
        }
    }

    pub fn parse(s: &str) -> Option<DiskBus> {
        match s.trim() {
            "virtio" => Some(DiskBus::Virtio),
            "sata" => Some(DiskBus::Sata),
            "scsi" => Some(DiskBus::Scsi),
            _ => None,
        }
    }

    /// libvirt's name prefix for the bus's disks; SATA and SCSI share `sd`.
    fn prefix(self) -> &'static str {
        match self {
            DiskBus::Virtio => "vd",
            DiskBus::Sata | DiskBus::Scsi => "sd",
        }
    }

    fn hot_pluggable(self) -> bool {
        !matches!(self, DiskBus::Sata)
    }

    pub const ALL: [DiskBus; 3] = [DiskBus::Virtio, DiskBus::Sata, DiskBus::Scsi];
}

/// The host page cache mode of a disk (`<driver cache=...>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// QEMU's default (writeback).
    #[default]
    Default,
    /// No host page cache (O_DIRECT): safe and the usual choice for servers.
    None,
    Writeback,
    Writethrough,
    Directsync,
    /// Ignores flushes: fast, loses data when the host crashes.
    Unsafe,
}

impl CacheMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Default => "default",
            CacheMode::None => "none",
            CacheMode::Writeback => "writeback",
            CacheMode::Writethrough => "writethrough",
            CacheMode::Directsync => "directsync",
            CacheMode::Unsafe => "unsafe",
        }
    }

    pub fn parse(s: &str) -> Option<CacheMode> {
        Self::ALL.into_iter().find(|c| c.as_str() == s.trim())
    }

    pub const ALL: [CacheMode; 6] = [
        CacheMode::Default,
        CacheMode::None,
        CacheMode::Writeback,
        CacheMode::Writethrough,
        CacheMode::Directsync,
        CacheMode::Unsafe,
    ];
}

/// A disk to add: a new volume (`pool`, `size_gib`, `format`) or an existing one
/// (`volume`, its path) that no VM uses.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDiskRequest {
    /// A new volume in this pool.
    #[serde(default)]
    pub pool: Option<String>,
    /// The new volume's size in GiB.
    #[serde(default)]
    pub size_gib: Option<u64>,
    /// The new volume's format; qcow2 in a directory pool, raw in a block pool.
    #[serde(default)]
    pub format: Option<DiskFormat>,
    /// Instead of a new volume: the path of an existing volume no VM uses.
    #[serde(default)]
    pub volume: Option<String>,
    #[serde(default)]
    pub bus: DiskBus,
    #[serde(default)]
    pub cache: CacheMode,
}

/// Where the added disk's volume comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskVolume {
    /// Made in `pool` from `volume_xml`, then attached.
    New {
        pool: String,
        volume_name: String,
        volume_xml: String,
    },
    /// Attached as it is.
    Existing { path: String },
}

/// A disk addition that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskAddPlan {
    pub volume: DiskVolume,
    pub target: String,
    pub bus: DiskBus,
    pub cache: CacheMode,
    pub format: DiskFormat,
    /// The volume is a block device (LVM, disk pools).
    pub block: bool,
    pub size_gib: u64,
    /// The pool the disk is in, its capacity, and how many GiB of it the VM's disks hold
    /// once this one is added (what its units are checked against).
    pub pool: String,
    pub pool_capacity_gib: u64,
    pub vm_disk_gib_in_pool: u64,
    /// A virtio-scsi controller must be added before the disk.
    pub needs_scsi_controller: bool,
}

/// What a disk addition is checked against.
pub struct DiskAddInput<'a> {
    pub vm: &'a str,
    pub def: &'a ParsedDomain,
    /// The VM runs (or is paused): the disk is plugged in live.
    pub live: bool,
    pub snap: &'a Snapshot,
}

/// Largest new disk, GiB.
pub const MAX_DISK_GIB: u64 = 64 * 1024;

/// Checks a disk addition; every field error at once.
pub fn plan_disk_add(
    req: &AddDiskRequest,
    input: &DiskAddInput<'_>,
) -> Result<DiskAddPlan, Vec<FieldError>> {
    let mut errors = Vec::new();
    let snap = input.snap;
    if input.live && !req.bus.hot_pluggable() {
        errors.push(field(
            "bus",
            format!(
                "A {} disk cannot be plugged into a running VM; choose virtio or SCSI, or shut {} down first.",
                req.bus.as_str().to_uppercase(),
                input.vm
            ),
        ));
    }
    let used: Vec<&str> = input.def.disks.iter().map(|d| d.target.as_str()).collect();
    let target = next_target(req.bus, &used);
    let pool_name = req.pool.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let volume_path = req
        .volume
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let planned = match (pool_name, volume_path) {
        (Some(_), Some(_)) => {
            errors.push(field(
                "volume",
                "Choose either a new volume (pool and size) or an existing volume, not both.",
            ));
            None
        }
        (None, None) => {
            errors.push(field(
                "pool",
                "Choose a pool for a new volume, or an existing volume.",
            ));
            None
        }
        (Some(pool), None) => plan_new_volume(req, input, pool, &target, &mut errors),
        (None, Some(path)) => plan_existing_volume(input, path, &mut errors),
    };
    let (volume, pool, format, size_gib) = match planned {
        Some(p) if errors.is_empty() => p,
        _ => return Err(errors),
    };
    let Some(pool_info) = snap.pools.iter().find(|p| p.name == pool) else {
        return Err(vec![field(
            "pool",
            format!("There is no pool named {pool}."),
        )]);
    };
    // The GiB of this pool the VM's disks hold after the addition.
    let vm_disk_gib_in_pool = input
        .def
        .disks
        .iter()
        .filter(|d| d.device == "disk")
        .filter_map(|d| d.source.as_deref())
        .filter_map(|path| pool_info.volumes.iter().find(|v| v.path == path))
        .map(|v| v.capacity_gib())
        .sum::<u64>()
        + size_gib;
    Ok(DiskAddPlan {
        volume,
        target,
        bus: req.bus,
        cache: req.cache,
        format,
        block: pool_info.is_block(),
        size_gib,
        pool: pool.clone(),
        pool_capacity_gib: pool_info.capacity_gib().max(1),
        vm_disk_gib_in_pool,
        needs_scsi_controller: req.bus == DiskBus::Scsi && !input.def.scsi_controller,
    })
}

type Planned = (DiskVolume, String, DiskFormat, u64);

fn plan_new_volume(
    req: &AddDiskRequest,
    input: &DiskAddInput<'_>,
    pool: &str,
    target: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Planned> {
    let Some(p) = input.snap.pools.iter().find(|p| p.name == pool) else {
        errors.push(field("pool", format!("There is no pool named {pool}.")));
        return None;
    };
    if !p.active {
        errors.push(field(
            "pool",
            format!("Pool {pool} is stopped; start it on the Storage page first."),
        ));
        return None;
    }
    let format = match (req.format, p.is_block()) {
        (Some(DiskFormat::Qcow2), true) => {
            errors.push(field(
                "format",
                format!("Pool {pool} holds block volumes, which are raw; choose raw."),
            ));
            DiskFormat::Raw
        }
        (Some(f), _) => f,
        (None, true) => DiskFormat::Raw,
        (None, false) => DiskFormat::Qcow2,
    };
    let size_gib = match req.size_gib {
        None | Some(0) => {
            errors.push(field(
                "size_gib",
                "Give the new disk's size, at least 1 GiB.",
            ));
            return None;
        }
        Some(g) if g > MAX_DISK_GIB => {
            errors.push(field("size_gib", "At most 65,536 GiB."));
            return None;
        }
        Some(g) if g > p.available_gib() => {
            errors.push(field(
                "size_gib",
                format!(
                    "Pool {pool} has {} GiB free; a {g} GiB disk does not fit.",
                    p.available_gib()
                ),
            ));
            return None;
        }
        Some(g) => g,
    };
    let volume_name = free_volume_name(input.vm, target, p.is_block(), format, |n| {
        p.volumes.iter().any(|v| v.name == n)
    });
    let volume_xml = super::xml::volume_xml(&volume_name, size_gib, format);
    Some((
        DiskVolume::New {
            pool: pool.to_string(),
            volume_name,
            volume_xml,
        },
        pool.to_string(),
        format,
        size_gib,
    ))
}

fn plan_existing_volume(
    input: &DiskAddInput<'_>,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Planned> {
    let snap = input.snap;
    let Some((p, v)) = snap.volume(path) else {
        errors.push(field("volume", "Choose a volume from a storage pool."));
        return None;
    };
    if let Some(why) = existing_disk_refusal(&snap.volume_use(v)) {
        errors.push(field("volume", why));
        return None;
    }
    let format = match snap.inspected.get(&v.path).map(|i| &i.checked) {
        Some(Ok(f)) => *f,
        Some(Err(why)) => {
            errors.push(field("volume", why.clone()));
            return None;
        }
        None => {
            errors.push(field(
                "volume",
                format!("Volume {} could not be looked at; try again.", v.name),
            ));
            return None;
        }
    };
    Some((
        DiskVolume::Existing {
            path: v.path.clone(),
        },
        p.name.clone(),
        format,
        v.capacity_bytes.div_ceil(GIB),
    ))
}

/// `{vm}-{target}` with the format's extension, or `-2`, `-3`… when the pool has it.
fn free_volume_name(
    vm: &str,
    target: &str,
    block: bool,
    format: DiskFormat,
    taken: impl Fn(&str) -> bool,
) -> String {
    let ext = match (block, format) {
        (true, _) => "",
        (false, DiskFormat::Qcow2) => ".qcow2",
        (false, DiskFormat::Raw) => ".img",
    };
    (1..)
        .map(|n| match n {
            1 => format!("{vm}-{target}{ext}"),
            n => format!("{vm}-{target}-{n}{ext}"),
        })
        .find(|name| !taken(name))
        .unwrap_or_else(|| format!("{vm}-{target}{ext}"))
}

/// The first free target name of `bus` (`vdb`, `sda`…), given every target in use.
pub fn next_target(bus: DiskBus, used: &[&str]) -> String {
    (0..)
        .map(|i| super::xml::disk_target(bus.prefix(), i))
        .find(|t| !used.contains(&t.as_str()))
        .unwrap_or_else(|| super::xml::disk_target(bus.prefix(), 0))
}

/// A writable disk's `<disk>` element.
pub fn disk_xml(plan: &DiskAddPlan, path: &str) -> String {
    let (kind, source_attr) = if plan.block {
        ("block", "dev")
    } else {
        ("file", "file")
    };
    let mut driver = vec![("name", "qemu"), ("type", plan.format.as_str())];
    if plan.cache != CacheMode::Default {
        driver.push(("cache", plan.cache.as_str()));
    }
    write(|w| {
        w.create_element("disk")
            .with_attribute(("type", kind))
            .with_attribute(("device", "disk"))
            .write_inner_content(|w| {
                w.create_element("driver")
                    .with_attributes(driver.iter().copied())
                    .write_empty()?;
                w.create_element("source")
                    .with_attribute((source_attr, path))
                    .write_empty()?;
                w.create_element("target")
                    .with_attribute(("dev", plan.target.as_str()))
                    .with_attribute(("bus", plan.bus.as_str()))
                    .write_empty()?;
                Ok(())
            })?;
        Ok(())
    })
}

/// The virtio-scsi controller SCSI disks go on.
pub fn scsi_controller_xml() -> String {
    write(|w| {
        w.create_element("controller")
            .with_attribute(("type", "scsi"))
            .with_attribute(("model", "virtio-scsi"))
            .write_empty()?;
        Ok(())
    })
}

/// The `<disk>` element that names an existing disk for libvirt to detach (libvirt finds
/// it by its target).
pub fn disk_detach_xml(disk: &ParsedDisk) -> String {
    write(|w| {
        w.create_element("disk")
            .with_attribute(("device", disk.device.as_str()))
            .write_inner_content(|w| {
                w.create_element("target")
                    .with_attribute(("dev", disk.target.as_str()))
                    .with_attribute(("bus", disk.bus.as_str()))
                    .write_empty()?;
                Ok(())
            })?;
        Ok(())
    })
}

// ---- NICs ----

/// A NIC to add; the same fields as a create's NIC.
pub type AddNicRequest = NicRequest;

/// Checks a NIC addition: the bridge or network exists, the MAC (given or drawn with
/// `mac_bytes`) is valid and used by no VM on this host.
pub fn plan_nic_add(
    req: &AddNicRequest,
    snap: &Snapshot,
    mut mac_bytes: impl FnMut() -> [u8; 3],
) -> Result<NicSpec, Vec<FieldError>> {
    let mut errors = Vec::new();
    let spec = plan_nic(req, snap, &mut mac_bytes, &mut errors);
    match spec {
        Some(s) if errors.is_empty() => Ok(s),
        _ => Err(errors),
    }
}

/// An `<interface>` element: a new NIC, or (with the same MAC) a NIC whose link changes.
pub fn nic_xml(kind: &str, source: &str, mac: &str, model: Option<&str>, link_up: bool) -> String {
    let attr = match kind {
        "bridge" => "bridge",
        "network" => "network",
        _ => "dev",
    };
    write(|w| {
        w.create_element("interface")
            .with_attribute(("type", kind))
            .write_inner_content(|w| {
                w.create_element("source")
                    .with_attribute((attr, source))
                    .write_empty()?;
                w.create_element("mac")
                    .with_attribute(("address", mac))
                    .write_empty()?;
                if let Some(m) = model {
                    w.create_element("model")
                        .with_attribute(("type", m))
                        .write_empty()?;
                }
                w.create_element("link")
                    .with_attribute(("state", if link_up { "up" } else { "down" }))
                    .write_empty()?;
                Ok(())
            })?;
        Ok(())
    })
}

/// A planned NIC's `<interface>` element, link up.
pub fn new_nic_xml(spec: &NicSpec) -> String {
    let (kind, source) = match &spec.source {
        NicSource::Bridge(b) => ("bridge", b.as_str()),
        NicSource::Network(n) => ("network", n.as_str()),
    };
    nic_xml(
        kind,
        source,
        &spec.mac.to_string(),
        Some(spec.model.as_str()),
        true,
    )
}

/// The VM's NIC with `mac` (any case), or the field error.
pub fn find_nic<'a>(def: &'a ParsedDomain, mac: &str) -> Result<&'a ParsedNic, Vec<FieldError>> {
    let wanted = Mac::parse(mac.trim()).map_err(|e| vec![field("mac", e.to_string())])?;
    def.nics
        .iter()
        .find(|n| {
            n.mac
                .as_deref()
                .and_then(|m| Mac::parse(m).ok())
                .is_some_and(|m| m == wanted)
        })
        .ok_or_else(|| {
            vec![field(
                "mac",
                format!("The VM has no NIC with MAC {wanted}."),
            )]
        })
}

/// The element libvirt updates a NIC's link with: the NIC as defined, link `up` or down.
pub fn nic_link_xml(nic: &ParsedNic, link_up: bool) -> Option<String> {
    Some(nic_xml(
        &nic.kind,
        nic.source.as_deref()?,
        nic.mac.as_deref()?,
        nic.model.as_deref(),
        link_up,
    ))
}

// ---- the definition, rewritten ----

/// A change of a VM's stored definition that goes with a live device change.
#[derive(Debug, Clone)]
pub enum DeviceEdit<'a> {
    /// Adds this element (written by this module) at the end of `<devices>`.
    Add(&'a str),
    /// Leaves out the `<disk>` with this target.
    RemoveDisk(&'a str),
    /// Leaves out the `<interface>` with this MAC.
    RemoveNic(Mac),
    /// Sets the link of the `<interface>` with this MAC: up (`true`) or down.
    NicLink(Mac, bool),
    /// Leaves out the `<hostdev>` of this host device address
    /// (`domain::host_devices::HostDevice::address`).
    RemoveHostdev(&'a str),
}

#[derive(Debug, thiserror::Error)]
#[error("the VM's definition could not be changed: {0}")]
pub struct AttachXmlError(String);

fn xml_err(e: impl std::fmt::Display) -> AttachXmlError {
    AttachXmlError(e.to_string())
}

/// `domain_xml` (inactive) with `edit` made; every other element kept as it was. Asking
/// to remove or change a device the definition lacks is an error.
pub fn edit_definition(domain_xml: &str, edit: &DeviceEdit<'_>) -> Result<String, AttachXmlError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(domain_xml);
    let mut w = Writer::new(Vec::new());
    let mut depth = 0usize;
    let mut in_devices = false;
    // A direct child of <devices>, buffered until its end to decide about it.
    let mut held: Vec<Event<'static>> = Vec::new();
    let mut found = false;
    loop {
        let ev = reader.read_event().map_err(xml_err)?.into_owned();
        match &ev {
            Event::Eof => break,
            Event::Start(e) => {
                depth += 1;
                if depth == 2 && e.name().as_ref() == "devices" {
                    in_devices = true;
                } else if in_devices && depth >= 3 {
                    held.push(ev);
                    continue;
                }
            }
            Event::Empty(_) if in_devices && depth >= 2 => {
                held.push(ev);
                if depth == 2 {
                    found |= decide(&mut w, std::mem::take(&mut held), edit)?;
                }
                continue;
            }
            Event::End(e) => {
                depth -= 1;
                if in_devices && depth == 1 && e.name().as_ref() == "devices" {
                    in_devices = false;
                    if let DeviceEdit::Add(device) = edit {
                        let mut r = quick_xml::Reader::from_str(device);
                        loop {
                            match r.read_event().map_err(xml_err)? {
                                Event::Eof => break,
                                other => w.write_event(other).map_err(xml_err)?,
                            }
                        }
                        found = true;
                    }
                } else if in_devices && depth >= 2 {
                    held.push(ev);
                    if depth == 2 {
                        found |= decide(&mut w, std::mem::take(&mut held), edit)?;
                    }
                    continue;
                }
            }
            _ if in_devices && !held.is_empty() => {
                held.push(ev);
                continue;
            }
            _ => {}
        }
        w.write_event(ev).map_err(xml_err)?;
    }
    if !found {
        return Err(AttachXmlError(match edit {
            DeviceEdit::Add(_) => "it has no <devices> element".into(),
            DeviceEdit::RemoveDisk(t) => format!("it has no disk {t}"),
            DeviceEdit::RemoveHostdev(a) => format!("it has no host device {a}"),
            DeviceEdit::RemoveNic(m) | DeviceEdit::NicLink(m, _) => {
                format!("it has no NIC with MAC {m}")
            }
        }));
    }
    String::from_utf8(w.into_inner()).map_err(xml_err)
}

/// Writes (or leaves out) one buffered device; true when `edit` was about it.
fn decide(
    w: &mut Writer<Vec<u8>>,
    device: Vec<quick_xml::events::Event<'static>>,
    edit: &DeviceEdit<'_>,
) -> Result<bool, AttachXmlError> {
    use quick_xml::events::{BytesStart, Event};
    let top = match device.first() {
        Some(Event::Start(e)) | Some(Event::Empty(e)) => e.name().as_ref().to_string(),
        _ => String::new(),
    };
    let child_attr = |child: &str, key: &str| -> Option<String> {
        device.iter().skip(1).find_map(|ev| match ev {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == child => e
                .attributes()
                .flatten()
                .find_map(|a| (a.key.as_ref() == key).then(|| a.value.to_string())),
            _ => None,
        })
    };
    let is_nic = |m: &Mac| {
        top == "interface"
            && child_attr("mac", "address")
                .and_then(|a| Mac::parse(&a).ok())
                .is_some_and(|a| &a == m)
    };
    let (matched, keep) = match edit {
        DeviceEdit::RemoveDisk(t) => {
            let m = top == "disk" && child_attr("target", "dev").as_deref() == Some(*t);
            (m, !m)
        }
        DeviceEdit::RemoveNic(mac) => {
            let m = is_nic(mac);
            (m, !m)
        }
        DeviceEdit::RemoveHostdev(address) => {
            let kind = match device.first() {
                Some(Event::Start(e)) | Some(Event::Empty(e)) => {
                    e.attributes().flatten().find_map(|a| {
                        let k: &str = a.key.as_ref();
                        (k == "type").then(|| a.value.to_string())
                    })
                }
                _ => None,
            };
            let m = top == "hostdev"
                && kind
                    .and_then(|k| {
                        super::host_devices::hostdev_key(&k, |el, key| child_attr(el, key))
                    })
                    .as_deref()
                    == Some(*address);
            (m, !m)
        }
        DeviceEdit::NicLink(mac, up) if is_nic(mac) => {
            // The interface without its old <link>, and the new one before its end.
            let last = device.len() - 1;
            let mut depth = 0usize;
            let mut skipping = false;
            for (i, ev) in device.into_iter().enumerate() {
                if i == last {
                    let mut link = BytesStart::new("link");
                    link.push_attribute(("state", if *up { "up" } else { "down" }));
                    match ev {
                        Event::Empty(e) => {
                            w.write_event(Event::Start(e.clone())).map_err(xml_err)?;
                            w.write_event(Event::Empty(link)).map_err(xml_err)?;
                            w.write_event(Event::End(e.to_end().into_owned()))
                                .map_err(xml_err)?;
                        }
                        other => {
                            w.write_event(Event::Empty(link)).map_err(xml_err)?;
                            w.write_event(other).map_err(xml_err)?;
                        }
                    }
                    break;
                }
                match &ev {
                    Event::Start(e) if depth == 1 && e.name().as_ref() == "link" => {
                        skipping = true;
                        depth += 1;
                        continue;
                    }
                    Event::Empty(e) if depth == 1 && e.name().as_ref() == "link" => continue,
                    Event::Start(_) => depth += 1,
                    Event::End(_) => {
                        depth -= 1;
                        if skipping && depth == 1 {
                            skipping = false;
                            continue;
                        }
                    }
                    _ => {}
                }
                if !skipping {
                    w.write_event(ev).map_err(xml_err)?;
                }
            }
            return Ok(true);
        }
        _ => (false, true),
    };
    if keep {
        for ev in device {
            w.write_event(ev).map_err(xml_err)?;
        }
    }
    Ok(matched)
}

fn write(f: impl FnOnce(&mut Writer<Vec<u8>>) -> std::io::Result<()>) -> String {
    let mut w = Writer::new(Vec::new());
    // Writing to a Vec cannot fail; an error would leave an empty (invalid) element,
    // which libvirt refuses with its own message.
    let _ = f(&mut w);
    String::from_utf8(w.into_inner()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::capacity::{CapacityPolicy, UnitModel};
    use crate::domain::create_plan::VolumeFacts;
    use crate::domain::inventory::{NetworkInfo, PoolInfo, VolumeInfo};
    use std::collections::{HashMap, HashSet};

    fn pool(name: &str, kind: &str, vols: &[(&str, u64)]) -> PoolInfo {
        PoolInfo {
            name: name.into(),
            kind: kind.into(),
            active: true,
            capacity_bytes: 100 * GIB,
            allocation_bytes: 20 * GIB,
            available_bytes: 80 * GIB,
            volumes: vols
                .iter()
                .map(|(n, g)| VolumeInfo {
                    name: (*n).into(),
                    path: format!("/pool/{n}"),
                    capacity_bytes: g * GIB,
                    allocation_bytes: 0,
                })
                .collect(),
        }
    }

    fn snap() -> Snapshot {
        let mut disks_in_use = HashMap::new();
        disks_in_use.insert("/pool/web.qcow2".to_string(), "web".to_string());
        disks_in_use.insert("/pool/db.qcow2".to_string(), "db".to_string());
        let mut inspected = HashMap::new();
        inspected.insert(
            "/pool/spare.img".to_string(),
            VolumeFacts {
                libvirt_format: Some("raw".into()),
                checked: Ok(DiskFormat::Raw),
            },
        );
        Snapshot {
            model: UnitModel::new(&CapacityPolicy::default(), 16, 65536).expect("model"),
            vms: vec![],
            row_names: vec![],
            pools: vec![
                pool(
                    "default",
                    "dir",
                    &[
                        ("web.qcow2", 10),
                        ("db.qcow2", 20),
                        ("spare.img", 5),
                        ("web-vdb.qcow2", 1),
                    ],
                ),
                pool("vg", "logical", &[]),
            ],
            networks: vec![NetworkInfo {
                name: "default".into(),
                bridge: Some("virbr0".into()),
                forward_mode: "nat".into(),
                active: true,
            }],
            macs_in_use: ["52:54:00:00:00:01".to_string()].into_iter().collect(),
            disks_in_use,
            cdroms_in_use: HashMap::new(),
            seeds: HashSet::new(),
            being_made: HashSet::new(),
            inspected,
            boot_files: HashMap::new(),
            host_bridges: HashSet::new(),
            guest: Default::default(),
        }
    }

    fn web() -> ParsedDomain {
        ParsedDomain {
            name: "web".into(),
            disks: vec![ParsedDisk {
                device: "disk".into(),
                source: Some("/pool/web.qcow2".into()),
                target: "vda".into(),
                bus: "virtio".into(),
                format: Some("qcow2".into()),
                ..ParsedDisk::default()
            }],
            ..ParsedDomain::default()
        }
    }

    fn input<'a>(def: &'a ParsedDomain, snap: &'a Snapshot, live: bool) -> DiskAddInput<'a> {
        DiskAddInput {
            vm: "web",
            def,
            live,
            snap,
        }
    }

    fn fields(e: &[FieldError]) -> Vec<&str> {
        e.iter().map(|f| f.field).collect()
    }

    #[test]
    fn a_new_volume_gets_the_next_target_and_a_free_name() {
        let (def, snap) = (web(), snap());
        let req = AddDiskRequest {
            pool: Some("default".into()),
            size_gib: Some(4),
            cache: CacheMode::None,
            ..Default::default()
        };
        let plan = plan_disk_add(&req, &input(&def, &snap, true)).expect("plan");
        assert_eq!(plan.target, "vdb");
        assert_eq!(plan.format, DiskFormat::Qcow2);
        // web-vdb.qcow2 is left over from an earlier disk: the new one is -2.
        match &plan.volume {
            DiskVolume::New { volume_name, .. } => assert_eq!(volume_name, "web-vdb-2.qcow2"),
            other => panic!("{other:?}"),
        }
        assert_eq!(plan.vm_disk_gib_in_pool, 14);
        let xml = disk_xml(&plan, "/pool/web-vdb-2.qcow2");
        assert_eq!(
            xml,
            "<disk type=\"file\" device=\"disk\"><driver name=\"qemu\" type=\"qcow2\" cache=\"none\"/>\
             <source file=\"/pool/web-vdb-2.qcow2\"/><target dev=\"vdb\" bus=\"virtio\"/></disk>"
        );
    }

    #[test]
    fn sata_waits_for_the_vm_to_be_off_and_scsi_brings_its_controller() {
        let (def, snap) = (web(), snap());
        let mut req = AddDiskRequest {
            pool: Some("default".into()),
            size_gib: Some(1),
            bus: DiskBus::Sata,
            ..Default::default()
        };
        let e = plan_disk_add(&req, &input(&def, &snap, true)).unwrap_err();
        assert_eq!(fields(&e), ["bus"]);
        let off = plan_disk_add(&req, &input(&def, &snap, false)).expect("off");
        assert_eq!(
            (off.target.as_str(), off.needs_scsi_controller),
            ("sda", false)
        );
        req.bus = DiskBus::Scsi;
        let scsi = plan_disk_add(&req, &input(&def, &snap, true)).expect("scsi");
        assert!(scsi.needs_scsi_controller);
        let mut with = web();
        with.scsi_controller = true;
        assert!(
            !plan_disk_add(&req, &input(&with, &snap, true))
                .expect("scsi")
                .needs_scsi_controller
        );
    }

    #[test]
    fn refusals_name_their_field() {
        let (def, snap) = (web(), snap());
        let cases: Vec<(AddDiskRequest, &str)> = vec![
            (AddDiskRequest::default(), "pool"),
            (
                AddDiskRequest {
                    pool: Some("default".into()),
                    volume: Some("/pool/spare.img".into()),
                    ..Default::default()
                },
                "volume",
            ),
            (
                AddDiskRequest {
                    pool: Some("nope".into()),
                    size_gib: Some(1),
                    ..Default::default()
                },
                "pool",
            ),
            (
                AddDiskRequest {
                    pool: Some("default".into()),
                    ..Default::default()
                },
                "size_gib",
            ),
            (
                AddDiskRequest {
                    pool: Some("default".into()),
                    size_gib: Some(81),
                    ..Default::default()
                },
                "size_gib",
            ),
            (
                AddDiskRequest {
                    pool: Some("vg".into()),
                    size_gib: Some(1),
                    format: Some(DiskFormat::Qcow2),
                    ..Default::default()
                },
                "format",
            ),
            (
                AddDiskRequest {
                    volume: Some("/pool/db.qcow2".into()),
                    ..Default::default()
                },
                "volume",
            ),
            (
                AddDiskRequest {
                    volume: Some("/elsewhere/x.img".into()),
                    ..Default::default()
                },
                "volume",
            ),
        ];
        for (req, want) in cases {
            let e = plan_disk_add(&req, &input(&def, &snap, false)).unwrap_err();
            assert_eq!(fields(&e), [want], "{req:?}");
        }
    }

    #[test]
    fn a_free_volume_is_attached_in_its_checked_format() {
        let (def, snap) = (web(), snap());
        let req = AddDiskRequest {
            volume: Some("/pool/spare.img".into()),
            ..Default::default()
        };
        let plan = plan_disk_add(&req, &input(&def, &snap, true)).expect("plan");
        assert_eq!(
            plan.volume,
            DiskVolume::Existing {
                path: "/pool/spare.img".into()
            }
        );
        assert_eq!((plan.format, plan.size_gib), (DiskFormat::Raw, 5));
        assert_eq!(plan.vm_disk_gib_in_pool, 15);
    }

    #[test]
    fn block_pools_make_raw_block_disks() {
        let (def, snap) = (web(), snap());
        let req = AddDiskRequest {
            pool: Some("vg".into()),
            size_gib: Some(2),
            ..Default::default()
        };
        let plan = plan_disk_add(&req, &input(&def, &snap, false)).expect("plan");
        assert!(plan.block);
        assert_eq!(plan.format, DiskFormat::Raw);
        let xml = disk_xml(&plan, "/dev/vg/web-vdb");
        assert!(
            xml.starts_with("<disk type=\"block\" device=\"disk\">"),
            "{xml}"
        );
        assert!(xml.contains("<source dev=\"/dev/vg/web-vdb\"/>"), "{xml}");
    }

    #[test]
    fn targets_skip_what_is_used_and_share_sd_between_sata_and_scsi() {
        assert_eq!(next_target(DiskBus::Virtio, &["vda", "vdb", "hdc"]), "vdc");
        assert_eq!(next_target(DiskBus::Virtio, &["vdb"]), "vda");
        assert_eq!(next_target(DiskBus::Scsi, &["vda", "sda"]), "sdb");
        assert_eq!(next_target(DiskBus::Sata, &["sda", "sdb"]), "sdc");
    }

    #[test]
    fn a_nic_gets_a_fresh_mac_and_a_given_one_is_checked() {
        let snap = snap();
        let mut draws = vec![[0, 0, 1], [0xab, 0xcd, 0xef]].into_iter();
        let spec = plan_nic_add(
            &AddNicRequest {
                network: Some("default".into()),
                ..Default::default()
            },
            &snap,
            || draws.next().unwrap_or([9, 9, 9]),
        )
        .expect("nic");
        // The first draw is in use: the second is taken.
        assert_eq!(spec.mac.to_string(), "52:54:00:ab:cd:ef");
        assert_eq!(
            new_nic_xml(&spec),
            "<interface type=\"network\"><source network=\"default\"/>\
             <mac address=\"52:54:00:ab:cd:ef\"/><model type=\"virtio\"/><link state=\"up\"/></interface>"
        );
        let taken = plan_nic_add(
            &AddNicRequest {
                network: Some("default".into()),
                mac: Some("52:54:00:00:00:01".into()),
                ..Default::default()
            },
            &snap,
            || [1, 2, 3],
        )
        .unwrap_err();
        assert_eq!(fields(&taken), ["mac"]);
        let nowhere = plan_nic_add(
            &AddNicRequest {
                bridge: Some("br9".into()),
                ..Default::default()
            },
            &snap,
            || [1, 2, 3],
        )
        .unwrap_err();
        assert_eq!(fields(&nowhere), ["bridge"]);
    }

    #[test]
    fn a_nic_is_found_by_its_mac_in_any_case_and_its_link_rewritten() {
        let mut def = web();
        def.nics.push(ParsedNic {
            mac: Some("52:54:00:AB:00:01".into()),
            kind: "bridge".into(),
            source: Some("br0".into()),
            model: Some("virtio".into()),
            link_down: false,
        });
        let nic = find_nic(&def, "52:54:00:ab:00:01").expect("found");
        assert_eq!(
            nic_link_xml(nic, false).as_deref(),
            Some(
                "<interface type=\"bridge\"><source bridge=\"br0\"/><mac address=\"52:54:00:AB:00:01\"/>\
                 <model type=\"virtio\"/><link state=\"down\"/></interface>"
            )
        );
        assert_eq!(
            fields(&find_nic(&def, "52:54:00:ab:00:02").unwrap_err()),
            ["mac"]
        );
        assert_eq!(fields(&find_nic(&def, "not a mac").unwrap_err()), ["mac"]);
    }

    const DEF: &str = "<domain type='qemu'><name>web</name><devices>\n  \
        <disk type='file' device='disk'><source file='/pool/web.qcow2'/><target dev='vda' bus='virtio'/></disk>\n  \
        <disk type='file' device='disk'><source file='/pool/web-vdb.qcow2'/><target dev='vdb' bus='virtio'/></disk>\n  \
        <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/><link state='down'/></interface>\n  \
        <interface type='network'><mac address='52:54:00:00:00:02'/><source network='default'/></interface>\n  \
        <serial type='pty'><target port='0'/></serial>\n</devices></domain>";

    #[test]
    fn the_definition_gains_and_loses_exactly_one_device() {
        let mac = |m: &str| Mac::parse(m).expect("mac");
        let added = edit_definition(
            DEF,
            &DeviceEdit::Add(
                "<disk type=\"file\" device=\"disk\"><target dev=\"vdc\" bus=\"virtio\"/></disk>",
            ),
        )
        .expect("add");
        let d = crate::domain::xml::parse_domain(&added).expect("parse");
        assert_eq!(
            d.disks
                .iter()
                .map(|d| d.target.as_str())
                .collect::<Vec<_>>(),
            ["vda", "vdb", "vdc"]
        );
        assert!(
            added.contains("<serial type='pty'><target port='0'/></serial>"),
            "{added}"
        );

        let removed = edit_definition(DEF, &DeviceEdit::RemoveDisk("vdb")).expect("remove");
        let d = crate::domain::xml::parse_domain(&removed).expect("parse");
        assert_eq!(
            d.disks
                .iter()
                .map(|d| d.target.as_str())
                .collect::<Vec<_>>(),
            ["vda"]
        );
        assert_eq!(d.nics.len(), 2);

        let nic_gone =
            edit_definition(DEF, &DeviceEdit::RemoveNic(mac("52:54:00:00:00:01"))).expect("nic");
        let d = crate::domain::xml::parse_domain(&nic_gone).expect("parse");
        assert_eq!(d.nics.len(), 1);
        assert_eq!(d.nics[0].mac.as_deref(), Some("52:54:00:00:00:02"));
        assert!(d.has_serial);

        let up =
            edit_definition(DEF, &DeviceEdit::NicLink(mac("52:54:00:00:00:01"), true)).expect("up");
        let down = edit_definition(&up, &DeviceEdit::NicLink(mac("52:54:00:00:00:02"), false))
            .expect("down");
        let d = crate::domain::xml::parse_domain(&down).expect("parse");
        assert_eq!(
            d.nics.iter().map(|n| n.link_down).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(down.matches("<link").count(), 2, "{down}");

        for missing in [
            DeviceEdit::RemoveDisk("vdz"),
            DeviceEdit::RemoveNic(mac("52:54:00:00:00:09")),
            DeviceEdit::NicLink(mac("52:54:00:00:00:09"), true),
        ] {
            assert!(edit_definition(DEF, &missing).is_err(), "{missing:?}");
        }
    }

    #[test]
    fn special_characters_are_escaped_in_device_xml() {
        let d = ParsedDisk {
            device: "disk".into(),
            target: "vd\"b".into(),
            bus: "virtio".into(),
            ..ParsedDisk::default()
        };
        assert_eq!(
            disk_detach_xml(&d),
            "<disk device=\"disk\"><target dev=\"vd&quot;b\" bus=\"virtio\"/></disk>"
        );
        assert_eq!(
            scsi_controller_xml(),
            "<controller type=\"scsi\" model=\"virtio-scsi\"/>"
        );
    }
}
