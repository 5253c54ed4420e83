//! On the real `qemu:///system` libvirtd: the tiny guest's network install with a
//! kickstart. Its kernel command line carries the per-VM URL, the URL serves the file
//! while the install boot runs, and answers 404 once that boot is destroyed.

use crate::common;

use common::http::serve_dir;
use common::real::{
    bearer_client, guest_dir, qemu_readable_dir, require_libvirtd, wait_for_banner, wait_for_state,
    TestPool, VmGuard, URI,
};
use common::spawn_app_with;
use reqwest::StatusCode;
use serde_json::json;

const KS: &str = "# tiny guest\ntext\nreboot\n%post\necho installed > /root/marker\n%end\n";

#[tokio::test]
async fn the_installing_guest_gets_its_kickstart_url_until_its_install_boot_ends() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let pool = TestPool::with_prefix("vdks-pool");
    let boot = qemu_readable_dir("vdks-boot-");
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
    let r = api
        .post(app.url("/api/v1/kickstarts"))
        .json(&json!({"name": "tiny.ks", "content": KS}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let name = format!("vdks-{}", std::process::id());
    let _guard = VmGuard(name.clone());
    let r = api
        .post(app.url("/api/v1/vms"))
        .json(&json!({
            "name": name,
            "vcpus": 1,
            "memory_mib": 256,
            "disk": {"type": "new", "pool": pool.name, "size_gib": 1},
            "install": {"type": "url", "url": server.url,
                        "kernel_args": "console=ttyS0,115200 panic=-1",
                        "kickstart": "tiny.ks"},
            "start": true
        }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");

    let vm_url = app.url(&format!("/api/v1/vms/{name}"));
    let vm = wait_for_state(&api, &vm_url, "running").await;
    let log = vm["devices"]["serial_log"].as_str().unwrap().to_string();
    let text = wait_for_banner(&log).await;
    // The guest's kernel printed its command line: the kickstart URL is in it.
    let cmdline = text
        .lines()
        .find(|l| l.contains("Command line:"))
        .unwrap_or_else(|| panic!("no kernel command line in the serial log:\n{text}"));
    let url = cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("inst.ks="))
        .unwrap_or_else(|| panic!("no inst.ks= in {cmdline}"))
        .to_string();
    assert!(url.starts_with(&format!("{}/ks/", app.base)), "{url}");

    // Fetched like the installer does (no session): the exact file.
    let plain = reqwest::Client::new();
    let r = plain.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/plain; charset=utf-8"
    );
    assert_eq!(r.text().await.unwrap(), KS);

    // The install boot ends: the URL answers 404.
    let r = api
        .post(app.url(&format!("/api/v1/vms/{name}/force-off")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    wait_for_state(&api, &vm_url, "shut_off").await;
    assert_eq!(
        plain.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = api
        .delete(format!("{vm_url}?delete_volumes=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
