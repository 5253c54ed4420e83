//! Boot order, boot menu, watchdog, RNG and memory balloon of an existing VM, on libvirt's
//! test driver: written into the definition (which libvirt's schema accepts), read back,
//! set from the VM page and the API, refused at the field when bad, saying when a running
//! VM gets them, audited, refused to viewers.

use crate::common;

use common::api::Api;
use common::validates_domain as validates;
use common::{csrf_in, location, spawn_app};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn first_in_state(api: &Api, state: &str) -> String {
    let (_, list) = api.get("/api/v1/vms").await;
    list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["state"] == state)
        .map(|v| v["name"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("a {state} VM on the demo host: {list}"))
}

#[tokio::test]
async fn boot_order_and_devices_are_written_into_the_definition() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let vm = first_in_state(&api, "shut_off").await;
    let (_, before) = api.get(&format!("/api/v1/vms/{vm}")).await;
    assert_eq!(before["devices"]["has_serial"], true, "{before}");
    let (s, v) = api
        .patch(
            &format!("/api/v1/vms/{vm}"),
            json!({"boot": ["cdrom", "hd"], "boot_menu": true, "watchdog": true, "rng": true, "balloon": false, "serial_log": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["devices"]["serial_log"],
        format!("/var/log/libvirt/qemu/{vm}-serial.log")
    );
    assert_eq!(v["devices"]["boot_devs"], json!(["cdrom", "hd"]));
    let xml = v["xml"].as_str().unwrap();
    for part in [
        "i6300esb",
        "<rng model",
        "/dev/urandom",
        "model='none'",
        "<bootmenu enable='yes'",
    ] {
        assert!(xml.contains(part), "{part} in {xml}");
    }
    validates(xml);
    // The disks and NICs are as they were.
    let (_, again) = api.get(&format!("/api/v1/vms/{vm}")).await;
    assert_eq!(again["disks"], v["disks"]);
    assert_eq!(again["macs"], v["macs"]);

    // Back off; only what is sent changes.
    let (_, v) = api
        .patch(
            &format!("/api/v1/vms/{vm}"),
            json!({"watchdog": false, "rng": false, "serial_log": false}),
        )
        .await;
    assert_eq!(v["devices"]["serial_log"], Value::Null, "{v}");
    let xml = v["xml"].as_str().unwrap();
    assert!(!xml.contains("watchdog") && !xml.contains("<rng"), "{xml}");
    assert!(xml.contains("model='none'"), "the balloon stays off: {xml}");
    assert_eq!(v["devices"]["boot_devs"], json!(["cdrom", "hd"]));
    validates(xml);

    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let audit = app.audit_text(&session).await;
    assert!(audit.contains("vm.devices"), "{audit}");
}

#[tokio::test]
async fn bad_boot_orders_are_refused_at_the_field() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let vm = first_in_state(&api, "shut_off").await;
    let url = format!("/api/v1/vms/{vm}");
    let (_, before) = api.get(&url).await;
    for body in [json!({"boot": []}), json!({"boot": ["hd", "cdrom", "hd"]})] {
        let (s, e) = api.patch(&url, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body} {e}");
        assert_eq!(e["error"]["field"], "boot", "{e}");
    }
    let (s, e) = api.patch(&url, json!({"boot": ["floppy"]})).await;
    assert!(s.is_client_error(), "{s} {e}");
    let (_, after) = api.get(&url).await;
    assert_eq!(after["xml"], before["xml"], "nothing changed");

    // The page form: no device at all, said at the boot order.
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let csrf = app.csrf(&session, &format!("/vms/{vm}")).await;
    let r = session
        .post(app.url(&format!("/vms/{vm}/devices")))
        .form(&[
            ("csrf", csrf.as_str()),
            ("boot1", ""),
            ("boot2", ""),
            ("boot3", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(
        page.contains(r#"data-field="boot">Choose at least one device to boot from."#),
        "{page}"
    );
}

#[tokio::test]
async fn the_vm_page_sets_them_and_says_a_running_vm_gets_them_at_its_next_start() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let vm = first_in_state(&api, "running").await;
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = app.get_text(&session, &format!("/vms/{vm}")).await;
    assert!(page.contains(r#"id="devices-form""#), "{page}");
    let csrf = csrf_in(&page);
    let r = session
        .post(app.url(&format!("/vms/{vm}/devices")))
        .form(&[
            ("csrf", csrf.as_str()),
            ("boot1", "network"),
            ("boot2", "hd"),
            ("boot3", ""),
            ("watchdog", "1"),
            ("balloon", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), format!("/vms/{vm}"));
    let page = app.get_text(&session, &format!("/vms/{vm}")).await;
    assert!(
        page.contains("apply from the VM&#39;s next start")
            || page.contains("apply from the VM's next start"),
        "{page}"
    );
    assert!(
        page.contains(r#"<dd id="boot-order">network → hd</dd>"#),
        "{page}"
    );
    assert!(page.contains(r#"<dd id="watchdog-state">on"#), "{page}");
    let (_, v): (StatusCode, Value) = api.get(&format!("/api/v1/vms/{vm}")).await;
    validates(v["xml"].as_str().unwrap());
}

#[tokio::test]
async fn viewers_cannot_change_devices() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let (viewer, token) = app.viewer(&admin).await;
    let r = reqwest::Client::new()
        .patch(app.url("/api/v1/vms/web01"))
        .bearer_auth(&token)
        .json(&json!({"watchdog": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = app.get_text(&viewer, "/vms/web01").await;
    assert!(!page.contains("devices-form"));
}

#[tokio::test]
async fn a_cdrom_takes_iso_images_only_and_ejects() {
    const ISO: &str = "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso";
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let (s, made) = api
        .post(
            "/api/v1/vms",
            json!({
                "name": "app01",
                "units": 1,
                "disk": {"type": "new", "pool": "default", "size_gib": 2},
                "install": {"type": "cdrom", "volume": ISO},
                "nic": {"bridge": "br0"},
                "start": true,
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let cdrom = |v: &Value| -> Value {
        v["devices"]["disks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device"] == "cdrom")
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (_, v) = api.get("/api/v1/vms/app01").await;
    assert_eq!(cdrom(&v)["source"], ISO, "{v}");
    let target = cdrom(&v)["target"].as_str().unwrap().to_string();

    // Eject, live (the VM runs) and in the definition.
    let (s, c) = api
        .put("/api/v1/vms/app01/cdrom", json!({"iso": null}))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c, json!({"target": target, "iso": null}));
    let (_, v) = api.get("/api/v1/vms/app01").await;
    assert_eq!(cdrom(&v)["source"], Value::Null, "{v}");
    validates(v["xml"].as_str().unwrap());

    // Only ISO volumes of a pool.
    let disk = v["disks"][0].as_str().unwrap().to_string();
    for (iso, why) in [
        (disk.as_str(), "Only ISO images"),
        ("/nowhere/x.iso", "Choose an ISO volume"),
    ] {
        let (s, e) = api
            .put("/api/v1/vms/app01/cdrom", json!({"iso": iso}))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(e["error"]["field"], "iso");
        assert!(e["error"]["message"].as_str().unwrap().contains(why), "{e}");
    }
    let (s, e) = api
        .put(
            "/api/v1/vms/app01/cdrom",
            json!({"iso": ISO, "target": "zz9"}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("target")),
        "{e}"
    );

    // Back in, from the page's form.
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = app.get_text(&session, "/vms/app01").await;
    assert!(
        page.contains(&format!(r#"data-drive="{target}""#)),
        "{page}"
    );
    assert!(
        page.contains(&format!(r#"<option value="{ISO}">"#)),
        "{page}"
    );
    let csrf = csrf_in(&page);
    let r = session
        .post(app.url("/vms/app01/cdrom"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("target", target.as_str()),
            ("iso", ISO),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = app.get_text(&session, "/vms/app01").await;
    assert!(
        page.contains(&format!("{target} now holds {ISO}.")),
        "{page}"
    );
    let (_, v) = api.get("/api/v1/vms/app01").await;
    assert_eq!(cdrom(&v)["source"], ISO);

    // A VM without a drive: said, nothing changed.
    let (_, list) = api.get("/api/v1/vms").await;
    let mut without = None;
    for vm in list["vms"].as_array().unwrap() {
        let name = vm["name"].as_str().unwrap();
        let (_, d) = api.get(&format!("/api/v1/vms/{name}")).await;
        if cdrom(&d).is_null() {
            without = Some(name.to_string());
            break;
        }
    }
    let without = without.expect("a demo VM without a CD-ROM drive");
    let (s, e) = api
        .put(&format!("/api/v1/vms/{without}/cdrom"), json!({"iso": ISO}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no CD-ROM drive"),
        "{e}"
    );
    let audit = app.audit_text(&session).await;
    assert!(audit.contains("vm.cdrom"), "{audit}");
}

#[tokio::test]
async fn a_disk_grows_never_shrinks_and_refusals_change_nothing() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let (s, made) = api
        .post(
            "/api/v1/vms",
            json!({
                "name": "app02",
                "units": 1,
                "disk": {"type": "new", "pool": "default", "size_gib": 2},
                "install": {"type": "import"},
                "nic": {"bridge": "br0"},
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let disk_path = made["disk_path"].as_str().unwrap().to_string();
    let capacity = |pools: &Value| -> u64 {
        pools["pools"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["volumes"].as_array().unwrap())
            .find(|v| v["path"] == disk_path.as_str())
            .and_then(|v| v["capacity_bytes"].as_u64())
            .unwrap()
    };
    const GIB: u64 = 1024 * 1024 * 1024;
    assert_eq!(capacity(&api.get("/api/v1/pools").await.1), 2 * GIB);

    // libvirt's test driver cannot resize volumes (tests/real/devices_real.rs grows disks
    // on the real libvirtd): its refusal is said, and the disk keeps its size.
    let (s, e) = api
        .patch("/api/v1/vms/app02/disks/vda", json!({"size_gib": 3}))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keeps its 2 GiB"),
        "{e}"
    );
    assert_eq!(capacity(&api.get("/api/v1/pools").await.1), 2 * GIB);

    for (body, target, field) in [
        (json!({"size_gib": 2}), "vda", "size_gib"),
        (json!({"size_gib": 1}), "vda", "size_gib"),
        (json!({"size_gib": 9}), "vdz", "target"),
    ] {
        let (s, e) = api
            .patch(&format!("/api/v1/vms/app02/disks/{target}"), body)
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(e["error"]["field"], field, "{e}");
    }
    let (s, e) = api
        .patch("/api/v1/vms/app02/disks/vda", json!({"size_gib": 60000}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(
        capacity(&api.get("/api/v1/pools").await.1),
        2 * GIB,
        "unchanged"
    );

    // A running VM: libvirt's own block resize. The test driver has none, and says so;
    // the disk keeps its size.
    let (s, v) = api.post("/api/v1/vms/app02/start", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, e) = api
        .patch("/api/v1/vms/app02/disks/vda", json!({"size_gib": 4}))
        .await;
    assert!(s.is_server_error(), "{s} {e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keeps its 2 GiB"),
        "{e}"
    );
    assert_eq!(capacity(&api.get("/api/v1/pools").await.1), 2 * GIB);

    // The page form: the message at the field.
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let csrf = app.csrf(&session, "/vms/app02").await;
    let r = session
        .post(app.url("/vms/app02/grow-disk"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("target", "vda"),
            ("size_gib", "lots"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"data-field="size_gib""#), "{page}");
    let audit = app.audit_text(&session).await;
    assert!(audit.contains("vm.disk.grow"), "{audit}");
}
