//! The real path: libvirtd on `qemu:///system`, a real QEMU guest under TCG.
//!
//! `make test` installs libvirt and QEMU, starts the daemons and builds the tiny guest;
//! this test fails (it does not skip) when any of that is missing.

use crate::common;

use common::real::{guest_dir, virsh, wait_for_state, TestPool, VmGuard, URI};
use common::spawn_app_with;
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The tests here share one real host; they run one at a time so that capacity figures
/// before and after are exact.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let xml = include_str!("../fixtures/tiny-guest-domain.xml")
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
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
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
        if common::real::shows_banner(&log) {
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

#[tokio::test]
async fn the_tiny_guest_is_created_through_the_api_and_operated_for_real() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    let version = virsh(&["version"]);
    assert!(
        version.status.success(),
        "libvirtd is not answering on {URI}; run make test"
    );
    let pool = TestPool::new();
    // The kernel and initrd go in the boot directory, readable by QEMU's user.
    let boot = tempfile::Builder::new()
        .prefix("virtdeck-boot-")
        .tempdir_in("/var/tmp")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(boot.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let src = guest_dir();
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::copy(src.join(f), boot.path().join(f)).unwrap();
    }
    let boot_dir = boot.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
        c.boot_dir = boot_dir;
    })
    .await;
    let admin = app.setup_admin("admin").await;
    let token = app.admin_token(&admin).await;
    let api = reqwest::Client::builder()
        .default_headers({
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("authorization", format!("Bearer {token}").parse().unwrap());
            h
        })
        .build()
        .unwrap();
    let host = |api: reqwest::Client, url: String| async move {
        api.get(url)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let before = host(api.clone(), app.url("/api/v1/host")).await["capacity"]["usage"].clone();

    let name = format!("vdtest-vm-{}", std::process::id());
    let _guard = VmGuard(name.clone());
    let r = api
        .post(app.url("/api/v1/vms"))
        .json(&serde_json::json!({
            "name": name,
            "vcpus": 1,
            "memory_mib": 256,
            "disk": {"type": "new", "pool": pool.name, "size_gib": 1},
            "install": {"type": "kernel", "kernel": "vmlinuz", "initrd": "initrd.img",
                        "cmdline": "console=tty0 console=ttyS0,115200 panic=-1"},
            "start": true
        }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let disk = created["disk_path"].as_str().unwrap().to_string();
    assert!(disk.starts_with(pool.dir.to_str().unwrap()), "{disk}");
    assert!(Path::new(&disk).exists(), "the qcow2 volume is on disk");

    let vm_url = app.url(&format!("/api/v1/vms/{name}"));
    let vm = wait_for_state(&api, &vm_url, "running").await;
    let kvm = host(api.clone(), app.url("/api/v1/host")).await["kvm"]["status"].clone();
    if kvm != "usable" {
        assert_eq!(
            vm["devices"]["domain_type"], "qemu",
            "TCG when KVM does not work"
        );
    }
    assert_eq!(vm["devices"]["vnc"]["listen"], "127.0.0.1");

    // The guest really boots: the serial log libvirt keeps shows its banner.
    let log = vm["devices"]["serial_log"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if common::real::shows_banner(&text) {
            break;
        }
        assert!(Instant::now() < deadline, "no banner in {log}:\n{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let cap = host(api.clone(), app.url("/api/v1/host")).await["capacity"].clone();
    // 1 vCPU and 256 MiB, in units of this host: rounded up on the scarcer resource.
    let n = cap["model"]["units_total"].as_u64().unwrap();
    let by_cpu = n.div_ceil(cap["model"]["usable_vcpus"].as_u64().unwrap());
    let by_mem = (256 * n).div_ceil(cap["model"]["usable_memory_mib"].as_u64().unwrap());
    let units = created["units"].as_u64().unwrap();
    assert!(units >= by_cpu.max(by_mem), "{created} vs {cap}");
    assert_eq!(
        cap["usage"]["used"].as_u64().unwrap(),
        before["used"].as_u64().unwrap() + units,
        "its units are taken"
    );

    // Operate it: force off, start, shut down (ACPI; this tiny guest ignores it), force off.
    let act = |action: &'static str| {
        let api = api.clone();
        let url = app.url(&format!("/api/v1/vms/{name}/{action}"));
        async move {
            let r = api.post(url).send().await.unwrap();
            let s = r.status();
            (s, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (s, vm) = act("force-off").await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    assert_eq!(vm["state"], "shut_off");
    let (s, vm) = act("start").await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    wait_for_state(&api, &vm_url, "running").await;
    let (s, vm) = act("pause").await;
    assert_eq!((s, vm["state"].clone()), (StatusCode::OK, "paused".into()));
    let (s, vm) = act("resume").await;
    assert_eq!((s, vm["state"].clone()), (StatusCode::OK, "running".into()));
    let (s, _) = act("shutdown").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = act("force-off").await;
    assert_eq!(s, StatusCode::OK);

    // A snapshot inside the qcow2 volume, then a full clone that boots on its own.
    let post = |path: String, body: serde_json::Value| {
        let api = api.clone();
        let url = app.url(&path);
        async move {
            let r = api.post(url).json(&body).send().await.unwrap();
            let s = r.status();
            (s, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let (s, snap) = post(
        format!("/api/v1/vms/{name}/snapshots"),
        serde_json::json!({"name": "off-1", "description": "before cloning"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{snap}");
    assert_eq!(snap["vm_state"], "shutoff");
    let copy = format!("{name}-copy");
    let _copy_guard = VmGuard(copy.clone());
    let (s, job) = post(
        format!("/api/v1/vms/{name}/clone"),
        serde_json::json!({"name": copy, "start": true}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let job = common::real::job_end(&api, &app.base, &job).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let cloned = api
        .get(app.url(&format!("/api/v1/vms/{copy}")))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let copy_disk = cloned["disks"][0].as_str().unwrap().to_string();
    assert!(copy_disk.starts_with(pool.dir.to_str().unwrap()) && copy_disk != disk);
    assert!(Path::new(&copy_disk).exists(), "the copy is on disk");
    let copy_url = app.url(&format!("/api/v1/vms/{copy}"));
    let copy_vm = wait_for_state(&api, &copy_url, "running").await;
    assert_ne!(copy_vm["uuid"], vm["uuid"]);
    let copy_log = copy_vm["devices"]["serial_log"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(copy_log.contains(&copy), "its own serial log: {copy_log}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = std::fs::read_to_string(&copy_log).unwrap_or_default();
        if common::real::shows_banner(&text) {
            break;
        }
        assert!(Instant::now() < deadline, "the clone never booted:\n{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Live updates also report what virsh does behind virtdeck's back.
    let events = api.get(app.url("/events")).send().await.unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let mut stream = events.bytes_stream();
    let out = virsh(&["suspend", &copy]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(seen.contains(&format!("\"vm\":\"{copy}\"")) && seen.contains("\"kind\":\"suspended\""))
    {
        use futures_util::StreamExt;
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no event for virsh suspend; got: {seen}"))
            .expect("stream open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    let r = api
        .delete(format!("{copy_url}?delete_volumes=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!Path::new(&copy_disk).exists(), "the copy's volume deleted");

    // Back to the snapshot, then remove it.
    let (s, v) = post(
        format!("/api/v1/vms/{name}/snapshots/off-1/revert"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = api
        .delete(app.url(&format!("/api/v1/vms/{name}/snapshots/off-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Delete with its volume: capacity back to what it was, nothing left on disk.
    let r = api
        .delete(format!("{vm_url}?delete_volumes=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!Path::new(&disk).exists(), "volume deleted");
    assert!(
        !virsh(&["dominfo", &name]).status.success(),
        "definition gone"
    );
    let after = host(api.clone(), app.url("/api/v1/host")).await["capacity"]["usage"].clone();
    assert_eq!(after, before, "capacity returns to what it was");
}
