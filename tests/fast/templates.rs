//! Templates on libvirt's test driver, over HTTP: marking and unmarking, the refusals
//! (start, delete and unmark with linked clones, pools that cannot hold overlays, no
//! virt-sysprep, capacity), the forms with their field errors, and rollback when a step
//! of a VM made from a template fails.

use crate::common;

use common::api::Api;
use common::faults::{FailAt, Step};
use common::{spawn_app_with, spawn_app_wrapped, TestApp};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

const ISO: &str = "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso";
const MISSING: &str =
    "virt-sysprep is not installed on this host: the clone keeps the template's identity.";

/// The admin's session (for pages) and an API client with the admin's token.
async fn admin(app: &TestApp) -> (Client, Api) {
    let session = app.setup_admin("admin").await;
    let token = app.admin_token(&session).await;
    let api = Api {
        c: Client::new(),
        base: app.base.clone(),
        token,
    };
    (session, api)
}

/// A shut-off VM with a new volume in `pool`, marked as a template.
async fn template(api: &Api, name: &str, pool: &str, units: u32) {
    let (s, v) = api
        .post(
            "/api/v1/vms",
            json!({
                "name": name,
                "units": units,
                "disk": {"type": "new", "pool": pool, "size_gib": 2},
                "install": {"type": "cdrom", "volume": ISO},
                "nic": {"bridge": "br0"},
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api
        .post(&format!("/api/v1/vms/{name}/template"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn volumes(api: &Api) -> String {
    api.get("/api/v1/pools").await.1.to_string()
}

fn message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn templates(api: &Api) -> Value {
    let (s, v) = api.get("/api/v1/templates").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// The app on the demo host with virt-sysprep configured at a path where it is not: the
/// "not installed" path, whether or not this machine has the tool (the real tests do).
async fn spawn_app() -> TestApp {
    spawn_app_with(|c| c.images.sysprep_program = Some(NO_SYSPREP.into())).await
}

const NO_SYSPREP: &str = "/nonexistent/virt-sysprep";

#[tokio::test]
async fn a_template_is_marked_listed_never_started_and_unmarked() {
    let app = spawn_app().await;
    let (session, api) = admin(&app).await;
    template(&api, "base01", "default", 1).await;

    // It is listed with its disk and size, and shown as a template.
    let t = templates(&api).await;
    assert_eq!(t["sysprep_available"], false);
    let base = &t["templates"][0];
    assert_eq!(base["name"], "base01", "{t}");
    assert_eq!(base["disks"][0]["pool"], "default");
    assert_eq!(base["disks"][0]["capacity_bytes"], 2u64 << 30);
    assert_eq!(base["linked_clones"], json!([]));
    assert_eq!(api.get("/api/v1/vms/base01").await.1["template"], true);
    let page = session.get(app.url("/templates")).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(
        html.contains("data-template=\"base01\"") && html.contains("2.0 GiB"),
        "{html}"
    );
    let list = common::pages::text(&session, &app.url("/vms")).await;
    assert!(list.contains("data-template>template</small>"), "{list}");

    // Starting it is refused with a sentence; nothing changes.
    let (s, v) = api.post("/api/v1/vms/base01/start", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        message(&v).contains("base01 is a template and is never started"),
        "{v}"
    );
    assert_eq!(api.get("/api/v1/vms/base01").await.1["state"], "shut_off");

    // Marking twice, or marking a running VM, is refused.
    let (s, v) = api.post("/api/v1/vms/base01/template", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(message(&v).contains("is a template already"), "{v}");
    let (s, v) = api.post("/api/v1/vms/web01/template", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(message(&v).contains("shut it down before marking"), "{v}");
    let (s, _) = api.post("/api/v1/vms/nope/template", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A viewer sees templates but may not mark or unmark them.
    app.add_user(&session, "vera", "viewer", "viewer-password-1")
        .await;
    let vera_token = app.token_for(&session, "vera").await;
    let viewer = Api {
        c: Client::new(),
        base: app.base.clone(),
        token: vera_token,
    };
    assert_eq!(viewer.get("/api/v1/templates").await.0, StatusCode::OK);
    assert_eq!(
        viewer.delete("/api/v1/vms/base01/template").await.0,
        StatusCode::FORBIDDEN
    );

    // Unmark through the VM page's form (session + CSRF), then it starts again.
    let csrf = app.csrf(&session, "/vms/base01").await;
    let r = session
        .post(app.url("/vms/base01/template"))
        .form(&[("action", "unmark")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "no CSRF token, no change"
    );
    let r = session
        .post(app.url("/vms/base01/template"))
        .form(&[("csrf", csrf.as_str()), ("action", "unmark")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(api.get("/api/v1/vms/base01").await.1["template"], false);
    assert_eq!(templates(&api).await["templates"], json!([]));
    let (s, _) = api.delete("/api/v1/vms/base01/template").await;
    assert_eq!(s, StatusCode::CONFLICT, "not a template any more");
    // Marked again through the page: autostart, if on, is turned off.
    let (s, v) = api
        .patch("/api/v1/vms/base01", json!({"autostart": true}))
        .await;
    assert_eq!(
        (s, v["autostart"].clone()),
        (StatusCode::OK, json!(true)),
        "{v}"
    );
    let csrf = app.csrf(&session, "/vms/base01").await;
    let r = session
        .post(app.url("/vms/base01/template"))
        .form(&[("csrf", csrf.as_str()), ("action", "mark")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let vm = api.get("/api/v1/vms/base01").await.1;
    assert_eq!(
        (vm["template"].clone(), vm["autostart"].clone()),
        (json!(true), json!(false))
    );

    let audit = app.audit_text(&session).await;
    for a in ["vm.template.mark", "vm.template.unmark", "vm.start"] {
        assert!(audit.contains(a), "{a} audited: {audit}");
    }
}

#[tokio::test]
async fn full_and_linked_clones_are_made_and_linked_ones_hold_the_template() {
    let app = spawn_app().await;
    let (session, api) = admin(&app).await;
    template(&api, "base01", "default", 1).await;
    let free = api.free_units().await;

    let (s, full) = api
        .post_job(
            "/api/v1/templates/base01/vms",
            json!({"name": "app-full", "mode": "full"}),
        )
        .await;
    assert_eq!(
        (s, full["state"].as_str()),
        (StatusCode::ACCEPTED, Some("succeeded")),
        "{full}"
    );
    assert_eq!(
        (
            full["kind"].as_str(),
            full["source"].as_str(),
            full["vm"].as_str()
        ),
        (Some("clone"), Some("base01"), Some("app-full"))
    );
    assert_eq!(
        full["message"],
        "Made app-full from template base01 as a full clone: 1 unit, 1 disk."
    );
    let (s, linked) = api
        .post_job(
            "/api/v1/templates/base01/vms",
            json!({"name": "app-linked", "mode": "linked", "start": true}),
        )
        .await;
    assert_eq!(
        (s, linked["state"].as_str()),
        (StatusCode::ACCEPTED, Some("succeeded")),
        "{linked}"
    );
    assert_eq!(
        linked["message"],
        "Made app-linked from template base01 as a linked clone: 1 unit, 1 disk, started."
    );
    // An overlay copies no bytes: a linked clone's job has no byte count.
    assert_eq!(linked["bytes_total"], 0, "{linked}");
    assert_eq!(
        api.free_units().await,
        free - 2,
        "each takes the template's units"
    );

    // The linked clone's disk is a qcow2 volume of its own, backed by the template's.
    let vm = api.get("/api/v1/vms/app-linked").await.1;
    let overlay = vm["disks"][0].as_str().unwrap().to_string();
    assert!(overlay.ends_with("/app-linked.qcow2"), "{vm}");
    let (_, vols) = api.get("/api/v1/pools/default/volumes").await;
    let vol = vols["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["path"] == overlay)
        .unwrap_or_else(|| panic!("{overlay} in {vols}"));
    assert_eq!(vol["format"], "qcow2");
    let vm = api.get("/api/v1/vms/app-linked").await.1;
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["devices"]["disks"][0]["format"], "qcow2", "{vm}");
    assert_ne!(vm["uuid"], api.get("/api/v1/vms/base01").await.1["uuid"]);
    let t = templates(&api).await;
    assert_eq!(
        t["templates"][0]["linked_clones"],
        json!(["app-linked"]),
        "{t}"
    );

    // While the linked clone exists, the template can be neither unmarked nor deleted.
    let (s, v) = api.delete("/api/v1/vms/base01/template").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(message(&v).contains("linked clones app-linked"), "{v}");
    let (s, v) = api.delete("/api/v1/vms/base01?delete_volumes=true").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        message(&v).contains("cannot be deleted") && message(&v).contains("app-linked"),
        "{v}"
    );
    assert_eq!(api.get("/api/v1/vms/base01").await.0, StatusCode::OK);
    // The full clone is independent: deleting it does not matter to the template.
    assert_eq!(
        api.delete("/api/v1/vms/app-full?delete_volumes=true")
            .await
            .0,
        StatusCode::OK
    );
    // Once the linked clone is gone, the template is free again; deleting it drops the mark.
    let (s, _) = api
        .post("/api/v1/vms/app-linked/force-off", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        api.delete("/api/v1/vms/app-linked?delete_volumes=true")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        templates(&api).await["templates"][0]["linked_clones"],
        json!([])
    );
    assert_eq!(
        api.delete("/api/v1/vms/base01?delete_volumes=true").await.0,
        StatusCode::OK
    );
    assert_eq!(templates(&api).await["templates"], json!([]));

    let audit = app.audit_text(&session).await;
    assert!(
        audit.contains("Made app-linked from template base01 as a linked clone"),
        "{audit}"
    );
    assert!(
        audit.contains("job 1 started: app-full as a full clone"),
        "{audit}"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_at_their_field_and_touch_nothing() {
    let app = spawn_app().await;
    let (session, api) = admin(&app).await;
    template(&api, "base01", "default", 1).await;
    template(&api, "lvbase", "vg_vms", 1).await;
    let before = (api.fingerprint().await, volumes(&api).await);

    let post = |body: Value, t: &'static str| {
        let api = &api;
        async move { api.post(&format!("/api/v1/templates/{t}/vms"), body).await }
    };
    // A bad or taken name.
    let (s, v) = post(json!({"name": "bad name!"}), "base01").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "name");
    let (s, v) = post(json!({"name": "web01"}), "base01").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(message(&v).contains("exists already"), "{v}");
    // A linked clone on an LVM pool.
    let (s, v) = post(json!({"name": "lv-clone", "mode": "linked"}), "lvbase").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "mode");
    assert!(
        message(&v).contains("pool vg_vms (logical) cannot hold"),
        "{v}"
    );
    // Identity reset without virt-sysprep.
    let (s, v) = post(json!({"name": "reset", "reset_identity": true}), "base01").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "reset_identity");
    assert_eq!(message(&v), MISSING);
    // An unknown mode, a VM that is not a template, one that does not exist.
    let (s, _) = post(json!({"name": "x1", "mode": "thin"}), "base01").await;
    assert!(s.is_client_error(), "{s}");
    let (s, v) = post(json!({"name": "x2"}), "mail").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(message(&v).contains("mail is not a template"), "{v}");
    let (s, _) = post(json!({"name": "x3"}), "nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!((api.fingerprint().await, volumes(&api).await), before);

    // The form: modes explained, the missing tool said, errors at their field.
    let page = common::pages::text(&session, &app.url("/templates/base01/new")).await;
    assert!(page.contains("An independent copy of every disk"), "{page}");
    assert!(page.contains("the template must not change or be deleted while linked clones exist"));
    assert!(page.contains("id=\"sysprep-missing\""), "{page}");
    assert!(
        !page.contains("name=\"reset_identity\""),
        "no checkbox without the tool"
    );
    let csrf = common::csrf_in(&page);
    let r = session
        .post(app.url("/templates/lvbase/new"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "lv-clone"),
            ("mode", "linked"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("data-field=\"mode\">A linked clone needs qcow2 overlays"),
        "{html}"
    );
    assert!(
        html.contains("value=\"lv-clone\""),
        "what was typed is kept"
    );
    let r = session
        .post(app.url("/templates/base01/new"))
        .form(&[("csrf", csrf.as_str()), ("name", "ok-name"), ("mode", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("data-field=\"mode\">Choose a full or a linked clone."));
    assert_eq!((api.fingerprint().await, volumes(&api).await), before);

    // And through the form, a full clone is made and the admin lands on its page.
    let r = session
        .post(app.url("/templates/base01/new"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "from-form"),
            ("mode", "full"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    // The notice waits for the next page, not in the address: shown once, not on refresh.
    assert_eq!(to, "/vms/from-form");
    let page = common::pages::text(&session, &app.url(&to)).await;
    assert!(
        page.contains("Made from-form from template base01"),
        "{page}"
    );
    let again = common::pages::text(&session, &app.url(&to)).await;
    assert!(!again.contains("Made from-form from template base01"));
}

#[tokio::test]
async fn a_template_larger_than_the_free_units_is_refused_before_anything_is_made() {
    let app = spawn_app().await;
    let (_session, api) = admin(&app).await;
    let free = api.free_units().await as u32;
    template(&api, "big", "default", free / 2 + 1).await;
    let before = (api.fingerprint().await, volumes(&api).await);
    for mode in ["full", "linked"] {
        let (s, v) = api
            .post(
                "/api/v1/templates/big/vms",
                json!({"name": "big-2", "mode": mode}),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert!(message(&v).contains("units"), "{v}");
        assert_eq!((api.fingerprint().await, volumes(&api).await), before);
    }
}

#[tokio::test]
async fn a_failing_step_leaves_no_volume_definition_or_claim_behind() {
    for (step, mode, start, what) in [
        (
            Step::CreateOverlay,
            "linked",
            false,
            "creating a linked disk",
        ),
        (Step::Define, "linked", false, "defining the clone"),
        (Step::Start, "linked", true, "starting the clone"),
        (Step::CloneVolume, "full", false, "copying a disk volume"),
        (Step::Start, "full", true, "starting the clone"),
    ] {
        let app = spawn_app_wrapped(
            |c| c.images.sysprep_program = Some(NO_SYSPREP.into()),
            Some(Box::new(move |inner| Arc::new(FailAt::new(inner, step)))),
        )
        .await;
        let (_session, api) = admin(&app).await;
        // The template: a demo VM with a qcow2 volume in the dir pool, turned off (made
        // without the failing step).
        let (s, _) = api
            .post("/api/v1/vms/build-runner/force-off", json!({}))
            .await;
        assert_eq!(s, StatusCode::OK);
        let (s, v) = api
            .post("/api/v1/vms/build-runner/template", json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let before = (api.fingerprint().await, volumes(&api).await);
        let (s, v) = api
            .post_job(
                "/api/v1/templates/build-runner/vms",
                json!({"name": "doomed", "mode": mode, "start": start}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{step:?} {mode}: {v}");
        assert_eq!(v["state"], "failed", "{step:?} {mode}: {v}");
        let m = v["message"].as_str().unwrap();
        assert!(
            m.contains(what) && m.contains("Nothing was left behind"),
            "{step:?}: {m}"
        );
        assert_eq!(
            (api.fingerprint().await, volumes(&api).await),
            before,
            "{step:?} {mode}: everything made was removed"
        );
        assert!(!volumes(&api).await.contains("doomed"));
    }
}
