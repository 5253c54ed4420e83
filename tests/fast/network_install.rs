//! Network installs (virt-install --location) on libvirt's test driver, with the install
//! tree served over real HTTP from a local port.

use crate::common;

use common::api::Api;
use common::http::serve_dir;
use common::spawn_app_with;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;

fn tree(kernel_path: &str, initrd_path: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (p, content) in [(kernel_path, "kernel"), (initrd_path, "initrd")] {
        let f = dir.path().join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, content.repeat(1000)).unwrap();
    }
    dir
}

fn request(name: &str, url: &str) -> Value {
    json!({
        "name": name,
        "units": 1,
        "disk": {"type": "new", "pool": "default", "size_gib": 4},
        "install": {"type": "url", "url": url, "kernel_args": "console=ttyS0 inst.ks=http://10.0.0.1/ks.cfg"},
        "nic": {"bridge": "br0"},
        "start": true
    })
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_vm_installs_from_a_tree_url_then_boots_its_disk() {
    let boot = tempfile::tempdir().unwrap();
    let boot_dir = boot.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.boot_dir = boot_dir;
        c.fetch.allow = vec!["127.0.0.0/8".into()]; // the install tree is on loopback
    })
    .await;
    let api = Api::new(&app).await;

    // A Fedora-style tree: images/pxeboot/.
    let fedora = tree("os/images/pxeboot/vmlinuz", "os/images/pxeboot/initrd.img");
    let server = serve_dir(fedora.path(), None);
    let (s, v) = api
        .post(
            "/api/v1/vms",
            request("inst01", &format!("{}os", server.url)),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let hits = server.hits.lock().unwrap().clone();
    assert!(
        hits.contains(&"/os/images/pxeboot/vmlinuz".to_string()),
        "{hits:?}"
    );
    assert!(hits.contains(&"/os/images/pxeboot/initrd.img".to_string()));
    let vm = api.get("/api/v1/vms/inst01").await.1;
    assert_eq!(vm["state"], "running", "the installer runs");
    // The definition boots the disk; the installer kernel was only for this run.
    let xml = vm["xml"].as_str().unwrap();
    assert!(!xml.contains("<kernel>"), "{xml}");
    assert_eq!(vm["devices"]["boot_devs"], json!(["hd"]));
    assert!(files_in(boot.path()).is_empty(), "downloads removed");

    // A tree described by .treeinfo, with its own layout.
    let custom = tree("boot/x/k", "boot/x/i");
    std::fs::write(
        custom.path().join(".treeinfo"),
        "[general]\nfamily = Test\n[images-x86_64]\nkernel = boot/x/k\ninitrd = boot/x/i\n",
    )
    .unwrap();
    let server = serve_dir(custom.path(), None);
    let (s, v) = api
        .post("/api/v1/vms", request("inst02", &server.url))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(server
        .hits
        .lock()
        .unwrap()
        .contains(&"/boot/x/i".to_string()));
}

#[tokio::test]
async fn bad_or_empty_trees_are_refused_and_leave_nothing() {
    let boot = tempfile::tempdir().unwrap();
    let boot_dir = boot.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.boot_dir = boot_dir;
        c.fetch.allow = vec!["127.0.0.0/8".into()]; // the install tree is on loopback
    })
    .await;
    let api = Api::new(&app).await;
    let before = (api.fingerprint().await, api.get("/api/v1/pools").await.1);

    for (url, field) in [
        ("ftp://mirror/tree", "url"),
        ("http://user:pw@mirror/tree", "url"),
        ("", "url"),
    ] {
        let (s, v) = api.post("/api/v1/vms", request("bad01", url)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {v}");
        assert_eq!(v["error"]["field"], field, "{url}");
    }
    let mut create_only = request("bad01", "http://127.0.0.1:9/tree");
    create_only["start"] = json!(false);
    let (s, v) = api.post("/api/v1/vms", create_only).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "start");

    // A web server without an install tree.
    let empty = tempfile::tempdir().unwrap();
    let server = serve_dir(empty.path(), None);
    let (s, v) = api.post("/api/v1/vms", request("bad02", &server.url)).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("fetching the installer failed")
            && msg.contains("no installer kernel and initrd were found")
            && msg.contains("Nothing was left behind"),
        "{msg}"
    );

    // Nobody listening.
    let (s, v) = api
        .post("/api/v1/vms", request("bad03", "http://127.0.0.1:9/tree"))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");

    // The kernel is there but the initrd is not: the kernel already downloaded goes too.
    let half = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(half.path().join("images/pxeboot")).unwrap();
    std::fs::write(half.path().join("images/pxeboot/vmlinuz"), "k").unwrap();
    let server = serve_dir(half.path(), None);
    let (s, v) = api.post("/api/v1/vms", request("bad04", &server.url)).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");

    assert_eq!(
        (api.fingerprint().await, api.get("/api/v1/pools").await.1),
        before,
        "no VM, no volume, no claim"
    );
    assert!(files_in(boot.path()).is_empty(), "no downloaded file left");
}
