//! Files under the host root: read, written atomically (temp file, fsync, rename, fsync
//! of the directory), removed.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// `root/rel`, refusing anything that could leave the root.
pub fn under(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.is_absolute()
        || p.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(format!("{rel:?} is not a path below the host root"));
    }
    Ok(root.join(p))
}

/// The file's text, or `None` when it does not exist.
pub fn read_opt(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Replaces `path` with `content` so that a reader sees the old or the new file, never
/// a part of one.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .ok_or_else(|| format!("{} has no directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.virtdeck-new"));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    sync_dir(dir);
    Ok(())
}

/// Removes `path`; a file that is already gone is fine.
pub fn remove(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                sync_dir(dir);
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

/// The permission bits of an existing file.
pub fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/tmp/root");
        assert_eq!(
            under(root, "etc/x").unwrap(),
            PathBuf::from("/tmp/root/etc/x")
        );
        assert!(under(root, "../etc/x").is_err());
        assert!(under(root, "/etc/x").is_err());
        assert!(under(root, "etc/../../x").is_err());
        assert!(under(root, "").is_err());
    }

    #[test]
    fn atomic_write_replace_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/file");
        assert_eq!(read_opt(&p).unwrap(), None);
        write_atomic(&p, b"one\n", 0o600).unwrap();
        assert_eq!(read_opt(&p).unwrap().as_deref(), Some("one\n"));
        assert_eq!(mode_of(&p), Some(0o600));
        write_atomic(&p, b"two\n", 0o644).unwrap();
        assert_eq!(read_opt(&p).unwrap().as_deref(), Some("two\n"));
        assert_eq!(mode_of(&p), Some(0o644));
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert_eq!(read_opt(&p).unwrap(), None);
    }
}
