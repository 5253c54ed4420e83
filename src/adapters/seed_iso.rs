//! The genisoimage adapter: builds a cloud-init NoCloud seed ISO (volume label
//! `cidata`, files `user-data` and `meta-data`, Rock Ridge and Joliet names) from the
//! rendered files. Blocking: call it off the async runtime.

use std::process::{Command, Stdio};

/// The program that writes the ISO (Debian package `genisoimage`).
pub const GENISOIMAGE: &str = "genisoimage";
/// The volume label cloud-init's NoCloud data source looks for.
pub const VOLUME_LABEL: &str = "cidata";
/// A seed ISO never gets near this; a bigger output means something went wrong.
const MAX_ISO_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SeedIsoError {
    /// genisoimage is not installed.
    #[error("genisoimage is not installed on this host (Debian package genisoimage); it builds the cloud-init seed")]
    Missing,
    #[error("the cloud-init seed could not be built: {0}")]
    Failed(String),
}

/// The ISO image holding `user-data` and `meta-data`.
pub fn build(user_data: &str, meta_data: &str) -> Result<Vec<u8>, SeedIsoError> {
    let dir = tempfile_dir()?;
    let result = (|| {
        for (name, text) in [("user-data", user_data), ("meta-data", meta_data)] {
            std::fs::write(dir.join(name), text)
                .map_err(|e| SeedIsoError::Failed(format!("writing {name}: {e}")))?;
        }
        let out = Command::new(GENISOIMAGE)
            .args(["-quiet", "-output", "-", "-volid", VOLUME_LABEL])
            .args(["-joliet", "-rock", "-input-charset", "utf-8"])
            .args(["user-data", "meta-data"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => SeedIsoError::Missing,
                _ => SeedIsoError::Failed(e.to_string()),
            })?;
        if !out.status.success() {
            return Err(SeedIsoError::Failed(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        if out.stdout.is_empty() || out.stdout.len() > MAX_ISO_BYTES {
            return Err(SeedIsoError::Failed(format!(
                "genisoimage wrote {} bytes",
                out.stdout.len()
            )));
        }
        Ok(out.stdout)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A fresh private directory under the system's temp dir.
fn tempfile_dir() -> Result<std::path::PathBuf, SeedIsoError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut b = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    let dir = std::env::temp_dir().join(format!("virtdeck-seed-{}", hex::encode(b)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| SeedIsoError::Failed(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ISO's primary volume descriptor (sector 16) carries the label.
    #[test]
    fn builds_an_iso_labelled_cidata() {
        let iso = build("#cloud-config\n", "instance-id: \"x\"\n").expect("genisoimage runs");
        let pvd = &iso[16 * 2048..17 * 2048];
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(&pvd[40..46], b"cidata");
        assert!(iso.windows(13).any(|w| w == b"instance-id: "));
    }
}
