//! Backups of a running VM through libvirt's backup API: what a backup copies, whether
//! it can be incremental on the last one (and why not), the backup and checkpoint XML, and
//! the chain a restore reads. Plain values; no I/O.

use super::create_plan::{field, FieldError};
use super::xml::ParsedDomain;
use quick_xml::Writer;

/// A backup of the VM done before, as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousBackup {
    pub id: i64,
    pub checkpoint: String,
    pub pool: String,
    /// (disk, capacity in bytes) it copied.
    pub disks: Vec<(String, u64)>,
}

/// The backup target as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pool: String,
    pub active: bool,
    /// The pool's directory.
    pub path: Option<String>,
    pub available_bytes: u64,
    /// The size of the file system it is on.
    pub capacity_bytes: u64,
}

/// The share of a backup target's file system a backup never takes (at most
/// [`TARGET_KEEP_FREE_MAX_BYTES`]): the target may be on the host's own file system,
/// which must not fill up under libvirt and virtdeck.
pub const TARGET_KEEP_FREE_PERCENT: u64 = 5;
pub const TARGET_KEEP_FREE_MAX_BYTES: u64 = 2 << 30;

/// What a backup is checked against.
pub struct BackupInput<'a> {
    pub vm: &'a str,
    pub uuid: &'a str,
    pub running: bool,
    pub def: &'a ParsedDomain,
    /// Each disk's (target, capacity, allocation) now.
    pub sizes: &'a [(String, u64, u64)],
    pub target: &'a Target,
    /// The VM's last succeeded backup, if any.
    pub previous: Option<&'a PreviousBackup>,
    /// The VM's checkpoints libvirt has now.
    pub checkpoints: &'a [String],
    /// Unique per backup: names its checkpoint and directory.
    pub stamp: &'a str,
}

/// A backup that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPlan {
    pub kind: &'static str,
    pub parent: Option<i64>,
    pub why_full: String,
    pub checkpoint: String,
    pub dir: String,
    /// (disk, file, capacity).
    pub files: Vec<(String, String, u64)>,
    pub backup_xml: String,
    pub checkpoint_xml: String,
    /// The VM is off: its disks are copied whole, without libvirt's backup API.
    pub offline: bool,
}

/// Checks a backup and decides full or incremental.
pub fn plan_backup(input: &BackupInput<'_>) -> Result<BackupPlan, Vec<FieldError>> {
    let vm = input.vm;
    // A VM that is off is copied whole, disk by disk (libvirt's backup API needs a
    // running VM); it is consistent, since nothing writes to its disks.
    let offline = !input.running;
    let t = input.target;
    let Some(base) = t.path.as_deref().filter(|_| t.active) else {
        return Err(vec![field(
            "pool",
            format!(
                "Backup target {} is stopped or has no directory; start it on the Storage page.",
                t.pool
            ),
        )]);
    };
    let disks: Vec<_> = input
        .def
        .disks
        .iter()
        .filter(|d| d.device == "disk")
        .collect();
    if disks.is_empty() {
        return Err(vec![field("vm", format!("{vm} has no disk to back up."))]);
    }
    if let Some(d) = disks.iter().find(|d| d.source.is_none()) {
        return Err(vec![field(
            "vm",
            format!("Disk {} of {vm} has no volume behind it.", d.target),
        )]);
    }
    if let Some(d) = disks
        .iter()
        .find(|d| !offline && d.format.as_deref() != Some("qcow2"))
    {
        return Err(vec![field(
            "vm",
            format!(
                "Disk {} of {vm} is {}, not qcow2: libvirt's incremental backups need qcow2 disks \
                 (their change bitmaps).",
                d.target,
                d.format.as_deref().unwrap_or("of an unknown format")
            ),
        )]);
    }
    let size = |target: &str| {
        input
            .sizes
            .iter()
            .find(|(t, _, _)| t == target)
            .map(|(_, c, a)| (*c, *a))
            .unwrap_or((0, 0))
    };
    let needed: u64 = disks
        .iter()
        .map(|d| size(&d.target).1.max(size(&d.target).0 / 16))
        .sum();
    let keep_free = (t.capacity_bytes.saturating_mul(TARGET_KEEP_FREE_PERCENT) / 100)
        .min(TARGET_KEEP_FREE_MAX_BYTES);
    if t.available_bytes < needed.saturating_add(keep_free) {
        return Err(vec![field(
            "pool",
            format!(
                "Backup target {} has {} MiB free; a full copy of {vm}'s disks may need {} MiB, \
                 and {} MiB of it stay free for the host. Delete old backups or choose \
                 another target.",
                t.pool,
                t.available_bytes >> 20,
                needed >> 20,
                keep_free >> 20
            ),
        )]);
    }
    // Incremental when the last backup went to this target, its checkpoint is still
    // there, and every disk is the one it copied, at the same size.
    let why_full = match input.previous {
        _ if offline => "the VM is shut off: its disks are copied whole".to_string(),
        None => "the first backup of this VM".to_string(),
        Some(p) if p.pool != t.pool => format!("the last backup went to {}", p.pool),
        Some(p) if !input.checkpoints.contains(&p.checkpoint) => format!(
            "checkpoint {} of the last backup is gone (a reverted snapshot or a restart of an interrupted backup)",
            p.checkpoint
        ),
        Some(p) => {
            let now: Vec<(String, u64)> = disks
                .iter()
                .map(|d| (d.target.clone(), size(&d.target).0))
                .collect();
            match now.iter().find(|d| !p.disks.contains(d)) {
                Some((disk, _)) if p.disks.iter().any(|(t, _)| t == disk) => {
                    format!("disk {disk} changed size since the last backup")
                }
                Some((disk, _)) => format!("disk {disk} is new since the last backup"),
                None => String::new(),
            }
        }
    };
    let incremental = why_full.is_empty();
    let checkpoint = if offline {
        String::new()
    } else {
        format!("virtdeck-{}", input.stamp)
    };
    let short_uuid: String = input.uuid.chars().take(8).collect();
    let dir = format!(
        "{}/virtdeck-backups/{vm}-{short_uuid}/{}",
        base.trim_end_matches('/'),
        input.stamp
    );
    let files: Vec<(String, String, u64)> = disks
        .iter()
        .map(|d| {
            (
                d.target.clone(),
                format!("{dir}/{}.qcow2", d.target),
                size(&d.target).0,
            )
        })
        .collect();
    let previous_checkpoint = input
        .previous
        .filter(|_| incremental)
        .map(|p| p.checkpoint.as_str());
    Ok(BackupPlan {
        kind: if incremental { "incremental" } else { "full" },
        parent: input.previous.filter(|_| incremental).map(|p| p.id),
        backup_xml: if offline {
            String::new()
        } else {
            backup_xml(&files, previous_checkpoint)
        },
        checkpoint_xml: if offline {
            String::new()
        } else {
            checkpoint_xml(&checkpoint, &files)
        },
        offline,
        checkpoint,
        dir,
        files,
        why_full,
    })
}

fn write(f: impl FnOnce(&mut Writer<Vec<u8>>) -> std::io::Result<()>) -> String {
    let mut w = Writer::new(Vec::new());
    let _ = f(&mut w);
    String::from_utf8(w.into_inner()).unwrap_or_default()
}

/// `<domainbackup mode='push'>`: each disk into its qcow2 file; changes since
/// `incremental` only, when given.
pub fn backup_xml(files: &[(String, String, u64)], incremental: Option<&str>) -> String {
    write(|w| {
        w.create_element("domainbackup")
            .with_attribute(("mode", "push"))
            .write_inner_content(|w| {
                if let Some(cp) = incremental {
                    w.create_element("incremental")
                        .write_text_content(quick_xml::events::BytesText::new(cp))?;
                }
                w.create_element("disks").write_inner_content(|w| {
                    for (disk, path, _) in files {
                        w.create_element("disk")
                            .with_attribute(("name", disk.as_str()))
                            .with_attribute(("type", "file"))
                            .write_inner_content(|w| {
                                w.create_element("target")
                                    .with_attribute(("file", path.as_str()))
                                    .write_empty()?;
                                w.create_element("driver")
                                    .with_attribute(("type", "qcow2"))
                                    .write_empty()?;
                                Ok(())
                            })?;
                    }
                    Ok(())
                })?;
                Ok(())
            })?;
        Ok(())
    })
}

/// `<domaincheckpoint>` named `name` with a change bitmap on each disk.
pub fn checkpoint_xml(name: &str, files: &[(String, String, u64)]) -> String {
    write(|w| {
        w.create_element("domaincheckpoint")
            .write_inner_content(|w| {
                w.create_element("name")
                    .write_text_content(quick_xml::events::BytesText::new(name))?;
                w.create_element("disks").write_inner_content(|w| {
                    for (disk, _, _) in files {
                        w.create_element("disk")
                            .with_attribute(("name", disk.as_str()))
                            .with_attribute(("checkpoint", "bitmap"))
                            .write_empty()?;
                    }
                    Ok(())
                })?;
                Ok(())
            })?;
        Ok(())
    })
}

/// A backup in a chain: its id and parent.
pub trait Link {
    fn id(&self) -> i64;
    fn parent(&self) -> Option<i64>;
}

/// The chain a restore of `id` reads, full backup first; `None` when a link is missing.
pub fn chain<T: Link + Clone>(backups: &[T], id: i64) -> Option<Vec<T>> {
    let mut out = Vec::new();
    let mut next = Some(id);
    while let Some(i) = next {
        let b = backups.iter().find(|b| b.id() == i)?;
        if out.len() > backups.len() {
            return None;
        }
        out.push(b.clone());
        next = b.parent();
    }
    out.reverse();
    Some(out)
}

/// Backups that need `id` (incrementals built on it, directly or not).
pub fn dependents<T: Link>(backups: &[T], id: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut frontier = vec![id];
    while let Some(p) = frontier.pop() {
        for b in backups.iter().filter(|b| b.parent() == Some(p)) {
            if !out.contains(&b.id()) {
                out.push(b.id());
                frontier.push(b.id());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::xml::ParsedDisk;

    fn def(disks: &[(&str, &str)]) -> ParsedDomain {
        ParsedDomain {
            name: "web".into(),
            disks: disks
                .iter()
                .map(|(t, f)| ParsedDisk {
                    device: "disk".into(),
                    source: Some(format!("/pool/web-{t}.qcow2")),
                    target: (*t).into(),
                    bus: "virtio".into(),
                    format: Some((*f).into()),
                    ..ParsedDisk::default()
                })
                .collect(),
            ..ParsedDomain::default()
        }
    }

    const GIB: u64 = 1 << 30;

    fn target() -> Target {
        Target {
            pool: "backup".into(),
            active: true,
            path: Some("/srv/backup".into()),
            available_bytes: 100 * GIB,
            capacity_bytes: 200 * GIB,
        }
    }

    fn plan(
        previous: Option<&PreviousBackup>,
        checkpoints: &[String],
        sizes: &[(String, u64, u64)],
        running: bool,
    ) -> Result<BackupPlan, Vec<FieldError>> {
        let d = def(&[("vda", "qcow2"), ("vdb", "qcow2")]);
        let t = target();
        plan_backup(&BackupInput {
            vm: "web",
            uuid: "0123456789abcdef",
            running,
            def: &d,
            sizes,
            target: &t,
            previous,
            checkpoints,
            stamp: "20261202-1",
        })
    }

    fn sizes() -> Vec<(String, u64, u64)> {
        vec![
            ("vda".into(), 10 * GIB, GIB),
            ("vdb".into(), 2 * GIB, GIB / 4),
        ]
    }

    #[test]
    fn the_first_backup_is_full_and_the_next_incremental_on_its_checkpoint() {
        let full = plan(None, &[], &sizes(), true).expect("plan");
        assert_eq!((full.kind, full.parent), ("full", None));
        assert_eq!(full.why_full, "the first backup of this VM");
        assert_eq!(
            full.dir,
            "/srv/backup/virtdeck-backups/web-01234567/20261202-1"
        );
        assert_eq!(
            full.files[1],
            ("vdb".into(), format!("{}/vdb.qcow2", full.dir), 2 * GIB)
        );
        assert_eq!(
            full.backup_xml,
            format!(
                "<domainbackup mode=\"push\"><disks><disk name=\"vda\" type=\"file\"><target file=\"{0}/vda.qcow2\"/>\
                 <driver type=\"qcow2\"/></disk><disk name=\"vdb\" type=\"file\"><target file=\"{0}/vdb.qcow2\"/>\
                 <driver type=\"qcow2\"/></disk></disks></domainbackup>",
                full.dir
            )
        );
        assert_eq!(
            full.checkpoint_xml,
            "<domaincheckpoint><name>virtdeck-20261202-1</name><disks><disk name=\"vda\" checkpoint=\"bitmap\"/>\
             <disk name=\"vdb\" checkpoint=\"bitmap\"/></disks></domaincheckpoint>"
        );
        let prev = PreviousBackup {
            id: 7,
            checkpoint: "virtdeck-a".into(),
            pool: "backup".into(),
            disks: vec![("vda".into(), 10 * GIB), ("vdb".into(), 2 * GIB)],
        };
        let inc = plan(Some(&prev), &["virtdeck-a".into()], &sizes(), true).expect("plan");
        assert_eq!(
            (inc.kind, inc.parent, inc.why_full.as_str()),
            ("incremental", Some(7), "")
        );
        assert!(
            inc.backup_xml
                .contains("<incremental>virtdeck-a</incremental>"),
            "{}",
            inc.backup_xml
        );
    }

    #[test]
    fn a_broken_chain_makes_a_full_backup_and_says_why() {
        let prev = PreviousBackup {
            id: 7,
            checkpoint: "virtdeck-a".into(),
            pool: "backup".into(),
            disks: vec![("vda".into(), 10 * GIB), ("vdb".into(), 2 * GIB)],
        };
        let gone = plan(Some(&prev), &[], &sizes(), true).expect("plan");
        assert_eq!(gone.kind, "full");
        assert!(
            gone.why_full
                .contains("virtdeck-a of the last backup is gone"),
            "{}",
            gone.why_full
        );
        let mut grown = sizes();
        grown[1].1 = 3 * GIB;
        let resized = plan(Some(&prev), &["virtdeck-a".into()], &grown, true).expect("plan");
        assert_eq!(
            resized.why_full,
            "disk vdb changed size since the last backup"
        );
        let mut elsewhere = prev.clone();
        elsewhere.pool = "nas".into();
        assert!(
            plan(Some(&elsewhere), &["virtdeck-a".into()], &sizes(), true)
                .expect("plan")
                .why_full
                .contains("went to nas")
        );
    }

    #[test]
    fn refusals_say_what_to_do() {
        let off = plan(None, &[], &sizes(), false).expect("a VM that is off is copied");
        assert!(off.offline && off.checkpoint.is_empty() && off.backup_xml.is_empty());
        assert!(off.why_full.contains("shut off"), "{}", off.why_full);
        let d = def(&[("vda", "raw")]);
        let t = target();
        let raw = plan_backup(&BackupInput {
            vm: "web",
            uuid: "u",
            running: true,
            def: &d,
            sizes: &sizes(),
            target: &t,
            previous: None,
            checkpoints: &[],
            stamp: "s",
        })
        .unwrap_err();
        assert!(raw[0].message.contains("not qcow2"), "{raw:?}");
        let mut small = target();
        small.available_bytes = GIB;
        let d = def(&[("vda", "qcow2"), ("vdb", "qcow2")]);
        let full = plan_backup(&BackupInput {
            vm: "web",
            uuid: "u",
            running: true,
            def: &d,
            sizes: &sizes(),
            target: &small,
            previous: None,
            checkpoints: &[],
            stamp: "s",
        })
        .unwrap_err();
        assert_eq!(full[0].field, "pool");
        // Room for the copy, but not for the copy and the 5% of the target kept free.
        let d = def(&[("vda", "qcow2"), ("vdb", "qcow2")]);
        let check = |available_bytes: u64, capacity_bytes: u64| {
            let t = Target {
                available_bytes,
                capacity_bytes,
                ..target()
            };
            plan_backup(&BackupInput {
                vm: "web",
                uuid: "u",
                running: true,
                def: &d,
                sizes: &sizes(),
                target: &t,
                previous: None,
                checkpoints: &[],
                stamp: "s",
            })
            .map(|p| p.kind)
        };
        let tight = check(2 * GIB, 20 * GIB).unwrap_err();
        assert!(
            tight[0].message.contains("and 1024 MiB of it stay free"),
            "{tight:?}"
        );
        assert_eq!(check(5 * GIB / 2, 20 * GIB), Ok("full"));
        // 5%, but never more than 2 GiB.
        let big = check(3 * GIB, 1024 * GIB).unwrap_err();
        assert!(
            big[0].message.contains("and 2048 MiB of it stay free"),
            "{big:?}"
        );
        assert_eq!(check(13 * GIB / 4, 1024 * GIB), Ok("full"));
    }

    #[derive(Clone, Debug, PartialEq)]
    struct B(i64, Option<i64>);
    impl Link for B {
        fn id(&self) -> i64 {
            self.0
        }
        fn parent(&self) -> Option<i64> {
            self.1
        }
    }

    #[test]
    fn a_chain_goes_back_to_its_full_backup() {
        let all = vec![
            B(1, None),
            B(2, Some(1)),
            B(3, Some(2)),
            B(4, None),
            B(5, Some(9)),
        ];
        assert_eq!(
            chain(&all, 3),
            Some(vec![B(1, None), B(2, Some(1)), B(3, Some(2))])
        );
        assert_eq!(chain(&all, 4), Some(vec![B(4, None)]));
        assert_eq!(chain(&all, 5), None, "a missing link");
        assert_eq!(dependents(&all, 1), vec![2, 3]);
        assert!(dependents(&all, 3).is_empty());
    }
}
