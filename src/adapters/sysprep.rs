//! The virt-sysprep adapter: finding the tool on PATH and running it on a clone's disks.
//! Blocking; call it off the async runtime.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The tool's file name, looked up in the directories of `PATH`.
pub const PROGRAM: &str = "virt-sysprep";

/// Where virt-sysprep is installed, if it is: `configured` when that is an executable
/// file, otherwise an executable file named `virt-sysprep` in a directory of `PATH`.
/// Looked up on every call, so installing it needs no restart.
pub fn find(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = configured {
        return is_executable(p).then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(PROGRAM))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs the tool with `args`; on failure, says how it ended and the end of what it printed.
/// `emulate`: the host's KVM does not work, so libguestfs's appliance runs under TCG.
pub fn run(program: &Path, args: &[String], emulate: bool) -> Result<(), String> {
    let mut cmd = Command::new(program);
    cmd.args(args).env("LIBGUESTFS_BACKEND", "direct");
    if emulate {
        cmd.env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("{} could not be run: {e}", program.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    Err(format!(
        "virt-sysprep ended with {}: {}",
        out.status,
        last.trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join(PROGRAM);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_failing_run_reports_the_exit_and_the_last_message() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            "echo 'first' >&2; echo 'disk is locked' >&2; exit 3",
        );
        let e = run(&p, &["-a".into(), "/x".into()], false).unwrap_err();
        assert!(
            e.contains("exit status: 3") && e.ends_with("disk is locked"),
            "{e}"
        );
        let ok = script(dir.path(), "exit 0");
        assert_eq!(run(&ok, &[], false), Ok(()));
        // Without KVM the appliance is told to emulate.
        let tcg = script(
            dir.path(),
            "[ \"$LIBGUESTFS_BACKEND_SETTINGS\" = force_tcg ] || exit 9",
        );
        assert_eq!(run(&tcg, &[], true), Ok(()));
        assert!(run(&tcg, &[], false)
            .unwrap_err()
            .contains("exit status: 9"));
        assert!(run(&dir.path().join("missing"), &[], false)
            .unwrap_err()
            .contains("could not be run"));
    }

    #[test]
    fn a_file_that_is_not_executable_is_not_the_tool() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(PROGRAM);
        std::fs::write(&p, "").unwrap();
        assert!(!is_executable(&p));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(is_executable(&p));
        assert!(!is_executable(dir.path()));
    }

    #[test]
    fn a_configured_program_is_used_only_when_it_can_run() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(PROGRAM);
        assert_eq!(find(Some(&p)), None);
        std::fs::write(&p, "").unwrap();
        assert_eq!(find(Some(&p)), None);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find(Some(&p)), Some(p.clone()));
    }
}
