//! Storage pools on the real `qemu:///system` libvirtd: a directory pool is defined,
//! built and started, picks up a file dropped into it on refresh, and is deleted with its
//! contents, leaving nothing; a pool whose directory cannot be made is rolled back.

use crate::common;

use common::api::Api;
use common::real::{qemu_readable_dir, require_libvirtd, virsh, URI};
use common::spawn_app_with;
use reqwest::StatusCode;
use serde_json::json;

/// Removes a pool left by a failed run.
struct PoolGuard(String);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        let _ = virsh(&["pool-destroy", &self.0]);
        let _ = virsh(&["pool-undefine", &self.0]);
    }
}

fn pool_defined(name: &str) -> bool {
    virsh(&["pool-info", name]).status.success()
}

async fn volume_names(api: &Api, pool: &str) -> Vec<String> {
    let (s, v) = api.get(&format!("/api/v1/pools/{pool}/volumes")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect()
}

/// The app on the real libvirtd, with an admin's API client.
async fn real_app() -> (common::TestApp, Api) {
    require_libvirtd();
    let app = spawn_app_with(|c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
    })
    .await;
    let api = Api::new(&app).await;
    (app, api)
}

#[tokio::test]
async fn a_dir_pool_on_the_real_libvirtd_is_defined_refreshed_and_deleted_without_leftovers() {
    let _gate = crate::gate::enter(module_path!());
    let (_app, api) = real_app().await;
    let name = format!("vdpools-{}", std::process::id());
    let _guard = PoolGuard(name.clone());
    let base = qemu_readable_dir("vdpools-");
    let dir = base.path().join("pool");
    assert!(!dir.exists());

    let (s, p) = api
        .post(
            "/api/v1/pools",
            json!({"name": name, "kind": "dir", "target_path": dir.to_str().unwrap(), "autostart": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["active"], true);
    assert_eq!(p["autostart"], false);
    assert!(dir.is_dir(), "building the pool made its directory");
    assert!(p["capacity_bytes"].as_u64().unwrap() > 0, "{p}");
    let out = virsh(&["pool-info", &name]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("running"));

    // It counts in the capacity.
    let (_, host) = api.get("/api/v1/host").await;
    assert!(
        host["capacity"]["pools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == name.as_str()),
        "{host}"
    );

    // A file dropped into the directory appears after a refresh, not before.
    assert!(volume_names(&api, &name).await.is_empty());
    std::fs::write(dir.join("dropped.img"), vec![0u8; 1 << 20]).unwrap();
    assert!(
        volume_names(&api, &name).await.is_empty(),
        "libvirt lists what it scanned"
    );
    let (s, p) = api
        .post(&format!("/api/v1/pools/{name}/refresh"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let (_, v) = api.get(&format!("/api/v1/pools/{name}/volumes")).await;
    let vol = &v["volumes"][0];
    assert_eq!(vol["name"], "dropped.img", "{v}");
    assert_eq!(vol["capacity_bytes"], 1u64 << 20);
    assert_eq!(vol["format"], "raw");
    assert_eq!(
        vol["path"],
        dir.join("dropped.img").to_str().unwrap(),
        "{v}"
    );

    // Deleting with its contents removes the volume, the directory and the definition.
    let (s, d) = api
        .delete(&format!("/api/v1/pools/{name}?delete_contents=true"))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["volumes_deleted"], json!(["dropped.img"]));
    assert!(!dir.exists(), "the pool's directory is gone");
    assert!(!pool_defined(&name), "the pool is undefined");
}

#[tokio::test]
async fn a_dir_pool_whose_directory_cannot_be_made_is_rolled_back_on_the_real_libvirtd() {
    let _gate = crate::gate::enter(module_path!());
    let (_app, api) = real_app().await;
    let name = format!("vdpools-bad-{}", std::process::id());
    let _guard = PoolGuard(name.clone());
    let base = qemu_readable_dir("vdpools-bad-");
    // A regular file where a parent directory should be: mkdir fails.
    let file = base.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let target = file.join("pool");

    let (s, e) = api
        .post(
            "/api/v1/pools",
            json!({"name": name, "kind": "dir", "target_path": target.to_str().unwrap()}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("could not be set up"), "{msg}");
    assert!(msg.contains("removed its definition"), "{msg}");
    assert!(!pool_defined(&name), "no pool is left behind");
    assert!(std::fs::read(&file).unwrap() == b"not a directory");
}
