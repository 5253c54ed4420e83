//! Host > Libvirt networks on the demo host (libvirt's test driver), over HTTP: creating
//! NAT and isolated networks from the page and the API, bad input shown at its field
//! with nothing created, stop (after a confirm page naming the VMs) / start / autostart,
//! roles, CSRF, the audit log, and a failed start rolled back.

use crate::common;

use common::api::Api;
use common::faults::{FailAt, Step};
use common::{client, csrf_in, spawn_app, spawn_app_wrapped, TestApp};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

const PAGE: &str = "/host/libvirt-networks";

/// The page at `path`, as text.
async fn text(c: &Client, app: &TestApp, path: &str) -> String {
    app.get_text(c, path).await
}

/// Posts a form; returns the status, where it redirects to (if it does) and the body.
async fn post_form(
    c: &Client,
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

/// The list page's row of network `name`, or `None`.
fn row(page: &str, name: &str) -> Option<String> {
    let start = page.find(&format!("<tr data-network=\"{name}\">"))?;
    Some(page[start..start + page[start..].find("</tr>").unwrap()].to_string())
}

/// Every network as the admin API lists it, by name.
async fn networks(app: &TestApp, token: &str) -> Vec<Value> {
    let r = Client::new()
        .get(app.url("/api/v1/networks"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["networks"].as_array().unwrap().clone()
}

/// Name, active and autostart of every network: what a refused change must not touch.
async fn fingerprint(app: &TestApp, token: &str) -> Vec<(String, bool, bool)> {
    networks(app, token)
        .await
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["active"].as_bool().unwrap(),
                n["autostart"].as_bool().unwrap(),
            )
        })
        .collect()
}

async fn network(app: &TestApp, token: &str, name: &str) -> Option<Value> {
    networks(app, token)
        .await
        .into_iter()
        .find(|n| n["name"] == name)
}

/// Audit rows `(actor, action, target, result, detail)` whose action starts with
/// `network.`, oldest first.
async fn network_audit(app: &TestApp) -> Vec<(String, String, String, String, String)> {
    let db = app.data_dir.path().join("virtdeck.db");
    tokio::task::spawn_blocking(move || {
        let c = rusqlite::Connection::open(db).unwrap();
        let mut st = c
            .prepare(
                "SELECT actor, action, target, result, detail FROM audit_log \
                 WHERE action LIKE 'network.%' ORDER BY id",
            )
            .unwrap();
        st.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    })
    .await
    .unwrap()
}

/// The admin's form for a new network, with `changes` over a valid NAT network.
fn form<'a>(csrf: &'a str, changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut f = vec![
        ("csrf", csrf),
        ("name", "lab-nat"),
        ("mode", "nat"),
        ("address", "192.168.100.1"),
        ("prefix", "24"),
        ("dhcp_start", "192.168.100.100"),
        ("dhcp_end", "192.168.100.200"),
        ("autostart", "1"),
    ];
    for (k, v) in changes {
        match f.iter_mut().find(|(fk, _)| fk == k) {
            Some(slot) => slot.1 = v,
            None => f.push((k, v)),
        }
    }
    f.retain(|(_, v)| *v != "<omit>");
    f
}

#[tokio::test]
async fn nat_and_isolated_networks_are_created_from_the_page_and_listed_active() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let token = app.admin_token(&admin).await;
    let page = text(&admin, &app, PAGE).await;
    assert!(page.contains("id=\"network-form\""), "{page}");
    // A fresh form: NAT, /24, starting with the host.
    assert!(page.contains("value=\"nat\" checked"), "{page}");
    assert!(page.contains("name=\"prefix\" value=\"24\""), "{page}");
    assert!(
        page.contains("name=\"autostart\" value=\"1\" checked"),
        "{page}"
    );
    let csrf = csrf_in(&page);

    let (status, to, _) = post_form(&admin, &app, PAGE, &form(&csrf, &[])).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(to, PAGE, "no ?message= in the address");
    let page = text(&admin, &app, &to).await;
    assert!(
        page.contains(
            "Network lab-nat created and started: NAT on 192.168.100.1/24, DHCP \
             192.168.100.100–192.168.100.200; it starts with the host."
        ),
        "{page}"
    );
    // The notice is shown once.
    assert!(!text(&admin, &app, PAGE)
        .await
        .contains("created and started"));
    let nat = row(&page, "lab-nat").expect("lab-nat listed");
    assert!(nat.contains("<td>nat</td>"), "{nat}");
    assert!(nat.contains("<code>192.168.100.1/24</code>"), "{nat}");
    assert!(nat.contains("192.168.100.100–192.168.100.200"), "{nat}");
    assert!(nat.contains("data-state=\"active\""), "{nat}");
    assert!(nat.contains("data-autostart=\"on\""), "{nat}");
    assert!(nat.contains("/host/libvirt-networks/lab-nat/stop"), "{nat}");
    assert!(nat.contains("action/no-autostart"), "{nat}");

    let isolated = form(
        &csrf,
        &[
            ("name", "backend.iso"),
            ("mode", "isolated"),
            ("address", "10.77.0.1"),
            ("prefix", "16"),
            ("dhcp_start", ""),
            ("dhcp_end", ""),
            ("autostart", "<omit>"),
        ],
    );
    let (status, to, body) = post_form(&admin, &app, PAGE, &isolated).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let page = text(&admin, &app, &to).await;
    assert!(
        page.contains(
            "Network backend.iso created and started: isolated on 10.77.0.1/16, no DHCP."
        ),
        "{page}"
    );
    let iso = row(&page, "backend.iso").expect("backend.iso listed");
    assert!(iso.contains("<td>isolated</td>"), "{iso}");
    assert!(iso.contains("data-state=\"active\""), "{iso}");
    assert!(iso.contains("data-autostart=\"off\""), "{iso}");
    assert!(iso.contains("action/autostart\""), "{iso}");
    assert!(
        iso.contains("/host/libvirt-networks/backend.iso/remove"),
        "{iso}"
    );

    // libvirt has them as asked.
    let n = network(&app, &token, "lab-nat").await.unwrap();
    assert_eq!(n["active"], true);
    assert_eq!(n["autostart"], true);
    assert_eq!(n["persistent"], true);
    assert_eq!(n["forward_mode"], "nat");
    assert_eq!(n["ipv4"], "192.168.100.1/24");
    let n = network(&app, &token, "backend.iso").await.unwrap();
    assert_eq!(n["active"], true);
    assert_eq!(n["autostart"], false);
    assert_eq!(n["forward_mode"], "isolated");
    assert_eq!(n["ipv4"], "10.77.0.1/16");
    assert_eq!(n["dhcp"], "");

    let audit = network_audit(&app).await;
    let creates: Vec<_> = audit
        .iter()
        .filter(|a| a.1 == "network.create" && a.3 == "ok")
        .collect();
    assert_eq!(creates.len(), 2, "{audit:?}");
    assert_eq!(creates[0].0, "admin");
    assert_eq!(creates[0].2, "lab-nat");
    assert!(
        creates[0].4.contains("nat network 192.168.100.1/24"),
        "{:?}",
        creates[0]
    );
    assert_eq!(creates[1].2, "backend.iso");
    assert!(creates[1].4.contains("no DHCP"), "{:?}", creates[1]);

    // An isolated network virtdeck made can be removed again.
    let confirm = text(&admin, &app, "/host/libvirt-networks/backend.iso/remove").await;
    let (status, _, _) = post_form(
        &admin,
        &app,
        "/host/libvirt-networks/backend.iso/remove",
        &[("csrf", csrf_in(&confirm).as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(network(&app, &token, "backend.iso").await.is_none());
}

#[tokio::test]
async fn bad_input_is_shown_at_its_field_and_creates_nothing() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let token = app.admin_token(&admin).await;
    let before = fingerprint(&app, &token).await;
    let csrf = app.csrf(&admin, PAGE).await;
    // (what, changed fields, field marked, its sentence, the value kept there)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "bad name",
            vec![("name", "lab nat!")],
            "name",
            "Use only letters, digits, &#39;-&#39;, &#39;_&#39; and &#39;.&#39;, starting with a letter or digit.",
            "lab nat!",
        ),
        (
            "public gateway",
            vec![("address", "8.8.8.1")],
            "address",
            "8.8.8.1 is not in a private range; use an address in 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16",
            "8.8.8.1",
        ),
        (
            "DHCP outside the subnet",
            vec![("dhcp_end", "192.168.101.20")],
            "dhcp_end",
            "192.168.101.20 is outside the network 192.168.100.0/24; the range must lie between 192.168.100.1 and 192.168.100.254.",
            "192.168.101.20",
        ),
        (
            "duplicate name",
            vec![
                ("name", "default"),
                ("address", "10.50.0.1"),
                ("dhcp_start", ""),
                ("dhcp_end", ""),
            ],
            "name",
            "A libvirt network named default already exists; pick another name.",
            "default",
        ),
        (
            "overlapping subnet",
            vec![
                ("address", "192.168.122.50"),
                ("dhcp_start", ""),
                ("dhcp_end", ""),
            ],
            "address",
            "192.168.122.0/24 overlaps 192.168.122.0/24 of network default; choose a subnet no other network uses.",
            "192.168.122.50",
        ),
        (
            "prefix out of range",
            vec![("prefix", "31")],
            "prefix",
            "/31 is not offered: use a prefix from 8",
            "31",
        ),
        (
            "DHCP around the gateway",
            vec![("dhcp_start", "192.168.100.1")],
            "dhcp_start",
            "contains the gateway 192.168.100.1",
            "192.168.100.1",
        ),
    ];
    for (what, changes, field, sentence, kept) in cases {
        let (status, to, body) = post_form(&admin, &app, PAGE, &form(&csrf, &changes)).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
            "{what}: {status} {to}"
        );
        let marker = format!("<p class=\"error field-error\" data-field=\"{field}\">");
        let at = body
            .find(&marker)
            .unwrap_or_else(|| panic!("{what}: no error at {field}: {body}"));
        let shown = &body[at + marker.len()..at + body[at..].find("</p>").unwrap()];
        assert!(shown.contains(sentence), "{what}: at {field}: {shown}");
        // Only the wrong field is marked.
        assert_eq!(
            body.matches("class=\"error field-error\"").count(),
            1,
            "{what}: {body}"
        );
        // The error sits right after its field, and the typed values are kept.
        let input = body
            .find(&format!("name=\"{field}\""))
            .unwrap_or_else(|| panic!("{what}: field {field} missing"));
        assert!(input < at, "{what}: error before its field");
        assert!(
            body.contains(&format!("name=\"{field}\" value=\"{kept}\"")),
            "{what}: value of {field} not kept: {body}"
        );
        if field != "dhcp_end" && !changes.iter().any(|(k, _)| *k == "dhcp_end") {
            assert!(
                body.contains("name=\"dhcp_end\" value=\"192.168.100.200\""),
                "{what}: other values kept"
            );
        }
        assert_eq!(fingerprint(&app, &token).await, before, "{what}: created");
    }
    // The mode kept on error: isolated stays checked.
    let (status, _, body) = post_form(
        &admin,
        &app,
        PAGE,
        &form(&csrf, &[("mode", "isolated"), ("address", "1.1.1.1")]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("value=\"isolated\" checked"), "{body}");
    assert!(!body.contains("value=\"nat\" checked"), "{body}");
    // Each refusal is in the audit log, as invalid.
    let audit = network_audit(&app).await;
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.1 == "network.create" && a.3 == "invalid")
            .count(),
        8,
        "{audit:?}"
    );
    assert!(audit.iter().all(|a| a.3 != "ok"), "{audit:?}");
    assert_eq!(fingerprint(&app, &token).await, before);
}

#[tokio::test]
async fn networks_stop_after_a_confirm_page_start_and_toggle_autostart() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let token = app.admin_token(&admin).await;
    let default = network(&app, &token, "default").await.unwrap();
    assert_eq!(default["active"], true);

    // Stop asks first, naming the VMs with a NIC on it.
    let confirm = text(&admin, &app, "/host/libvirt-networks/default/stop").await;
    assert!(confirm.contains("Stop network default?"), "{confirm}");
    assert!(
        confirm.contains("<a href=\"/vms/build-runner\">build-runner</a> (running)"),
        "{confirm}"
    );
    assert!(
        confirm.contains("<a href=\"/vms/monitoring\">monitoring</a>"),
        "{confirm}"
    );
    assert!(!confirm.contains("web01"), "web01 is on br0");
    assert!(
        confirm.contains("action=\"/host/libvirt-networks/default/action/stop\""),
        "{confirm}"
    );
    let csrf = csrf_in(&confirm);
    let act = |action: &'static str, csrf: String| {
        let admin = admin.clone();
        let app = &app;
        async move {
            post_form(
                &admin,
                app,
                &format!("/host/libvirt-networks/default/action/{action}"),
                &[("csrf", csrf.as_str())],
            )
            .await
        }
    };

    let (status, to, _) = act("stop", csrf.clone()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(to, PAGE);
    let page = text(&admin, &app, PAGE).await;
    assert!(
        page.contains("Network default stopped. VMs with a NIC on it: build-runner, monitoring."),
        "{page}"
    );
    let r = row(&page, "default").unwrap();
    assert!(r.contains("data-state=\"inactive\""), "{r}");
    assert!(r.contains("action/start"), "{r}");
    assert_eq!(
        network(&app, &token, "default").await.unwrap()["active"],
        false
    );
    // Stopping it again is refused and changes nothing; so is its confirm page.
    let (status, _, body) = act("stop", csrf.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body.contains("Network default is already stopped."),
        "{body}"
    );
    let r = admin
        .get(app.url("/host/libvirt-networks/default/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    let (status, _, _) = act("start", csrf.clone()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(text(&admin, &app, PAGE)
        .await
        .contains("Network default started."));
    assert_eq!(
        network(&app, &token, "default").await.unwrap()["active"],
        true
    );
    let (status, _, body) = act("start", csrf.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body.contains("Network default is already running."),
        "{body}"
    );

    let (status, _, _) = act("autostart", csrf.clone()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(text(&admin, &app, PAGE)
        .await
        .contains("Network default now starts with the host."));
    assert_eq!(
        network(&app, &token, "default").await.unwrap()["autostart"],
        true
    );
    let (status, _, _) = act("no-autostart", csrf.clone()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let page = text(&admin, &app, PAGE).await;
    assert!(page.contains("Network default no longer starts with the host."));
    assert!(row(&page, "default")
        .unwrap()
        .contains("data-autostart=\"off\""));
    assert_eq!(
        network(&app, &token, "default").await.unwrap()["autostart"],
        false
    );

    // Unknown actions and networks.
    let (status, _, _) = act("explode", csrf.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = post_form(
        &admin,
        &app,
        "/host/libvirt-networks/nosuch/action/start",
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A wrong CSRF token changes nothing.
    let (status, _, _) = act("stop", "not-the-token".into()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        network(&app, &token, "default").await.unwrap()["active"],
        true
    );

    let audit = network_audit(&app).await;
    let ok: Vec<(&str, &str)> = audit
        .iter()
        .filter(|a| a.3 == "ok")
        .map(|a| (a.1.as_str(), a.2.as_str()))
        .collect();
    assert_eq!(
        ok,
        [
            ("network.stop", "default"),
            ("network.start", "default"),
            ("network.autostart", "default"),
            ("network.autostart", "default"),
        ],
        "{audit:?}"
    );
    let stop = audit.iter().find(|a| a.1 == "network.stop").unwrap();
    assert!(
        stop.4.contains("VMs that use it: build-runner, monitoring"),
        "{stop:?}"
    );
    let autostart: Vec<&str> = audit
        .iter()
        .filter(|a| a.1 == "network.autostart" && a.3 == "ok")
        .map(|a| a.4.as_str())
        .collect();
    assert_eq!(autostart, ["autostart on", "autostart off"], "{audit:?}");
}

#[tokio::test]
async fn viewers_and_operators_are_refused_and_each_refusal_is_audited() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let token = app.admin_token(&admin).await;
    app.add_user(&admin, "vera", "viewer", "viewer-password-1")
        .await;
    app.add_user(&admin, "otto", "operator", "operator-password-1")
        .await;
    let before = fingerprint(&app, &token).await;
    for (user, password) in [
        ("vera", "viewer-password-1"),
        ("otto", "operator-password-1"),
    ] {
        let c = client();
        let r = app.login_with(&c, user, password).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{user} signs in");
        let csrf = app.csrf(&c, "/vms").await;
        assert_eq!(
            c.get(app.url(PAGE)).send().await.unwrap().status(),
            StatusCode::FORBIDDEN,
            "{user} sees the page"
        );
        assert_eq!(
            c.get(app.url("/host/libvirt-networks/default/stop"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::FORBIDDEN
        );
        let (status, _, _) = post_form(&c, &app, PAGE, &form(&csrf, &[])).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{user} creates");
        for action in ["stop", "autostart", "no-autostart"] {
            let (status, _, _) = post_form(
                &c,
                &app,
                &format!("/host/libvirt-networks/default/action/{action}"),
                &[("csrf", csrf.as_str())],
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{user} {action}");
        }
        // And over the API with their own token.
        let user_token = app.token_for(&admin, user).await;
        let api = Client::new();
        let r = api
            .post(app.url("/api/v1/networks"))
            .bearer_auth(&user_token)
            .json(&json!({"name": "sneaky", "mode": "nat", "address": "10.66.0.1", "prefix": 24}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{user} API create");
        let r = api
            .post(app.url("/api/v1/networks/default/stop"))
            .bearer_auth(&user_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{user} API stop");
        assert_eq!(fingerprint(&app, &token).await, before, "{user} changed it");
    }
    let audit = network_audit(&app).await;
    for user in ["vera", "otto"] {
        let denied: Vec<&str> = audit
            .iter()
            .filter(|a| a.0 == user && a.3 == "denied")
            .map(|a| a.1.as_str())
            .collect();
        assert_eq!(
            denied,
            [
                "network.stop",
                "network.create",
                "network.stop",
                "network.autostart",
                "network.autostart",
                "network.create",
                "network.stop",
            ],
            "{user}: {audit:?}"
        );
    }
    assert!(audit.iter().all(|a| a.3 != "ok"), "{audit:?}");
}

#[tokio::test]
async fn the_api_creates_acts_on_and_removes_networks_with_a_bearer_token() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let (s, n) = api
        .post(
            "/api/v1/networks",
            json!({"name": "api-nat", "mode": "nat", "address": "172.20.0.1", "prefix": 16,
                   "dhcp_start": "172.20.1.1", "dhcp_end": "172.20.1.254"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    assert_eq!(n["name"], "api-nat");
    assert_eq!(n["active"], true);
    assert_eq!(n["autostart"], true, "autostart defaults to on");
    assert_eq!(n["forward_mode"], "nat");
    assert_eq!(n["ipv4"], "172.20.0.1/16");
    assert_eq!(n["dhcp"], "172.20.1.1–172.20.1.254");
    assert_eq!(n["vms"], json!([]));
    let (s, got) = api.get("/api/v1/networks/api-nat").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, n);

    let (s, n) = api
        .post(
            "/api/v1/networks",
            json!({"name": "api-iso", "mode": "isolated", "address": "10.88.0.1/24", "autostart": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    assert_eq!(n["forward_mode"], "isolated");
    assert_eq!(n["autostart"], false);

    // Invalid: 422 with every field, nothing made.
    let (s, e) = api
        .post(
            "/api/v1/networks",
            json!({"name": "api-nat", "mode": "bridge", "address": "172.20.5.1", "prefix": 24}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let fields: Vec<&str> = e["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "mode", "address"], "{e}");
    assert!(
        e.to_string()
            .contains("overlaps 172.20.0.0/16 of network api-nat"),
        "{e}"
    );

    let (s, n) = api.post("/api/v1/networks/api-nat/stop", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{n}");
    assert_eq!(n["active"], false);
    let (s, e) = api.post("/api/v1/networks/api-nat/stop", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, n) = api.post("/api/v1/networks/api-nat/start", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{n}");
    assert_eq!(n["active"], true);
    let (s, n) = api
        .post("/api/v1/networks/api-nat/no-autostart", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{n}");
    assert_eq!(n["autostart"], false);
    let (s, _) = api.post("/api/v1/networks/api-nat/reboot", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.post("/api/v1/networks/nosuch/start", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, r) = api.delete("/api/v1/networks/api-iso").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, _) = api.get("/api/v1/networks/api-iso").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A start (or autostart) that fails after the define undoes the define: no half-made
/// network is left, and the admin is told what was undone.
#[tokio::test]
async fn a_failed_start_or_autostart_leaves_no_network_behind() {
    for (step, says) in [
        (Step::StartNetwork, "Undone: removed its definition."),
        (
            Step::NetworkAutostart,
            "Undone: stopped it, removed its definition.",
        ),
    ] {
        let app = spawn_app_wrapped(
            |_| {},
            Some(Box::new(move |inner| Arc::new(FailAt::new(inner, step)))),
        )
        .await;
        let api = Api::new(&app).await;
        let before = fingerprint(&app, &api.token).await;
        let (s, e) = api
            .post(
                "/api/v1/networks",
                json!({"name": "doomed", "mode": "nat", "address": "10.99.0.1", "prefix": 24}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{step:?}: {e}");
        let m = e.to_string();
        assert!(m.contains("Network doomed could not be started"), "{m}");
        assert!(m.contains("injected failure"), "{m}");
        assert!(m.contains(says), "{step:?}: {m}");
        assert_eq!(fingerprint(&app, &api.token).await, before, "{step:?}");
        let (s, _) = api.get("/api/v1/networks/doomed").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // The page shows the failure at the form, keeping the values.
        let admin = client();
        app.login_with(&admin, "admin", common::ADMIN_PASSWORD)
            .await;
        let csrf = app.csrf(&admin, PAGE).await;
        let (status, _, body) = post_form(
            &admin,
            &app,
            PAGE,
            &form(
                &csrf,
                &[
                    ("name", "doomed2"),
                    ("address", "10.98.0.1"),
                    ("dhcp_start", ""),
                    ("dhcp_end", ""),
                ],
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{step:?}");
        assert!(body.contains("id=\"form-error\""), "{body}");
        assert!(
            body.contains("Network doomed2 could not be started"),
            "{body}"
        );
        assert!(body.contains("name=\"name\" value=\"doomed2\""), "{body}");
        assert_eq!(fingerprint(&app, &api.token).await, before, "{step:?}");
        let audit = network_audit(&app).await;
        assert_eq!(
            audit.iter().filter(|a| a.3 == "failed").count(),
            2,
            "{audit:?}"
        );
    }
}
