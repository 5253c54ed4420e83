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

/// What another virtdeck left on a target, written by hand here: a record and a
/// definition in `virtdeck-backups/<vm>-<uuid>/<stamp>` of `target`.
fn plant(
    target: &std::path::Path,
    place: &str,
    record: &Value,
    definition: &str,
) -> std::path::PathBuf {
    let dir = target.join("virtdeck-backups").join(place);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("virtdeck-backup.json"), record.to_string()).unwrap();
    std::fs::write(dir.join("domain.xml"), definition).unwrap();
    dir
}

const UUID: &str = "01234567-89ab-cdef-0123-456789abcdef";

fn planted_record(kind: &str, parent: Option<&str>, file: &str) -> Value {
    json!({"format": 1, "vm": "evil", "vm_uuid": UUID, "kind": kind, "parent": parent,
           "checkpoint": "virtdeck-1", "consistency": "crash", "why_full": "", "units": 1,
           "created_by": "someone", "created_at": 1, "finished_at": 2,
           "files": [{"disk": "vda", "file": file, "capacity": 1048576, "bytes": 1, "sha256": ""}]})
}

fn planted_definition(devices: &str) -> String {
    format!(
        "<domain type='qemu'><name>evil</name><uuid>{UUID}</uuid><memory unit='MiB'>64</memory>\
         <vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices>\
         <disk type='file' device='disk'><source file='/x/evil.qcow2'/><target dev='vda' bus='virtio'/></disk>\
         {devices}</devices></domain>"
    )
}

/// Looking for backups on a target (admins only) skips, each with its reason, whatever
/// would reach outside the backup's directory or into the host: a file named outside
/// it, a definition passing a host device through, a file that is a link to a host
/// file, an incremental without what it builds on. Nothing of them is listed.
#[tokio::test]
async fn looking_for_backups_on_a_target_skips_what_reaches_outside_it() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("found");
    let (s, p) = api
        .post(
            "/api/v1/pools",
            json!({"name": "found", "kind": "dir", "target_path": target.display().to_string()}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    // Not a target yet.
    let (s, e) = api
        .post("/api/v1/backup-targets/found/scan", json!({}))
        .await;
    assert_eq!(
        (s, e["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("pool")),
        "{e}"
    );
    let (s, _) = api.put("/api/v1/backup-targets/found", json!({})).await;
    assert_eq!(s, StatusCode::OK);

    plant(
        &target,
        "evil-01234567/1-outside",
        &planted_record("full", None, "../../../../etc/shadow"),
        &planted_definition(""),
    );
    plant(
        &target,
        "evil-01234567/2-hostdev",
        &planted_record("full", None, "vda.qcow2"),
        &planted_definition(
            "<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='3' slot='0' function='0'/></source></hostdev>",
        ),
    );
    let linked = plant(
        &target,
        "evil-01234567/3-link",
        &planted_record("full", None, "vda.qcow2"),
        &planted_definition(""),
    );
    std::os::unix::fs::symlink("/etc/shadow", linked.join("vda.qcow2")).unwrap();
    plant(
        &target,
        "evil-01234567/4-orphan",
        &planted_record("incremental", Some("evil-01234567/0-gone"), "vda.qcow2"),
        &planted_definition(""),
    );
    plant(
        &target,
        "evil-01234567/5-emulator",
        &planted_record("full", None, "vda.qcow2"),
        &planted_definition("<emulator>/tmp/evil</emulator>"),
    );

    let (s, r) = api
        .post("/api/v1/backup-targets/found/scan", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["added"].clone(), r["known"].clone()),
        (json!([]), json!(0)),
        "{r}"
    );
    let reason = |place: &str| -> String {
        r["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["place"] == format!("evil-01234567/{place}"))
            .unwrap_or_else(|| panic!("{place} not skipped: {r}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        reason("1-outside").contains("not named after its disk"),
        "{r}"
    );
    assert!(reason("2-hostdev").contains("host device"), "{r}");
    assert!(reason("3-link").contains("not a plain file"), "{r}");
    assert!(reason("4-orphan").contains("evil-01234567/0-gone"), "{r}");
    assert!(reason("5-emulator").contains("runs /tmp/evil"), "{r}");
    let (_, list) = api.get("/api/v1/backups").await;
    assert_eq!(list["backups"], json!([]), "{list}");

    // The page's "Look for backups" says the same where it was pressed.
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = app.get_text(&session, "/backups").await;
    assert!(
        page.contains(r#"action="/backups/targets/found/scan""#),
        "{page}"
    );
    let r = session
        .post(app.url("/backups/targets/found/scan"))
        .form(&[("csrf", csrf_in(&page).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = app.get_text(&session, "/backups").await;
    assert!(
        page.contains("found: 0 backups added, 0 listed already. Skipped 5:"),
        "{page}"
    );
    let audit = app.audit_text(&session).await;
    assert!(audit.contains("looked for backups: 0 added"), "{audit}");

    // Operators and viewers may not.
    let (viewer, token) = app.viewer(&session).await;
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/backup-targets/found/scan"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = app.get_text(&viewer, "/backups").await;
    assert!(!page.contains("/scan"), "{page}");
}
