//! Disks and NICs added to and taken out of existing VMs, on libvirt's test driver: the
//! API and the VM page's forms, each refusal at its field with nothing changed, units
//! raised and admitted, no orphan volume when libvirt refuses, definitions libvirt's
//! schema accepts, audited, refused to viewers. (tests/real/devices_real.rs plugs them
//! into a real running guest.)

use crate::common;

use common::api::Api;
use common::faults::{FailAt, Step};
use common::validates_domain as validates;
use common::{csrf_in, spawn_app, spawn_app_wrapped};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;

fn disks(vm: &Value) -> Vec<(String, String)> {
    vm["devices"]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["target"].as_str().unwrap().to_string(),
                d["source"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn macs(vm: &Value) -> Vec<String> {
    vm["devices"]["nics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["mac"].as_str().unwrap().to_string())
        .collect()
}

async fn volume_paths(api: &Api) -> Vec<String> {
    let (_, pools) = api.get("/api/v1/pools").await;
    let mut out: Vec<String> = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["volumes"].as_array().unwrap())
        .map(|v| v["path"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

async fn make_vm(api: &Api, name: &str, start: bool) {
    let (s, made) = api
        .post(
            "/api/v1/vms",
            json!({
                "name": name,
                "units": 1,
                "disk": {"type": "new", "pool": "default", "size_gib": 2},
                "install": {"type": "import"},
                "nic": {"network": "default"},
                "start": start,
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
}

#[tokio::test]
async fn a_disk_is_added_taken_out_and_added_back_as_a_free_volume() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    make_vm(&api, "app10", false).await;
    let before = volume_paths(&api).await;

    let (s, d) = api
        .post(
            "/api/v1/vms/app10/disks",
            json!({"pool": "default", "size_gib": 3, "bus": "virtio", "cache": "none"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["target"], "vdb", "{d}");
    assert_eq!(
        (d["new_volume"].clone(), d["live"].clone()),
        (json!(true), json!(false))
    );
    let path = d["path"].as_str().unwrap().to_string();
    assert!(path.ends_with("app10-vdb.qcow2"), "{path}");
    assert!(volume_paths(&api).await.contains(&path));
    let (_, vm) = api.get("/api/v1/vms/app10").await;
    assert!(disks(&vm).contains(&("vdb".into(), path.clone())), "{vm}");
    let xml = vm["xml"].as_str().unwrap();
    assert!(xml.contains("cache='none'"), "{xml}");
    validates(xml);

    // Taken out: gone from the definition, the volume stays.
    let (s, t) = api.delete("/api/v1/vms/app10/disks/vdb").await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["pending_in_guest"], false);
    let (_, vm) = api.get("/api/v1/vms/app10").await;
    assert!(!disks(&vm).iter().any(|(t, _)| t == "vdb"), "{vm}");
    assert!(volume_paths(&api).await.contains(&path));

    // Back as a volume no VM uses, on SCSI (a controller comes with it).
    let (s, d) = api
        .post(
            "/api/v1/vms/app10/disks",
            json!({"volume": path, "bus": "scsi"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(
        (d["target"].clone(), d["new_volume"].clone()),
        (json!("sda"), json!(false))
    );
    let (_, vm) = api.get("/api/v1/vms/app10").await;
    let xml = vm["xml"].as_str().unwrap();
    assert!(xml.contains("virtio-scsi"), "{xml}");
    assert!(disks(&vm).contains(&("sda".into(), path.clone())), "{vm}");
    validates(xml);
    // One new volume, no other.
    let mut after = before.clone();
    after.push(path.clone());
    after.sort();
    assert_eq!(volume_paths(&api).await, after);

    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let audit = app.audit_text(&session).await;
    for action in ["vm.disk.add", "vm.disk.detach"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
}

#[tokio::test]
async fn bad_disks_are_refused_at_their_field_and_change_nothing() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    make_vm(&api, "app11", true).await;
    let before = volume_paths(&api).await;
    let (_, vm_before) = api.get("/api/v1/vms/app11").await;
    let web01_disk = "/var/lib/libvirt/images/web01.qcow2";
    for (body, field) in [
        (json!({"pool": "default"}), "size_gib"),
        (json!({"pool": "default", "size_gib": 0}), "size_gib"),
        (json!({"pool": "nope", "size_gib": 1}), "pool"),
        (json!({}), "pool"),
        (
            json!({"pool": "default", "size_gib": 1, "volume": web01_disk}),
            "volume",
        ),
        (json!({"volume": web01_disk}), "volume"),
        (
            json!({"volume": "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso"}),
            "volume",
        ),
        (
            json!({"pool": "vg_vms", "size_gib": 1, "format": "qcow2"}),
            "format",
        ),
        // The VM runs: SATA cannot be plugged in.
        (
            json!({"pool": "default", "size_gib": 1, "bus": "sata"}),
            "bus",
        ),
    ] {
        let (s, e) = api.post("/api/v1/vms/app11/disks", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    // Unknown fields and buses are the body's error.
    let (s, _) = api
        .post(
            "/api/v1/vms/app11/disks",
            json!({"pool": "default", "size_gib": 1, "bus": "ide"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // More than the free units: the pool is big, the units are not.
    let (s, e) = api
        .post(
            "/api/v1/vms/app11/disks",
            json!({"pool": "default", "size_gib": 400}),
        )
        .await;
    assert!(
        s == StatusCode::CONFLICT || s == StatusCode::UNPROCESSABLE_ENTITY,
        "{s} {e}"
    );
    let (s, e) = api
        .post(
            "/api/v1/vms/nobody/disks",
            json!({"pool": "default", "size_gib": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(volume_paths(&api).await, before);
    let (_, vm_after) = api.get("/api/v1/vms/app11").await;
    assert_eq!(vm_after["xml"], vm_before["xml"]);
}

#[tokio::test]
async fn a_running_vm_gets_its_disk_live_and_says_what_it_cannot_take_out() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    make_vm(&api, "app12", true).await;
    let (s, d) = api
        .post(
            "/api/v1/vms/app12/disks",
            json!({"pool": "default", "size_gib": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["live"], true);
    let (_, vm) = api.get("/api/v1/vms/app12").await;
    assert!(disks(&vm).iter().any(|(t, _)| t == "vdb"), "{vm}");
    validates(vm["xml"].as_str().unwrap());
    // libvirt's test driver cannot unplug from a running VM: said, nothing changed.
    let (s, e) = api.delete("/api/v1/vms/app12/disks/vdb").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Nothing was changed"),
        "{e}"
    );
    let (_, vm) = api.get("/api/v1/vms/app12").await;
    assert!(disks(&vm).iter().any(|(t, _)| t == "vdb"), "{vm}");
    // A disk that is not there is said at its field.
    let (s, e) = api.delete("/api/v1/vms/app12/disks/vdz").await;
    assert_eq!(
        (s, e["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("target"))
    );
}

#[tokio::test]
async fn a_disk_libvirt_refuses_leaves_no_volume_and_no_change() {
    let app = spawn_app_wrapped(
        |_| {},
        Some(Box::new(|inner| {
            Arc::new(FailAt::new(inner, Step::AttachDevice))
        })),
    )
    .await;
    let api = Api::new(&app).await;
    make_vm(&api, "app13", true).await;
    let before = volume_paths(&api).await;
    let (_, vm_before) = api.get("/api/v1/vms/app13").await;
    let free_before = api.free_units().await;
    let (s, e) = api
        .post(
            "/api/v1/vms/app13/disks",
            json!({"pool": "default", "size_gib": 2}),
        )
        .await;
    assert!(s.is_server_error(), "{s} {e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Nothing was changed"),
        "{e}"
    );
    assert_eq!(volume_paths(&api).await, before, "no orphan volume");
    let (_, vm_after) = api.get("/api/v1/vms/app13").await;
    assert_eq!(
        vm_after["xml"], vm_before["xml"],
        "the definition is as it was"
    );
    assert_eq!(api.free_units().await, free_before, "no units leaked");
    // NICs too.
    let (s, e) = api
        .post("/api/v1/vms/app13/nics", json!({"network": "default"}))
        .await;
    assert!(s.is_server_error(), "{s} {e}");
    let (_, vm_after) = api.get("/api/v1/vms/app13").await;
    assert_eq!(vm_after["xml"], vm_before["xml"]);
}

#[tokio::test]
async fn nics_are_added_with_unique_macs_their_link_set_and_taken_out() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    make_vm(&api, "app14", false).await;
    let (_, vm) = api.get("/api/v1/vms/app14").await;
    let first = macs(&vm)[0].clone();

    let (s, n) = api
        .post(
            "/api/v1/vms/app14/nics",
            json!({"bridge": "br0", "model": "e1000"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    let mac = n["mac"].as_str().unwrap().to_string();
    assert!(mac.starts_with("52:54:00:") && mac != first, "{n}");
    assert_eq!(
        (n["kind"].clone(), n["source"].clone(), n["model"].clone()),
        (json!("bridge"), json!("br0"), json!("e1000"))
    );
    let (_, vm) = api.get("/api/v1/vms/app14").await;
    assert_eq!(macs(&vm), [first.clone(), mac.clone()]);
    validates(vm["xml"].as_str().unwrap());

    // A MAC in use (here, by this VM) or malformed, a network that is not there: refused.
    for (body, field) in [
        (json!({"network": "default", "mac": first}), "mac"),
        (
            json!({"network": "default", "mac": "52:54:00:zz:00:01"}),
            "mac",
        ),
        (json!({"network": "nowhere"}), "network"),
        (json!({"bridge": "br9"}), "bridge"),
        (json!({}), "network"),
    ] {
        let (s, e) = api.post("/api/v1/vms/app14/nics", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }

    // The cable pulled, then plugged in; the MAC in any case.
    let (s, c) = api
        .patch(
            &format!("/api/v1/vms/app14/nics/{}", mac.to_uppercase()),
            json!({"link_up": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let (_, vm) = api.get("/api/v1/vms/app14").await;
    assert_eq!(vm["devices"]["nics"][1]["link_down"], true, "{vm}");
    assert_eq!(vm["devices"]["nics"][0]["link_down"], false, "{vm}");
    validates(vm["xml"].as_str().unwrap());
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = app.get_text(&session, "/vms/app14").await;
    assert!(page.contains("link down"), "{page}");
    assert!(
        page.contains(&format!("/vms/app14/nics/{mac}/link-up")),
        "{page}"
    );
    let csrf = csrf_in(&page);
    let r = session
        .post(app.url(&format!("/vms/app14/nics/{mac}/link-up")))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, vm) = api.get("/api/v1/vms/app14").await;
    assert_eq!(vm["devices"]["nics"][1]["link_down"], false, "{vm}");

    // Taken out from the page.
    let r = session
        .post(app.url(&format!("/vms/app14/nics/{mac}/remove")))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = app.get_text(&session, "/vms/app14").await;
    assert!(
        page.contains(&format!("The card {mac} is taken out.")),
        "{page}"
    );
    let (_, vm) = api.get("/api/v1/vms/app14").await;
    assert_eq!(macs(&vm), [first.as_str()]);
    let (s, e) = api.delete(&format!("/api/v1/vms/app14/nics/{mac}")).await;
    assert_eq!(
        (s, e["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("mac"))
    );

    // A running VM gets a NIC live on a bridge. libvirt's test driver cannot plug one
    // into a libvirt network: its reason is said, and the definition keeps no NIC.
    let (s, v) = api.post("/api/v1/vms/app14/start", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, n) = api
        .post("/api/v1/vms/app14/nics", json!({"bridge": "br0"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    assert_eq!(n["live"], true);
    let (_, vm) = api.get("/api/v1/vms/app14").await;
    assert_eq!(macs(&vm).len(), 2, "{vm}");
    let (s, e) = api
        .post("/api/v1/vms/app14/nics", json!({"network": "default"}))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("hotplug"),
        "{e}"
    );
    let (_, after) = api.get("/api/v1/vms/app14").await;
    assert_eq!(after["xml"], vm["xml"], "nothing persistent either");
    let audit = app.audit_text(&session).await;
    for action in ["vm.nic.add", "vm.nic.link", "vm.nic.remove"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
}

#[tokio::test]
async fn the_vm_page_adds_a_disk_and_a_nic_and_shows_refusals_at_the_field() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    make_vm(&api, "app15", false).await;
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = app.get_text(&session, "/vms/app15").await;
    assert!(page.contains(r#"id="add-disk-form""#), "{page}");
    assert!(
        page.contains(r#"<option value="network:default""#),
        "{page}"
    );
    let csrf = csrf_in(&page);

    let r = session
        .post(app.url("/vms/app15/disks"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("source", "new"),
            ("pool", "default"),
            ("size_gib", "lots"),
            ("bus", "virtio"),
            ("cache", "default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"data-field="size_gib""#), "{page}");
    assert!(
        page.contains(r#"value="lots""#),
        "what was typed stays: {page}"
    );

    let r = session
        .post(app.url("/vms/app15/disks"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("source", "new"),
            ("pool", "default"),
            ("size_gib", "1"),
            ("bus", "sata"),
            ("cache", "writeback"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = app.get_text(&session, "/vms/app15").await;
    assert!(page.contains("Disk sda (1 GiB) is added"), "{page}");
    assert!(page.contains(r#"data-disk="sda""#), "{page}");

    let r = session
        .post(app.url("/vms/app15/nics"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("attach_to", "network:default"),
            ("model", "virtio"),
            ("mac", "52:54:00:12:34:56"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = app.get_text(&session, "/vms/app15").await;
    assert!(page.contains(r#"data-nic="52:54:00:12:34:56""#), "{page}");

    // The same MAC again: at the field, with what was typed.
    let r = session
        .post(app.url("/vms/app15/nics"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("attach_to", "network:default"),
            ("mac", "52:54:00:12:34:56"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"data-field="mac""#), "{page}");

    // Taken out from the page.
    let r = session
        .post(app.url("/vms/app15/disks/sda/detach"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = app.get_text(&session, "/vms/app15").await;
    assert!(page.contains("Disk sda is taken out."), "{page}");
}

#[tokio::test]
async fn viewers_cannot_add_or_take_out_devices() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let (viewer, token) = app.viewer(&admin).await;
    let client = reqwest::Client::new();
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/vms/web01/disks",
            json!({"pool": "default", "size_gib": 1}),
        ),
        ("DELETE", "/api/v1/vms/web01/disks/vda", json!(null)),
        (
            "POST",
            "/api/v1/vms/web01/nics",
            json!({"network": "default"}),
        ),
        (
            "PATCH",
            "/api/v1/vms/web01/nics/52:54:00:00:00:01",
            json!({"link_up": false}),
        ),
        (
            "DELETE",
            "/api/v1/vms/web01/nics/52:54:00:00:00:01",
            json!(null),
        ),
    ] {
        let mut r = client
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&token);
        if !body.is_null() {
            r = r.json(&body);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }
    let page = app.get_text(&viewer, "/vms/web01").await;
    assert!(
        !page.contains("add-disk-form") && !page.contains("Take out"),
        "{page}"
    );
}

fn device<'a>(devices: &'a Value, name: &str) -> &'a Value {
    devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {devices}"))
}

#[tokio::test]
async fn admins_pass_host_devices_through_within_the_iommu_rules() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let (s, devices) = api.get("/api/v1/host/devices").await;
    assert_eq!(s, StatusCode::OK, "{devices}");
    assert_eq!(devices["iommu"], true, "{devices}");
    assert_eq!(devices["devices"].as_array().unwrap().len(), 6, "{devices}");
    let nic = device(&devices, "pci_0000_03_00_0");
    assert_eq!(
        (nic["address"].clone(), nic["iommu_group"].clone()),
        (json!("0000:03:00.0"), json!(12))
    );
    assert_eq!(nic["refusal"], Value::Null, "{nic}");
    let bridge = device(&devices, "pci_0000_00_01_0");
    assert!(
        bridge["refusal"].as_str().unwrap().contains("bridge"),
        "{bridge}"
    );
    assert_eq!(device(&devices, "usb_1_2")["address"], "usb 04e6:3437");

    // The NIC to the running web01, live and in its definition.
    let (s, h) = api
        .post(
            "/api/v1/vms/web01/hostdevs",
            json!({"device": "pci_0000_03_00_0"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{h}");
    assert_eq!(
        (h["address"].clone(), h["live"].clone()),
        (json!("0000:03:00.0"), json!(true))
    );
    let (_, vm) = api.get("/api/v1/vms/web01").await;
    assert_eq!(
        vm["devices"]["hostdevs"],
        json!([{"kind": "pci", "address": "0000:03:00.0"}])
    );
    let xml = vm["xml"].as_str().unwrap();
    assert!(xml.contains("managed='yes'"), "{xml}");
    validates(xml);
    let (_, devices) = api.get("/api/v1/host/devices").await;
    assert_eq!(device(&devices, "pci_0000_03_00_0")["used_by"], "web01");

    // Not twice, not a bridge, not a device that is not there: at the field.
    for (body, why) in [
        (json!({"device": "pci_0000_03_00_0"}), "web01"),
        (json!({"device": "pci_0000_00_00_0"}), "bridge"),
        (json!({"device": "pci_0000_99_00_0"}), "Choose one"),
    ] {
        let (s, e) = api.post("/api/v1/vms/db01/hostdevs", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["error"]["field"], "device");
        assert!(e["error"]["message"].as_str().unwrap().contains(why), "{e}");
    }
    // The GPU's group goes to one VM: its audio function to the same VM, not another.
    let (_, list) = api.get("/api/v1/vms").await;
    let off = list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["state"] == "shut_off")
        .map(|v| v["name"].as_str().unwrap().to_string())
        .expect("a shut-off demo VM");
    let (s, h) = api
        .post(
            &format!("/api/v1/vms/{off}/hostdevs"),
            json!({"device": "pci_0000_01_00_0"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{h}");
    assert_eq!(h["live"], false);
    let (s, e) = api
        .post(
            "/api/v1/vms/db01/hostdevs",
            json!({"device": "pci_0000_01_00_1"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, h) = api
        .post(
            &format!("/api/v1/vms/{off}/hostdevs"),
            json!({"device": "pci_0000_01_00_1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{h}");

    // Given back from the stopped VM's page; the running one's cannot be unplugged on
    // libvirt's test driver: said, nothing changed.
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = app.get_text(&session, &format!("/vms/{off}")).await;
    assert!(page.contains(r#"data-hostdev="0000:01:00.0""#), "{page}");
    let csrf = csrf_in(&page);
    let r = session
        .post(app.url(&format!("/vms/{off}/hostdevs/detach")))
        .form(&[("csrf", csrf.as_str()), ("address", "0000:01:00.1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = app.get_text(&session, &format!("/vms/{off}")).await;
    assert!(
        page.contains("0000:01:00.1 is given back to the host."),
        "{page}"
    );
    let (s, e) = api.delete("/api/v1/vms/web01/hostdevs/0000:03:00.0").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    let (_, vm) = api.get("/api/v1/vms/web01").await;
    assert_eq!(vm["devices"]["hostdevs"].as_array().unwrap().len(), 1);

    // A deleted VM gives its devices back.
    let (s, d) = api.delete(&format!("/api/v1/vms/{off}")).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let (_, devices) = api.get("/api/v1/host/devices").await;
    assert_eq!(device(&devices, "pci_0000_01_00_0")["used_by"], Value::Null);

    // The host page lists them.
    let page = app.get_text(&session, "/host/devices").await;
    assert!(
        page.contains(r#"data-device="usb_1_2""#) && page.contains("SCR3500"),
        "{page}"
    );
    let audit = app.audit_text(&session).await;
    for action in ["vm.hostdev.attach", "vm.hostdev.detach"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
}

#[tokio::test]
async fn operators_cannot_pass_host_devices_through() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, "otto", "operator", "operator-password-1")
        .await;
    let token = app.token_for(&admin, "otto").await;
    let operator = common::client();
    app.login_with(&operator, "otto", "operator-password-1")
        .await;
    let client = reqwest::Client::new();
    let r = client
        .post(app.url("/api/v1/vms/web01/hostdevs"))
        .bearer_auth(&token)
        .json(&json!({"device": "usb_1_2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client
        .get(app.url("/api/v1/host/devices"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = app.get_text(&operator, "/vms/web01").await;
    assert!(!page.contains("hostdev-form"), "{page}");
    assert!(
        page.contains("add-disk-form"),
        "operators add disks: {page}"
    );
}
