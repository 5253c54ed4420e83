//! Volumes a VM must not take, on libvirt's test driver over HTTP: an operator cannot
//! attach the installer ISO, another VM's disk or a non-ISO as disk or CD-ROM; an
//! operator's "delete volumes" deletes only what virtdeck made for that VM; directory
//! pools stay out of system trees; an image naming a host file as its backing file is
//! neither copied nor attached.

use crate::common;

use common::api::Api;
use common::{client, spawn_app, spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

const ISO: &str = "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso";
const WEB01_DISK: &str = "/var/lib/libvirt/images/web01.qcow2";
const SPARE: &str = "/var/lib/libvirt/images/spare.qcow2";
const OPERATOR_PASSWORD: &str = "operator-password-1";

fn api_with(app: &TestApp, token: String) -> Api {
    Api {
        c: reqwest::Client::builder()
            .pool_idle_timeout(common::IDLE_REUSE)
            .build()
            .expect("client"),
        base: app.base.clone(),
        token,
    }
}

/// The admin's API client and session, and operator olga's API client.
async fn admin_and_operator(app: &TestApp) -> (Api, reqwest::Client, Api) {
    let admin = app.setup_admin("admin").await;
    let admin_token = app.admin_token(&admin).await;
    app.add_user(&admin, "olga", "operator", OPERATOR_PASSWORD)
        .await;
    let op_token = app.token_for(&admin, "olga").await;
    (api_with(app, admin_token), admin, api_with(app, op_token))
}

/// An unattached qcow2 volume made by an admin in the default pool (not for any VM).
async fn spare_volume(admin: &Api) {
    let (s, job) = admin
        .post_job(
            "/api/v1/pools/default/volumes",
            json!({"name": "spare.qcow2", "size_gib": 1, "format": "qcow2"}),
        )
        .await;
    assert_eq!(
        (s, job["state"].as_str()),
        (StatusCode::ACCEPTED, Some("succeeded")),
        "{job}"
    );
}

async fn volume_paths(api: &Api) -> Vec<String> {
    let (s, pools) = api.get("/api/v1/pools").await;
    assert_eq!(s, StatusCode::OK, "{pools}");
    let mut out: Vec<String> = pools["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .flat_map(|p| p["volumes"].as_array().cloned().unwrap_or_default())
        .map(|v| v["path"].as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    out
}

fn vm(name: &str, disk: Value, install: Value) -> Value {
    json!({"name": name, "flavor": "small", "disk": disk, "install": install})
}

/// The refusal's message at `field` (a 422 answer), or a panic saying what came back.
fn refusal_at(status: StatusCode, body: &Value, field: &str) -> String {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    body["error"]["errors"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["field"] == field))
        .and_then(|e| e["message"].as_str())
        .unwrap_or_else(|| panic!("no error at {field}: {body}"))
        .to_string()
}

#[tokio::test]
async fn an_operator_cannot_take_the_iso_or_another_vms_disk_at_create() {
    let app = spawn_app().await;
    let (admin, admin_session, op) = admin_and_operator(&app).await;
    spare_volume(&admin).await;
    let before = (admin.fingerprint().await, volume_paths(&admin).await);

    // The demo's installer ISO as a read-write "existing" disk.
    let (s, e) = op
        .post(
            "/api/v1/vms",
            vm(
                "grab",
                json!({"type": "existing", "path": ISO}),
                json!({"type": "import"}),
            ),
        )
        .await;
    let msg = refusal_at(s, &e, "volume");
    assert!(
        msg.contains("build-runner") || msg.contains("ISO image"),
        "{msg}"
    );
    // Another VM's (running) disk.
    let (s, e) = op
        .post(
            "/api/v1/vms",
            vm(
                "grab",
                json!({"type": "existing", "path": WEB01_DISK}),
                json!({"type": "import"}),
            ),
        )
        .await;
    assert!(
        refusal_at(s, &e, "volume").contains("in use by VM web01"),
        "{e}"
    );
    // A CD-ROM that is not an ISO, and a CD-ROM that is another VM's running disk.
    let new_disk = json!({"type": "new", "pool": "default", "size_gib": 1});
    let (s, e) = op
        .post(
            "/api/v1/vms",
            vm(
                "grab",
                new_disk.clone(),
                json!({"type": "cdrom", "volume": SPARE}),
            ),
        )
        .await;
    assert!(refusal_at(s, &e, "iso").contains("not an ISO image"), "{e}");
    let (s, e) = op
        .post(
            "/api/v1/vms",
            vm(
                "grab",
                new_disk.clone(),
                json!({"type": "cdrom", "volume": WEB01_DISK}),
            ),
        )
        .await;
    assert!(refusal_at(s, &e, "iso").contains("web01"), "{e}");

    // Nothing was made: no VM, no volume, no units held.
    let after = (admin.fingerprint().await, volume_paths(&admin).await);
    assert_eq!(before, after);
    // Each refusal is in the audit log.
    let audit = app.audit_text(&admin_session).await;
    assert!(audit.matches("vm.create").count() >= 4, "{audit}");

    // The ISO still works as a CD-ROM (read-only, shared with build-runner).
    let (s, v) = op
        .post(
            "/api/v1/vms",
            vm(
                "installs",
                new_disk,
                json!({"type": "cdrom", "volume": ISO}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Signs olga in and returns the delete page of `name`.
async fn delete_page(app: &TestApp, c: &reqwest::Client, name: &str) -> String {
    let r = c
        .get(app.url(&format!("/vms/{name}/delete")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

#[tokio::test]
async fn an_operators_delete_keeps_volumes_virtdeck_did_not_make_for_the_vm() {
    let app = spawn_app().await;
    let (admin, admin_session, op) = admin_and_operator(&app).await;
    spare_volume(&admin).await;

    // "grab" takes the admin's spare volume; "own" gets a disk virtdeck makes for it.
    let (s, v) = op
        .post(
            "/api/v1/vms",
            vm(
                "grab",
                json!({"type": "existing", "path": SPARE}),
                json!({"type": "import"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = op
        .post(
            "/api/v1/vms",
            vm(
                "own",
                json!({"type": "new", "pool": "default", "size_gib": 1}),
                json!({"type": "import"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let own_disk = v["disk_path"].as_str().unwrap().to_string();

    // The operator's delete page says what is deleted, what is kept and why.
    let olga = client();
    let r = app.login_with(&olga, "olga", OPERATOR_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = delete_page(&app, &olga, "grab").await;
    let kept = page
        .split("id=\"volumes-kept\"")
        .nth(1)
        .expect("a kept list");
    assert!(
        kept.contains(SPARE) && kept.contains("did not make it"),
        "{page}"
    );
    assert!(!page.contains("id=\"volumes-deleted\""), "{page}");
    assert!(page.contains("You may delete only the volumes virtdeck made for this VM"));
    let page = delete_page(&app, &olga, "own").await;
    let deleted = page
        .split("id=\"volumes-deleted\"")
        .nth(1)
        .expect("a deleted list");
    assert!(deleted.contains(&own_disk), "{page}");

    // DELETE …?delete_volumes=true by the operator: the spare volume stays.
    let (s, d) = op.delete("/api/v1/vms/grab?delete_volumes=true").await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["volumes_deleted"], json!([]), "{d}");
    assert_eq!(d["volumes_kept"][0]["path"], SPARE, "{d}");
    assert!(
        d["volumes_kept"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("did not make it"),
        "{d}"
    );
    assert!(volume_paths(&admin).await.contains(&SPARE.to_string()));
    // …and the volume virtdeck made for "own" goes.
    let (s, d) = op.delete("/api/v1/vms/own?delete_volumes=true").await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["volumes_deleted"], json!([own_disk]), "{d}");
    assert!(!volume_paths(&admin).await.contains(&own_disk));

    // An admin may delete any disk volume of the VM, and the page says so.
    let (s, v) = admin
        .post(
            "/api/v1/vms",
            vm(
                "adm",
                json!({"type": "existing", "path": SPARE}),
                json!({"type": "import"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let page = delete_page(&app, &admin_session, "adm").await;
    assert!(
        page.contains("As an admin you may delete every disk volume of this VM"),
        "{page}"
    );
    assert!(
        page.split("id=\"volumes-deleted\"")
            .nth(1)
            .is_some_and(|l| l.contains(SPARE)),
        "{page}"
    );
    let (s, d) = admin.delete("/api/v1/vms/adm?delete_volumes=true").await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["volumes_deleted"], json!([SPARE]), "{d}");
    assert!(!volume_paths(&admin).await.contains(&SPARE.to_string()));
}

#[tokio::test]
async fn directory_pools_stay_out_of_system_trees() {
    let app = spawn_app().await;
    let (admin, _, _) = admin_and_operator(&app).await;
    let data_dir_pool = app.data_dir.path().join("pool").display().to_string();
    for (i, bad) in [
        "/etc/libvirt-x",
        "/usr/x",
        "/var/lib/virtdeck/x",
        "/tmp/../etc",
        "/boot/x",
        "/root/vms",
        data_dir_pool.as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, e) = admin
            .post(
                "/api/v1/pools",
                json!({"name": format!("bad{i}"), "kind": "dir", "target_path": bad}),
            )
            .await;
        let msg = refusal_at(s, &e, "target_path");
        assert!(msg.contains("system directory"), "{bad}: {msg}");
    }
    let (s, p) = admin
        .post(
            "/api/v1/pools",
            json!({"name": "images-x", "kind": "dir", "target_path": "/var/lib/libvirt/images/x"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
}

/// The demo host plus two images a guest could have left behind: one libvirt lists as
/// qcow2 with /etc/shadow as its backing file (after a pool refresh re-detected it), and
/// one libvirt lists as raw whose file starts with a qcow2 header naming /etc/shadow.
fn hostile_host(dir: &std::path::Path) -> (String, String) {
    let header_file = dir.join("raw-with-header.img");
    let mut bytes = vec![0u8; 4096];
    bytes[0..4].copy_from_slice(b"QFI\xfb");
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    bytes[8..16].copy_from_slice(&512u64.to_be_bytes());
    bytes[16..20].copy_from_slice(&11u32.to_be_bytes());
    bytes[100..104].copy_from_slice(&104u32.to_be_bytes());
    bytes[512..523].copy_from_slice(b"/etc/shadow");
    std::fs::write(&header_file, &bytes).unwrap();
    let extra = format!(
        "<volume type='file'><name>kept-guest.img</name><capacity unit='GiB'>2</capacity>\
         <allocation unit='GiB'>0</allocation><target><path>/var/lib/libvirt/images/kept-guest.img</path>\
         <format type='qcow2'/></target><backingStore><path>/etc/shadow</path>\
         <format type='raw'/></backingStore></volume>\
         <volume type='file'><name>raw-with-header.img</name><capacity unit='GiB'>2</capacity>\
         <allocation unit='GiB'>0</allocation><target><path>{}</path>\
         <format type='raw'/></target></volume>",
        header_file.display()
    );
    let xml = virtdeck::web::server::DEMO_HOST_XML.replacen(
        "  </pool>",
        &format!("{extra}\n  </pool>"),
        1,
    );
    let host = dir.join("hostile-host.xml");
    std::fs::write(&host, xml).unwrap();
    (
        format!("test://{}", host.display()),
        header_file.display().to_string(),
    )
}

#[tokio::test]
async fn an_image_naming_a_host_file_as_backing_is_neither_copied_nor_attached() {
    let dir = tempfile::tempdir().unwrap();
    let (uri, header_file) = hostile_host(dir.path());
    let app = spawn_app_with(move |c| {
        c.demo = false;
        c.libvirt_uri = uri;
    })
    .await;
    let (admin, _, op) = admin_and_operator(&app).await;
    let before = (admin.fingerprint().await, volume_paths(&admin).await);
    let kept = "/var/lib/libvirt/images/kept-guest.img";
    for (api, base) in [(&admin, kept), (&op, header_file.as_str())] {
        let (s, e) = api
            .post(
                "/api/v1/vms",
                json!({"name": "copycat", "flavor": "small",
                       "disk": {"type": "cloud_image", "base": base, "size_gib": 2},
                       "cloud_init": {"user": "debian", "password": "Guest-Secret-Pa55"}}),
            )
            .await;
        let msg = refusal_at(s, &e, "base");
        assert!(msg.contains("/etc/shadow"), "{base}: {msg}");
        let (s, e) = api
            .post(
                "/api/v1/vms",
                vm(
                    "attach",
                    json!({"type": "existing", "path": base}),
                    json!({"type": "import"}),
                ),
            )
            .await;
        let msg = refusal_at(s, &e, "volume");
        assert!(msg.contains("/etc/shadow"), "{base}: {msg}");
    }
    let after = (admin.fingerprint().await, volume_paths(&admin).await);
    assert_eq!(before, after);
}

/// Whether virtdeck still has a record of having made the volume at `path`.
async fn recorded(app: &TestApp, path: &str) -> bool {
    let db = app.data_dir.path().join("virtdeck.db");
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let c = rusqlite::Connection::open(db).unwrap();
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM vm_volumes WHERE path = ?1",
                [path],
                |r| r.get(0),
            )
            .unwrap();
        n > 0
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn deleting_a_kept_volume_forgets_its_record() {
    // A volume virtdeck made for a VM, kept when the VM went, then deleted from its pool:
    // a later volume at the same path must not inherit the old record (its format or
    // backing file).
    let app = spawn_app().await;
    let (admin, _session, _op) = admin_and_operator(&app).await;
    let (s, v) = admin
        .post(
            "/api/v1/vms",
            vm(
                "keep",
                json!({"type": "new", "pool": "default", "size_gib": 1}),
                json!({"type": "import"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let disk = v["disk_path"].as_str().expect("a disk").to_string();
    assert!(recorded(&app, &disk).await, "the new disk is recorded");
    let (s, d) = admin.delete("/api/v1/vms/keep").await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert!(recorded(&app, &disk).await, "a kept volume stays recorded");
    let name = disk.rsplit('/').next().unwrap().to_string();
    let (s, d) = admin
        .delete(&format!("/api/v1/pools/default/volumes/{name}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert!(!volume_paths(&admin).await.contains(&disk));
    assert!(
        !recorded(&app, &disk).await,
        "the record went with the volume"
    );
}
