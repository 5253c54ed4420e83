//! Volumes virtdeck made for a VM (`vm_volumes`), and which volumes other parts of the
//! store name (cloud-init seeds, volumes still being made), for the rules about which
//! volumes a VM may take and which a delete removes.

use super::{Store, StoreResult};
use rusqlite::{params, OptionalExtension};
use std::collections::HashSet;

/// A volume virtdeck made: for which VM (none once that VM was deleted and the volume
/// kept), in which format, and the backing file it named (a linked clone's overlay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeVolume {
    pub path: String,
    pub vm: Option<String>,
    pub format: String,
    pub backing: Option<String>,
}

fn made_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MadeVolume> {
    Ok(MadeVolume {
        path: r.get(0)?,
        vm: r.get(1)?,
        format: r.get(2)?,
        backing: r.get(3)?,
    })
}

impl Store {
    /// Records that virtdeck made the volume at `path` for `vm`; a volume made again at
    /// the same path replaces the older record.
    pub fn record_vm_volume(
        &self,
        vm: &str,
        path: &str,
        format: &str,
        backing: Option<&str>,
    ) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO vm_volumes (path, vm, format, backing) VALUES (?1, ?2, ?3, ?4)",
                params![path, vm, format, backing],
            )
            .map(|_| ())
        })
    }

    /// The volumes virtdeck made for `vm`.
    pub fn vm_volumes(&self, vm: &str) -> StoreResult<Vec<MadeVolume>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT path, vm, format, backing FROM vm_volumes WHERE vm = ?1 ORDER BY path",
            )?;
            let rows = st.query_map([vm], made_row)?;
            rows.collect()
        })
    }

    /// What virtdeck recorded about the volume at `path`, if it made it.
    pub fn made_volume(&self, path: &str) -> StoreResult<Option<MadeVolume>> {
        self.with(|c| {
            c.query_row(
                "SELECT path, vm, format, backing FROM vm_volumes WHERE path = ?1",
                [path],
                made_row,
            )
            .optional()
        })
    }

    /// The volume at `path` is gone.
    pub fn forget_made_volume(&self, path: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute("DELETE FROM vm_volumes WHERE path = ?1", [path])
                .map(|_| ())
        })
    }

    /// Every record of `vm`'s volumes is dropped (a rolled-back create deleted them).
    pub fn forget_vm_volumes(&self, vm: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute("DELETE FROM vm_volumes WHERE vm = ?1", [vm])
                .map(|_| ())
        })
    }

    /// `vm` is gone but its volumes were kept: they stay recorded (their format is
    /// known) with no VM, so a later VM of the same name does not own them.
    pub fn release_vm_volumes(&self, vm: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute("UPDATE vm_volumes SET vm = NULL WHERE vm = ?1", [vm])
                .map(|_| ())
        })
    }

    /// Paths of every VM's cloud-init seed volume.
    pub fn seed_paths(&self) -> StoreResult<HashSet<String>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT seed_path FROM vm_cloud_init")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Volumes an unfinished create, clone or job is making right now: not for a VM to take.
    pub fn volumes_being_made(&self) -> StoreResult<HashSet<String>> {
        self.with(|c| {
            let mut out = HashSet::new();
            let mut st = c.prepare("SELECT path FROM vm_made WHERE kind = 'volume'")?;
            for p in st.query_map([], |r| r.get::<_, String>(0))? {
                out.insert(p?);
            }
            let mut st = c.prepare(
                "SELECT volume_path FROM jobs
                 WHERE state = 'running' AND volume_made = 1 AND volume_path IS NOT NULL",
            )?;
            for p in st.query_map([], |r| r.get::<_, String>(0))? {
                out.insert(p?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_volumes_are_owned_until_their_vm_goes() {
        let s = Store::open_in_memory().unwrap();
        s.record_vm_volume("a", "/p/a.qcow2", "qcow2", None)
            .unwrap();
        s.record_vm_volume("a", "/p/a-seed.iso", "raw", None)
            .unwrap();
        s.record_vm_volume("b", "/p/b.qcow2", "qcow2", Some("/p/t.qcow2"))
            .unwrap();
        assert_eq!(s.vm_volumes("a").unwrap().len(), 2);
        s.forget_made_volume("/p/a-seed.iso").unwrap();
        s.release_vm_volumes("a").unwrap();
        assert!(s.vm_volumes("a").unwrap().is_empty());
        let kept = s.made_volume("/p/a.qcow2").unwrap().unwrap();
        assert_eq!((kept.vm, kept.format.as_str()), (None, "qcow2"));
        assert_eq!(
            s.made_volume("/p/b.qcow2")
                .unwrap()
                .unwrap()
                .backing
                .as_deref(),
            Some("/p/t.qcow2")
        );
        s.forget_vm_volumes("b").unwrap();
        assert_eq!(s.made_volume("/p/b.qcow2").unwrap(), None);
        assert!(s.seed_paths().unwrap().is_empty());
        assert!(s.volumes_being_made().unwrap().is_empty());
    }
}
