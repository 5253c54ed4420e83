//! VM lifecycle and capacity on libvirt's test driver (the demo host), over HTTP.

use crate::common;

use common::api::Api;
use common::faults::{FailAt, Step};
use common::{spawn_app, spawn_app_wrapped};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

const ISO: &str = "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso";

fn small_vm(name: &str) -> Value {
    json!({
        "name": name,
        "flavor": "small",
        "disk": {"type": "new", "pool": "default", "size_gib": 2},
        "install": {"type": "cdrom", "volume": ISO},
        "nic": {"bridge": "br0"},
        "start": true
    })
}

#[tokio::test]
async fn capacity_counts_unmanaged_vms_by_their_real_size() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let (s, host) = api.get("/api/v1/host").await;
    assert_eq!(s, StatusCode::OK);
    let cap = &host["capacity"];
    // 16 CPUs - 1 reserved, ×4 overcommit = 60 vCPUs; 64 GiB - 2 GiB = 63488 MiB; 12 units.
    assert_eq!(cap["usage"]["total"], 12);
    assert_eq!(cap["unit_size"]["vcpus"], 5);
    assert_eq!(cap["unit_size"]["memory_mib"], 5290);
    // Six demo VMs, each once: web01 1, db01 2, build-runner 1, win2019-ad 1, mail 1, monitoring 1.
    assert_eq!(cap["usage"]["used"], 7);
    assert_eq!(cap["usage"]["free"], 5);
    let claims = cap["claims"].as_array().unwrap();
    assert_eq!(claims.len(), 6);
    assert!(claims.iter().all(|c| c["managed"] == false));
    let db01 = claims.iter().find(|c| c["vm"] == "db01").unwrap();
    assert_eq!(db01["units"], 2, "8 GiB needs two units of 5290 MiB");
}

#[tokio::test]
async fn create_start_operate_and_delete_through_the_api() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let before = api.free_units().await;
    let (s, created) = api.post("/api/v1/vms", small_vm("app01")).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["units"], 1);
    assert_eq!(created["vcpus"], 5);
    assert_eq!(created["started"], true);
    let disk = created["disk_path"].as_str().unwrap().to_string();
    assert_eq!(disk, "/var/lib/libvirt/images/app01.qcow2");
    assert_eq!(api.free_units().await, before - 1);

    let (s, vm) = api.get("/api/v1/vms/app01").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["managed"], true);
    assert_eq!(
        vm["devices"]["vnc"]["listen"], "127.0.0.1",
        "VNC only on loopback"
    );
    assert!(vm["devices"]["has_serial"].as_bool().unwrap());
    assert!(
        vm["xml"].as_str().unwrap().contains("<rng model='virtio'>"),
        "a new VM has the host's randomness: {vm}"
    );
    let disks = vm["devices"]["disks"].as_array().unwrap();
    assert!(disks
        .iter()
        .any(|d| d["device"] == "cdrom" && d["source"] == ISO));
    assert!(disks
        .iter()
        .any(|d| d["device"] == "disk" && d["source"] == disk.as_str()));
    assert_eq!(vm["devices"]["nics"][0]["source"], "br0");
    assert!(vm["devices"]["nics"][0]["mac"]
        .as_str()
        .unwrap()
        .starts_with("52:54:00:"));

    for (action, state) in [
        ("pause", "paused"),
        ("resume", "running"),
        ("reboot", "running"),
        ("force-off", "shut_off"),
        ("start", "running"),
        ("shutdown", "shut_off"),
    ] {
        let (s, vm) = api
            .post(&format!("/api/v1/vms/app01/{action}"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{action}: {vm}");
        assert_eq!(vm["state"], state, "after {action}");
    }
    // An action that does not fit the state is refused with the reason.
    let (s, e) = api.post("/api/v1/vms/app01/pause", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("shut off"),
        "{e}"
    );
    let (s, _) = api.post("/api/v1/vms/app01/explode", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Autostart through PATCH.
    let r = api
        .c
        .patch(format!("{}/api/v1/vms/app01", api.base))
        .bearer_auth(&api.token)
        .json(&json!({"autostart": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["autostart"], true);

    // Delete with its volume: units back, volume gone, ISO untouched.
    let (s, d) = api.delete("/api/v1/vms/app01?delete_volumes=true").await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["volumes_deleted"], json!([disk]));
    assert_eq!(d["units_released"], 1);
    assert_eq!(api.free_units().await, before);
    let (s, _) = api.get("/api/v1/vms/app01").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The same name and volume can be made again: nothing was left behind.
    let (s, created) = api.post("/api/v1/vms", small_vm("app01")).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
}

#[tokio::test]
async fn bad_requests_are_refused_at_their_field_and_touch_nothing() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let before = api.fingerprint().await;
    let mut cases: Vec<(Value, &str, &str)> = Vec::new();
    let mut v = small_vm("bad/name");
    cases.push((v.clone(), "name", "letters, digits"));
    v = small_vm("web01");
    cases.push((v.clone(), "name", "exists already"));
    v = small_vm("macbad");
    v["nic"]["mac"] = json!("52:54:00:zz:00:01");
    cases.push((v.clone(), "mac", "six pairs of hex digits"));
    v = small_vm("macmulti");
    v["nic"]["mac"] = json!("01:00:5e:00:00:01");
    cases.push((v.clone(), "mac", "multicast"));
    v = small_vm("macdup");
    v["nic"]["mac"] = json!("52:54:00:3a:10:01");
    cases.push((v.clone(), "mac", "already used by another VM"));
    v = small_vm("nopool");
    v["disk"]["pool"] = json!("nosuchpool");
    cases.push((v.clone(), "pool", "no storage pool named nosuchpool"));
    v = small_vm("nobridge");
    v["nic"] = json!({"bridge": "br9"});
    cases.push((v.clone(), "bridge", "no bridge named br9"));
    v = small_vm("toobig");
    v["flavor"] = json!("small");
    v["vcpus"] = json!(32);
    cases.push((v.clone(), "vcpus", "give at most"));
    v = small_vm("kernelout");
    v["install"] = json!({"type": "kernel", "kernel": "/etc/passwd"});
    cases.push((v.clone(), "kernel", "files elsewhere are not used"));
    v = small_vm("lvmqcow");
    v["disk"] = json!({"type": "new", "pool": "vg_vms", "size_gib": 2, "format": "qcow2"});
    cases.push((v.clone(), "format", "raw"));
    v = small_vm("diskinuse");
    v["disk"] = json!({"type": "existing", "path": "/var/lib/libvirt/images/web01.qcow2"});
    cases.push((v.clone(), "volume", "in use by VM web01"));
    for (body, field, words) in cases {
        let (s, e) = api.post("/api/v1/vms", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {e}");
        let errors = e["error"]["errors"].as_array().unwrap();
        let hit = errors
            .iter()
            .find(|x| x["field"] == field)
            .unwrap_or_else(|| panic!("no error at {field}: {e}"));
        assert!(
            hit["message"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(&words.to_lowercase()),
            "{field}: {e}"
        );
    }
    // Over capacity: 5 units free, 6 asked.
    let mut v = small_vm("huge");
    v["flavor"] = Value::Null;
    v["units"] = json!(6);
    let (s, e) = api.post("/api/v1/vms", v).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("needs 6 units but only 5 of 12 are free (1 short)"),
        "{msg}"
    );
    // Unknown JSON fields are named.
    let r = api
        .c
        .post(format!("{}/api/v1/vms", api.base))
        .bearer_auth(&api.token)
        .json(&json!({"name": "x", "colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("colour"));
    assert_eq!(
        api.fingerprint().await,
        before,
        "nothing was created or claimed"
    );
}

#[tokio::test]
async fn viewers_cannot_create_or_operate_and_csrf_guards_session_calls() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, "vic", "viewer", "vic-password-1")
        .await;
    let (viewer, _) = app.login("vic", "vic-password-1").await;
    let csrf = app.csrf(&viewer, "/host").await;
    let r = viewer
        .post(app.url("/api/v1/vms"))
        .header("x-csrf-token", &csrf)
        .json(&small_vm("sneaky"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = viewer
        .post(app.url("/api/v1/vms/web01/force-off"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = viewer.get(app.url("/vms/new")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // An admin's session without the CSRF header changes nothing.
    let r = admin
        .post(app.url("/api/v1/vms/web01/force-off"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let vms: Value = admin
        .get(app.url("/api/v1/vms/web01"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(vms["state"], "running");
    let audit = app.audit_text(&admin).await;
    assert!(
        audit.contains("vm.create") && audit.contains("vm.force-off") && audit.contains("denied")
    );
}

#[tokio::test]
async fn a_failure_at_any_step_is_rolled_back_completely() {
    for step in [
        Step::CreateVolume,
        Step::Define,
        Step::Autostart,
        Step::Start,
    ] {
        let app = spawn_app_wrapped(
            |_| {},
            Some(Box::new(move |inner| Arc::new(FailAt::new(inner, step)))),
        )
        .await;
        let api = Api::new(&app).await;
        let before = api.fingerprint().await;
        let mut body = small_vm("doomed");
        body["autostart"] = json!(true);
        let (s, e) = api.post("/api/v1/vms", body).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{step:?}: {e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("injected failure for the test"),
            "libvirt's reason shown: {msg}"
        );
        assert!(msg.contains("Nothing was left behind"), "{msg}");
        assert_eq!(
            api.fingerprint().await,
            before,
            "{step:?}: no VM, no claim left"
        );
        let pools: Value = app_pools(&api).await;
        assert!(
            !pools.to_string().contains("doomed.qcow2"),
            "{step:?}: no orphan volume"
        );
    }
}

async fn app_pools(api: &Api) -> Value {
    let (s, pools) = api.get("/api/v1/pools").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        pools.to_string().contains("web01.qcow2"),
        "the listing shows volumes"
    );
    pools
}

#[tokio::test]
async fn parallel_creates_never_take_more_than_the_free_units() {
    let app = spawn_app().await;
    let api = Arc::new(Api::new(&app).await);
    assert_eq!(api.free_units().await, 5);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut v = small_vm(&format!("race{i:02}"));
            v["start"] = json!(false);
            api.post("/api/v1/vms", v).await.0
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    let host = api.get("/api/v1/host").await.1;
    assert_eq!(
        created, 5,
        "exactly the free units were taken: {}",
        host["capacity"]
    );
    assert_eq!(refused, 11);
    assert_eq!(api.free_units().await, 0);
}

#[tokio::test]
async fn the_create_page_shows_errors_at_their_field_and_creates_with_the_form() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = admin
        .get(app.url("/vms/new"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("debian-12.8.0-amd64-netinst.iso"),
        "ISOs offered"
    );
    let csrf = common::csrf_in(&page);
    let form = |name: &str, mac: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("name", name.to_string()),
            ("size_mode", "flavor".into()),
            ("flavor", "medium".into()),
            ("disk_mode", "new".into()),
            ("pool", "default".into()),
            ("size_gib", "".into()),
            ("format", "".into()),
            ("install", "cdrom".into()),
            ("iso", ISO.into()),
            ("nic_mode", "network".into()),
            ("network", "default".into()),
            ("nic_model", "e1000".into()),
            ("mac", mac.to_string()),
            ("clock", "utc".into()),
            ("then", "define".into()),
        ]
    };
    let r = admin
        .post(app.url("/vms"))
        .form(&form("formvm", "not-a-mac"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("data-field=\"mac\""),
        "error shown at the MAC field"
    );
    assert!(body.contains("value=\"formvm\""), "what was typed is kept");
    let r = admin
        .post(app.url("/vms"))
        .form(&form("formvm", "52:54:00:aa:bb:cc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/vms/formvm");
    let detail = admin
        .get(app.url("/vms/formvm"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(detail.contains("shut off"), "create only: not started");
    assert!(detail.contains("52:54:00:aa:bb:cc"));
    assert!(detail.contains("e1000"));
    assert!(detail.contains("Domain XML"));
    let list = admin
        .get(app.url("/vms"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("formvm") && list.contains("unmanaged"));
    // Delete through the confirm page, keeping the volume.
    let confirm = admin
        .get(app.url("/vms/formvm/delete"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(confirm.contains("/var/lib/libvirt/images/formvm.qcow2"));
    let csrf = common::csrf_in(&confirm);
    let r = admin
        .post(app.url("/vms/formvm/delete"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let list = app.get_text(&admin, "/vms").await;
    assert!(list.contains("Deleted VM formvm;"), "a notice, once");
    let list = app.get_text(&admin, "/vms").await;
    assert!(!list.contains("formvm"));
    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("vm.create") && audit.contains("vm.delete"));
}

#[tokio::test]
async fn admins_edit_named_sizes_and_creates_use_them() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let csrf = app.csrf(&admin, "/flavors").await;
    let r = admin
        .post(app.url("/flavors"))
        .form(&[("csrf", csrf.as_str()), ("name", "xl"), ("units", "0")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("from 1 to 1000"));
    let r = admin
        .post(app.url("/flavors"))
        .form(&[("csrf", csrf.as_str()), ("name", "xl"), ("units", "3")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    app.add_user(&admin, "olga", "operator", "olga-password-1")
        .await;
    let (op, _) = app.login("olga", "olga-password-1").await;
    let op_csrf = app.csrf(&op, "/flavors").await;
    let r = op
        .post(app.url("/flavors"))
        .form(&[("csrf", op_csrf.as_str()), ("name", "tiny"), ("units", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "only admins edit sizes");
    let token = app.admin_token(&admin).await;
    let mut v = small_vm("xl01");
    v["flavor"] = json!("xl");
    let r = Client::new()
        .post(app.url("/api/v1/vms"))
        .bearer_auth(&token)
        .json(&v)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Value>().await.unwrap()["units"], 3);
}
