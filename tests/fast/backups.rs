//! Backups on libvirt's test driver: targets (directory and NFS pools only, admins), the
//! refusals of "Back up now" at their field, a backup libvirt does not begin recorded as
//! failed with nothing left in the target, the pages, and who may do what.
//! (tests/real/backups_real.rs backs up, restores and compares a real guest's disk.)

use crate::common;

use common::api::Api;
use common::{csrf_in, spawn_app};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn backups_are_refused_at_their_field_and_a_failed_one_leaves_nothing() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("backups");
    let (s, p) = api
        .post(
            "/api/v1/pools",
            json!({"name": "bk", "kind": "dir", "target_path": target.display().to_string()}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");

    // Not a target yet; block pools never.
    let (s, e) = api
        .post("/api/v1/vms/web01/backups", json!({"pool": "bk"}))
        .await;
    assert_eq!(
        (s, e["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("pool")),
        "{e}"
    );
    for (pool, want) in [
        ("vg_vms", StatusCode::UNPROCESSABLE_ENTITY),
        ("nowhere", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (s, e) = api
            .put(&format!("/api/v1/backup-targets/{pool}"), json!({}))
            .await;
        assert_eq!(s, want, "{pool}: {e}");
        assert_eq!(e["error"]["field"], "pool");
    }
    let (s, t) = api.put("/api/v1/backup-targets/bk", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t[0]["pool"], "bk");

    // A VM that is off is copied whole, disk by disk: the demo's disk is not really there,
    // so the copy fails, is recorded as failed, and leaves nothing.
    let (s, off) = api
        .post("/api/v1/vms/win2019-ad/backups", json!({"pool": "bk"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{off}");
    assert_eq!(off["consistency"], "clean");
    assert!(
        off["why_full"].as_str().unwrap().contains("shut off"),
        "{off}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, list) = api.get("/api/v1/backups?vm=win2019-ad").await;
        let state = list["backups"][0]["state"].clone();
        if state != "running" {
            assert_eq!(state, "failed", "{list}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // libvirt's test driver has no backup API: said, recorded as failed, no files left.
    let (s, e) = api
        .post("/api/v1/vms/web01/backups", json!({"pool": "bk"}))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not begin the backup"),
        "{e}"
    );
    let (_, list) = api.get("/api/v1/backups?vm=web01").await;
    let b = &list["backups"][0];
    assert_eq!(
        (b["state"].clone(), b["kind"].clone()),
        (json!("failed"), json!("full")),
        "{list}"
    );
    let left: Vec<_> = std::fs::read_dir(target.join("virtdeck-backups"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing left in the target: {left:?}");

    // Restore and delete of a backup that is not there.
    let (s, _) = api
        .post("/api/v1/backups/999/restore", json!({"name": "x1"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.delete("/api/v1/backups/999").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .post("/api/v1/backups/999/restore-over", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A failed backup cannot be restored.
    let (s, e) = api
        .post(
            &format!("/api/v1/backups/{}/restore", b["id"]),
            json!({"name": "x1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");

    // The pages: the VM's Back up now, the Backups page with its target and the failure.
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = app.get_text(&session, "/vms/web01").await;
    assert!(page.contains(r#"id="backup-form""#), "{page}");
    let csrf = csrf_in(&page);
    let r = session
        .post(app.url("/vms/web01/backup"))
        .form(&[("csrf", csrf.as_str()), ("pool", "default")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains(r#"data-field="pool""#));
    let page = app.get_text(&session, "/backups").await;
    assert!(
        page.contains(r#"data-target="bk""#) && page.contains(r#"data-state="failed""#),
        "{page}"
    );
    // Cancel on the Backups page: only a running backup has one to stop.
    let csrf = csrf_in(&page);
    let r = session
        .post(app.url(&format!("/backups/{}/cancel", b["id"])))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let said = r.text().await.unwrap();
    assert!(
        said.contains(&format!(
            "Backup {} is not running, so there is nothing to cancel.",
            b["id"]
        )),
        "{said}"
    );
    let r = session
        .post(app.url("/backups/999/cancel"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let audit = app.audit_text(&session).await;
    assert!(
        audit.contains("backup.target") && audit.contains("vm.backup"),
        "{audit}"
    );
}

#[tokio::test]
async fn viewers_see_backups_but_change_nothing() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let (viewer, token) = app.viewer(&admin).await;
    let client = reqwest::Client::new();
    let r = client
        .get(app.url("/api/v1/backups"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let schedule = json!({"scope": "all", "pool": "default", "every": "daily", "at": "01:00",
                          "keep": {"last": 1}});
    for (method, path, body) in [
        ("PUT", "/api/v1/backup-targets/default", json!({})),
        (
            "POST",
            "/api/v1/vms/web01/backups",
            json!({"pool": "default"}),
        ),
        ("DELETE", "/api/v1/backups/1", json!({})),
        ("POST", "/api/v1/backup-schedules", schedule),
        ("DELETE", "/api/v1/backup-schedules/1", json!({})),
        ("POST", "/api/v1/backup-schedules/1/run", json!({})),
    ] {
        let r = client
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }
    let page = app.get_text(&viewer, "/backups").await;
    assert!(!page.contains("target-form"), "{page}");
}

#[tokio::test]
async fn schedules_are_checked_at_their_fields_listed_and_removed_by_admins() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let (s, p) = api
        .post(
            "/api/v1/pools",
            json!({"name": "bk", "kind": "dir", "target_path": dir.path().join("b").display().to_string()}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let (s, _) = api.put("/api/v1/backup-targets/bk", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let good = json!({"scope": "tag", "scope_value": "prod", "pool": "bk", "every": "weekly",
                      "weekday": 6, "at": "02:30", "keep": {"last": 3, "weekly": 4}});
    for (change, field) in [
        (json!({"at": "25:00"}), "at"),
        (json!({"pool": "default"}), "pool"),
        (json!({"scope_value": ""}), "scope_value"),
        (json!({"scope": "cluster"}), "scope"),
        (json!({"keep": {}}), "keep_last"),
        (json!({"weekday": 9}), "weekday"),
    ] {
        let mut body = good.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, e) = api.post("/api/v1/backup-schedules", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    let (s, made) = api.post("/api/v1/backup-schedules", good).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    assert_eq!(
        (made["at_minute"].clone(), made["every"].clone()),
        (json!(150), json!("weekly"))
    );
    let (_, list) = api.get("/api/v1/backup-schedules").await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = app.get_text(&session, "/backups").await;
    assert!(
        page.contains("VMs tagged prod") && page.contains("Sundays at 02:30"),
        "{page}"
    );
    assert!(
        page.contains(&format!("/backups/schedules/{}/run", made["id"])),
        "an admin can run a schedule now: {page}"
    );

    // Run now: it runs at once (the demo host's VMs have no tag "prod": nothing to back
    // up) and counts as the schedule's last run; a schedule that is not there is a 404.
    assert_eq!(made["last_run_at"], Value::Null);
    let (s, r) = api
        .post(
            &format!("/api/v1/backup-schedules/{}/run", made["id"]),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, list) = api.get("/api/v1/backup-schedules").await;
        if list["schedules"][0]["last_run_at"].is_i64() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ran: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (s, e) = api
        .post("/api/v1/backup-schedules/999/run", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let page = app.get_text(&session, "/backups").await;
    assert!(!page.contains(">never<"), "the last run is shown: {page}");

    let (s, _) = api
        .delete(&format!("/api/v1/backup-schedules/{}", made["id"]))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .delete(&format!("/api/v1/backup-schedules/{}", made["id"]))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let audit = app.audit_text(&session).await;
    assert!(audit.contains("backup.schedule"), "{audit}");
    assert!(audit.contains("run now"), "{audit}");
}

/// The names of `vm`'s snapshots, oldest first.
async fn snapshot_names(api: &Api, vm: &str) -> Vec<String> {
    let (_, list) = api.get(&format!("/api/v1/vms/{vm}/snapshots")).await;
    let mut snaps: Vec<(i64, String)> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["created_at"].as_i64().unwrap(),
                s["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    snaps.sort();
    snaps.into_iter().map(|(_, n)| n).collect()
}

#[tokio::test]
async fn snapshot_schedules_take_named_snapshots_and_keep_only_their_last_n() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let good = json!({"kind": "snapshot", "scope": "vm", "scope_value": "web01",
                      "every": "daily", "at": "03:00", "keep": {"last": 2}});
    for (change, field) in [
        (json!({"pool": "default"}), "pool"),
        (json!({"keep": {"last": 2, "weekly": 4}}), "keep_daily"),
        (json!({"keep": {"last": 0}}), "keep_last"),
        (json!({"kind": "replica"}), ""),
    ] {
        let mut body = good.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, e) = api.post("/api/v1/backup-schedules", body.clone()).await;
        if field.is_empty() {
            assert!(s.is_client_error(), "{body}: {s} {e}");
        } else {
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
            assert_eq!(e["error"]["field"], field, "{body}: {e}");
        }
    }
    // A snapshot the admin took by hand is never the schedule's to delete.
    let (s, e) = api
        .post(
            "/api/v1/vms/web01/snapshots",
            json!({"name": "before-upgrade"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let (s, made) = api.post("/api/v1/backup-schedules", good).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    assert_eq!(
        (made["kind"].clone(), made["pool"].clone()),
        (json!("snapshot"), json!(""))
    );
    let id = made["id"].as_i64().unwrap();
    let prefix = format!("auto-{id}-");

    let mut taken: Vec<String> = Vec::new();
    for run in 1..=3 {
        let (s, r) = api
            .post(&format!("/api/v1/backup-schedules/{id}/run"), json!({}))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "run {run}: {r}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let ours = loop {
            let names = snapshot_names(&api, "web01").await;
            let ours: Vec<String> = names
                .iter()
                .filter(|n| n.starts_with(&prefix))
                .cloned()
                .collect();
            let new = ours.iter().find(|n| !taken.contains(n)).cloned();
            if let Some(new) = new {
                if ours.len() == run.min(2) {
                    taken.push(new);
                    break ours;
                }
            }
            assert!(std::time::Instant::now() < deadline, "run {run}: {names:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(ours.len() <= 2, "{ours:?}");
    }
    let names = snapshot_names(&api, "web01").await;
    assert!(names.contains(&"before-upgrade".to_string()), "{names:?}");
    let ours: Vec<&String> = names.iter().filter(|n| n.starts_with(&prefix)).collect();
    assert_eq!(
        ours,
        vec![&taken[1], &taken[2]],
        "the newest two stay: {names:?}"
    );

    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = app.get_text(&session, "/backups").await;
    assert!(
        page.contains("data-kind=\"snapshot\"") && page.contains("the VM's disks"),
        "{page}"
    );
    let audit = app.audit_text(&session).await;
    assert!(audit.contains("vm.snapshot.scheduled"), "{audit}");
}
