//! The files of backups on a backup target (a directory pool): their directory, their
//! checksums, chaining an incremental file to the one before it, and reading a chain
//! into a new disk volume (qemu-img).

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum BackupFileError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("qemu-img {what} failed: {stderr}")]
    QemuImg { what: &'static str, stderr: String },
    /// Stopped on request before its end (its output is partial).
    #[error("it was stopped before its end")]
    Stopped,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupFileError {
    let what = what.into();
    move |source| BackupFileError::Io { what, source }
}

/// Makes a backup's directory (and its parents).
pub fn make_dir(dir: &str) -> Result<(), BackupFileError> {
    std::fs::create_dir_all(dir).map_err(io(format!("cannot make {dir}")))
}

/// Removes a backup's directory and its files, and its VM's directory when that is left
/// empty; a directory that is not there is fine.
pub fn remove_dir(dir: &str) -> Result<(), BackupFileError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(format!("cannot remove {dir}"))(e));
        }
        _ => {}
    }
    // Only an empty directory goes (remove_dir refuses others).
    if let Some(vm_dir) = Path::new(dir).parent() {
        let _ = std::fs::remove_dir(vm_dir);
    }
    Ok(())
}

/// The file's size and SHA-256 (hex), read in 1 MiB pieces.
/// A file's size in bytes.
pub fn size(path: &str) -> Result<u64, BackupFileError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(io(format!("cannot read {path}")))
}

pub fn sha256(path: &str) -> Result<(u64, String), BackupFileError> {
    let mut f = std::fs::File::open(path).map_err(io(format!("cannot read {path}")))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io(format!("cannot read {path}")))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hash.update(&buf[..n]);
    }
    Ok((total, hex::encode(hash.finalize())))
}

fn qemu_img(what: &'static str, args: &[&str]) -> Result<(), BackupFileError> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(io("cannot run qemu-img (qemu-utils)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BackupFileError::QemuImg {
            what,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Makes the incremental backup file `file` read its unchanged blocks from `parent` (the
/// backup before it), without touching data: libvirt leaves the live disk as its backing.
pub fn chain_to(file: &str, parent: &str) -> Result<(), BackupFileError> {
    qemu_img(
        "rebase",
        &[
            "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", parent, file,
        ],
    )
}

/// Writes the disk as `top` (the newest file of a chain) has it into the existing volume
/// file `into`, in `format`, telling `progress` how far it got (0 to 1) as qemu-img
/// reports it; stopped part-way when `stop` says so.
pub fn read_chain_into(
    top: &str,
    into: &str,
    format: &str,
    progress: &dyn Fn(f64),
    stop: &dyn Fn() -> bool,
) -> Result<(), BackupFileError> {
    if !Path::new(top).is_file() {
        return Err(io(format!("backup file {top}"))(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        )));
    }
    convert(
        &[
            "convert", "-p", "-n", "-f", "qcow2", "-O", format, top, into,
        ],
        progress,
        stop,
    )
}

/// Runs `qemu-img convert -p …` (`args`), telling `progress` how far it got (0 to 1) and
/// killing it when `stop` says so (asked at each progress line qemu-img prints).
fn convert(
    args: &[&str],
    progress: &dyn Fn(f64),
    stop: &dyn Fn() -> bool,
) -> Result<(), BackupFileError> {
    use std::process::Stdio;
    let mut child = Command::new("qemu-img")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("cannot run qemu-img (qemu-utils)"))?;
    // Its error output is read on the side, so neither pipe can fill and stall it.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = e.read_to_string(&mut text);
            text
        })
    });
    let mut stopped = false;
    if let Some(mut out) = child.stdout.take() {
        let mut buf = [0u8; 256];
        let mut line = String::new();
        'reading: while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            for c in String::from_utf8_lossy(&buf[..n]).chars() {
                if c == '\r' || c == '\n' {
                    if let Some(p) = progress_of(&line) {
                        progress(p);
                    }
                    line.clear();
                    if stop() {
                        stopped = true;
                        let _ = child.kill();
                        break 'reading;
                    }
                } else {
                    line.push(c);
                }
            }
        }
    }
    let status = child.wait().map_err(io("qemu-img convert"))?;
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if stopped {
        Err(BackupFileError::Stopped)
    } else if status.success() {
        progress(1.0);
        Ok(())
    } else {
        Err(BackupFileError::QemuImg {
            what: "convert",
            stderr: stderr.trim().to_string(),
        })
    }
}

/// qemu-img's `-p` line `    (42.17/100%)` as 0.4217.
fn progress_of(line: &str) -> Option<f64> {
    let inner = line.trim().strip_prefix('(')?.strip_suffix("/100%)")?;
    inner
        .parse::<f64>()
        .ok()
        .map(|p| (p / 100.0).clamp(0.0, 1.0))
}

/// Makes `file` hold what it reads through its backing chain, then read its unchanged
/// blocks from `new_backing` (none: it stands alone, a full backup). qemu-img copies the
/// blocks that differ.
pub fn merge_into(file: &str, new_backing: Option<&str>) -> Result<(), BackupFileError> {
    match new_backing {
        Some(b) => qemu_img(
            "rebase",
            &["rebase", "-f", "qcow2", "-F", "qcow2", "-b", b, file],
        ),
        None => qemu_img("rebase", &["rebase", "-f", "qcow2", "-b", "", file]),
    }
}

/// Copies a disk (of `format`) of a VM that is off into a new qcow2 file `into`, telling
/// `progress` how far it got (0 to 1); stopped part-way when `stop` says so.
pub fn copy_disk(
    source: &str,
    format: &str,
    into: &str,
    progress: &dyn Fn(f64),
    stop: &dyn Fn() -> bool,
) -> Result<(), BackupFileError> {
    if !matches!(format, "raw" | "qcow2") {
        return Err(BackupFileError::QemuImg {
            what: "convert",
            stderr: format!("{source} is {format}; only raw and qcow2 disks are copied"),
        });
    }
    convert(
        &["convert", "-p", "-f", format, "-O", "qcow2", source, into],
        progress,
        stop,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn qemu_img_progress_lines_are_read() {
        assert_eq!(super::progress_of("    (42.50/100%)"), Some(0.425));
        assert_eq!(super::progress_of("(100.00/100%)"), Some(1.0));
        assert_eq!(super::progress_of("(0.00/100%)"), Some(0.0));
        assert_eq!(super::progress_of("qemu-img: error"), None);
        assert_eq!(super::progress_of(""), None);
    }
}

/// Writes `name` in backup directory `dir` whole or not at all (a temporary file, synced
/// to the disk if `sync`, then renamed over the old one).
fn write_whole(dir: &str, name: &str, text: &str, sync: bool) -> Result<(), BackupFileError> {
    use std::io::Write;
    let path = Path::new(dir).join(name);
    let tmp = Path::new(dir).join(format!(".{name}.tmp"));
    let what = || format!("cannot write {}", path.display());
    let mut f = std::fs::File::create(&tmp).map_err(io(what()))?;
    f.write_all(text.as_bytes()).map_err(io(what()))?;
    if sync {
        f.sync_all().map_err(io(what()))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(what()))
}

/// Writes a backup's record and its VM's definition beside its disk files; synced to the
/// disk if `sync` (a record lost to a power cut before that reads back as unreadable, and
/// the backup is then not taken from the target).
pub fn write_beside(
    dir: &str,
    record_json: &str,
    definition: &str,
    sync: bool,
) -> Result<(), BackupFileError> {
    use crate::domain::backup_record::{DEFINITION_FILE, RECORD_FILE};
    write_whole(dir, DEFINITION_FILE, definition, sync)?;
    write_whole(dir, RECORD_FILE, record_json, sync)
}

/// Reads file `name` of backup directory `dir`: a regular file (not a link) of at most
/// [`MAX_BESIDE_BYTES`](crate::domain::backup_record::MAX_BESIDE_BYTES).
pub fn read_beside(dir: &str, name: &str) -> Result<String, String> {
    let path = Path::new(dir).join(name);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{name}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{name} is not a plain file"));
    }
    if meta.len() > crate::domain::backup_record::MAX_BESIDE_BYTES {
        return Err(format!("{name} is too large ({} bytes)", meta.len()));
    }
    std::fs::read_to_string(&path).map_err(|e| format!("{name}: {e}"))
}

/// The backup directories under a target's `virtdeck-backups` that hold a record
/// (`<vm>-<uuid>/<stamp>`; links are not followed), oldest name first.
pub fn dirs_with_records(target_path: &str) -> Vec<String> {
    use crate::domain::backup_record::RECORD_FILE;
    let root = Path::new(target_path).join("virtdeck-backups");
    let dirs_in = |p: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out: Vec<String> = dirs_in(&root)
        .iter()
        .flat_map(|vm_dir| dirs_in(vm_dir))
        .filter(|d| {
            std::fs::symlink_metadata(d.join(RECORD_FILE)).is_ok_and(|m| m.file_type().is_file())
        })
        .map(|d| d.display().to_string())
        .collect();
    out.sort();
    out
}

/// Whether backup file `path` is a plain file (not a link).
pub fn is_plain_file(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// What `qemu-img info` says of a backup file, read without opening what it builds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub virtual_size: u64,
    /// The file it builds on, as written in its header.
    pub backing: Option<String>,
    /// It keeps its data in another file.
    pub data_file: bool,
}

/// Reads a backup file's header as qcow2 (anything else is an error).
pub fn image_facts(path: &str) -> Result<ImageFacts, BackupFileError> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-U", "-f", "qcow2", path])
        .output()
        .map_err(io("cannot run qemu-img (qemu-utils)"))?;
    if !out.status.success() {
        return Err(BackupFileError::QemuImg {
            what: "info",
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| BackupFileError::QemuImg {
            what: "info",
            stderr: format!("unreadable answer: {e}"),
        })?;
    Ok(ImageFacts {
        virtual_size: v["virtual-size"].as_u64().unwrap_or(0),
        backing: v["backing-filename"].as_str().map(str::to_string),
        data_file: v["format-specific"]["data"]["data-file"].is_string(),
    })
}
