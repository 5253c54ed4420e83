//! Every route in the router (enumerated from it: `virtdeck::web::routes::route_table`,
//! never a hand list), tried as a stranger, a viewer and an operator on the demo host:
//! no 5xx, nothing changes without the role, and every refusal of a signed-in user is in
//! the audit log exactly once.

use crate::common;

use common::{client, spawn_app_with, TestApp};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use virtdeck::web::routes::{route_table, RouteEntry};

/// A path for the pattern, with the demo host's real names, so that a wrongly allowed
/// request would really change something.
pub(crate) fn fill(pattern: &str) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .unwrap_or(rest.len() - 1);
        let param = &rest[open + 1..close];
        let before = &out;
        let value = match param.split(':').next().unwrap_or(param) {
            "name" if before.ends_with("/storage/") || before.ends_with("/pools/") => "default",
            "name" if before.ends_with("/networks/") || before.ends_with("/libvirt-networks/") => {
                "default"
            }
            "name" if before.ends_with("/kickstarts/") => "ks-hostile",
            "name" if before.ends_with("/users/") => "victim",
            "name" if before.ends_with("/flavors/") => "small",
            "name" if before.ends_with("/volumes/") => "web01.qcow2",
            "name" => "web01",
            "pool" => "default",
            "snapshot" => "before-upgrade",
            // A network action that would really change the demo host.
            "action"
                if before.starts_with("/host/libvirt-networks/")
                    || before.starts_with("/api/v1/networks/") =>
            {
                "stop"
            }
            "action" => "force-off",
            "id" => "1",
            "token" => "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "path" => "style.css",
            "kind" => "vnc",
            _ => "x",
        };
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// What must not change when a request is refused: VMs, pools and volumes, networks,
/// kickstarts, templates, users and their tokens, jobs.
async fn fingerprint(app: &TestApp, admin_token: &str) -> Value {
    let c = Client::new();
    let get = |p: &str| {
        let c = c.clone();
        let url = app.url(p);
        let token = admin_token.to_string();
        async move {
            let r = c.get(url).bearer_auth(token).send().await.unwrap();
            assert!(
                r.status().is_success(),
                "fingerprint read {} failed",
                r.status()
            );
            r.json::<Value>().await.unwrap()
        }
    };
    let vms: Vec<Value> = get("/api/v1/vms").await["vms"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            json!([
                v["name"],
                v["state"],
                v["vcpus"],
                v["memory_mib"],
                v["autostart"]
            ])
        })
        .collect();
    let pools = get("/api/v1/pools").await;
    let mut volumes = Vec::new();
    for p in pools["pools"].as_array().cloned().unwrap_or_default() {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        let v = get(&format!("/api/v1/pools/{name}/volumes")).await;
        let names: Vec<Value> = v["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|v| json!([v["name"], v["capacity_bytes"]]))
            .collect();
        volumes.push(json!([name, p["state"], p["autostart"], names]));
    }
    let networks: Vec<Value> = get("/api/v1/networks").await["networks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|n| json!([n["name"], n["active"]]))
        .collect();
    let kickstarts = get("/api/v1/kickstarts").await;
    let users = users_and_tokens(app).await;
    json!({"vms": vms, "pools": volumes, "networks": networks, "kickstarts": kickstarts, "users": users})
}

/// Users, roles and token labels as the admin sees them on the Users page (data dir DB).
async fn users_and_tokens(app: &TestApp) -> Value {
    let db = app.data_dir.path().join("virtdeck.db");
    tokio::task::spawn_blocking(move || {
        let c = rusqlite::Connection::open(db).unwrap();
        let mut st = c
            .prepare("SELECT username, role, password_phc FROM users ORDER BY username")
            .unwrap();
        let users: Vec<Value> = st
            .query_map([], |r| {
                Ok(json!([
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?
                ]))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let tokens: i64 = c
            .query_row("SELECT count(*) FROM api_tokens", [], |r| r.get(0))
            .unwrap();
        let flavors: Vec<Value> = c
            .prepare("SELECT name, units FROM flavors ORDER BY name")
            .unwrap()
            .query_map([], |r| {
                Ok(json!([r.get::<_, String>(0)?, r.get::<_, i64>(1)?]))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        json!({"users": users, "tokens": tokens, "flavors": flavors})
    })
    .await
    .unwrap()
}

/// Audit rows (folded rows count once per row) and the newest row.
async fn audit_rows(app: &TestApp) -> (i64, Value) {
    let db = app.data_dir.path().join("virtdeck.db");
    tokio::task::spawn_blocking(move || {
        let c = rusqlite::Connection::open(db).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        let last = c
            .query_row(
                "SELECT actor, action, target, result, detail FROM audit_log ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(json!([
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?
                    ]))
                },
            )
            .unwrap_or(Value::Null);
        (n, last)
    })
    .await
    .unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Stranger,
    Viewer,
    Operator,
}

struct Caller {
    who: Who,
    /// Session client (cookies) for pages.
    pages: Client,
    csrf: String,
    token: String,
}

impl Caller {
    async fn send(&self, app: &TestApp, route: &RouteEntry, path: &str) -> reqwest::Response {
        let url = app.url(path);
        let api = path.starts_with("/api/");
        let method = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        let c = if self.who == Who::Stranger || !api {
            self.pages.clone()
        } else {
            Client::new()
        };
        let mut rb = c.request(method.clone(), url);
        if self.who != Who::Stranger && api {
            rb = rb.bearer_auth(&self.token);
        }
        if method != Method::GET {
            rb = if api {
                rb.header("X-CSRF-Token", &self.csrf).json(&json!({}))
            } else {
                rb.header("X-CSRF-Token", &self.csrf)
                    .form(&[("csrf", self.csrf.as_str())])
            };
        }
        rb.send().await.unwrap()
    }
}

async fn caller(app: &TestApp, admin: &Client, who: Who, name: &str, role: &str) -> Caller {
    if who == Who::Stranger {
        return Caller {
            who,
            pages: client(),
            csrf: String::new(),
            token: String::new(),
        };
    }
    let password = "a-long-test-password";
    app.add_user(admin, name, role, password).await;
    let token = app.token_for(admin, name).await;
    let (pages, r) = app.login(name, password).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let csrf = app.csrf(&pages, "/vms").await;
    Caller {
        who,
        pages,
        csrf,
        token,
    }
}

/// Routes that end the caller's own sign-in or are the sign-in itself: tried last / apart.
fn ends_sign_in(route: &RouteEntry) -> bool {
    route.pattern == "/logout"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_as_a_stranger_a_viewer_and_an_operator() {
    let app = spawn_app_with(|cfg| {
        cfg.http.max_connections_per_address = 10_000;
        // A stranger's sign-in attempts must not lock anyone out mid-test.
        cfg.login.address_lock_after_failures = 10_000;
    })
    .await;
    let admin = app.setup_admin("admin").await;
    let admin_token = app.admin_token(&admin).await;
    app.add_user(&admin, "victim", "viewer", "victim-password-1")
        .await;

    let table = route_table();
    assert!(table.len() > 100, "the router lists {} routes", table.len());
    let stranger = caller(&app, &admin, Who::Stranger, "", "").await;
    let viewer = caller(&app, &admin, Who::Viewer, "vera", "viewer").await;
    let operator = caller(&app, &admin, Who::Operator, "otto", "operator").await;

    let mut problems = Vec::new();
    for who in [&stranger, &viewer, &operator] {
        let mut routes: Vec<&RouteEntry> = table.iter().filter(|r| !ends_sign_in(r)).collect();
        routes.extend(table.iter().filter(|r| ends_sign_in(r)));
        for route in routes {
            let path = fill(&route.pattern);
            let changes = route.method != actix_web::http::Method::GET;
            let before = if changes {
                Some(fingerprint(&app, &admin_token).await)
            } else {
                None
            };
            let (audit_before, _) = audit_rows(&app).await;
            let t0 = std::time::Instant::now();
            let r = who.send(&app, route, &path).await;
            if t0.elapsed() > std::time::Duration::from_millis(40) {
                eprintln!(
                    "slow: {:?} {} {path}: {:?}",
                    who.who,
                    route.method,
                    t0.elapsed()
                );
            }
            let status = r.status();
            // Streams (live events) never end: a second of their body is enough.
            let body = tokio::time::timeout(std::time::Duration::from_secs(1), r.text())
                .await
                .ok()
                .and_then(|b| b.ok())
                .unwrap_or_default();
            let what = format!("{:?} {} {path} → {status}", who.who, route.method);
            if status.is_server_error() {
                problems.push(format!(
                    "{what}: server error: {}",
                    body.chars().take(300).collect::<String>()
                ));
            }
            let refused_by_role = status == StatusCode::FORBIDDEN && who.who != Who::Stranger;
            if let Some(before) = before {
                let after = fingerprint(&app, &admin_token).await;
                let must_not_change =
                    who.who == Who::Stranger || who.who == Who::Viewer || refused_by_role;
                if must_not_change && after != before && route.pattern != "/login" {
                    problems.push(format!(
                        "{what}: changed state\nbefore {before}\nafter  {after}"
                    ));
                }
            }
            if refused_by_role {
                let (audit_after, last) = audit_rows(&app).await;
                if audit_after - audit_before != 1 {
                    problems.push(format!(
                        "{what}: refusal written {} times to the audit log (last: {last})",
                        audit_after - audit_before
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_router_lists_every_kind_of_route() {
    let table = route_table();
    for (m, p) in [
        ("GET", "/vms/{name}"),
        ("POST", "/vms/{name}/action/{action}"),
        ("DELETE", "/api/v1/vms/{name}"),
        ("PUT", "/api/v1/pools/{pool}/volumes/{name}"),
        ("GET", "/api/v1/kickstarts/{name}"),
        ("POST", "/api/v1/host/changes/confirm"),
    ] {
        assert!(
            table
                .iter()
                .any(|r| r.method.as_str() == m && r.pattern == p),
            "{m} {p} missing from the route table"
        );
    }
}
