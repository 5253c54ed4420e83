//! Creating a VM from a cloud image with a cloud-init seed, on libvirt's test driver:
//! the form's field errors, the API's checks, and a create that fails after the disk
//! copy and the seed volume were made (the test driver cannot write volume contents)
//! leaving nothing behind.

use crate::common;

use common::api::Api;
use common::{csrf_in, spawn_app};
use reqwest::StatusCode;
use serde_json::{json, Value};

const IMAGE: &str = "/var/lib/libvirt/images/cloud-base.qcow2";
const PASSWORD: &str = "Guest-Secret-Pa55";

/// A well-formed ed25519 public key line.
fn ssh_key() -> String {
    use base64::Engine;
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&[9u8; 32]);
    format!(
        "ssh-ed25519 {} ops@laptop",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// An admin API client and a 2 GiB qcow2 "cloud image" in the default pool.
async fn with_image(app: &common::TestApp) -> Api {
    let api = Api::new(app).await;
    let (s, v) = api
        .post_job(
            "/api/v1/pools/default/volumes",
            json!({"name": "cloud-base.qcow2", "size_gib": 2, "format": "qcow2"}),
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::ACCEPTED, Some("succeeded")),
        "{v}"
    );
    assert_eq!(v["volume_path"], IMAGE);
    api
}

/// VM names, free units and every volume path: what a refused or failed create keeps.
async fn state(api: &Api) -> (Vec<String>, u64, Vec<String>) {
    let (vms, free) = api.fingerprint().await;
    let (_, pools) = api.get("/api/v1/pools").await;
    let mut vols: Vec<String> = pools["pools"]
        .as_array()
        .or_else(|| pools.as_array())
        .expect("pool list")
        .iter()
        .flat_map(|p| p["volumes"].as_array().cloned().unwrap_or_default())
        .map(|v| v["path"].as_str().unwrap().to_string())
        .collect();
    vols.sort();
    (vms, free, vols)
}

fn field_error<'a>(page: &'a str, field: &str) -> Option<&'a str> {
    let marker = format!("data-field=\"{field}\">");
    let start = page.find(&marker)? + marker.len();
    Some(&page[start..start + page[start..].find('<')?])
}

#[tokio::test]
async fn the_form_shows_each_cloud_init_problem_at_its_field_and_makes_nothing() {
    let app = spawn_app().await;
    let api = with_image(&app).await;
    let before = state(&api).await;
    let (admin, _) = app.login("admin", common::ADMIN_PASSWORD).await;
    let page = admin
        .get(app.url("/vms/new"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("name=\"ci_ssh_keys\""),
        "the form has the cloud-init section"
    );
    assert!(
        page.contains(&format!("value=\"{IMAGE}\"")),
        "the image can be chosen"
    );
    let csrf = csrf_in(&page);
    let form = |hostname: &'static str, keys: String, user_data: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("name", "ci01".into()),
            ("size_mode", "flavor".into()),
            ("flavor", "small".into()),
            ("disk_mode", "cloud".into()),
            ("base", IMAGE.into()),
            ("install", "cdrom".into()),
            ("nic_mode", "bridge".into()),
            ("bridge", "br0".into()),
            ("ci_hostname", hostname.into()),
            ("ci_user", "ops".into()),
            ("ci_password", PASSWORD.into()),
            ("ci_ssh_keys", keys),
            ("ci_user_data", user_data.into()),
            ("then", "define".into()),
        ]
    };
    let r = admin
        .post(app.url("/vms"))
        .form(&form(
            "bad host!",
            format!("{}\nssh-ed25519 AAAAnotakey", ssh_key()),
            "packages: [htop]",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(
        field_error(&page, "ci_hostname").is_some_and(|e| e.contains("letters, digits")),
        "{page}"
    );
    assert!(field_error(&page, "ci_ssh_keys").is_some_and(|e| e.starts_with("Key 2:")));
    assert!(field_error(&page, "ci_user_data").is_some_and(|e| e.contains("#cloud-config")));
    assert!(!page.contains(PASSWORD), "the password is never shown back");
    assert!(
        page.contains("value=\"bad host!\""),
        "what was typed is kept"
    );

    // Extra user-data may not redefine the user virtdeck writes.
    let r = admin
        .post(app.url("/vms"))
        .form(&form(
            "",
            ssh_key(),
            "#cloud-config\nusers:\n  - name: evil",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(field_error(&page, "ci_user_data").is_some_and(|e| e.contains("sets &#39;users&#39;")));
    assert_eq!(
        field_error(&page, "ci_hostname"),
        None,
        "empty = the VM's name"
    );

    assert_eq!(state(&api).await, before, "nothing was made");
    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("vm.create") && audit.contains("invalid"));
    assert!(!audit.contains(PASSWORD));
}

#[tokio::test]
async fn the_api_checks_the_image_the_size_and_the_pairing() {
    let app = spawn_app().await;
    let api = with_image(&app).await;
    let before = state(&api).await;
    let body = |disk: Value, ci: Value, install: Value| {
        json!({
            "name": "ci02", "flavor": "small", "disk": disk, "install": install,
            "cloud_init": ci, "start": false
        })
    };
    let ci = json!({"user": "ops", "ssh_keys": [ssh_key()]});
    let cloud = json!({"type": "cloud_image", "base": IMAGE});
    let cases = [
        // Smaller than the image.
        (
            body(
                json!({"type": "cloud_image", "base": IMAGE, "size_gib": 1}),
                ci.clone(),
                json!({"type": "import"}),
            ),
            "size_gib",
            "cannot be smaller",
        ),
        // An ISO is no disk image.
        (
            body(
                json!({"type": "cloud_image", "base": "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso"}),
                ci.clone(),
                json!({"type": "import"}),
            ),
            "base",
            "ISO",
        ),
        // The disk of a running VM.
        (
            body(
                json!({"type": "cloud_image", "base": "/var/lib/libvirt/images/web01.qcow2"}),
                ci.clone(),
                json!({"type": "import"}),
            ),
            "base",
            "web01",
        ),
        // A cloud image without its seed.
        (
            body(cloud.clone(), Value::Null, json!({"type": "import"})),
            "ci_user",
            "cloud-init",
        ),
        // A seed without a cloud image.
        (
            body(
                json!({"type": "new", "pool": "default", "size_gib": 2}),
                ci.clone(),
                json!({"type": "import"}),
            ),
            "disk_mode",
            "Cloud image",
        ),
        // A cloud image boots its disk.
        (
            body(cloud.clone(), ci.clone(), json!({"type": "pxe"})),
            "install",
            "boots from its disk",
        ),
        // Nobody could sign in.
        (
            body(
                cloud.clone(),
                json!({"user": "ops"}),
                json!({"type": "import"}),
            ),
            "ci_ssh_keys",
            "password",
        ),
        (
            body(
                cloud.clone(),
                json!({"user": "ops", "ssh_keys": ["ssh-rsa AAAAB3NzaC1yc2E"]}),
                json!({"type": "import"}),
            ),
            "ci_ssh_keys",
            "Key 1",
        ),
    ];
    for (req, field, text) in cases {
        let (s, e) = api.post("/api/v1/vms", req.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{req}: {e}");
        let hit = e["error"]["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["field"] == field)
            .unwrap_or_else(|| panic!("no error at {field}: {e}"));
        assert!(
            hit["message"].as_str().unwrap().contains(text),
            "{field}: {hit}"
        );
    }
    assert_eq!(state(&api).await, before, "nothing was made");
}

/// A cloud-image create through the API.
fn cloud_vm(name: &str, size_gib: u64) -> Value {
    json!({
        "name": name, "units": 1,
        "disk": {"type": "cloud_image", "base": IMAGE, "size_gib": size_gib},
        "cloud_init": {"user": "ops", "password": PASSWORD, "ssh_keys": [ssh_key()]},
        "nic": {"bridge": "br0"}, "start": true
    })
}

#[tokio::test]
async fn a_create_that_fails_after_the_copy_and_the_seed_volume_removes_both() {
    let app = spawn_app().await;
    let api = with_image(&app).await;
    let before = state(&api).await;
    // libvirt's test driver cannot write volume contents: the step after the seed
    // volume was made fails.
    let (s, e) = api.post("/api/v1/vms", cloud_vm("ci03", 2)).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("writing the seed"), "{msg}");
    assert!(
        msg.contains("ci03.qcow2 deleted"),
        "the copy was removed: {msg}"
    );
    assert!(
        msg.contains("ci03-cidata.iso deleted"),
        "the seed was removed: {msg}"
    );
    assert!(!msg.contains(PASSWORD));
    assert_eq!(state(&api).await, before, "nothing was left behind");

    // Nor can it grow a volume: a bigger disk fails right after the copy.
    let (s, e) = api.post("/api/v1/vms", cloud_vm("ci04", 4)).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("growing the disk to 4 GiB"), "{msg}");
    assert!(msg.contains("ci04.qcow2 deleted"), "{msg}");
    assert_eq!(state(&api).await, before, "nothing was left behind");
    for vm in ["ci03", "ci04"] {
        let (s, _) = api.get(&format!("/api/v1/vms/{vm}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    let admin = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("ci03") && audit.contains("failed"));
    assert!(!audit.contains(PASSWORD), "the password is never logged");
}
