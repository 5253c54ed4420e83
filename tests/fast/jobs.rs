//! Clones and volume creates as jobs, on the demo host (libvirt's test driver) with a
//! hypervisor that holds the copy (or the create) until the test lets it go: progress
//! and step while it runs, cancel (and who may), the form that hands over to the Jobs
//! page, a restart in the middle, and failures that leave nothing behind.

use crate::common;

use common::api::Api;
use common::faults::{FailAt, Gate, Step};
use common::{spawn_app_on, spawn_app_wrapped, TestApp};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The app with `step` held at a gate the test opens.
async fn held_app(step: Step) -> (TestApp, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let g = gate.clone();
    let app = spawn_app_wrapped(
        |_| {},
        Some(Box::new(move |inner| {
            Arc::new(FailAt::holding(inner, step, g.clone()))
        })),
    )
    .await;
    (app, gate)
}

/// An admin's session (for pages) and API client.
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

/// Every pool with its volumes, as text: what a cancelled or failed job must leave as it was.
async fn volumes(api: &Api) -> String {
    api.get("/api/v1/pools").await.1.to_string()
}

async fn wait_until_held(gate: &Gate, calls: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gate.arrived.load(Ordering::SeqCst) < calls {
        assert!(Instant::now() < deadline, "the held step was never reached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn job(api: &Api, id: &Value) -> Value {
    let (s, j) = api.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    j
}

/// The demo VM with a qcow2 volume in the default pool, turned off so it can be cloned.
async fn shut_off_source(api: &Api) {
    let (s, v) = api
        .post("/api/v1/vms/build-runner/force-off", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_running_clone_shows_its_step_holds_its_units_and_a_cancel_removes_everything() {
    let (app, gate) = held_app(Step::HoldCloneVolume).await;
    let (session, api) = admin(&app).await;
    shut_off_source(&api).await;
    let (vms_before, free_before) = api.fingerprint().await;
    let volumes_before = volumes(&api).await;

    let (s, started) = api
        .post(
            "/api/v1/vms/build-runner/clone",
            json!({"name": "slow-copy", "start": true}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["state"], "running");
    wait_until_held(&gate, 1).await;

    // While libvirt copies: the step names the copy, and the clone's units are taken.
    let running = job(&api, &started["id"]).await;
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(
        running["step"], "copying disk 1 of 1: default/slow-copy.qcow2",
        "{running}"
    );
    assert_eq!(
        (running["pool"].as_str(), running["volume"].as_str()),
        (Some("default"), Some("slow-copy.qcow2"))
    );
    assert_eq!(
        api.free_units().await,
        free_before - 1,
        "the units are held"
    );
    // A second clone with the same name is refused while the first runs.
    let (s, v) = api
        .post(
            "/api/v1/vms/build-runner/clone",
            json!({"name": "slow-copy"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "name");

    // The Jobs page shows it running, with its step and a Cancel button.
    let page = common::pages::text(&session, &app.url("/jobs")).await;
    let row_start = page
        .find("data-job-kind=\"clone\"")
        .expect("the clone's row");
    let row = &page[row_start..row_start + page[row_start..].find("</tr>").unwrap()];
    assert!(
        page.contains("data-job-state=\"running\" data-job-kind=\"clone\""),
        "{page}"
    );
    assert!(row.contains("VM slow-copy"), "{row}");
    assert!(row.contains("href=\"/vms/build-runner\""), "{row}");
    assert!(row.contains("copying disk 1 of 1"), "{row}");
    assert!(row.contains("/cancel\""), "{row}");
    assert!(
        page.contains("data-refresh=\"2\""),
        "the page follows a running job"
    );

    // An operator may cancel a clone (it is operators' work).
    app.add_user(&session, "olga", "operator", "operator-password-1")
        .await;
    let operator = Api {
        c: Client::new(),
        base: app.base.clone(),
        token: app.token_for(&session, "olga").await,
    };
    let (s, v) = operator
        .post(&format!("/api/v1/jobs/{}/cancel", started["id"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    // libvirt's copy cannot be stopped midway: the job ends once the copy is done.
    assert_eq!(job(&api, &started["id"]).await["state"], "running");
    gate.open();
    let ended = api.job_end(&started).await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
    let m = ended["message"].as_str().unwrap();
    assert!(
        m.starts_with(
            "The clone of build-runner to slow-copy was cancelled. Nothing was left behind"
        ) && m.contains("slow-copy.qcow2 deleted")
            && m.contains("units released"),
        "{m}"
    );
    assert!(ended["finished_at"].as_i64().is_some());
    // Nothing is left: no VM, no copy, the units free again; the clone never started.
    assert_eq!(api.fingerprint().await, (vms_before, free_before));
    assert_eq!(volumes(&api).await, volumes_before);
    assert_eq!(
        api.get("/api/v1/vms/slow-copy").await.0,
        StatusCode::NOT_FOUND
    );
    // A second cancel is refused: the job has ended.
    let (s, v) = api
        .post(&format!("/api/v1/jobs/{}/cancel", started["id"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    let audit = app.audit_text(&session).await;
    assert!(audit.contains("job.cancel"), "{audit}");
    assert!(audit.contains("clone build-runner → slow-copy"), "{audit}");
    assert!(
        audit.contains("The clone of build-runner to slow-copy was cancelled"),
        "the outcome is audited: {audit}"
    );
}

#[tokio::test]
async fn the_clone_form_hands_a_long_copy_over_to_the_jobs_page() {
    let (app, gate) = held_app(Step::HoldCloneVolume).await;
    let (session, api) = admin(&app).await;
    shut_off_source(&api).await;
    let page = common::pages::text(&session, &app.url("/vms/build-runner")).await;
    let csrf = common::csrf_in(&page);

    let r = session
        .post(app.url("/vms/build-runner/clone"))
        .form(&[("csrf", csrf.as_str()), ("clone_name", "form-copy")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(to, "/jobs");
    let page = common::pages::text(&session, &app.url(&to)).await;
    assert!(
        page.contains("Cloning build-runner to form-copy runs as job 1; its progress is below."),
        "{page}"
    );
    assert!(page.contains("copying disk 1 of 1: default/form-copy.qcow2"));
    assert!(
        !page.contains("<a href=\"/vms/form-copy\">"),
        "no link to a VM that is not made yet"
    );

    gate.open();
    let ended = api.job_end(&json!({"id": 1})).await;
    assert_eq!(ended["state"], "succeeded", "{ended}");
    assert_eq!(
        ended["message"],
        "Cloned from build-runner to form-copy: 1 unit, 1 disk copied."
    );
    let page = common::pages::text(&session, &app.url("/jobs")).await;
    assert!(
        page.contains("<a href=\"/vms/form-copy\">form-copy</a>"),
        "{page}"
    );
    assert!(!page.contains("data-refresh"), "nothing runs any more");
    assert!(
        !page.contains("/jobs/1/cancel"),
        "no cancel for an ended job"
    );
    // The VM list shows the clone at once (the job's end refreshes it).
    let (_, list) = api.get("/api/v1/vms").await;
    assert!(list.to_string().contains("\"form-copy\""), "{list}");
}

#[tokio::test]
async fn a_restart_during_a_clone_marks_its_job_interrupted_and_frees_its_units() {
    let (app, gate) = held_app(Step::HoldCloneVolume).await;
    let (session, api) = admin(&app).await;
    let (_, free_fresh) = api.fingerprint().await;
    shut_off_source(&api).await;
    let (s, started) = api
        .post(
            "/api/v1/vms/build-runner/clone",
            json!({"name": "half-copy"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    wait_until_held(&gate, 1).await;
    assert_eq!(api.free_units().await, free_fresh - 1);

    // virtdeck stops with the copy under way (its thread never gets to finish), and
    // starts again on the same data directory.
    app.handle.stop(false).await;
    let (base, setup_url, handle) = spawn_app_on(app.data_dir.path(), |_| {}, None).await;
    assert!(setup_url.is_none(), "the accounts are kept");
    let api = Api {
        c: Client::new(),
        base,
        token: api.token.clone(),
    };
    let j = job(&api, &started["id"]).await;
    assert_eq!(j["state"], "interrupted", "{j}");
    let m = j["message"].as_str().unwrap();
    assert!(
        m.starts_with("virtdeck stopped while this clone ran (copying disk 1 of 1: default/half-copy.qcow2); the partial VM half-copy was removed with its copied disks and its units released"),
        "{m}"
    );
    assert!(j["finished_at"].as_i64().is_some());
    assert_eq!(
        api.free_units().await,
        free_fresh,
        "the clone's units are free"
    );
    assert_eq!(
        api.get("/api/v1/vms/half-copy").await.0,
        StatusCode::NOT_FOUND
    );
    // The session survives the restart too; the audit log says what start-up did.
    let audit = common::pages::text(&session, &format!("{}/audit", api.base)).await;
    assert!(
        audit.contains("job.interrupted") && audit.contains("half-copy"),
        "{audit}"
    );
    handle.stop(false).await;
}

#[tokio::test]
async fn a_volume_create_is_a_job_only_admins_cancel_and_a_cancel_deletes_the_volume() {
    let (app, gate) = held_app(Step::HoldCreateVolume).await;
    let (session, api) = admin(&app).await;
    let before = volumes(&api).await;
    let (s, started) = api
        .post(
            "/api/v1/pools/default/volumes",
            json!({"name": "scratch.img", "size_gib": 1, "format": "raw"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    wait_until_held(&gate, 1).await;
    let running = job(&api, &started["id"]).await;
    assert_eq!(
        (running["state"].as_str(), running["kind"].as_str()),
        (Some("running"), Some("create"))
    );
    assert_eq!(running["bytes_total"], 1u64 << 30);

    // An operator sees the job but may not cancel a volume job.
    app.add_user(&session, "olga", "operator", "operator-password-1")
        .await;
    let operator = Api {
        c: Client::new(),
        base: app.base.clone(),
        token: app.token_for(&session, "olga").await,
    };
    assert_eq!(operator.get("/api/v1/jobs").await.0, StatusCode::OK);
    let (s, _) = operator
        .post(&format!("/api/v1/jobs/{}/cancel", started["id"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (op_session, _) = app.login("olga", "operator-password-1").await;
    let page = common::pages::text(&op_session, &app.url("/jobs")).await;
    assert!(page.contains("data-job-kind=\"create\""), "{page}");
    assert!(
        !page.contains("/cancel\""),
        "no Cancel button for the operator"
    );

    let (s, v) = api
        .post(&format!("/api/v1/jobs/{}/cancel", started["id"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    gate.open();
    let ended = api.job_end(&started).await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
    assert_eq!(
        ended["message"],
        "Cancelled while the volume was made; it was deleted again."
    );
    assert_eq!(volumes(&api).await, before);
    let audit = app.audit_text(&session).await;
    assert!(audit.contains("denied"), "the operator's cancel: {audit}");
}

#[tokio::test]
async fn a_failed_volume_create_shows_at_the_form_and_leaves_no_volume() {
    let app = spawn_app_wrapped(
        |_| {},
        Some(Box::new(|inner| {
            Arc::new(FailAt::new(inner, Step::CreateVolume))
        })),
    )
    .await;
    let (session, api) = admin(&app).await;
    let before = volumes(&api).await;
    let (s, ended) = api
        .post_job(
            "/api/v1/pools/default/volumes",
            json!({"name": "doomed.qcow2", "size_gib": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(ended["state"], "failed", "{ended}");
    let m = ended["message"].as_str().unwrap();
    assert!(
        m.starts_with("Volume doomed.qcow2 could not be created") && m.contains("injected failure"),
        "{m}"
    );

    // Through the form: the job's failure is shown at the create form, as typed.
    let page = common::pages::text(&session, &app.url("/host/storage/default")).await;
    let csrf = common::csrf_in(&page);
    let r = session
        .post(app.url("/host/storage/default/volumes"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "doomed2.qcow2"),
            ("size_gib", "1"),
            ("format", "qcow2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Volume doomed2.qcow2 could not be created"),
        "{html}"
    );
    assert!(
        html.contains("value=\"doomed2.qcow2\""),
        "what was typed is kept"
    );
    assert_eq!(volumes(&api).await, before);
    let (_, jobs) = api.get("/api/v1/jobs").await;
    let states: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["failed", "failed"]);
}
