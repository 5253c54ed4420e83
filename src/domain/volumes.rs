//! Volumes in a pool as an admin handles them: names, new volumes, resizing, which VMs
//! use a volume, image URLs to fetch, and the jobs that move bytes into a pool. Pure: no
//! I/O, unit-tested with plain values.

use super::install_tree::{TreeUrl, TreeUrlError};
use super::vmspec::DiskFormat;
use super::xml::ParsedDomain;
use serde::{Deserialize, Serialize};

pub const GIB: u64 = 1024 * 1024 * 1024;

/// A validation failure at one field of a volume form or API body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFieldError {
    pub field: &'static str,
    pub message: String,
}

fn at(field: &'static str, message: impl Into<String>) -> VolumeFieldError {
    VolumeFieldError {
        field,
        message: message.into(),
    }
}

/// Checks a volume (file) name: 1–200 of letters, digits, `.`, `_`, `-`, `+`, not
/// starting with `.` or `-` (so never `..`, a path or an option).
pub fn check_volume_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Enter a volume name, e.g. debian-12.iso or data.qcow2.".into());
    }
    if name.len() > 200 {
        return Err("The volume name is longer than 200 characters.".into());
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("The volume name must not start with '.' or '-'.".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')))
    {
        return Err(format!(
            "The volume name may only contain letters, digits, '.', '_', '-' and '+' (not {c:?})."
        ));
    }
    Ok(())
}

/// A new empty volume as typed: name, size in GiB, format.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NewVolumeRequest {
    pub name: String,
    pub size_gib: Option<u64>,
    pub format: Option<String>,
}

/// A checked new volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVolume {
    pub name: String,
    pub size_gib: u64,
    pub format: DiskFormat,
}

/// Largest volume created from the form (1 PiB: a typo guard, not a policy).
pub const MAX_VOLUME_GIB: u64 = 1024 * 1024;

pub fn parse_format(s: Option<&str>) -> Result<DiskFormat, String> {
    match s.map(str::trim).unwrap_or("qcow2") {
        "" | "qcow2" => Ok(DiskFormat::Qcow2),
        "raw" => Ok(DiskFormat::Raw),
        other => Err(format!("Choose qcow2 or raw (not {other:?}).")),
    }
}

fn check_size_gib(size: Option<u64>) -> Result<u64, String> {
    match size {
        None | Some(0) => Err("Enter a size of at least 1 GiB.".into()),
        Some(s) if s > MAX_VOLUME_GIB => Err(format!("At most {MAX_VOLUME_GIB} GiB.")),
        Some(s) => Ok(s),
    }
}

impl NewVolumeRequest {
    /// Every field's problem at once, or the checked volume.
    pub fn validate(&self) -> Result<NewVolume, Vec<VolumeFieldError>> {
        let name = self.name.trim().to_string();
        let mut errors = Vec::new();
        if let Err(m) = check_volume_name(&name) {
            errors.push(at("name", m));
        }
        let size = check_size_gib(self.size_gib).map_err(|m| errors.push(at("size_gib", m)));
        let format = parse_format(self.format.as_deref()).map_err(|m| errors.push(at("format", m)));
        match (size, format) {
            (Ok(size_gib), Ok(format)) if errors.is_empty() => Ok(NewVolume {
                name,
                size_gib,
                format,
            }),
            _ => Err(errors),
        }
    }
}

/// What a resize will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    Grow,
    /// Smaller, but not below what is already allocated.
    Shrink,
}

/// Checks a new size for a volume of `capacity_bytes` with `allocation_bytes` in use.
/// Growing is always allowed; shrinking only down to the allocation (below it data
/// would be cut off), and never for qcow2 (its data may lie anywhere in the file).
pub fn check_resize(
    capacity_bytes: u64,
    allocation_bytes: u64,
    format: Option<&str>,
    new_size_gib: Option<u64>,
) -> Result<(u64, Resize), String> {
    let new_bytes = check_size_gib(new_size_gib)?.saturating_mul(GIB);
    if new_bytes == capacity_bytes {
        return Err("The volume already has this size.".into());
    }
    if new_bytes > capacity_bytes {
        return Ok((new_bytes, Resize::Grow));
    }
    if format == Some("qcow2") {
        return Err(
            "A qcow2 volume can only grow: shrinking it would cut off data stored near its end."
                .into(),
        );
    }
    if new_bytes < allocation_bytes {
        return Err(format!(
            "{} GiB is less than the {:.1} GiB already in use; data would be lost.",
            new_size_gib.unwrap_or(0),
            allocation_bytes as f64 / GIB as f64
        ));
    }
    Ok((new_bytes, Resize::Shrink))
}

/// An installer image: libvirt calls its format `iso`, or its name ends in `.iso`.
pub fn is_iso_image(name: &str, format: Option<&str>) -> bool {
    format == Some("iso") || name.to_ascii_lowercase().ends_with(".iso")
}

/// Why a volume is not resized, before any size is looked at: an ISO image is an
/// installer's fixed contents, not a disk that grows.
pub fn resize_refusal(name: &str, format: Option<&str>) -> Option<String> {
    is_iso_image(name, format).then(|| {
        format!("Volume {name} is an ISO image (installer media); its size is fixed by its contents and it cannot be resized.")
    })
}

/// A warning for a thin (qcow2) volume larger than the pool's free space: it is made,
/// but the pool fills up before the volume does.
pub fn overcommit_warning(
    name: &str,
    size_gib: u64,
    format: DiskFormat,
    available_bytes: u64,
) -> Option<String> {
    let size_bytes = size_gib.saturating_mul(GIB);
    (format == DiskFormat::Qcow2 && size_bytes > available_bytes).then(|| {
        format!(
            "Warning: {name} may grow to {size_gib} GiB but the pool has only {:.1} GiB free; \
             it is thin, so it was made, but the VM using it stops with I/O errors when the \
             pool is full. Free space in the pool or make the volume smaller.",
            available_bytes as f64 / GIB as f64
        )
    })
}

/// Names of the VMs with a disk (or CD-ROM) whose source is the volume: its `path`, or
/// `<source pool=… volume=…>` naming it.
pub fn volume_users(domains: &[ParsedDomain], pool: &str, volume: &str, path: &str) -> Vec<String> {
    let mut names: Vec<String> = domains
        .iter()
        .filter(|d| {
            d.disks.iter().any(|k| match k.pool.as_deref() {
                Some(p) => p == pool && k.source.as_deref() == Some(volume),
                None => k.source.as_deref() == Some(path),
            })
        })
        .map(|d| d.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The sentence refusing to delete a volume that VMs use.
pub fn in_use_message(volume: &str, users: &[String]) -> String {
    format!(
        "Volume {volume} is used by {} {}; remove it from {} first.",
        if users.len() == 1 { "VM" } else { "VMs" },
        users.join(", "),
        if users.len() == 1 {
            "that VM"
        } else {
            "those VMs"
        }
    )
}

/// A checked image URL: http or https, a host, no credentials, no spaces or quotes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageUrl(String);

impl ImageUrl {
    pub fn parse(s: &str) -> Result<ImageUrl, String> {
        let s = s.trim();
        // Same rules as install tree URLs (the query string is checked apart, below).
        let without_query = s.split_once('?').map(|(a, _)| a).unwrap_or(s);
        if s.contains('#') {
            return Err("Leave the #fragment out of the URL.".into());
        }
        match TreeUrl::parse(without_query) {
            Ok(_) => {}
            Err(TreeUrlError::Empty) => {
                return Err(
                    "Enter the image's URL, e.g. https://cdimage.debian.org/…/debian-12.iso."
                        .into(),
                )
            }
            Err(e) => return Err(e.to_string()),
        }
        if s.len() > 2048
            || s.chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>'))
        {
            return Err(TreeUrlError::Characters.to_string());
        }
        Ok(ImageUrl(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last path segment, as a suggested volume name (when it is a valid one).
    pub fn file_name(&self) -> Option<String> {
        let path = self.0.split_once('?').map(|(a, _)| a).unwrap_or(&self.0);
        let last = path.rsplit('/').next()?;
        check_volume_name(last).ok().map(|()| last.to_string())
    }
}

/// A request to fetch an image from a URL into a pool.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FetchRequest {
    pub url: String,
    /// The new volume's name; the URL's file name when empty.
    pub name: String,
}

/// A checked fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub url: ImageUrl,
    pub name: String,
}

impl FetchRequest {
    pub fn validate(&self) -> Result<Fetch, Vec<VolumeFieldError>> {
        let url = ImageUrl::parse(&self.url).map_err(|m| vec![at("url", m)])?;
        let name = match self.name.trim() {
            "" => url.file_name().ok_or_else(|| {
                vec![at(
                    "name",
                    "The URL does not end in a usable file name; enter a volume name.",
                )]
            })?,
            n => n.to_string(),
        };
        check_volume_name(&name).map_err(|m| vec![at("name", m)])?;
        Ok(Fetch { url, name })
    }
}

// ---- jobs ----

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Bytes sent by a browser or API client into a new volume.
    Upload,
    /// An image fetched from a URL into a new volume.
    Fetch,
    /// A new VM copied from a VM or a template (its disks copied or overlaid).
    Clone,
    /// A new empty volume.
    Create,
    /// A VM moving to or from a peer host.
    Migrate,
    /// One VM's part of a bulk action from the VM list.
    Action,
    /// A new VM made from a backup (its disks read from the backup's files).
    Restore,
    /// A shut-off VM put back to a backup (its disks read into new volumes, then swapped
    /// in); the VM is held (no start, change or backup) while it runs.
    RestoreOver,
    /// A backup of a VM into a backup target (its progress as libvirt counts it).
    Backup,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Upload => "upload",
            JobKind::Fetch => "fetch",
            JobKind::Clone => "clone",
            JobKind::Create => "create",
            JobKind::Migrate => "migrate",
            JobKind::Action => "action",
            JobKind::Restore => "restore",
            JobKind::RestoreOver => "restore-over",
            JobKind::Backup => "backup",
        }
    }
    pub fn parse(s: &str) -> Option<JobKind> {
        match s {
            "upload" => Some(JobKind::Upload),
            "fetch" => Some(JobKind::Fetch),
            "clone" => Some(JobKind::Clone),
            "create" => Some(JobKind::Create),
            "migrate" => Some(JobKind::Migrate),
            "action" => Some(JobKind::Action),
            "restore" => Some(JobKind::Restore),
            "restore-over" => Some(JobKind::RestoreOver),
            "backup" => Some(JobKind::Backup),
            _ => None,
        }
    }
    /// Whether the job makes a new VM (a clone or a restore): what it made is the VM's.
    pub fn makes_vm(self) -> bool {
        matches!(self, JobKind::Clone | JobKind::Restore)
    }
    /// Whether the job works on a VM (makes one, restores over one, backs one up):
    /// operators may cancel it.
    pub fn on_vm(self) -> bool {
        self.makes_vm() || matches!(self, JobKind::RestoreOver | JobKind::Backup)
    }
}

/// The `source` of a job about backup `id` (its backup, or a restore of it).
pub fn backup_job_source(id: i64) -> String {
    format!("backup {id}")
}

/// The backup a job's `source` names, if it names one.
pub fn backup_of_job_source(source: &str) -> Option<i64> {
    source.strip_prefix("backup ")?.parse().ok()
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// virtdeck stopped while the job ran; what it had made was removed at the next start.
    Interrupted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }
    pub fn parse(s: &str) -> Option<JobState> {
        [
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
            JobState::Interrupted,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
    pub fn finished(self) -> bool {
        self != JobState::Running
    }
}

/// Per cent done, 0–100 (0 while the total is unknown).
pub fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        0
    } else {
        (done.min(total) as u128 * 100 / total as u128) as u64
    }
}

/// Checks the declared length of an upload or fetch against the limit and the pool's
/// free space.
pub fn check_length(length: u64, max_bytes: u64, available_bytes: u64) -> Result<(), String> {
    if length == 0 {
        return Err("The file is empty; there is nothing to store.".into());
    }
    if length > max_bytes {
        return Err(format!(
            "The file is {} but at most {} may be stored at once (images.max_bytes).",
            super::storage::human_bytes(length),
            super::storage::human_bytes(max_bytes)
        ));
    }
    if length > available_bytes {
        return Err(format!(
            "The file is {} but the pool has only {} free.",
            super::storage::human_bytes(length),
            super::storage::human_bytes(available_bytes)
        ));
    }
    Ok(())
}

// ---- which volumes a VM may take, and what an image's header says ----

/// What the store and the host's VMs say about one volume, for [`existing_disk_refusal`]
/// and [`cdrom_refusal`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeUse {
    /// The volume's name in its pool.
    pub name: String,
    /// libvirt's `<target><format type=…>` for it, if any.
    pub format: Option<String>,
    /// VMs with it as a disk (templates included).
    pub disk_of: Vec<String>,
    /// VMs with it as a CD-ROM.
    pub cdrom_of: Vec<String>,
    /// A VM's cloud-init seed (holds its password hash and identity).
    pub seed: bool,
    /// An unfinished create, clone or job is making it.
    pub being_made: bool,
}

impl VolumeUse {
    /// An installer image: libvirt calls it `iso`, or its name ends in `.iso`.
    pub fn is_iso(&self) -> bool {
        is_iso_image(&self.name, self.format.as_deref())
    }
}

/// Why a volume cannot be a new VM's writable disk, or `None` when it may: no VM may use
/// it (as disk or CD-ROM, templates included), and it is no seed, no ISO image and not
/// being made.
pub fn existing_disk_refusal(v: &VolumeUse) -> Option<String> {
    let name = &v.name;
    if let Some(user) = v.disk_of.first() {
        return Some(format!(
            "Volume {name} is in use by VM {user}; choose a volume no VM uses, or a new disk."
        ));
    }
    if let Some(user) = v.cdrom_of.first() {
        return Some(format!(
            "Volume {name} is in use by VM {user} as its CD-ROM; choose a volume no VM uses, or a new disk."
        ));
    }
    if v.seed {
        return Some(format!(
            "Volume {name} is a VM's cloud-init seed; it belongs to that VM only. Choose another volume."
        ));
    }
    if v.is_iso() {
        return Some(format!(
            "Volume {name} is an ISO image; attach it as the CD-ROM (install source) instead, and choose a disk volume here."
        ));
    }
    if v.being_made {
        return Some(format!(
            "Volume {name} is still being made; wait for its job to finish, then choose it."
        ));
    }
    None
}

/// Why a volume cannot be a new VM's (read-only) CD-ROM, or `None` when it may: only an
/// ISO image no VM uses as a writable disk, and no VM's cloud-init seed.
pub fn cdrom_refusal(v: &VolumeUse) -> Option<String> {
    let name = &v.name;
    if v.seed {
        return Some(format!(
            "Volume {name} is a VM's cloud-init seed; it belongs to that VM only. Choose an installer ISO."
        ));
    }
    if let Some(user) = v.disk_of.first() {
        return Some(format!(
            "Volume {name} is in use by VM {user} as its disk; choose an installer ISO."
        ));
    }
    if !v.is_iso() {
        return Some(format!(
            "Volume {name} is not an ISO image; a CD-ROM takes an installer ISO (name ending in .iso)."
        ));
    }
    if v.being_made {
        return Some(format!(
            "Volume {name} is still being made; wait for its job to finish, then choose it."
        ));
    }
    None
}

/// Why a disk volume of a VM being deleted with "delete volumes" is kept, or `None` when
/// it is deleted. `v` lists the *other* VMs using it; `made_for_vm` says virtdeck made it
/// for this VM (recorded); `may_delete_any` is an admin's wider reach. Never deleted:
/// ISO images and volumes another VM uses; by an operator, volumes virtdeck did not make
/// for this VM.
pub fn delete_keep_reason(
    v: &VolumeUse,
    made_for_vm: bool,
    may_delete_any: bool,
) -> Option<String> {
    if let Some(user) = v.disk_of.first().or(v.cdrom_of.first()) {
        return Some(format!("VM {user} uses it too."));
    }
    if v.is_iso() {
        return Some("It is an ISO image (installer media), not this VM's data.".into());
    }
    if v.seed && !made_for_vm {
        return Some("It is another VM's cloud-init seed.".into());
    }
    if !made_for_vm && !may_delete_any {
        return Some(
            "virtdeck did not make it for this VM (it was attached as an existing volume, or made before virtdeck recorded volumes); an admin can delete it."
                .into(),
        );
    }
    None
}

/// The first bytes of a disk image as they would be read: whether they start with a
/// qcow2 header, and which host files that header names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageHeader {
    pub qcow2: bool,
    /// The backing file the qcow2 header names (QEMU opens it and reads through to it).
    pub backing_file: Option<String>,
    /// The external data file a qcow2 header extension names (QEMU reads data there).
    pub data_file: Option<String>,
}

/// How many bytes of an image [`read_image_header`] wants.
pub const IMAGE_HEADER_BYTES: usize = 64 * 1024;

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
const QCOW2_EXT_DATA_FILE: u32 = 0x4441_5441;

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads a qcow2 header (magic `QFI\xfb`, backing file name, header extensions) from
/// an image's first bytes. A name that lies beyond the bytes given is reported as
/// "(beyond the first 64 KiB)", so it is refused all the same.
pub fn read_image_header(bytes: &[u8]) -> ImageHeader {
    if bytes.get(0..4) != Some(&QCOW2_MAGIC[..]) {
        return ImageHeader::default();
    }
    let beyond = || "(a name beyond the first 64 KiB)".to_string();
    let text_at = |offset: u64, len: u64| -> Option<String> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        Some(String::from_utf8_lossy(bytes.get(start..end)?).into_owned())
    };
    let version = be_u32(bytes, 4).unwrap_or(0);
    let backing_offset = be_u64(bytes, 8).unwrap_or(0);
    let backing_size = be_u32(bytes, 16).unwrap_or(0);
    let backing_file = (backing_offset != 0 && backing_size != 0)
        .then(|| text_at(backing_offset, u64::from(backing_size)).unwrap_or_else(beyond));
    // Header extensions follow the header: 72 bytes in version 2, `header_length` in 3+.
    let mut at = if version >= 3 {
        be_u32(bytes, 100).unwrap_or(104) as usize
    } else {
        72
    };
    let mut data_file = None;
    while let (Some(kind), Some(len)) = (be_u32(bytes, at), be_u32(bytes, at + 4)) {
        if kind == 0 {
            break;
        }
        if kind == QCOW2_EXT_DATA_FILE {
            data_file = Some(text_at(at as u64 + 8, u64::from(len)).unwrap_or_else(beyond));
        }
        let Some(next) = (at + 8).checked_add((len as usize).div_ceil(8) * 8) else {
            break;
        };
        at = next;
    }
    ImageHeader {
        qcow2: true,
        backing_file,
        data_file,
    }
}

/// What is known about an image before virtdeck attaches or copies it.
#[derive(Debug, Clone, Default)]
pub struct ImageFacts<'a> {
    pub name: &'a str,
    /// The format virtdeck made it in (recorded), or the format its VM used.
    pub expected: Option<DiskFormat>,
    /// The backing file virtdeck gave it (a linked clone's overlay).
    pub made_backing: Option<&'a str>,
    /// libvirt's `<target><format>`: what a copy by libvirt reads it as.
    pub libvirt_format: Option<&'a str>,
    /// libvirt's `<backingStore><path>`.
    pub libvirt_backing: Option<&'a str>,
    /// Its first bytes, when virtdeck could read them.
    pub header: Option<&'a ImageHeader>,
}

/// The format to read an image in, or why it must not be used: a backing file or data
/// file virtdeck did not make (a guest can write a qcow2 header naming /etc/shadow into
/// its raw disk; read as qcow2, the image would hand that host file to whoever copies or
/// boots it), or a format other than the one virtdeck made it in.
pub fn check_image(f: &ImageFacts<'_>) -> Result<DiskFormat, String> {
    let name = f.name;
    let header_backing = f.header.and_then(|h| h.backing_file.as_deref());
    for backing in [header_backing, f.libvirt_backing].into_iter().flatten() {
        if f.made_backing != Some(backing) {
            return Err(format!(
                "Volume {name} names a backing file ({backing}) that virtdeck did not make; it is not used, because reading it would read that file. Choose another volume, or ask an admin to check it."
            ));
        }
    }
    if let Some(data) = f.header.and_then(|h| h.data_file.as_deref()) {
        return Err(format!(
            "Volume {name} names an external data file ({data}); it is not used, because reading it would read that file. Choose another volume."
        ));
    }
    let seen = match f.libvirt_format {
        None | Some("") | Some("raw") | Some("none") => DiskFormat::Raw,
        Some("qcow2") => DiskFormat::Qcow2,
        Some("iso") => DiskFormat::Raw,
        Some(other) => {
            return Err(format!(
                "Volume {name} is in {other} format; virtdeck attaches and copies qcow2 and raw images only."
            ))
        }
    };
    let header_qcow2 = f.header.map(|h| h.qcow2);
    if header_qcow2 == Some(true) && seen == DiskFormat::Raw && f.libvirt_format == Some("iso") {
        return Err(format!(
            "Volume {name} starts with a qcow2 header but is listed as an ISO; refresh its pool and check it."
        ));
    }
    if let Some(expected) = f.expected {
        let found = match header_qcow2 {
            Some(true) => DiskFormat::Qcow2,
            Some(false) if expected == DiskFormat::Qcow2 => DiskFormat::Raw,
            _ => seen,
        };
        if found != expected || seen != expected {
            return Err(format!(
                "Volume {name} was made as {} but now reads as {} (its contents changed, e.g. a guest wrote a disk header into it); it is not used. Choose another volume.",
                expected.as_str(),
                if found != expected { found } else { seen }.as_str()
            ));
        }
        return Ok(expected);
    }
    if header_qcow2 == Some(true) && seen == DiskFormat::Raw {
        // libvirt reads it raw (what a copy does); the bytes start like qcow2.
        return Err(format!(
            "Volume {name} starts with a qcow2 header, but libvirt lists it as raw; refresh its pool, then choose it again."
        ));
    }
    if header_qcow2 == Some(false) && seen == DiskFormat::Qcow2 {
        return Err(format!(
            "libvirt lists volume {name} as qcow2, but it does not start with a qcow2 header; refresh its pool, then choose it again."
        ));
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_jobs_source_names_its_backup() {
        assert_eq!(backup_job_source(42), "backup 42");
        assert_eq!(backup_of_job_source(&backup_job_source(42)), Some(42));
        assert_eq!(backup_of_job_source("web01"), None);
        assert_eq!(backup_of_job_source("backup x"), None);
    }
    use crate::domain::xml::parse_domain;

    fn qcow2_header(backing: &str) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0..4].copy_from_slice(b"QFI\xfb");
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[100..104].copy_from_slice(&104u32.to_be_bytes());
        if !backing.is_empty() {
            b[8..16].copy_from_slice(&512u64.to_be_bytes());
            b[16..20].copy_from_slice(&(backing.len() as u32).to_be_bytes());
            b[512..512 + backing.len()].copy_from_slice(backing.as_bytes());
        }
        b
    }

    #[test]
    fn a_raw_disk_with_a_guest_written_qcow2_header_is_refused() {
        // A guest wrote a qcow2 header naming /etc/shadow into its raw disk.
        let header = read_image_header(&qcow2_header("/etc/shadow"));
        assert!(header.qcow2);
        assert_eq!(header.backing_file.as_deref(), Some("/etc/shadow"));
        let raw_made = ImageFacts {
            name: "old.img",
            expected: Some(DiskFormat::Raw),
            libvirt_format: Some("raw"),
            header: Some(&header),
            ..Default::default()
        };
        assert!(check_image(&raw_made).unwrap_err().contains("/etc/shadow"));
        // After a pool refresh libvirt says qcow2 with that backing file: refused too.
        let refreshed = ImageFacts {
            libvirt_format: Some("qcow2"),
            libvirt_backing: Some("/etc/shadow"),
            header: None,
            ..raw_made.clone()
        };
        assert!(check_image(&refreshed).unwrap_err().contains("/etc/shadow"));
        // Unrecorded (uploaded) images are refused the same way.
        let unknown = ImageFacts {
            expected: None,
            ..refreshed
        };
        assert!(check_image(&unknown).unwrap_err().contains("did not make"));
        // A qcow2 header without a backing file, in a volume virtdeck made raw.
        let plain = read_image_header(&qcow2_header(""));
        let err = check_image(&ImageFacts {
            name: "old.img",
            expected: Some(DiskFormat::Raw),
            libvirt_format: Some("raw"),
            header: Some(&plain),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.contains("made as raw but now reads as qcow2"), "{err}");
    }

    #[test]
    fn images_virtdeck_made_pass_with_their_format() {
        let plain = read_image_header(&qcow2_header(""));
        let ok = |f: ImageFacts<'_>| check_image(&f);
        assert_eq!(
            ok(ImageFacts {
                name: "a.qcow2",
                expected: Some(DiskFormat::Qcow2),
                libvirt_format: Some("qcow2"),
                header: Some(&plain),
                ..Default::default()
            }),
            Ok(DiskFormat::Qcow2)
        );
        // A linked clone's overlay names the template's disk, as virtdeck made it.
        let overlay = read_image_header(&qcow2_header("/p/tpl.qcow2"));
        assert_eq!(
            ok(ImageFacts {
                name: "c.qcow2",
                expected: Some(DiskFormat::Qcow2),
                made_backing: Some("/p/tpl.qcow2"),
                libvirt_format: Some("qcow2"),
                libvirt_backing: Some("/p/tpl.qcow2"),
                header: Some(&overlay),
            }),
            Ok(DiskFormat::Qcow2)
        );
        // Raw bytes, header unreadable (test driver) or not qcow2.
        let raw = read_image_header(&[0u8; 512]);
        assert!(!raw.qcow2);
        assert_eq!(
            ok(ImageFacts {
                name: "d",
                libvirt_format: None,
                header: Some(&raw),
                ..Default::default()
            }),
            Ok(DiskFormat::Raw)
        );
        assert_eq!(
            ok(ImageFacts {
                name: "cloud.qcow2",
                libvirt_format: Some("qcow2"),
                ..Default::default()
            }),
            Ok(DiskFormat::Qcow2)
        );
        assert!(ok(ImageFacts {
            name: "x.vmdk",
            libvirt_format: Some("vmdk"),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn a_data_file_extension_is_refused() {
        let mut b = qcow2_header("");
        let name = b"/etc/shadow";
        b[104..108].copy_from_slice(&0x4441_5441u32.to_be_bytes());
        b[108..112].copy_from_slice(&(name.len() as u32).to_be_bytes());
        b[112..112 + name.len()].copy_from_slice(name);
        let h = read_image_header(&b);
        assert_eq!(h.data_file.as_deref(), Some("/etc/shadow"));
        assert!(check_image(&ImageFacts {
            name: "x",
            libvirt_format: Some("qcow2"),
            header: Some(&h),
            ..Default::default()
        })
        .unwrap_err()
        .contains("data file"));
        // A name past the bytes read is still refused.
        let mut far = qcow2_header("");
        far[8..16].copy_from_slice(&(1u64 << 40).to_be_bytes());
        far[16..20].copy_from_slice(&8u32.to_be_bytes());
        assert!(read_image_header(&far).backing_file.is_some());
    }

    #[test]
    fn what_a_delete_with_volumes_keeps() {
        let own = VolumeUse {
            name: "app.qcow2".into(),
            format: Some("qcow2".into()),
            ..Default::default()
        };
        assert_eq!(delete_keep_reason(&own, true, false), None);
        assert!(delete_keep_reason(&own, false, false)
            .unwrap()
            .contains("did not make it"));
        assert_eq!(delete_keep_reason(&own, false, true), None, "admins may");
        assert!(resize_refusal("debian.ISO", None).is_some());
        assert!(resize_refusal("x", Some("iso")).is_some());
        assert_eq!(resize_refusal("data.qcow2", Some("qcow2")), None);
        let free = 379 * GIB / 10;
        assert!(
            overcommit_warning("big.qcow2", 5000, DiskFormat::Qcow2, free)
                .unwrap()
                .contains("37.9 GiB free")
        );
        assert_eq!(
            overcommit_warning("ok.qcow2", 30, DiskFormat::Qcow2, free),
            None
        );
        assert_eq!(
            overcommit_warning("big.img", 5000, DiskFormat::Raw, free),
            None
        );
        let iso = VolumeUse {
            name: "debian.iso".into(),
            ..Default::default()
        };
        assert!(delete_keep_reason(&iso, false, true)
            .unwrap()
            .contains("ISO"));
        let shared = VolumeUse {
            disk_of: vec!["web01".into()],
            ..own
        };
        assert!(delete_keep_reason(&shared, true, true)
            .unwrap()
            .contains("VM web01 uses it too"));
    }

    #[test]
    fn which_volumes_a_new_vm_may_take() {
        let free = VolumeUse {
            name: "data.qcow2".into(),
            format: Some("qcow2".into()),
            ..Default::default()
        };
        assert_eq!(existing_disk_refusal(&free), None);
        assert!(cdrom_refusal(&free).unwrap().contains("not an ISO"));
        let iso = VolumeUse {
            name: "debian-12.8.0-amd64-netinst.iso".into(),
            format: Some("iso".into()),
            cdrom_of: vec!["build-runner".into()],
            ..Default::default()
        };
        assert!(existing_disk_refusal(&iso)
            .unwrap()
            .contains("build-runner"));
        assert_eq!(cdrom_refusal(&iso), None, "an ISO is shared read-only");
        let lone_iso = VolumeUse {
            cdrom_of: vec![],
            ..iso.clone()
        };
        assert!(existing_disk_refusal(&lone_iso)
            .unwrap()
            .contains("ISO image"));
        let disk = VolumeUse {
            disk_of: vec!["web01".into()],
            ..free.clone()
        };
        assert!(existing_disk_refusal(&disk)
            .unwrap()
            .contains("in use by VM web01"));
        assert!(cdrom_refusal(&disk).unwrap().contains("web01"));
        let seed = VolumeUse {
            name: "a-seed.iso".into(),
            seed: true,
            ..Default::default()
        };
        assert!(existing_disk_refusal(&seed).unwrap().contains("seed"));
        assert!(cdrom_refusal(&seed).unwrap().contains("seed"));
        let making = VolumeUse {
            being_made: true,
            ..free
        };
        assert!(existing_disk_refusal(&making)
            .unwrap()
            .contains("being made"));
    }

    #[test]
    fn volume_names() {
        for ok in ["debian-12.iso", "a", "data_1.qcow2", "x+y"] {
            assert_eq!(check_volume_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-rf",
            "a/b",
            "..",
            "a b",
            "ä.iso",
            &"x".repeat(201),
        ] {
            assert!(check_volume_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_volume_reports_every_field() {
        let errs = NewVolumeRequest {
            name: "../etc".into(),
            size_gib: Some(0),
            format: Some("vmdk".into()),
        }
        .validate()
        .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "size_gib", "format"]);
        let ok = NewVolumeRequest {
            name: " data.img ".into(),
            size_gib: Some(3),
            format: Some("raw".into()),
        }
        .validate()
        .unwrap();
        assert_eq!(
            ok,
            NewVolume {
                name: "data.img".into(),
                size_gib: 3,
                format: DiskFormat::Raw
            }
        );
        let default_format = NewVolumeRequest {
            name: "d".into(),
            size_gib: Some(1),
            format: None,
        };
        assert_eq!(default_format.validate().unwrap().format, DiskFormat::Qcow2);
    }

    #[test]
    fn resize_rules() {
        let g = |n| n * GIB;
        assert_eq!(
            check_resize(g(2), g(1), Some("raw"), Some(4)),
            Ok((g(4), Resize::Grow))
        );
        assert_eq!(
            check_resize(g(4), g(1), Some("raw"), Some(2)),
            Ok((g(2), Resize::Shrink))
        );
        let below = check_resize(g(4), g(3), Some("raw"), Some(2)).unwrap_err();
        assert!(below.contains("3.0 GiB already in use"), "{below}");
        assert!(check_resize(g(4), 0, Some("qcow2"), Some(2))
            .unwrap_err()
            .contains("only grow"));
        assert!(check_resize(g(4), 0, None, Some(4))
            .unwrap_err()
            .contains("already"));
        assert!(check_resize(g(4), 0, None, None).is_err());
    }

    #[test]
    fn users_of_a_volume() {
        let vm = |name: &str, path: &str| {
            parse_domain(&format!(
                "<domain type='qemu'><name>{name}</name><devices><disk type='file' device='disk'>\
                 <source file='{path}'/><target dev='vda'/></disk></devices></domain>"
            ))
            .unwrap()
        };
        let doms = [
            vm("web2", "/p/a.qcow2"),
            vm("web1", "/p/a.qcow2"),
            vm("db", "/p/b.qcow2"),
        ];
        assert_eq!(
            volume_users(&doms, "p", "a.qcow2", "/p/a.qcow2"),
            ["web1", "web2"]
        );
        assert!(volume_users(&doms, "p", "c.qcow2", "/p/c.qcow2").is_empty());
        let by_pool = parse_domain(
            "<domain type='qemu'><name>pv</name><devices><disk type='volume' device='disk'>\
             <source pool='p' volume='c.qcow2'/><target dev='vda'/></disk></devices></domain>",
        )
        .unwrap();
        assert_eq!(
            volume_users(&[by_pool], "p", "c.qcow2", "/p/c.qcow2"),
            ["pv"]
        );
        assert_eq!(
            in_use_message("a.qcow2", &["web1".into()]),
            "Volume a.qcow2 is used by VM web1; remove it from that VM first."
        );
    }

    #[test]
    fn image_urls() {
        let u = ImageUrl::parse(" https://mirror.example/isos/debian-12.iso?mirror=1 ").unwrap();
        assert_eq!(
            u.as_str(),
            "https://mirror.example/isos/debian-12.iso?mirror=1"
        );
        assert_eq!(u.file_name().as_deref(), Some("debian-12.iso"));
        assert!(ImageUrl::parse("ftp://x/y.iso")
            .unwrap_err()
            .contains("http"));
        assert!(ImageUrl::parse("https://user:pw@x/y.iso")
            .unwrap_err()
            .contains("passwords"));
        assert!(ImageUrl::parse("https://x/y.iso#frag").is_err());
        assert!(ImageUrl::parse("https://x/a b.iso").is_err());
        assert!(ImageUrl::parse("").unwrap_err().contains("Enter"));
        assert_eq!(ImageUrl::parse("http://x/").unwrap().file_name(), None);
    }

    #[test]
    fn fetch_names_default_to_the_file_name() {
        let f = FetchRequest {
            url: "http://x/img/cirros.img".into(),
            name: String::new(),
        }
        .validate()
        .unwrap();
        assert_eq!(f.name, "cirros.img");
        let e = FetchRequest {
            url: "http://x/dir/".into(),
            name: String::new(),
        }
        .validate()
        .unwrap_err();
        assert_eq!(e[0].field, "name");
        let e = FetchRequest {
            url: "http://x/a.iso".into(),
            name: "../a".into(),
        }
        .validate()
        .unwrap_err();
        assert_eq!(e[0].field, "name");
    }

    #[test]
    fn lengths_and_progress() {
        assert!(check_length(0, 10, 10).is_err());
        assert!(check_length(11, 10, 100).unwrap_err().contains("max_bytes"));
        assert!(check_length(5, 10, 4).unwrap_err().contains("free"));
        assert_eq!(check_length(5, 10, 5), Ok(()));
        assert_eq!(percent(0, 0), 0);
        assert_eq!(percent(50, 200), 25);
        assert_eq!(percent(300, 200), 100);
        assert_eq!(JobState::parse("interrupted"), Some(JobState::Interrupted));
        assert!(JobState::Cancelled.finished());
        assert_eq!(
            JobKind::parse(JobKind::Fetch.as_str()),
            Some(JobKind::Fetch)
        );
    }
}
