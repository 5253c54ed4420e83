//! Resize, clone, snapshots and live updates on libvirt's test driver, over HTTP.

use crate::common;

use common::api::Api;
use common::faults::{FailAt, Step};
use common::{spawn_app, spawn_app_wrapped, ADMIN_PASSWORD};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const ISO: &str = "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso";

/// A one-unit VM, defined but not started.
async fn make_vm(api: &Api, name: &str) -> Value {
    let (s, v) = api
        .post(
            "/api/v1/vms",
            json!({
                "name": name,
                "units": 1,
                "disk": {"type": "new", "pool": "default", "size_gib": 2},
                "install": {"type": "cdrom", "volume": ISO},
                "nic": {"bridge": "br0"},
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

async fn volumes(api: &Api) -> String {
    api.get("/api/v1/pools").await.1.to_string()
}

#[tokio::test]
async fn resize_changes_a_shut_off_vm_within_the_free_units() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    make_vm(&api, "app01").await;
    assert_eq!(api.free_units().await, 4);

    let (s, v) = api.patch("/api/v1/vms/app01", json!({"units": 2})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["units"], 2);
    assert_eq!(v["vcpus"], 10);
    let memory_mib = v["memory_mib"].as_u64().unwrap();
    assert!(
        (10580..=10584).contains(&memory_mib),
        "libvirt may align: {memory_mib}"
    );
    assert_eq!(api.free_units().await, 3, "one more unit taken");

    // Smaller again, with explicit vCPUs and memory inside one unit.
    let (s, v) = api
        .patch(
            "/api/v1/vms/app01",
            json!({"units": 1, "vcpus": 2, "memory_mib": 2048}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["units"].as_u64(), v["vcpus"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(v["memory_mib"], 2048);
    assert_eq!(api.free_units().await, 4);

    // More than the host has: refused, saying by how much, nothing changed.
    let (s, v) = api.patch("/api/v1/vms/app01", json!({"units": 9})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("needs 9 units") && msg.contains("5 of 12"),
        "{msg}"
    );
    assert_eq!(api.get("/api/v1/vms/app01").await.1["vcpus"], 2);

    // Bad values at their field.
    let (s, v) = api.patch("/api/v1/vms/app01", json!({"vcpus": 0})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "vcpus");
    let (s, v) = api
        .patch("/api/v1/vms/app01", json!({"flavor": "huge"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "flavor");

    // Running: shut it down first.
    let (s, _) = api.post("/api/v1/vms/app01/start", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api.patch("/api/v1/vms/app01", json!({"units": 2})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("shut it down"));

    // A VM defined outside virtdeck is resized and still counted by its real size.
    let (s, v) = api
        .patch(
            "/api/v1/vms/win2019-ad",
            json!({"vcpus": 8, "memory_mib": 8192}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["units"], 2, "8 GiB is two units of 5290 MiB");
    assert_eq!(v["managed"], false);
}

#[tokio::test]
async fn a_failed_resize_keeps_the_old_size() {
    let app = spawn_app_wrapped(
        |_| {},
        Some(Box::new(|inner| {
            Arc::new(FailAt::new(inner, Step::SetSize))
        })),
    )
    .await;
    let api = Api::new(&app).await;
    make_vm(&api, "app01").await;
    let (s, v) = api.patch("/api/v1/vms/app01", json!({"units": 2})).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("keeps 5 vCPUs"));
    let vm = api.get("/api/v1/vms/app01").await.1;
    assert_eq!(
        (vm["units"].as_u64(), vm["vcpus"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(api.free_units().await, 4);
}

#[tokio::test]
async fn clone_copies_the_disks_with_a_new_identity() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let src = make_vm(&api, "app01").await;
    // The clone runs as a job: 202 with the job, whose URL is in Location.
    let r = api
        .c
        .post(format!("{}/api/v1/vms/app01/clone", api.base))
        .bearer_auth(&api.token)
        .json(&json!({"name": "app02"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let job: Value = r.json().await.unwrap();
    assert_eq!(location, format!("/api/v1/jobs/{}", job["id"]));
    assert_eq!(
        (
            job["kind"].as_str(),
            job["source"].as_str(),
            job["vm"].as_str()
        ),
        (Some("clone"), Some("app01"), Some("app02")),
        "{job}"
    );
    let c = api.job_end(&job).await;
    assert_eq!(c["state"], "succeeded", "{c}");
    assert_eq!(
        c["message"],
        "Cloned from app01 to app02: 1 unit, 1 disk copied."
    );
    // Progress counts the bytes the copy read: all of them once it is done.
    assert_eq!(c["percent"], 100, "{c}");
    assert_eq!(c["bytes_done"], c["bytes_total"], "{c}");
    assert_eq!(api.free_units().await, 3);
    let copy = api.get("/api/v1/vms/app02").await.1;
    let orig = api.get("/api/v1/vms/app01").await.1;
    assert_ne!(copy["uuid"], orig["uuid"]);
    assert_ne!(copy["macs"], orig["macs"]);
    assert_eq!(copy["managed"], true);
    let copy_disk = copy["disks"][0].as_str().unwrap();
    assert!(copy_disk.ends_with("/app02.qcow2"), "{copy_disk}");
    assert_ne!(Some(copy_disk), src["disk_path"].as_str());
    assert!(volumes(&api).await.contains("app02.qcow2"));
    // The CD-ROM is shared, not copied.
    assert!(copy["xml"].as_str().unwrap().contains(ISO));

    // Refusals: taken name, bad name, running source, unknown source.
    let (s, v) = api
        .post("/api/v1/vms/app01/clone", json!({"name": "web01"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "name");
    let (s, v) = api
        .post("/api/v1/vms/app01/clone", json!({"name": "bad name"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = api
        .post("/api/v1/vms/web01/clone", json!({"name": "web99"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("shut it down"));
    let (s, _) = api
        .post("/api/v1/vms/nosuch/clone", json!({"name": "x1"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Not enough units: 3 free, each clone takes 1.
    for n in ["c1", "c2", "c3"] {
        let (s, v) = api
            .post_job("/api/v1/vms/app01/clone", json!({"name": n}))
            .await;
        assert_eq!(
            (s, v["state"].as_str()),
            (StatusCode::ACCEPTED, Some("succeeded")),
            "{v}"
        );
    }
    let (s, v) = api
        .post("/api/v1/vms/app01/clone", json!({"name": "c4"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("1 short"));
    assert!(!volumes(&api).await.contains("c4.qcow2"));

    // Clone and start.
    let (s, _) = api.delete("/api/v1/vms/c3?delete_volumes=true").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api
        .post_job(
            "/api/v1/vms/app01/clone",
            json!({"name": "c5", "start": true}),
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::ACCEPTED, Some("succeeded")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().ends_with(", started."),
        "{v}"
    );
    assert_eq!(api.get("/api/v1/vms/c5").await.1["state"], "running");
}

#[tokio::test]
async fn a_failed_clone_leaves_no_volume_no_vm_and_no_claim() {
    for step in [Step::CloneVolume, Step::Define, Step::Start] {
        let app = spawn_app_wrapped(
            |_| {},
            Some(Box::new(move |inner| Arc::new(FailAt::new(inner, step)))),
        )
        .await;
        let api = Api::new(&app).await;
        // The source: a demo VM with a qcow2 volume, turned off.
        let (s, _) = api
            .post("/api/v1/vms/build-runner/force-off", json!({}))
            .await;
        assert_eq!(s, StatusCode::OK);
        let before = (api.fingerprint().await, volumes(&api).await);
        let (s, v) = api
            .post_job(
                "/api/v1/vms/build-runner/clone",
                json!({"name": "doomed", "start": true}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{step:?}: {v}");
        assert_eq!(v["state"], "failed", "{step:?}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains("Nothing was left behind"), "{msg}");
        assert_eq!(
            (api.fingerprint().await, volumes(&api).await),
            before,
            "{step:?}"
        );
    }
}

#[tokio::test]
async fn snapshots_are_taken_listed_reverted_and_deleted() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    make_vm(&api, "app01").await;
    let (s, v) = api
        .post(
            "/api/v1/vms/app01/snapshots",
            json!({"name": "before-upgrade", "description": "clean <install>"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "before-upgrade");
    assert_eq!(v["description"], "clean <install>");

    let (s, v) = api
        .post(
            "/api/v1/vms/app01/snapshots",
            json!({"name": "before-upgrade"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "snapshot_name");
    let (s, v) = api
        .post("/api/v1/vms/app01/snapshots", json!({"name": "../x"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    api.post("/api/v1/vms/app01/start", json!({})).await;
    let (s, v) = api
        .post("/api/v1/vms/app01/snapshots", json!({"name": "running-1"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, list) = api.get("/api/v1/vms/app01/snapshots").await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{list}");
    assert!(names.contains(&"before-upgrade") && names.contains(&"running-1"));

    // Back to the shut-off snapshot: the VM is off again.
    let (s, v) = api
        .post(
            "/api/v1/vms/app01/snapshots/before-upgrade/revert",
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "shut_off");

    let (s, _) = api.delete("/api/v1/vms/app01/snapshots/running-1").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = api.delete("/api/v1/vms/app01/snapshots/running-1").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (_, list) = api.get("/api/v1/vms/app01/snapshots").await;
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn viewers_cannot_resize_clone_or_snapshot() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, "vera", "viewer", ADMIN_PASSWORD).await;
    let (viewer, _) = app.login("vera", ADMIN_PASSWORD).await;
    let page = viewer
        .get(app.url("/vms/win2019-ad"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("id=\"clone-form\""), "no forms for viewers");
    let csrf = common::csrf_in(&page);
    for (path, form) in [
        ("/vms/win2019-ad/resize", vec![("units", "2")]),
        ("/vms/win2019-ad/clone", vec![("clone_name", "x2")]),
        ("/vms/win2019-ad/snapshots", vec![("snapshot_name", "s1")]),
    ] {
        let mut f = form.clone();
        f.push(("csrf", csrf.as_str()));
        let r = viewer.post(app.url(path)).form(&f).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let audit = app.audit_text(&admin).await;
    for action in ["vm.resize", "vm.clone", "vm.snapshot.create"] {
        assert!(audit.contains(action), "{action} refusal audited");
    }
}

#[tokio::test]
async fn the_vm_page_forms_show_errors_at_their_field_and_work() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = admin
        .get(app.url("/vms/win2019-ad"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"resize-form\"") && page.contains("id=\"clone-form\""));
    let csrf = common::csrf_in(&page);

    let r = admin
        .post(app.url("/vms/win2019-ad/resize"))
        .form(&[("csrf", csrf.as_str()), ("units", "two")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("data-field=\"units\">Enter the units as a whole number."),
        "error at the field"
    );
    assert!(body.contains("value=\"two\""), "what was typed is kept");

    let r = admin
        .post(app.url("/vms/win2019-ad/resize"))
        .form(&[("csrf", csrf.as_str()), ("units", "40")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body = r.text().await.unwrap();
    assert!(body.contains("data-form=\"resize\">Not enough capacity"));

    let r = admin
        .post(app.url("/vms/win2019-ad/clone"))
        .form(&[("csrf", csrf.as_str()), ("clone_name", "db01")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(body.contains("data-field=\"clone_name\">A VM named db01 exists already"));

    // Not enough room in the LVM pool for a copy of its 32 GiB volume.
    let r = admin
        .post(app.url("/vms/win2019-ad/clone"))
        .form(&[("csrf", csrf.as_str()), ("clone_name", "runner-b")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("data-form=\"clone\">Not enough space in pool vg_vms"));

    let r = admin
        .post(app.url("/vms/build-runner/action/force-off"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin
        .post(app.url("/vms/build-runner/clone"))
        .form(&[("csrf", csrf.as_str()), ("clone_name", "runner-b")])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    let body = r.text().await.unwrap();
    let alert = body.find("role=\"alert\"").map(|i| &body[i..i + 300]);
    assert_eq!(status, StatusCode::SEE_OTHER, "{alert:?}");
    let to = location.unwrap();
    assert_eq!(to, "/vms/runner-b");
    let page = common::pages::text(&admin, &app.url(&to)).await;
    assert!(page.contains("Cloned"), "{page}");

    let r = admin
        .post(app.url("/vms/runner-b/snapshots"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("snapshot_name", "first"),
            ("description", "after clone"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = admin
        .get(app.url("/vms/runner-b"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-snapshot=\"first\""), "snapshot listed");
    assert!(page.contains("vm.snapshot.create"), "recent events show it");

    let r = admin
        .post(app.url("/vms/runner-b/snapshots/first/delete"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // CSRF is required on every form.
    let r = admin
        .post(app.url("/vms/runner-b/snapshots"))
        .form(&[("snapshot_name", "nocsrf")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn shutdown_offers_force_off_after_the_grace_time() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let csrf = app.csrf(&admin, "/vms/web01").await;
    let r = admin
        .post(app.url("/vms/web01/action/shutdown"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.contains("shutdown_at="), "{to}");
    // The test driver stops at once: nothing to offer.
    let page = admin
        .get(app.url(&to))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("id=\"force-off-offer\""));
    // A running VM whose shutdown was asked for long ago: force off is offered now.
    let long_ago = virtdeck_now() - 120;
    let page = admin
        .get(app.url(&format!("/vms/db01?shutdown_at={long_ago}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let offer = page.find("id=\"force-off-offer\"").expect("offer shown");
    assert!(!page[offer..offer + 80].contains("hidden"), "and visible");
    // A recent request: the offer is there but hidden until the grace time is over.
    let page = admin
        .get(app.url(&format!("/vms/db01?shutdown_at={}", virtdeck_now())))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let offer = page.find("id=\"force-off-offer\"").expect("offer present");
    assert!(page[offer..offer + 80].contains("hidden"));
}

fn virtdeck_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn vm_changes_stream_to_the_browser_as_server_sent_events() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let r = api
        .c
        .get(format!("{}/events", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r.bytes_stream();
    let (s, _) = api.post("/api/v1/vms/web01/pause", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("\"kind\":\"suspended\"") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("event within 10 s")
            .expect("stream open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: vm"), "{seen}");
    assert!(seen.contains("\"vm\":\"web01\""), "{seen}");

    // Anonymous clients get nothing but the way to the login page.
    let r = common::client()
        .get(format!("{}/events", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/login"));
}

#[tokio::test]
async fn running_vms_show_the_guest_addresses_libvirt_knows() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let vms = api.get("/api/v1/vms").await.1;
    let find = |name: &str| {
        vms["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone()
    };
    // The test driver reports one address per running VM's NIC.
    let web01 = find("web01")["addresses"].clone();
    assert_eq!(web01, json!(["192.168.0.1/24"]));
    assert_eq!(find("win2019-ad")["addresses"], json!([]), "shut off: none");
    assert_eq!(api.get("/api/v1/vms/web01").await.1["addresses"], web01);
    let page = api
        .c
        .get(app.url("/vms"))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<code>192.168.0.1/24</code>"),
        "shown in the list"
    );
}
