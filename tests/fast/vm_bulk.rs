//! Bulk actions from the VM list, on a generated test-driver host: one job per VM, each
//! VM's outcome (refusals included) on the batch's page and in the API, each change
//! audited as if asked alone; the ticked rows or every VM matching the filter; bad
//! requests refused before any job exists; viewers refused.

use crate::common;
use crate::scale_host as host;

use common::api::Api;
use common::{location, spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const DEMO: &str = include_str!("../../demo/demo-host.xml");

async fn host_of(vms: usize) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.xml");
    std::fs::write(&path, host::scale_host_xml(DEMO, vms).unwrap()).unwrap();
    let uri = format!("test://{}", path.display());
    let app = spawn_app_with(move |cfg| {
        cfg.demo = false;
        cfg.libvirt_uri = uri;
    })
    .await;
    (app, dir)
}

/// The batch once every VM's job has ended (polled every 50 ms, at most a minute).
async fn batch_end(api: &Api, batch: &Value) -> Value {
    let url = format!("/api/v1/bulk/{}", batch["batch"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, b) = api.get(&url).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        if b["running"] == 0 {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "the bulk action did not end: {b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn states(list: &Value) -> Vec<(String, String)> {
    list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_start_of_twenty_vms_shows_each_outcome() {
    let (app, _dir) = host_of(40).await;
    let api = Api::new(&app).await;
    let before = states(&api.get("/api/v1/vms").await.1);
    let chosen: Vec<(String, String)> = before.into_iter().take(20).collect();
    let names: Vec<&str> = chosen.iter().map(|(n, _)| n.as_str()).collect();
    let off = chosen.iter().filter(|(_, s)| s == "shut_off").count();
    assert!(off > 0 && off < 20, "a mix of states: {chosen:?}");

    let (s, started) = api
        .post("/api/v1/vms/bulk", json!({"action": "start", "vms": names}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["jobs"].as_array().unwrap().len(), 20);
    let end = batch_end(&api, &started).await;
    assert_eq!(end["action"], "start");
    assert_eq!(end["succeeded"], off, "{end}");
    assert_eq!(end["failed"], 20 - off, "{end}");
    for (job, (name, was)) in end["jobs"].as_array().unwrap().iter().zip(&chosen) {
        assert_eq!(job["vm"], name.as_str(), "in the order given");
        assert_eq!(job["kind"], "action");
        if was == "shut_off" {
            assert_eq!(job["state"], "succeeded", "{job}");
            assert_eq!(job["message"], "Started.");
        } else {
            // The refusal, in words, for this VM only.
            assert_eq!(job["state"], "failed", "{job}");
            assert!(!job["message"].as_str().unwrap().is_empty(), "{job}");
        }
    }
    let after = states(&api.get("/api/v1/vms").await.1);
    for (name, was) in &chosen {
        let now = &after.iter().find(|(n, _)| n == name).unwrap().1;
        if was == "shut_off" {
            assert_eq!(now, "running", "{name}");
        } else {
            assert_eq!(now, was, "{name} unchanged");
        }
    }

    // The batch's page, and each start in the audit log like a single one.
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = app
        .get_text(&session, &format!("/vms/bulk/{}", end["batch"]))
        .await;
    assert!(
        page.contains(&format!("<strong>{off}</strong> done")),
        "{page}"
    );
    for name in &names {
        assert!(page.contains(&format!(r#"<tr data-vm="{name}""#)), "{name}");
    }
    let audit = app.audit_text(&session).await;
    assert!(audit.matches("vm.start").count() >= 20, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_form_acts_on_ticked_rows_or_on_everything_the_filter_matches() {
    let (app, _dir) = host_of(12).await;
    let session = app.setup_admin("admin").await;
    let list = app.get_text(&session, "/vms").await;
    assert!(
        list.contains(r#"id="bulk-form""#),
        "operators get the bulk form"
    );
    assert!(list.contains(r#"name="vm" value="vm0001" form="bulk-form""#));
    let csrf = common::csrf_in(&list);

    // Ticked rows: tag two VMs.
    let body = format!("csrf={csrf}&action=tag&add_tag=Batch&vm=vm0001&vm=vm0002&back=%2Fvms");
    let r = session
        .post(app.url("/vms/bulk"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let batch_page = location(&r);
    assert!(batch_page.starts_with("/vms/bulk/"), "{batch_page}");
    let token = app.admin_token(&session).await;
    let api = Api {
        c: reqwest::Client::new(),
        base: app.base.clone(),
        token,
    };
    let batch =
        json!({"batch": batch_page.trim_start_matches("/vms/bulk/").parse::<i64>().unwrap()});
    let end = batch_end(&api, &batch).await;
    assert_eq!(end["succeeded"], 2, "{end}");
    let (_, tagged) = api.get("/api/v1/vms?tag=batch").await;
    let mut got: Vec<String> = states(&tagged).into_iter().map(|(n, _)| n).collect();
    got.sort();
    assert_eq!(got, vec!["vm0001", "vm0002"]);

    // Everything the filter matches (the tag, on every page): snapshot both.
    let body = format!("csrf={csrf}&action=snapshot&all=1&tag=batch&back=%2Fvms%3Ftag%3Dbatch");
    let r = session
        .post(app.url("/vms/bulk"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let batch_page = location(&r);
    let id: i64 = batch_page.trim_start_matches("/vms/bulk/").parse().unwrap();
    let end = batch_end(&api, &json!({"batch": id})).await;
    assert_eq!(end["jobs"].as_array().unwrap().len(), 2, "{end}");
    assert_eq!(end["succeeded"], 2, "{end}");
    let (_, snaps) = api.get("/api/v1/vms/vm0002/snapshots").await;
    assert!(snaps.to_string().contains(&format!("bulk-{id}")), "{snaps}");

    // Nothing ticked: said on the list, no batch made.
    let r = session
        .post(app.url("/vms/bulk"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&action=start&back=%2Fvms"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/vms");
    let list = app.get_text(&session, "/vms").await;
    assert!(list.contains("Select at least one VM."), "{list}");
}

#[tokio::test]
async fn bad_bulk_requests_are_refused_before_any_job() {
    let app = common::spawn_app().await;
    let api = Api::new(&app).await;
    for (body, field) in [
        (json!({"action": "start", "vms": []}), "vms"),
        (json!({"action": "start", "vms": ["web01", "ghost"]}), "vms"),
        (json!({"action": "explode", "vms": ["web01"]}), "action"),
        (
            json!({"action": "tag", "vms": ["web01"], "tag": "Bad Tag"}),
            "tag",
        ),
        (json!({"action": "start", "vms": ["../x"]}), "vms"),
    ] {
        let (s, e) = api.post("/api/v1/vms/bulk", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body} {e}");
        assert_eq!(e["error"]["field"], field, "{body} {e}");
    }
    let (_, e) = api
        .post(
            "/api/v1/vms/bulk",
            json!({"action": "start", "vms": ["web01", "ghost"]}),
        )
        .await;
    assert!(
        e["error"]["message"].as_str().unwrap().contains("ghost"),
        "{e}"
    );
    let (_, jobs) = api.get("/api/v1/jobs").await;
    assert!(
        !jobs.to_string().contains("\"action\""),
        "no job made: {jobs}"
    );
    assert_eq!(api.get("/api/v1/bulk/999").await.0, StatusCode::NOT_FOUND);

    // A viewer: refused, and audited as such.
    let admin = app.login("admin", common::ADMIN_PASSWORD).await.0;
    app.add_user(&admin, "vic", "viewer", "viewer-password-1")
        .await;
    let token = app.token_for(&admin, "vic").await;
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/vms/bulk"))
        .bearer_auth(&token)
        .json(&json!({"action": "start", "vms": ["web01"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let viewer = common::client();
    app.login_with(&viewer, "vic", "viewer-password-1").await;
    let list = app.get_text(&viewer, "/vms").await;
    assert!(!list.contains("bulk-form"), "no bulk form for viewers");
}
