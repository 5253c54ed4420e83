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
#[derive(Debug, Clone, Default, Deserialize)]
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
#[derive(Debug, Clone, Default, Deserialize)]
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
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Upload => "upload",
            JobKind::Fetch => "fetch",
            JobKind::Clone => "clone",
            JobKind::Create => "create",
        }
    }
    pub fn parse(s: &str) -> Option<JobKind> {
        match s {
            "upload" => Some(JobKind::Upload),
            "fetch" => Some(JobKind::Fetch),
            "clone" => Some(JobKind::Clone),
            "create" => Some(JobKind::Create),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::xml::parse_domain;

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
