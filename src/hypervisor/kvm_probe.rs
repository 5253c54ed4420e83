//! Finds out whether KVM really works on this host: `/dev/kvm` existing is not enough
//! (nested KVM can fail when QEMU first runs a vCPU).

use crate::domain::host::KvmStatus;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const QEMU_CANDIDATES: &[&str] = &[
    "/usr/bin/qemu-system-x86_64",
    "/usr/libexec/qemu-kvm",
    "/usr/bin/qemu-kvm",
];

/// Runs QEMU with KVM for a moment on an empty machine. If it is still running after
/// `settle`, KVM works; if it exits, its stderr says why.
pub fn probe(settle: Duration) -> KvmStatus {
    if !Path::new("/dev/kvm").exists() {
        return KvmStatus::Missing;
    }
    let Some(qemu) = QEMU_CANDIDATES.iter().find(|p| Path::new(p).exists()) else {
        return KvmStatus::Broken {
            reason: "no QEMU binary found to test it with".into(),
        };
    };
    let child = std::process::Command::new(qemu)
        .args([
            "-accel",
            "kvm",
            "-machine",
            "pc",
            "-cpu",
            "host",
            "-m",
            "16",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return KvmStatus::Broken {
                reason: format!("cannot run {qemu}: {e}"),
            }
        }
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_status)) => {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    use std::io::Read;
                    let _ = stderr.read_to_string(&mut err);
                }
                return KvmStatus::Broken {
                    reason: summarize_qemu_error(&err),
                };
            }
            Ok(None) if start.elapsed() >= settle => {
                let _ = child.kill();
                let _ = child.wait();
                return KvmStatus::Usable;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                let _ = child.kill();
                return KvmStatus::Broken {
                    reason: format!("cannot watch QEMU: {e}"),
                };
            }
        }
    }
}

/// The most telling line of QEMU's stderr, trimmed for display.
pub fn summarize_qemu_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pick = lines
        .iter()
        .find(|l| l.contains("kvm") || l.contains("KVM"))
        .or_else(|| lines.first())
        .copied()
        .unwrap_or("QEMU exited at once without saying why");
    let mut s: String = pick.chars().take(200).collect();
    if pick.chars().count() > 200 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_kvm_line() {
        let err = "qemu-system-x86_64: warning: host doesn't support requested feature\n\
                   qemu-system-x86_64: error: failed to set MSR 0x48f to 0x7fefff00036dfb\n\
                   qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3055: kvm_buf_set_msrs: Assertion failed.\n";
        assert!(summarize_qemu_error(err).contains("kvm_buf_set_msrs"));
        assert_eq!(summarize_qemu_error(""), "QEMU exited at once without saying why");
    }
}
