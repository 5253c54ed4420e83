//! Host > Storage and Host > Libvirt networks on libvirt's test driver (the demo host):
//! defining dir, NFS and LVM pools, pool actions, volumes, deleting, rollback of a failed
//! define, roles, CSRF, the audit log, removing the NAT network, and the pool feeding the
//! VM create form and the capacity.

use crate::common;

use common::api::Api;
use common::faults::{FailAt, Step};
use common::{client, csrf_in, spawn_app, spawn_app_wrapped, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;

fn dir_pool(name: &str) -> Value {
    json!({"name": name, "kind": "dir", "target_path": format!("/srv/pools/{name}")})
}

async fn pool_names(api: &Api) -> Vec<String> {
    let (s, body) = api.get("/api/v1/pools").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// The page at `path`, as text.
async fn text(c: &reqwest::Client, app: &TestApp, path: &str) -> String {
    c.get(app.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Posts a form; returns the status and where it redirects to (if it does).
async fn post_form(
    c: &reqwest::Client,
    app: &TestApp,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let r = c.post(app.url(path)).form(form).send().await.unwrap();
    let status = r.status();
    let to = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, to, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn dir_nfs_and_lvm_pools_are_defined_started_and_managed_over_the_api() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;

    let (s, p) = api.post("/api/v1/pools", dir_pool("fast")).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["kind"], "dir");
    assert_eq!(p["active"], true);
    assert_eq!(p["autostart"], true);
    assert_eq!(p["target_path"], "/srv/pools/fast");

    let (s, p) = api
        .post(
            "/api/v1/pools",
            json!({"name": "nas", "kind": "netfs", "target_path": "/mnt/nas",
                   "nfs_host": "nas.example.com", "nfs_export": "/export/vms", "autostart": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["kind"], "netfs");
    assert_eq!(p["source"], "nas.example.com:/export/vms");
    assert_eq!(p["autostart"], false);

    // LVM: an existing volume group, and one built on devices (test driver only: this
    // machine has no device-mapper).
    let (s, p) = api
        .post(
            "/api/v1/pools",
            json!({"name": "vg-data", "kind": "logical", "vg_name": "vg_data"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["source"], "volume group vg_data");
    assert_eq!(p["target_path"], "/dev/vg_data");
    let (s, p) = api
        .post(
            "/api/v1/pools",
            json!({"name": "vg-new", "kind": "logical", "vg_name": "vg_new", "logical_mode": "build",
                   "devices": ["/dev/sdc", "/dev/sdd"], "confirm_wipe": "vg_new"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["source"], "volume group vg_new on /dev/sdc, /dev/sdd");

    let names = pool_names(&api).await;
    for n in ["fast", "nas", "vg-data", "vg-new", "default", "vg_vms"] {
        assert!(names.contains(&n.to_string()), "{n} missing in {names:?}");
    }

    // Actions.
    let (s, p) = api.post("/api/v1/pools/fast/stop", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["active"], false);
    let (s, e) = api.post("/api/v1/pools/fast/refresh", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("start it"));
    let (s, e) = api.post("/api/v1/pools/fast/stop", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, p) = api.post("/api/v1/pools/fast/start", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["active"], true);
    let (s, p) = api.post("/api/v1/pools/fast/no-autostart", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["autostart"], false);
    let (s, p) = api.post("/api/v1/pools/fast/refresh", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let (s, e) = api.post("/api/v1/pools/fast/explode", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, e) = api.post("/api/v1/pools/nope/start", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");

    // Volumes, with their format.
    let (s, v) = api.get("/api/v1/pools/default/volumes").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let web01 = v["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "web01.qcow2")
        .unwrap_or_else(|| panic!("web01.qcow2 in {v}"));
    assert_eq!(web01["format"], "qcow2");
    assert_eq!(web01["capacity_bytes"], 20u64 << 30);
    assert_eq!(web01["path"], "/var/lib/libvirt/images/web01.qcow2");

    // Delete (definition only, then with contents).
    let (s, d) = api.delete("/api/v1/pools/nas").await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["storage_deleted"], false);
    let (s, d) = api.delete("/api/v1/pools/fast?delete_contents=true").await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["storage_deleted"], true);
    let names = pool_names(&api).await;
    assert!(!names.contains(&"nas".to_string()) && !names.contains(&"fast".to_string()));
    let (s, _) = api.delete("/api/v1/pools/fast").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Contents of a pool holding VM disks are not deleted.
    let (s, e) = api
        .delete("/api/v1/pools/default?delete_contents=true")
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("web01") && msg.contains("build-runner"),
        "{msg}"
    );
    assert!(pool_names(&api).await.contains(&"default".to_string()));

    let admin = client();
    app.login_with(&admin, "admin", common::ADMIN_PASSWORD)
        .await;
    let audit = app.audit_text(&admin).await;
    for needle in [
        "pool.define",
        "dir pool at /srv/pools/fast, autostart on",
        "volume group built on /dev/sdc, /dev/sdd (wiped)",
        "pool.stop",
        "pool.start",
        "pool.no-autostart",
        "pool.refresh",
        "pool.delete",
        "definition removed, contents kept",
    ] {
        assert!(audit.contains(needle), "audit lacks {needle}");
    }
}

#[tokio::test]
async fn bad_pool_definitions_are_refused_at_their_field_and_define_nothing() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let before = pool_names(&api).await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"name": "a/b", "kind": "dir", "target_path": "/srv/a"}),
            "name",
            "letters",
        ),
        (
            json!({"name": "x", "kind": "zfs"}),
            "kind",
            "dir, logical or netfs",
        ),
        (
            json!({"name": "x", "kind": "dir", "target_path": "srv/x"}),
            "target_path",
            "absolute",
        ),
        (
            json!({"name": "x", "kind": "dir", "target_path": "/srv/../etc"}),
            "target_path",
            "normalized",
        ),
        (
            json!({"name": "x", "kind": "dir", "target_path": "/etc"}),
            "target_path",
            "system directory",
        ),
        (
            json!({"name": "default", "kind": "dir", "target_path": "/srv/x"}),
            "name",
            "already exists",
        ),
        (
            json!({"name": "x", "kind": "logical", "vg_name": "vg_vms"}),
            "vg_name",
            "already uses /dev/vg_vms",
        ),
        (
            json!({"name": "x", "kind": "logical", "vg_name": "bad vg"}),
            "vg_name",
            "letters",
        ),
        (
            json!({"name": "x", "kind": "logical", "vg_name": "vg", "logical_mode": "build",
                "devices": ["/dev/sdc"]}),
            "confirm_wipe",
            "erases everything on /dev/sdc",
        ),
        (
            json!({"name": "x", "kind": "logical", "vg_name": "vg", "logical_mode": "build",
                "devices": ["/home/disk.img"], "confirm_wipe": "vg"}),
            "devices",
            "under /dev/",
        ),
        (
            json!({"name": "x", "kind": "netfs", "target_path": "/mnt/x", "nfs_host": "bad host!",
                "nfs_export": "/e"}),
            "nfs_host",
            "host name",
        ),
        (
            json!({"name": "x", "kind": "netfs", "target_path": "/mnt/x", "nfs_host": "nas",
                "nfs_export": "e"}),
            "nfs_export",
            "absolute",
        ),
    ];
    for (body, field, text) in cases {
        let (s, e) = api.post("/api/v1/pools", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {e}");
        let hit = e["error"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["field"] == field)
            .unwrap_or_else(|| panic!("no error at {field}: {e}"));
        assert!(
            hit["message"].as_str().unwrap().contains(text),
            "{field}: {hit} should say {text}"
        );
    }
    let (s, e) = api
        .post(
            "/api/v1/pools",
            json!({"name": "x", "kind": "dir", "bogus": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(pool_names(&api).await, before, "nothing was defined");

    // The page shows the error at the field, with what was typed.
    let admin = client();
    app.login_with(&admin, "admin", common::ADMIN_PASSWORD)
        .await;
    let csrf = app.csrf(&admin, "/host/storage").await;
    let (status, _to, body) = post_form(
        &admin,
        &app,
        "/host/storage",
        &[
            ("csrf", csrf.as_str()),
            ("name", "newvg"),
            ("kind", "logical"),
            ("vg_name", "vg_new"),
            ("logical_mode", "build"),
            ("devices", "/dev/sdc\n/dev/sdd"),
            ("confirm_wipe", ""),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let page = body;
    assert!(page.contains("data-field=\"confirm_wipe\""), "{page}");
    assert!(page.contains("Building erases everything on /dev/sdc, /dev/sdd"));
    assert!(page.contains("wipes the listed devices"));
    assert!(
        page.contains("/dev/sdc\n/dev/sdd</textarea>"),
        "typed devices kept"
    );
    let (status, _to, body) = post_form(
        &admin,
        &app,
        "/host/storage",
        &[
            ("csrf", csrf.as_str()),
            ("name", "p1"),
            ("kind", "dir"),
            ("target_path", "/srv//p1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let page = body;
    assert!(page.contains("data-field=\"target_path\""), "{page}");
    assert!(page.contains("value=\"/srv//p1\""));
    assert_eq!(pool_names(&api).await, before, "nothing was defined");
    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("invalid"), "refusals are audited");
}

#[tokio::test]
async fn a_failed_step_undoes_the_whole_pool_define() {
    for (step, says) in [
        (Step::BuildPool, "build the pool"),
        (Step::StartPool, "start the pool"),
        (Step::PoolAutostart, "change the pool's autostart"),
    ] {
        let app = spawn_app_wrapped(
            |_| {},
            Some(Box::new(move |inner| Arc::new(FailAt::new(inner, step)))),
        )
        .await;
        let api = Api::new(&app).await;
        let before = pool_names(&api).await;
        let (s, e) = api.post("/api/v1/pools", dir_pool("broken")).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{step:?}: {e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{step:?}: {msg}");
        assert!(msg.contains("removed its definition"), "{step:?}: {msg}");
        if step == Step::PoolAutostart {
            assert!(msg.contains("stopped it"), "{msg}");
        }
        assert_eq!(
            pool_names(&api).await,
            before,
            "{step:?} left a pool behind"
        );
        let admin = client();
        app.login_with(&admin, "admin", common::ADMIN_PASSWORD)
            .await;
        let audit = app.audit_text(&admin).await;
        assert!(audit.contains("failed"), "{step:?}: failure audited");
    }
}

#[tokio::test]
async fn only_admins_see_or_change_storage_and_networks() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, "op", "operator", "operator-password-1")
        .await;
    app.add_user(&admin, "view", "viewer", "viewer-password-1")
        .await;
    let host = text(&admin, &app, "/host").await;
    assert!(
        host.contains("href=\"/host/storage\"") && host.contains("href=\"/host/libvirt-networks\"")
    );

    for (user, password) in [("op", "operator-password-1"), ("view", "viewer-password-1")] {
        let (c, _) = app.login(user, password).await;
        let host = text(&c, &app, "/host").await;
        assert!(
            !host.contains("/host/storage"),
            "{user} sees the Storage nav"
        );
        assert!(
            !host.contains("/host/libvirt-networks"),
            "{user} sees the networks nav"
        );
        let csrf = csrf_in(&host);
        for path in [
            "/host/storage",
            "/host/storage/default",
            "/host/storage/default/delete",
            "/host/libvirt-networks",
            "/host/libvirt-networks/default/remove",
        ] {
            let r = c.get(app.url(path)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{user} GET {path}");
        }
        for (path, form) in [
            (
                "/host/storage",
                vec![("name", "x"), ("kind", "dir"), ("target_path", "/srv/x")],
            ),
            ("/host/storage/default/action/stop", vec![]),
            ("/host/storage/default/delete", vec![]),
            ("/host/libvirt-networks/default/remove", vec![]),
        ] {
            let mut form = form;
            form.push(("csrf", csrf.as_str()));
            let r = c.post(app.url(path)).form(&form).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{user} POST {path}");
        }
        let token = app.token_for(&admin, user).await;
        let api = reqwest::Client::new();
        for (method, path) in [
            (reqwest::Method::POST, "/api/v1/pools"),
            (reqwest::Method::POST, "/api/v1/pools/default/stop"),
            (reqwest::Method::DELETE, "/api/v1/pools/default"),
            (reqwest::Method::GET, "/api/v1/pools/default/volumes"),
            (reqwest::Method::GET, "/api/v1/networks"),
            (reqwest::Method::DELETE, "/api/v1/networks/default"),
        ] {
            let r = api
                .request(method.clone(), app.url(path))
                .bearer_auth(&token)
                .json(&dir_pool("x"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{user} {method} {path}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "forbidden");
        }
    }

    // An admin session without the CSRF token is refused too.
    for (path, form) in [
        (
            "/host/storage",
            vec![("name", "x"), ("kind", "dir"), ("target_path", "/srv/x")],
        ),
        ("/host/storage/default/action/stop", vec![]),
        ("/host/storage/default/delete", vec![]),
        (
            "/host/libvirt-networks/default/remove",
            vec![("csrf", "forged")],
        ),
    ] {
        let r = admin.post(app.url(path)).form(&form).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF: POST {path}");
    }
    let r = admin
        .post(app.url("/api/v1/pools"))
        .json(&dir_pool("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "API session call without X-CSRF-Token"
    );

    let api = Api {
        c: reqwest::Client::new(),
        base: app.base.clone(),
        token: app.admin_token(&admin).await,
    };
    let names = pool_names(&api).await;
    assert!(!names.contains(&"x".to_string()) && names.contains(&"default".to_string()));
    let (_, nets) = api.get("/api/v1/networks").await;
    assert!(nets["networks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == "default"));
    let audit = app.audit_text(&admin).await;
    assert!(
        audit.contains("role operator needs admin"),
        "refusals audited"
    );
    assert!(
        audit.contains("role viewer needs admin"),
        "refusals audited"
    );
}

#[tokio::test]
async fn the_storage_pages_define_act_on_and_delete_a_pool() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = text(&admin, &app, "/host/storage").await;
    assert!(page.contains("data-pool=\"default\"") && page.contains("data-pool=\"vg_vms\""));
    assert!(page.contains("<progress class=\"meter\""), "capacity bars");
    assert!(page.contains("volume group vg_vms on /dev/sdb"));
    let csrf = csrf_in(&page);

    let (status, to, _body) = post_form(
        &admin,
        &app,
        "/host/storage",
        &[
            ("csrf", csrf.as_str()),
            ("name", "fast"),
            ("kind", "dir"),
            ("target_path", "/srv/pools/fast"),
            ("autostart", "1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(to, "/host/storage/fast");
    let pool = text(&admin, &app, &to).await;
    assert!(pool.contains("Pool fast defined and started; it starts with the host."));
    assert!(pool.contains("<dd id=\"pool-state\">running</dd>"));
    assert!(pool.contains("<dd id=\"pool-autostart\">yes</dd>"));
    assert!(pool.contains("id=\"no-volumes\""));

    // The fresh form ticks "start with the host"; a form sent with the box unticked
    // (absent from the post) defines a pool that does not.
    assert!(
        page.contains("name=\"autostart\" value=\"1\" checked"),
        "ticked at first"
    );
    let (status, to, _body) = post_form(
        &admin,
        &app,
        "/host/storage",
        &[
            ("csrf", csrf.as_str()),
            ("name", "manual"),
            ("kind", "dir"),
            ("target_path", "/srv/pools/manual"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let manual = text(&admin, &app, &to).await;
    assert!(
        manual.contains("<dd id=\"pool-autostart\">no</dd>"),
        "unticked means no autostart"
    );

    for (action, state, autostart, says) in [
        ("stop", "stopped", "yes", "Pool fast stopped."),
        ("start", "running", "yes", "Pool fast started."),
        (
            "no-autostart",
            "running",
            "no",
            "no longer starts with the host",
        ),
        ("refresh", "running", "no", "Pool fast refreshed."),
    ] {
        let (status, to, _body) = post_form(
            &admin,
            &app,
            &format!("/host/storage/fast/action/{action}"),
            &[("csrf", csrf.as_str())],
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{action}");
        let pool = text(&admin, &app, &to).await;
        assert!(pool.contains(says), "{action}: {pool}");
        assert!(
            pool.contains(&format!("<dd id=\"pool-state\">{state}</dd>")),
            "{action}"
        );
        assert!(
            pool.contains(&format!("<dd id=\"pool-autostart\">{autostart}</dd>")),
            "{action}"
        );
    }

    // The default pool's volumes, with size and format.
    let pool = text(&admin, &app, "/host/storage/default").await;
    assert!(pool.contains("<tr data-volume=\"web01.qcow2\"><td>web01.qcow2</td><td>qcow2</td><td class=\"num\">20.0 GiB</td>"), "{pool}");
    assert!(pool.contains("debian-12.8.0-amd64-netinst.iso</td><td>iso</td>"));

    // Its delete page names the VMs with disks there; deleting its contents is refused.
    let del = text(&admin, &app, "/host/storage/default/delete").await;
    assert!(del.contains("id=\"pool-users\""));
    assert!(del.contains("/var/lib/libvirt/images/build-runner.qcow2"));
    let (status, _to, body) = post_form(
        &admin,
        &app,
        "/host/storage/default/delete",
        &[("csrf", csrf.as_str()), ("delete_contents", "1")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("delete those VMs or their disks first"));

    // Deleting the new pool.
    let del = text(&admin, &app, "/host/storage/fast/delete").await;
    assert!(!del.contains("id=\"pool-users\""));
    assert!(del.contains("It holds no volumes."));
    let (status, to, _body) = post_form(
        &admin,
        &app,
        "/host/storage/fast/delete",
        &[("csrf", csrf.as_str()), ("delete_contents", "1")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let list = text(&admin, &app, &to).await;
    assert!(list.contains("Pool fast deleted with its contents (0 volumes)."));
    assert!(!list.contains("data-pool=\"fast\""));
    let r = admin
        .get(app.url("/host/storage/fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let audit = app.audit_text(&admin).await;
    for needle in [
        "pool.define",
        "pool.stop",
        "pool.start",
        "pool.refresh",
        "pool.delete",
        "contents deleted (0 volumes)",
    ] {
        assert!(audit.contains(needle), "audit lacks {needle}");
    }
}

#[tokio::test]
async fn the_default_nat_network_is_removed_after_a_confirm_page_naming_its_vms() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = text(&admin, &app, "/host/libvirt-networks").await;
    let row = |name: &str| {
        let start = page.find(&format!("<tr data-network=\"{name}\">")).unwrap();
        page[start..start + page[start..].find("</tr>").unwrap()].to_string()
    };
    let default = row("default");
    assert!(
        default.contains("<td>nat</td>") && default.contains("virbr0"),
        "{default}"
    );
    assert!(
        default.contains("build-runner") && default.contains("monitoring"),
        "{default}"
    );
    assert!(default.contains("Remove default NAT network"), "{default}");
    let br0 = row("br0");
    assert!(br0.contains("<td>bridge</td>"), "{br0}");
    assert!(
        !br0.contains("Remove"),
        "only NAT networks are offered: {br0}"
    );
    let r = admin
        .get(app.url("/host/libvirt-networks/br0/remove"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    let confirm = text(&admin, &app, "/host/libvirt-networks/default/remove").await;
    assert!(confirm.contains("id=\"network-vms\""), "{confirm}");
    assert!(
        confirm.contains("<a href=\"/vms/build-runner\">build-runner</a> (running)"),
        "{confirm}"
    );
    assert!(
        confirm.contains("<a href=\"/vms/monitoring\">monitoring</a>"),
        "{confirm}"
    );
    assert!(!confirm.contains("web01"), "web01 is on br0");
    let csrf = csrf_in(&confirm);
    let (status, to, _body) = post_form(
        &admin,
        &app,
        "/host/libvirt-networks/default/remove",
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let page = text(&admin, &app, &to).await;
    assert!(page.contains("Network default stopped and removed."));
    assert!(!page.contains("data-network=\"default\""));
    assert!(page.contains("data-network=\"br0\""));
    let r = admin
        .get(app.url("/host/libvirt-networks/default/remove"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("network.remove"));
    assert!(audit.contains("VMs that used it: build-runner, monitoring"));
}

#[tokio::test]
async fn networks_are_listed_and_removed_over_the_api() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let (s, body) = api.get("/api/v1/networks").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let nets = body["networks"].as_array().unwrap();
    let default = nets.iter().find(|n| n["name"] == "default").unwrap();
    assert_eq!(default["forward_mode"], "nat");
    assert_eq!(default["bridge"], "virbr0");
    assert_eq!(default["active"], true);
    assert_eq!(default["uuid"], "bed84079-256a-48bb-a13a-c67994d55cb9");
    assert_eq!(default["vms"], json!(["build-runner", "monitoring"]));
    let (s, e) = api.delete("/api/v1/networks/br0").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, r) = api.delete("/api/v1/networks/default").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["vms_affected"], json!(["build-runner", "monitoring"]));
    let (_, body) = api.get("/api/v1/networks").await;
    let names: Vec<&str> = body["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["br0"]);
    let (s, _) = api.delete("/api/v1/networks/default").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_new_pool_is_offered_for_vm_disks_and_counted_in_capacity() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let (s, p) = api.post("/api/v1/pools", dir_pool("fast")).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");

    let (_, host) = api.get("/api/v1/host").await;
    let fast = host["capacity"]["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "fast")
        .unwrap_or_else(|| panic!("fast not in capacity: {host}"));
    // The test driver reports 100 GiB for every pool; 12 units.
    assert_eq!(fast["capacity_gib"], 100);
    assert_eq!(fast["gib_per_unit"], 8);

    let admin = client();
    app.login_with(&admin, "admin", common::ADMIN_PASSWORD)
        .await;
    let form = text(&admin, &app, "/vms/new").await;
    assert!(
        form.contains("<option>fast</option>"),
        "pool offered in the VM form"
    );
    let hostpage = text(&admin, &app, "/host").await;
    assert!(hostpage.contains("<td>fast</td><td>dir</td><td class=\"num\">100</td>"));

    let (s, vm) = api
        .post(
            "/api/v1/vms",
            json!({"name": "onfast", "units": 1, "disk": {"type": "new", "pool": "fast"},
                   "install": {"type": "import"}, "nic": {"bridge": "br0"}, "start": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    assert_eq!(vm["disk_path"], "/srv/pools/fast/onfast.qcow2");
    let (_, vols) = api.get("/api/v1/pools/fast/volumes").await;
    let v = &vols["volumes"][0];
    assert_eq!(v["name"], "onfast.qcow2");
    assert_eq!(
        v["capacity_bytes"],
        8u64 << 30,
        "one unit's share of the pool"
    );

    // A stopped pool is not used for new disks.
    let (s, _) = api.post("/api/v1/pools/fast/stop", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = api
        .post(
            "/api/v1/vms",
            json!({"name": "onfast2", "units": 1, "disk": {"type": "new", "pool": "fast"},
                   "install": {"type": "import"}, "nic": {"bridge": "br0"}, "start": false}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], "pool");
}

/// The rendered pool XML passes libvirt's own schema (virt-xml-validate, from
/// libvirt-clients, which `make test` installs).
#[test]
fn rendered_pools_pass_libvirts_schema() {
    use std::io::Write as _;
    use virtdeck::domain::storage::{pool_xml, PoolRequest};
    let specs = [
        PoolRequest {
            name: "fast".into(),
            kind: "dir".into(),
            target_path: "/srv/pools/fast & more".into(),
            ..Default::default()
        },
        PoolRequest {
            name: "vg".into(),
            kind: "logical".into(),
            vg_name: "vg_vms".into(),
            ..Default::default()
        },
        PoolRequest {
            name: "vg2".into(),
            kind: "logical".into(),
            vg_name: "vg_new".into(),
            logical_mode: "build".into(),
            devices: vec!["/dev/sdb".into(), "/dev/sdc".into()],
            confirm_wipe: "vg_new".into(),
            ..Default::default()
        },
        PoolRequest {
            name: "nas".into(),
            kind: "netfs".into(),
            target_path: "/mnt/nas".into(),
            nfs_host: "10.0.0.5".into(),
            nfs_export: "/export/vms".into(),
            nfs_format: "auto".into(),
            ..Default::default()
        },
    ];
    for req in specs {
        let xml = pool_xml(&req.validate().expect("valid"));
        let mut file = tempfile::Builder::new().suffix(".xml").tempfile().unwrap();
        file.write_all(xml.as_bytes()).unwrap();
        let out = std::process::Command::new("virt-xml-validate")
            .arg(file.path())
            .arg("storagepool")
            .output()
            .expect("virt-xml-validate runs (libvirt-clients; make test installs it)");
        assert!(
            out.status.success(),
            "rejected:\n{xml}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The host plan export carries the storage pools and the removal of the default NAT
/// network, as a shell script that parses.
#[tokio::test]
async fn the_host_plan_export_recreates_pools_and_removes_the_default_network() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let export = || async {
        let r = api
            .c
            .get(format!("{}/host/export.sh", api.base))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    };
    let before = export().await;
    assert!(!before.contains("net-undefine default"), "{before}");
    let (s, p) = api.post("/api/v1/pools", dir_pool("fast")).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let (s, r) = api.delete("/api/v1/networks/default").await;
    assert_eq!(s, StatusCode::OK, "{r}");

    let script = export().await;
    for needle in [
        "# Storage pool fast (dir)",
        "<path>/srv/pools/fast</path>",
        "pool_xml=$(mktemp /tmp/virtdeck-pool.XXXXXXXXXX)",
        "virsh -q pool-list --all --name | grep -qxF 'fast' || virsh pool-define \"$pool_xml\"",
        "virsh pool-build 'fast'",
        "virsh pool-start 'fast'",
        "virsh pool-autostart 'fast'",
        "virsh net-undefine default",
    ] {
        assert!(script.contains(needle), "missing {needle:?} in:\n{script}");
    }
    assert!(!script.contains("<uuid>"), "no UUID of this host: {script}");
    assert!(
        !script.contains("/tmp/virtdeck-pool-"),
        "no predictable file name in /tmp: {script}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.sh");
    std::fs::write(&path, &script).unwrap();
    let parsed = std::process::Command::new("sh")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
}
