//! The real path: libvirtd on `qemu:///system`, a real QEMU guest under TCG.
//!
//! `make test` installs libvirt and QEMU, starts the daemons and builds the tiny guest;
//! this test fails (it does not skip) when any of that is missing.

mod common;

use common::spawn_app_with;
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const URI: &str = "qemu:///system";
const BANNER: &str = "virtdeck-test-guest ready";

fn virsh(args: &[&str]) -> std::process::Output {
    Command::new("virsh")
        .arg("-c")
        .arg(URI)
        .args(args)
        .output()
        .expect("virsh is installed (make test installs it)")
}

fn guest_dir() -> PathBuf {
    let dir = std::env::var_os("VIRTDECK_TEST_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-guest"));
    assert!(
        dir.join("vmlinuz").exists() && dir.join("initrd.img").exists(),
        "the tiny test guest is missing in {}: run scripts/build-test-guest.sh (make test does)",
        dir.display()
    );
    dir
}

/// A transient guest that is destroyed when the test ends, pass or fail.
struct Guest {
    name: String,
    _files: tempfile::TempDir,
    serial_log: PathBuf,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
    }
}

fn boot_tiny_guest() -> Guest {
    let version = virsh(&["version"]);
    assert!(
        version.status.success(),
        "libvirtd is not answering on {URI}: {}; run scripts/start-libvirt.sh (make test does)",
        String::from_utf8_lossy(&version.stderr)
    );
    // QEMU runs as an unprivileged user: give it a directory it may enter.
    let files = tempfile::Builder::new()
        .prefix("virtdeck-guest-")
        .tempdir_in("/var/tmp")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(files.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let src = guest_dir();
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::copy(src.join(f), files.path().join(f)).unwrap();
    }
    let name = format!("vdtest-{}", std::process::id());
    let serial_log = files.path().join("serial.log");
    let xml = include_str!("fixtures/tiny-guest-domain.xml")
        .replace("@NAME@", &name)
        .replace("@GUEST_DIR@", &files.path().display().to_string())
        .replace("@SERIAL_LOG@", &serial_log.display().to_string());
    let xml_path = files.path().join("domain.xml");
    std::fs::write(&xml_path, xml).unwrap();
    let out = virsh(&["create", xml_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "virsh create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Guest {
        name,
        _files: files,
        serial_log,
    }
}

#[tokio::test]
async fn a_real_tcg_guest_boots_and_virtdeck_sees_it_running() {
    let guest = boot_tiny_guest();
    let app = spawn_app_with(|c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
    })
    .await;
    let admin = app.setup_admin("admin").await;

    // The guest really boots: its serial console prints the banner.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let log = std::fs::read_to_string(&guest.serial_log).unwrap_or_default();
        if log.lines().any(|l| l.trim_end() == BANNER) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no banner on the serial console; log so far:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // virtdeck lists it as running, with its real size.
    let vms: serde_json::Value = admin
        .get(app.url("/api/v1/vms"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vm = vms["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == guest.name.as_str())
        .unwrap_or_else(|| panic!("{} not listed in {vms}", guest.name));
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["vcpus"], 1);
    assert_eq!(vm["memory_mib"], 256);

    // The host overview speaks of the real host: QEMU, and what KVM can do here.
    let host: serde_json::Value = admin
        .get(app.url("/api/v1/host"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(host["host"]["driver"], "QEMU");
    assert!(host["vms"]["active"].as_u64().unwrap() >= 1);
    let kvm = host["kvm"]["status"].as_str().unwrap();
    if Path::new("/dev/kvm").exists() {
        assert!(kvm == "usable" || kvm == "broken", "{host}");
    } else {
        assert_eq!(kvm, "missing");
    }
    if kvm != "usable" {
        assert_eq!(host["virt_type"], "qemu", "auto falls back to TCG: {host}");
    }
    let page = admin.get(app.url("/host")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("id=\"kvm-status\""));
    if kvm == "broken" {
        assert!(
            page.contains("/dev/kvm exists but KVM does not work here"),
            "{page}"
        );
    }
    let vms_page = admin
        .get(app.url("/vms"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(vms_page.contains(&guest.name));
}
