//! What virtdeck keeps beside a backup's disk files, so the backup target alone says what
//! it holds: `virtdeck-backup.json` (the record: VM, kind, the backup it builds on, units,
//! files and their checksums) and `domain.xml` (the VM's definition). Another virtdeck (a
//! reinstalled host, a peer that mounts the same NFS target) finds them there and adds
//! those backups to its own list. Everything read back is checked here first: the record's
//! names stay inside the backup's directory, and a definition asking the host for more
//! than a guest of virtdeck's gets (host devices, host files, QEMU arguments, another
//! emulator) is refused. Plain values; no I/O.

use super::vmspec::VmName;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use quick_xml::XmlVersion;
use serde::{Deserialize, Serialize};

/// The record's file name in a backup's directory.
pub const RECORD_FILE: &str = "virtdeck-backup.json";
/// The definition's file name in a backup's directory.
pub const DEFINITION_FILE: &str = "domain.xml";
/// The record format this virtdeck writes and reads.
pub const RECORD_FORMAT: u32 = 1;
/// The most a record or a definition read back may hold.
pub const MAX_BESIDE_BYTES: u64 = 1 << 20;

/// A backup as recorded beside its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub format: u32,
    pub vm: String,
    pub vm_uuid: String,
    /// `full` or `incremental`.
    pub kind: String,
    /// The backup an incremental one builds on: its directory under the target's
    /// `virtdeck-backups` (`<vm>-<uuid>/<stamp>`).
    pub parent: Option<String>,
    pub checkpoint: String,
    /// `crash`, `filesystem` or `clean`.
    pub consistency: String,
    pub why_full: String,
    pub units: u32,
    pub created_by: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub files: Vec<RecordFile>,
}

/// One disk's file, named relative to the backup's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordFile {
    /// The disk's target in the VM (`vda`).
    pub disk: String,
    /// Always `<disk>.qcow2`.
    pub file: String,
    /// The disk's size for the guest, in bytes.
    pub capacity: u64,
    /// The file's size, in bytes.
    pub bytes: u64,
    /// SHA-256 of the file (hex); empty until computed.
    pub sha256: String,
}

/// A backup directory's place under its target's `virtdeck-backups`: its last two path
/// components (`<vm>-<uuid>/<stamp>`).
pub fn place_in_target(dir: &str) -> Option<String> {
    let mut parts = dir.trim_end_matches('/').rsplit('/');
    let stamp = parts.next().filter(|s| plain_name(s))?;
    let vm_dir = parts.next().filter(|s| plain_name(s))?;
    Some(format!("{vm_dir}/{stamp}"))
}

/// A single path component of safe characters (never `.` or `..`).
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A disk target name as libvirt writes them (`vda`, `sdb`, `hdc`).
fn disk_name(s: &str) -> bool {
    (2..=8).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
}

impl BackupRecord {
    /// Parses and checks a record read back from a target: every reason it cannot be
    /// taken, as one sentence.
    pub fn read(json: &str) -> Result<BackupRecord, String> {
        let r: BackupRecord =
            serde_json::from_str(json).map_err(|e| format!("its record cannot be read ({e})"))?;
        r.check()?;
        Ok(r)
    }

    fn check(&self) -> Result<(), String> {
        if self.format != RECORD_FORMAT {
            return Err(format!(
                "its record is of format {}, which this virtdeck does not know",
                self.format
            ));
        }
        VmName::parse(&self.vm).map_err(|e| format!("its VM name is not valid ({e})"))?;
        if self.vm_uuid.len() != 36
            || !self
                .vm_uuid
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-')
        {
            return Err("its VM UUID is not valid".into());
        }
        match (self.kind.as_str(), &self.parent) {
            ("full", None) => {}
            ("incremental", Some(p)) if place_in_target(p).as_deref() == Some(p.as_str()) => {}
            ("incremental", _) => {
                return Err("it is incremental without a valid backup to build on".into())
            }
            (k, _) => return Err(format!("its kind {k:?} is neither full nor incremental")),
        }
        let checkpoint_ok = self.checkpoint.is_empty()
            || (self.checkpoint.starts_with("virtdeck-")
                && self.checkpoint.len() <= 100
                && self
                    .checkpoint
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !checkpoint_ok {
            return Err(format!(
                "its checkpoint {:?} is not one virtdeck names",
                self.checkpoint
            ));
        }
        if self.created_by.chars().count() > 200 || self.why_full.chars().count() > 1000 {
            return Err("its texts are longer than virtdeck writes them".into());
        }
        if !matches!(self.consistency.as_str(), "crash" | "filesystem" | "clean") {
            return Err(format!("its consistency {:?} is unknown", self.consistency));
        }
        if !(1..=1024).contains(&self.units) {
            return Err(format!("its {} units are out of range", self.units));
        }
        if self.files.is_empty() {
            return Err("it lists no disk files".into());
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            if !disk_name(&f.disk) || !seen.insert(f.disk.as_str()) {
                return Err(format!("its disk {:?} is not valid or repeated", f.disk));
            }
            if f.file != format!("{}.qcow2", f.disk) {
                return Err(format!(
                    "its file {:?} is not named after its disk {}",
                    f.file, f.disk
                ));
            }
            if f.capacity == 0 {
                return Err(format!("its disk {} has no size", f.disk));
            }
            if !(f.sha256.is_empty()
                || (f.sha256.len() == 64 && f.sha256.chars().all(|c| c.is_ascii_hexdigit())))
            {
                return Err(format!("its checksum of {} is not a SHA-256", f.file));
            }
        }
        Ok(())
    }
}

/// Checks a definition read back from a target for a restore on this host: it must be a
/// guest like the ones virtdeck makes ([`disks_without_files`] checks its data disks
/// against the record). Refused, with the reason: host devices, host files or sockets
/// outside libvirt's own directories (a directly booted kernel included), QEMU's command
/// line, another emulator than QEMU's, scripts, confinement switched off.
pub fn check_foreign_definition(xml: &str) -> Result<(), String> {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut root_seen = false;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("its definition is not valid XML ({e})"))?;
        match ev {
            Event::Eof => break,
            Event::Start(e) => {
                let name = e.name().as_ref().to_string();
                path.push(name);
                check_element(&path, &e)?;
                root_seen = true;
            }
            Event::Empty(e) => {
                let name = e.name().as_ref().to_string();
                path.push(name);
                check_element(&path, &e)?;
                root_seen = true;
                path.pop();
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                let text = t.xml10_content().trim().to_string();
                check_text(&path, &text)?;
            }
            // A path written with character references is not read piece by piece.
            Event::GeneralRef(_) if check_text(&path, "&").is_err() => {
                return Err(format!(
                    "its definition escapes characters in <{}>",
                    path.last().map(String::as_str).unwrap_or_default()
                ))
            }
            Event::DocType(_) => return Err("its definition has a DOCTYPE".into()),
            _ => {}
        }
    }
    if !root_seen {
        return Err("its definition is empty".into());
    }
    Ok(())
}

fn attr(e: &BytesStart<'_>, key: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| {
            let k: &str = a.key.as_ref();
            k == key
        })
        .and_then(|a| a.normalized_value(XmlVersion::Implicit1_0).ok())
        .map(|v| v.into_owned())
}

/// Under one of libvirt's own directories, without `..`.
fn libvirt_path(p: &str) -> bool {
    ["/var/lib/libvirt/", "/run/libvirt/", "/var/run/libvirt/"]
        .iter()
        .any(|d| under(p, d))
}

/// Under directory `dir`, without `..`.
fn under(p: &str, dir: &str) -> bool {
    p.starts_with(dir) && !p.split('/').any(|c| c == "..")
}

fn check_element(path: &[String], e: &BytesStart<'_>) -> Result<(), String> {
    let name = path.last().map(String::as_str).unwrap_or_default();
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    if p.len() == 1 && name != "domain" {
        return Err(format!("its definition is a <{name}>, not a <domain>"));
    }
    if name.contains(':') {
        return Err(format!(
            "its definition has <{name}> (QEMU arguments and overrides are not restored)"
        ));
    }
    let refused = match name {
        "hostdev" | "redirdev" | "smartcard" => Some("a host device passed through"),
        "filesystem" => Some("a host directory shared with the guest"),
        "shmem" => Some("host shared memory"),
        "script" => Some("a script run on the host"),
        "memoryBacking" => Some("guest memory backed by host files"),
        _ => None,
    };
    if let Some(why) = refused {
        return Err(format!("its definition has <{name}>: {why}"));
    }
    match p.as_slice() {
        ["domain", "devices", "disk"] => {
            let device = attr(e, "device").unwrap_or_else(|| "disk".into());
            match device.as_str() {
                "disk" | "cdrom" | "floppy" => {}
                other => return Err(format!("its definition has a {other} disk")),
            }
            if !matches!(
                attr(e, "type").as_deref(),
                None | Some("file") | Some("volume")
            ) {
                return Err("its definition has a disk that is not a file or a volume".into());
            }
        }
        ["domain", "devices", "interface"] => {
            let kind = attr(e, "type").unwrap_or_default();
            if !matches!(kind.as_str(), "network" | "bridge" | "direct" | "user") {
                return Err(format!("its definition has a NIC of type {kind:?}"));
            }
        }
        ["domain", "devices", dev] | ["domain", "devices", dev, "source"]
            if matches!(*dev, "serial" | "console" | "channel" | "parallel") =>
        {
            if p.len() == 3 {
                let kind = attr(e, "type").unwrap_or_else(|| "pty".into());
                if !matches!(
                    kind.as_str(),
                    "pty" | "unix" | "spicevmc" | "qemu-vdagent" | "null"
                ) {
                    return Err(format!("its definition has a {dev} of type {kind:?}"));
                }
            } else if let Some(path) = attr(e, "path") {
                if !libvirt_path(&path) {
                    return Err(format!("its definition has a {dev} socket at {path}"));
                }
            }
        }
        [.., "log"] => match attr(e, "file") {
            Some(file) if !under(&file, "/var/log/libvirt/") => {
                return Err(format!("its definition logs to {file}"))
            }
            _ => {}
        },
        ["domain", "devices", "graphics", ..] => match attr(e, "socket") {
            Some(socket) if !libvirt_path(&socket) => {
                return Err(format!("its definition has a display socket at {socket}"))
            }
            _ => {}
        },
        ["domain", "devices", "tpm", "backend"]
            if attr(e, "type").as_deref() != Some("emulator") =>
        {
            return Err("its definition passes the host's TPM through".into());
        }
        ["domain", "seclabel"] | ["domain", "devices", .., "seclabel"]
            if matches!(attr(e, "type").as_deref(), Some("none") | Some("static"))
                || attr(e, "relabel").as_deref() == Some("no") =>
        {
            return Err("its definition switches the guest's confinement off".into());
        }
        ["domain", "os", "nvram"] => match attr(e, "template") {
            Some(t) if !under(&t, "/usr/share/") => {
                return Err(format!("its definition has firmware variables from {t}"))
            }
            _ => {}
        },
        _ => {}
    }
    Ok(())
}

fn check_text(path: &[String], text: &str) -> Result<(), String> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["domain", "devices", "emulator"] => {
            let known = under(text, "/usr/bin/qemu-system-")
                || text == "/usr/libexec/qemu-kvm"
                || text == "/usr/bin/kvm";
            if !known {
                return Err(format!("its definition runs {text} as the emulator"));
            }
        }
        ["domain", "os", boot]
            if matches!(*boot, "kernel" | "initrd" | "dtb") && !libvirt_path(text) =>
        {
            return Err(format!(
                "its definition boots the {boot} {text}, outside libvirt's directories (a kernel for a restore belongs in /var/lib/libvirt/boot)"
            ));
        }
        ["domain", "os", "loader"] if !under(text, "/usr/share/") => {
            return Err(format!("its definition boots firmware from {text}"));
        }
        ["domain", "devices", "rng", "backend"]
            if !matches!(text, "" | "/dev/urandom" | "/dev/random") =>
        {
            return Err(format!("its definition reads randomness from {text}"));
        }
        _ => {}
    }
    Ok(())
}

/// The data disks (`device='disk'`) of a parsed definition that are not among the
/// record's files: a restore would have nothing to put in them.
pub fn disks_without_files(def: &super::xml::ParsedDomain, record: &BackupRecord) -> Vec<String> {
    def.disks
        .iter()
        .filter(|d| d.device == "disk")
        .filter(|d| !record.files.iter().any(|f| f.disk == d.target))
        .map(|d| d.target.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> BackupRecord {
        BackupRecord {
            format: 1,
            vm: "web".into(),
            vm_uuid: "01234567-89ab-cdef-0123-456789abcdef".into(),
            kind: "incremental".into(),
            parent: Some("web-01234567/1796300000-a1b2c3".into()),
            checkpoint: "virtdeck-1796300100-d4e5f6".into(),
            consistency: "crash".into(),
            why_full: String::new(),
            units: 2,
            created_by: "admin".into(),
            created_at: 1_796_300_100,
            finished_at: Some(1_796_300_160),
            files: vec![RecordFile {
                disk: "vda".into(),
                file: "vda.qcow2".into(),
                capacity: 1 << 30,
                bytes: 5 << 20,
                sha256: "ab".repeat(32),
            }],
        }
    }

    const OURS: &str = "<domain type='qemu'><name>web</name><uuid>01234567-89ab-cdef-0123-456789abcdef</uuid>\
        <memory unit='KiB'>524288</memory><vcpu>1</vcpu>\
        <os firmware='efi'><type arch='x86_64' machine='pc-q35-10.0'>hvm</type>\
        <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\
        <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram></os>\
        <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/web.qcow2'/><target dev='vda' bus='virtio'/></disk>\
        <disk type='file' device='cdrom'><source file='/var/lib/libvirt/images/web-seed.iso'/><target dev='sda' bus='sata'/><readonly/></disk>\
        <interface type='network'><mac address='52:54:00:12:34:56'/><source network='default'/><model type='virtio'/></interface>\
        <serial type='pty'><log file='/var/log/libvirt/qemu/web-serial.log' append='on'/><target port='0'/></serial>\
        <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>\
        <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>\
        <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\
        <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>\
        </devices></domain>";

    #[test]
    fn a_record_is_read_back_as_written() {
        let r = record();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(BackupRecord::read(&json), Ok(r));
    }

    #[test]
    fn a_record_naming_anything_outside_its_directory_is_refused() {
        type Change = Box<dyn Fn(&mut BackupRecord)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|r| r.files[0].file = "../../etc/shadow".into()),
                "not named after its disk",
            ),
            (
                Box::new(|r| r.files[0].disk = "../x".into()),
                "not valid or repeated",
            ),
            (
                Box::new(|r| r.files.push(r.files[0].clone())),
                "not valid or repeated",
            ),
            (
                Box::new(|r| r.parent = Some("../../etc".into())),
                "without a valid backup",
            ),
            (
                Box::new(|r| r.parent = Some("/etc/x".into())),
                "without a valid backup",
            ),
            (Box::new(|r| r.parent = None), "without a valid backup"),
            (
                Box::new(|r| r.kind = "weird".into()),
                "neither full nor incremental",
            ),
            (Box::new(|r| r.vm = "a/b".into()), "VM name"),
            (Box::new(|r| r.vm_uuid = "x".into()), "UUID"),
            (Box::new(|r| r.units = 0), "units"),
            (Box::new(|r| r.format = 2), "format 2"),
            (Box::new(|r| r.files.clear()), "no disk files"),
            (Box::new(|r| r.files[0].sha256 = "zz".into()), "SHA-256"),
            (Box::new(|r| r.consistency = "good".into()), "consistency"),
            (Box::new(|r| r.checkpoint = "other; x".into()), "checkpoint"),
            (Box::new(|r| r.created_by = "x".repeat(201)), "longer"),
        ];
        for (change, said) in cases {
            let mut r = record();
            change(&mut r);
            let e = BackupRecord::read(&serde_json::to_string(&r).unwrap()).unwrap_err();
            assert!(e.contains(said), "{e} (wanted {said})");
        }
        assert!(BackupRecord::read("{")
            .unwrap_err()
            .contains("cannot be read"));
    }

    #[test]
    fn a_backup_directory_is_placed_by_its_last_two_components() {
        assert_eq!(
            place_in_target("/srv/b/virtdeck-backups/web-01234567/1796-a1/").as_deref(),
            Some("web-01234567/1796-a1")
        );
        assert_eq!(place_in_target("/x/../.."), None);
        assert_eq!(place_in_target("one"), None);
    }

    #[test]
    fn a_definition_like_virtdecks_own_is_taken() {
        assert_eq!(check_foreign_definition(OURS), Ok(()));
    }

    #[test]
    fn a_definition_reaching_into_the_host_is_refused_with_the_reason() {
        let cases = [
            ("<devices>", "<devices><hostdev mode='subsystem' type='pci'/>", "host device"),
            ("<devices>", "<devices><filesystem type='mount'><source dir='/'/></filesystem>", "host directory"),
            ("<devices>", "<devices><interface type='ethernet'><script path='/tmp/x'/></interface>", "NIC of type"),
            ("<devices>", "<devices><serial type='file'><source path='/etc/cron.d/x'/></serial>", "serial of type"),
            ("<devices>", "<devices><channel type='unix'><source mode='bind' path='/etc/x.sock'/></channel>", "socket at /etc/x.sock"),
            ("/var/log/libvirt/qemu/web-serial.log", "/root/.ssh/authorized_keys", "logs to /root"),
            ("/usr/bin/qemu-system-x86_64", "/tmp/evil", "runs /tmp/evil"),
            ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/tmp/fw.fd", "firmware from /tmp"),
            ("/dev/urandom", "/dev/sda", "randomness from /dev/sda"),
            ("type='emulator'", "type='passthrough'", "host's TPM"),
            ("<domain type='qemu'>", "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:commandline><qemu:arg value='-x'/></qemu:commandline>", "QEMU arguments"),
            ("<devices>", "<devices><disk type='block' device='disk'><source dev='/dev/sda'/><target dev='vdz'/></disk>", "not a file"),
            ("<devices>", "<devices><disk type='block' device='lun'/>", "lun disk"),
            ("</os>", "<kernel>/mnt/share/vmlinuz</kernel></os>", "boots the kernel /mnt/share"),
            ("</os>", "<kernel>/var/lib/libvirt/boot/k</kernel><initrd>/etc/shadow</initrd></os>", "boots the initrd /etc/shadow"),
            ("<devices>", "<seclabel type='none'/><devices>", "confinement"),
        ];
        for (from, to, said) in cases {
            assert!(OURS.contains(from), "{from}");
            let xml = OURS.replacen(from, to, 1);
            let e = check_foreign_definition(&xml).unwrap_err();
            assert!(e.contains(said), "{e} (wanted {said})");
        }
        assert!(check_foreign_definition("<!DOCTYPE x><domain/>").is_err());
        let escaped = OURS.replacen(
            "/usr/bin/qemu-system-x86_64",
            "/usr/bin/qemu-system-x86_64&#47;..&#47;..&#47;..&#47;tmp/evil",
            1,
        );
        assert!(check_foreign_definition(&escaped)
            .unwrap_err()
            .contains("escapes"));
        assert!(check_foreign_definition("<network/>")
            .unwrap_err()
            .contains("not a <domain>"));
    }

    #[test]
    fn a_data_disk_the_backup_has_no_file_for_is_named() {
        let def = super::super::xml::parse_domain(OURS).unwrap();
        assert!(disks_without_files(&def, &record()).is_empty());
        let mut r = record();
        r.files[0].disk = "vdb".into();
        r.files[0].file = "vdb.qcow2".into();
        assert_eq!(disks_without_files(&def, &r), vec!["vda".to_string()]);
    }
}
