//! On the real `qemu:///system` libvirtd: a network install from a local install tree,
//! and a virtdeck restart in the middle of a create.

use crate::common;

use common::http::serve_dir;
use common::real::{
    bearer_client, guest_dir, qemu_readable_dir, require_libvirtd, virsh, wait_for_banner,
    wait_for_state, TestPool, VmGuard, URI,
};
use common::{bin, run_bin, spawn_app_with};
use reqwest::StatusCode;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn the_tiny_guest_installs_from_a_tree_url_with_kernel_arguments() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    require_libvirtd();
    let pool = TestPool::new();
    let boot = qemu_readable_dir("virtdeck-boot-");
    // The install tree: the tiny guest's kernel and initrd at images/pxeboot/.
    let tree = guest_dir().join("tree");
    assert!(tree.join("images/pxeboot/vmlinuz").exists());
    let server = serve_dir(&tree, None);
    let boot_dir = boot.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
        c.boot_dir = boot_dir;
        c.fetch.allow = vec!["127.0.0.0/8".into()]; // the install tree is on loopback
    })
    .await;
    let admin = app.setup_admin("admin").await;
    let api = bearer_client(&app.admin_token(&admin).await);

    let name = format!("vdinst-{}", std::process::id());
    let _guard = VmGuard(name.clone());
    let marker = format!("virtdeck.marker={}", std::process::id());
    let r = api
        .post(app.url("/api/v1/vms"))
        .json(&json!({
            "name": name,
            "vcpus": 1,
            "memory_mib": 256,
            "disk": {"type": "new", "pool": pool.name, "size_gib": 1},
            "install": {"type": "url", "url": server.url,
                        "kernel_args": format!("console=ttyS0,115200 panic=-1 {marker}")},
            "start": true
        }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let hits = server.hits.lock().unwrap().clone();
    assert!(
        hits.contains(&"/images/pxeboot/initrd.img".to_string()),
        "{hits:?}"
    );

    let vm_url = app.url(&format!("/api/v1/vms/{name}"));
    let vm = wait_for_state(&api, &vm_url, "running").await;
    let log = vm["devices"]["serial_log"].as_str().unwrap().to_string();
    let text = wait_for_banner(&log).await;
    assert!(
        text.contains(&marker),
        "the kernel got the arguments:\n{text}"
    );
    // From now on the VM boots its disk: the installer kernel is not in its definition,
    // and the downloads are gone from the boot directory.
    assert!(!vm["xml"].as_str().unwrap().contains("<kernel>"));
    assert_eq!(vm["devices"]["boot_devs"], json!(["hd"]));
    assert!(
        files_in(boot.path()).is_empty(),
        "{:?}",
        files_in(boot.path())
    );
    let r = api
        .post(app.url(&format!("/api/v1/vms/{name}/force-off")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let info = String::from_utf8_lossy(&virsh(&["dominfo", &name]).stdout).into_owned();
    assert!(
        info.lines()
            .any(|l| l.starts_with("Persistent:") && l.ends_with("yes")),
        "{info}"
    );
    let r = api
        .delete(format!("{vm_url}?delete_volumes=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// The real binary, serving on a loopback port, and its address.
fn serve(data_dir: &str, config: &Path) -> (Child, String) {
    let mut child = bin()
        .args(["--data-dir", data_dir, "--config", config.to_str().unwrap()])
        .args(["serve", "--no-tls", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("server printed its address").unwrap();
        if let Some(i) = line.find("url=") {
            break line[i + 4..].split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_create_leaves_a_consistent_host() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    require_libvirtd();
    let pool = TestPool::new();
    let boot = qemu_readable_dir("virtdeck-boot-");
    // The kernel download hangs half-way: the create is stuck after its volume exists.
    let tree = guest_dir().join("tree");
    let server = serve_dir(&tree, Some("/images/pxeboot/vmlinuz"));

    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap().to_string();
    let config = data.path().join("virtdeck.toml");
    std::fs::write(
        &config,
        format!(
            // The install tree is on loopback.
            "libvirt_uri = \"{URI}\"\nboot_dir = \"{}\"\n[fetch]\nallow = [\"127.0.0.0/8\"]\n",
            boot.path().display()
        ),
    )
    .unwrap();
    let out = run_bin(
        &[
            "--data-dir",
            &d,
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "admin-password-1",
    );
    assert!(out.status.success());
    let out = run_bin(
        &["--data-dir", &d, "token", "create", "--user", "admin"],
        "",
    );
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let api = bearer_client(&token);

    let (mut first, base) = serve(&d, &config);
    let free_before = api
        .get(format!("{base}/api/v1/host"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["capacity"]["usage"]["free"]
        .clone();
    let name = format!("vdrestart-{}", std::process::id());
    let _guard = VmGuard(name.clone());
    let request = {
        let (api, base, name, url, pool) = (
            api.clone(),
            base.clone(),
            name.clone(),
            server.url.clone(),
            pool.name.clone(),
        );
        tokio::spawn(async move {
            api.post(format!("{base}/api/v1/vms"))
                .json(&json!({
                    "name": name, "vcpus": 1, "memory_mib": 256,
                    "disk": {"type": "new", "pool": pool, "size_gib": 1},
                    "install": {"type": "url", "url": url, "kernel_args": "console=ttyS0"},
                    "start": true
                }))
                .send()
                .await
        })
    };
    // Wait until the volume exists and the kernel download has started.
    let volume = pool.dir.join(format!("{name}.qcow2"));
    let partial = boot.path().join(format!("virtdeck-{name}-vmlinuz"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(volume.exists() && partial.exists()) {
        assert!(Instant::now() < deadline, "the create never got going");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill().unwrap(); // SIGKILL: no chance to clean up
    first.wait().unwrap();
    let _ = request.await;
    assert!(
        volume.exists(),
        "the half-made create is on disk before the restart"
    );

    // Start-up reconciliation undoes it.
    let (mut second, base) = serve(&d, &config);
    let host: serde_json::Value = api
        .get(format!("{base}/api/v1/host"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        host["capacity"]["usage"]["free"], free_before,
        "units released"
    );
    assert!(!volume.exists(), "the volume is deleted");
    assert!(!partial.exists(), "the partial download is deleted");
    assert!(
        !virsh(&["dominfo", &name]).status.success(),
        "no domain was left"
    );
    let r = api
        .get(format!("{base}/api/v1/vms/{name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let vols = String::from_utf8_lossy(&virsh(&["vol-list", &pool.name]).stdout).into_owned();
    assert!(!vols.contains(&name), "{vols}");
    second.kill().unwrap();
    second.wait().unwrap();
}
