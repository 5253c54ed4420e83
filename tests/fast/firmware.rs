//! Firmware (BIOS, UEFI, UEFI + Secure Boot), an emulated TPM and the CPU model of a new
//! VM on libvirt's test driver (the demo host simulates a host with OVMF and swtpm): asked
//! through the API and the New VM form, shown on the VM page and in the API, refused at
//! the field when the host has no such CPU model; snapshots of a UEFI VM are refused with
//! the reason before libvirt is asked.

use crate::common;

use common::api::Api;
use common::spawn_app;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ISO: &str = "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso";

fn vm(name: &str) -> Value {
    json!({
        "name": name,
        "flavor": "small",
        "disk": {"type": "new", "pool": "default", "size_gib": 2},
        "install": {"type": "cdrom", "volume": ISO},
        "nic": {"bridge": "br0"},
        "firmware": "uefi_secure_boot",
        "tpm": true,
        "cpu": "Nehalem"
    })
}

#[tokio::test]
async fn a_uefi_secure_boot_vm_with_a_tpm_and_a_named_cpu() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let (_, host) = api.get("/api/v1/host").await;
    assert_eq!(host["guest"]["secure_boot"], true, "{host}");
    assert!(host["guest"]["cpu_models"]
        .as_array()
        .unwrap()
        .contains(&json!("Nehalem")));

    let (s, created) = api.post("/api/v1/vms", vm("sb01")).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let (_, detail) = api.get("/api/v1/vms/sb01").await;
    let def = &detail["devices"];
    assert_eq!(def["firmware"], "uefi", "{detail}");
    assert_eq!(def["secure_boot"], true);
    assert_eq!(def["tpm"], "tpm-crb 2.0");
    assert_eq!(def["cpu"], "Nehalem");
    assert!(def["machine"].as_str().unwrap().contains("q35"), "{def}");
    // The installer ISO is on virtio-scsi: q35 has no IDE.
    let cdrom = def["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == "cdrom")
        .unwrap();
    assert_eq!(cdrom["bus"], "scsi", "{def}");

    let (admin, _) = app.login("admin", common::ADMIN_PASSWORD).await;
    let page = admin
        .get(app.url("/vms/sb01"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<dd id=\"vm-firmware\">UEFI, Secure Boot on</dd>"),
        "{page}"
    );
    assert!(page.contains("<dd id=\"vm-tpm\">emulated (tpm-crb 2.0)</dd>"));
    assert!(page.contains("<dd id=\"vm-cpu\">Nehalem</dd>"));

    // A UEFI VM's snapshot is refused with the reason, before libvirt is asked.
    let (s, e) = api
        .post("/api/v1/vms/sb01/snapshots", json!({"name": "before"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("boots with UEFI firmware"),
        "{e}"
    );
    let (_, snaps) = api.get("/api/v1/vms/sb01/snapshots").await;
    assert_eq!(
        snaps["snapshots"].as_array().map(Vec::len),
        Some(0),
        "{snaps}"
    );

    // A BIOS VM keeps the pc machine, IDE CD-ROM, no TPM, the hypervisor's CPU.
    let mut plain = vm("bios01");
    for k in ["firmware", "tpm", "cpu"] {
        plain.as_object_mut().unwrap().remove(k);
    }
    let (s, created) = api.post("/api/v1/vms", plain).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let (_, detail) = api.get("/api/v1/vms/bios01").await;
    let def = &detail["devices"];
    assert_eq!(def["firmware"], "bios");
    assert_eq!(def["tpm"], Value::Null);
    assert_eq!(def["cpu"], Value::Null);
}

#[tokio::test]
async fn unknown_firmware_and_cpu_models_are_refused_at_their_field() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let before = api.fingerprint().await;
    let mut v = vm("badcpu");
    v["cpu"] = json!("Skylake-Imaginary");
    let (s, e) = api.post("/api/v1/vms", v).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let errors = e["error"]["errors"].as_array().unwrap();
    let cpu = errors
        .iter()
        .find(|x| x["field"] == "cpu")
        .expect("cpu error");
    assert!(
        cpu["message"]
            .as_str()
            .unwrap()
            .contains("not a CPU model this host can give"),
        "{e}"
    );
    let mut v = vm("badfw");
    v["firmware"] = json!("coreboot");
    let (s, _) = api.post("/api/v1/vms", v).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(api.fingerprint().await, before, "nothing was made");

    // The form: the choices are offered, a bad firmware value is shown at its field.
    let (admin, _) = app.login("admin", common::ADMIN_PASSWORD).await;
    let page = admin
        .get(app.url("/vms/new"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<option value=\"uefi_secure_boot\">UEFI + Secure Boot</option>"));
    assert!(page.contains("<option value=\"Nehalem\">Nehalem</option>"));
    let csrf = common::csrf_in(&page);
    let form = |name: &str, firmware: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("name", name.to_string()),
            ("size_mode", "flavor".into()),
            ("flavor", "small".into()),
            ("disk_mode", "new".into()),
            ("pool", "default".into()),
            ("install", "cdrom".into()),
            ("iso", ISO.into()),
            ("nic_mode", "none".into()),
            ("clock", "utc".into()),
            ("firmware", firmware.into()),
            ("tpm", "1".into()),
            ("cpu", "host-model".into()),
            ("then", "define".into()),
        ]
    };
    let r = admin
        .post(app.url("/vms"))
        .form(&form("formfw", "coreboot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("Choose BIOS, UEFI or UEFI + Secure Boot."),
        "{body}"
    );
    let r = admin
        .post(app.url("/vms"))
        .form(&form("formfw", "uefi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, detail) = api.get("/api/v1/vms/formfw").await;
    let def = &detail["devices"];
    assert_eq!(def["firmware"], "uefi", "{detail}");
    assert_eq!(def["secure_boot"], false);
    assert_eq!(def["tpm"], "tpm-crb 2.0");
    assert_eq!(def["cpu"], "host-model");
}

#[tokio::test]
async fn the_cpu_of_an_existing_vm_changes_from_its_next_start() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let (s, v) = api
        .patch("/api/v1/vms/web01", json!({"cpu": "Westmere"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, detail) = api.get("/api/v1/vms/web01").await;
    assert_eq!(detail["devices"]["cpu"], "Westmere", "{detail}");
    let xml = detail["xml"].as_str().unwrap();
    assert_eq!(xml.matches("<cpu").count(), 1, "{xml}");

    // A model the host does not have is refused at the field; nothing changes.
    let (s, e) = api
        .patch("/api/v1/vms/web01", json!({"cpu": "Imaginary-CPU"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], "cpu", "{e}");
    let (_, detail) = api.get("/api/v1/vms/web01").await;
    assert_eq!(detail["devices"]["cpu"], "Westmere");

    // The VM page's devices form shows it and changes it back to host-model.
    let (admin, _) = app.login("admin", common::ADMIN_PASSWORD).await;
    let page = admin
        .get(app.url("/vms/web01"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<input name=\"cpu\" value=\"Westmere\""),
        "{page}"
    );
    let csrf = common::csrf_in(&page);
    let r = admin
        .post(app.url("/vms/web01/devices"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("boot1", "hd"),
            ("cpu", "host-model"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, detail) = api.get("/api/v1/vms/web01").await;
    assert_eq!(detail["devices"]["cpu"], "host-model", "{detail}");
}

#[tokio::test]
async fn the_resize_form_changes_the_cpu_with_the_size_and_checks_it_first() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let (_, before) = api.get("/api/v1/vms/win2019-ad").await;
    let (admin, _) = app.login("admin", common::ADMIN_PASSWORD).await;
    let page = admin
        .get(app.url("/vms/win2019-ad"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = &page[page.find("id=\"resize-form\"").expect("a resize form")..];
    assert!(form.contains("name=\"cpu\""), "{form}");
    let csrf = common::csrf_in(&page);

    // A CPU this host does not have: refused at its field before the size changes.
    let r = admin
        .post(app.url("/vms/win2019-ad/resize"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("units", "2"),
            ("cpu", "Imaginary-CPU"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(body.contains("data-field=\"cpu\""), "error at the field");
    assert!(
        body.contains("value=\"Imaginary-CPU\""),
        "what was typed is kept"
    );
    let (_, after) = api.get("/api/v1/vms/win2019-ad").await;
    assert_eq!(
        (after["units"].clone(), after["devices"]["cpu"].clone()),
        (before["units"].clone(), before["devices"]["cpu"].clone()),
        "nothing changed"
    );

    // Size and CPU together.
    let r = admin
        .post(app.url("/vms/win2019-ad/resize"))
        .form(&[("csrf", csrf.as_str()), ("units", "2"), ("cpu", "Westmere")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, after) = api.get("/api/v1/vms/win2019-ad").await;
    assert_eq!(
        (after["units"].clone(), after["devices"]["cpu"].clone()),
        (json!(2), json!("Westmere")),
        "{after}"
    );
    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("CPU Westmere"), "{audit}");
}

#[tokio::test]
async fn a_patch_whose_size_or_cpu_is_refused_changes_nothing() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let (_, before) = api.get("/api/v1/vms/win2019-ad").await;
    for (body, status, field) in [
        (
            json!({"units": 40, "cpu": "Westmere", "notes": "x"}),
            StatusCode::CONFLICT,
            None,
        ),
        (
            json!({"units": 2, "cpu": "Imaginary-CPU", "watchdog": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("cpu"),
        ),
    ] {
        let (s, e) = api.patch("/api/v1/vms/win2019-ad", body.clone()).await;
        assert_eq!(s, status, "{body}: {e}");
        if let Some(f) = field {
            assert_eq!(e["error"]["field"], f, "{e}");
        }
        let (_, after) = api.get("/api/v1/vms/win2019-ad").await;
        for k in ["units", "vcpus", "memory_mib", "notes"] {
            assert_eq!(after[k], before[k], "{body}: {k} changed");
        }
        assert_eq!(
            after["devices"], before["devices"],
            "{body}: devices changed"
        );
    }
    // Both at once, accepted.
    let (s, v) = api
        .patch(
            "/api/v1/vms/win2019-ad",
            json!({"units": 2, "cpu": "Westmere"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["units"].clone(), v["devices"]["cpu"].clone()),
        (json!(2), json!("Westmere")),
        "{v}"
    );
}
