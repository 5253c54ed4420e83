//! Finds out whether KVM really works on this host. `/dev/kvm` existing is not enough:
//! nested KVM can fail when QEMU first runs a vCPU (an MSR write aborts QEMU), or run
//! pathologically slowly.
//!
//! The probe boots a 39-byte multiboot image under `-accel kvm` whose only instruction
//! of substance writes 0x2a to an `isa-debug-exit` port; QEMU then exits with
//! `(0x2a << 1) | 1 = 85`. Only that exit status proves a vCPU really executed guest code.

use crate::domain::host::KvmStatus;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const QEMU_CANDIDATES: &[&str] = &[
    "/usr/bin/qemu-system-x86_64",
    "/usr/libexec/qemu-kvm",
    "/usr/bin/qemu-kvm",
];

/// Multiboot header (a.out kludge: loaded at 1 MiB, entry 0x100020), then
/// `mov al,0x2a; out 0xf4,al; hlt; jmp $-1`.
const PROBE_IMAGE: [u8; 39] = [
    0x02, 0xb0, 0xad, 0x1b, 0x00, 0x00, 0x01, 0x00, 0xfe, 0x4f, 0x51, 0xe4, 0x00, 0x00, 0x10, 0x00,
    0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x10, 0x00,
    0xb0, 0x2a, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd,
];

const PROBE_EXIT_STATUS: i32 = 85;

/// Why this host's KVM module is known to fail Linux guests although it runs the probe:
/// PVM (`kvm_pvm`, the KVM of nested sandboxes without hardware virtualization) runs the
/// probe's vCPU, then stops a Linux guest at its kernel's first `lock cmpxchg16b`
/// ("kvm-pvm: INTERNAL_ERROR in batch emul"), with nothing on its serial console.
/// `sys_module` is `/sys/module`.
fn known_broken_module(sys_module: &Path) -> Option<String> {
    sys_module.join("kvm_pvm").exists().then(|| {
        "this host's KVM is PVM (kvm_pvm), which runs a vCPU but stops Linux guests early in \
         their boot"
            .to_string()
    })
}

/// Runs the probe with `-cpu host`, the model virtdeck's guests use when KVM works.
pub fn probe(limit: Duration) -> KvmStatus {
    if !Path::new("/dev/kvm").exists() {
        return KvmStatus::Missing;
    }
    if let Some(reason) = known_broken_module(Path::new("/sys/module")) {
        return KvmStatus::Broken { reason };
    }
    let Some(qemu) = QEMU_CANDIDATES.iter().find(|p| Path::new(p).exists()) else {
        return KvmStatus::Broken {
            reason: "no QEMU binary found to test it with".into(),
        };
    };
    let dir = std::env::temp_dir().join(format!("virtdeck-kvm-probe-{}", std::process::id()));
    let image = dir.join("probe.mb");
    let written = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&image, PROBE_IMAGE));
    let status = match written {
        Ok(()) => run(qemu, &image, limit),
        Err(e) => KvmStatus::Broken {
            reason: format!("cannot write the probe image: {e}"),
        },
    };
    let _ = std::fs::remove_dir_all(&dir);
    status
}

fn run(qemu: &str, image: &Path, limit: Duration) -> KvmStatus {
    let child = Command::new(qemu)
        .args([
            "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-m", "16",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel"])
        .arg(image)
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
            Ok(Some(status)) if status.code() == Some(PROBE_EXIT_STATUS) => {
                return KvmStatus::Usable
            }
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut err);
                }
                let why = summarize_qemu_error(&err);
                return KvmStatus::Broken {
                    reason: match status.code() {
                        Some(code) => format!("QEMU exited with {code}: {why}"),
                        None => format!("QEMU was killed: {why}"),
                    },
                };
            }
            Ok(None) if start.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                return KvmStatus::Broken {
                    reason: format!(
                        "a KVM guest did not run its first instructions within {} ms",
                        limit.as_millis()
                    ),
                };
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let _ = child.kill();
                return KvmStatus::Broken {
                    reason: format!("cannot watch QEMU: {e}"),
                };
            }
        }
    }
}

/// The most telling lines of QEMU's stderr (warnings about CPU features dropped).
pub fn summarize_qemu_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("warning: host doesn't support requested feature"))
        .collect();
    if lines.is_empty() {
        return "no error output".into();
    }
    let joined = lines.iter().take(2).copied().collect::<Vec<_>>().join(" ");
    let mut s: String = joined.chars().take(240).collect();
    if joined.chars().count() > 240 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_is_known_to_fail_linux_guests() {
        let dir = std::env::temp_dir().join(format!("vd-sys-module-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kvm")).unwrap();
        assert_eq!(known_broken_module(&dir), None, "plain KVM is probed");
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        let reason = known_broken_module(&dir).expect("PVM is refused before the probe");
        assert!(reason.contains("kvm_pvm"), "{reason}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keeps_the_error_drops_feature_warnings() {
        let err = "qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.pni [bit 0]\n\
                   qemu-system-x86_64: error: failed to set MSR 0x10a to 0xc000069\n\
                   qemu-system-x86_64: target/i386/kvm/kvm.c:3849: kvm_buf_set_msrs: Assertion failed.\n";
        let s = summarize_qemu_error(err);
        assert!(
            s.starts_with("qemu-system-x86_64: error: failed to set MSR"),
            "{s}"
        );
        assert!(s.contains("kvm_buf_set_msrs"), "{s}");
        assert_eq!(summarize_qemu_error(""), "no error output");
    }

    #[test]
    fn the_probe_image_is_a_multiboot_kernel() {
        // Multiboot magic 0x1BADB002, little-endian, at offset 0.
        assert_eq!(&PROBE_IMAGE[..4], &[0x02, 0xb0, 0xad, 0x1b]);
        // The last instructions: out 0xf4, al; hlt; jmp $-1.
        assert_eq!(&PROBE_IMAGE[34..], &[0xe6, 0xf4, 0xf4, 0xeb, 0xfd]);
    }
}
