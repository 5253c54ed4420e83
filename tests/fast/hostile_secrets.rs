//! Hostile users and strangers against secrets and the audit log: kickstart contents and
//! an install's kernel command line (with its kickstart token) are for admins only;
//! private answers are never stored by caches; the request log never holds a kickstart
//! token or a console ticket; a flood of refused requests folds into a few audit rows;
//! old audit entries are pruned; the audit page pages and filters.

use crate::common;

use common::api::Api;
use common::http::serve_dir;
use common::{spawn_app_on, spawn_app_with, TestApp};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use virtdeck::store::{AuditEntry, Store};

const SECRET_PASSWORD: &str = "Hunter2-secret-root-password";

fn kickstart() -> String {
    format!("lang en_US.UTF-8\nrootpw --plaintext {SECRET_PASSWORD}\n%packages\n@core\n%end\n")
}

// ---- helpers ----

/// Everything the app logs at INFO and above while this test binary runs.
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogSink(sink.clone()))
            .try_init()
            .expect("the test binary's log capture is the only subscriber");
        buf
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&captured_log().lock().unwrap()).into_owned()
}

async fn admin_api(app: &TestApp) -> (Client, Api) {
    let session = app.setup_admin("admin").await;
    let token = app.admin_token(&session).await;
    let api = Api {
        c: Client::new(),
        base: app.base.clone(),
        token,
    };
    (session, api)
}

/// A user of `role`: an API client and a signed-in browser session.
async fn as_user(app: &TestApp, admin: &Client, name: &str, role: &str) -> (Api, Client) {
    let password = format!("{name}-password-1");
    app.add_user(admin, name, role, &password).await;
    let api = Api {
        c: Client::new(),
        base: app.base.clone(),
        token: app.token_for(admin, name).await,
    };
    let (session, r) = app.login(name, &password).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{name} signs in");
    (api, session)
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("images/pxeboot");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("vmlinuz"), "kernel".repeat(100)).unwrap();
    std::fs::write(p.join("initrd.img"), "initrd".repeat(100)).unwrap();
    dir
}

async fn body_of(c: &Client, url: &str, bearer: Option<&str>) -> (StatusCode, String) {
    let mut r = c.get(url);
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

fn store_of(app: &TestApp) -> Store {
    Store::open(&app.data_dir.path().join("virtdeck.db")).expect("the app's database opens")
}

fn entry(at: i64, actor: &str, action: &str, target: &str, result: &str) -> AuditEntry {
    AuditEntry {
        at,
        actor: actor.into(),
        remote_addr: "192.0.2.7".into(),
        action: action.into(),
        target: target.into(),
        result: result.into(),
        detail: String::new(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The `data-count` of every row of the audit table in a page.
fn row_counts(page: &str) -> Vec<u64> {
    page.match_indices("data-count=\"")
        .map(|(i, m)| {
            let rest = &page[i + m.len()..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        })
        .collect()
}

// ---- kickstart secrets ----

#[tokio::test]
async fn only_admins_read_kickstart_contents_and_the_installers_command_line() {
    let boot = tempfile::tempdir().unwrap();
    let boot_dir = boot.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.boot_dir = boot_dir;
        c.fetch.allow = vec!["127.0.0.0/8".into()]; // the install tree is on loopback
    })
    .await;
    let (admin, api) = admin_api(&app).await;
    let ks = kickstart();
    let (s, v) = api
        .post(
            "/api/v1/kickstarts",
            json!({"name": "fedora.ks", "content": ks}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let t = tree();
    let server = serve_dir(t.path(), None);
    let (s, v) = api
        .post(
            "/api/v1/vms",
            json!({
                "name": "ks01",
                "units": 1,
                "disk": {"type": "new", "pool": "default", "size_gib": 4},
                "install": {"type": "url", "url": server.url, "kernel_args": "console=ttyS0", "kickstart": "fedora.ks"},
                "nic": {"bridge": "br0"},
                "start": true
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // The admin reads the content and the command line with the kickstart URL.
    let (s, v) = api.get("/api/v1/kickstarts/fedora.ks").await;
    assert_eq!(
        (s, v["content"].as_str()),
        (StatusCode::OK, Some(ks.as_str()))
    );
    let (s, v) = api.get("/api/v1/vms/ks01/kickstart").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cmdline = v["kernel_cmdline"]
        .as_str()
        .expect("admins see it")
        .to_string();
    let url = cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("inst.ks="))
        .unwrap_or_else(|| panic!("no inst.ks= in {cmdline}"))
        .to_string();
    let token = url.rsplit('/').next().unwrap().to_string();
    assert!(token.len() >= 20, "{url}");
    let page = common::pages::text(&admin, &app.url("/kickstarts/fedora.ks")).await;
    assert!(
        page.contains(SECRET_PASSWORD),
        "the admin's edit form holds it"
    );

    for (name, role) in [("olga", "operator"), ("vera", "viewer")] {
        let (other, session) = as_user(&app, &admin, name, role).await;
        // The API: names, sizes, who changed them and when; no content field at all.
        let (s, v) = other.get("/api/v1/kickstarts/fedora.ks").await;
        assert_eq!(s, StatusCode::OK, "{role}: {v}");
        assert!(v.get("content").is_none(), "{role}: {v}");
        assert_eq!(v["name"], "fedora.ks");
        assert_eq!(v["bytes"], ks.len());
        assert_eq!(v["updated_by"], "admin");
        assert!(v["updated_at"].as_i64().is_some(), "{v}");
        let (s, v) = other.get("/api/v1/kickstarts").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["kickstarts"][0]["bytes"], ks.len());
        assert!(!v.to_string().contains(SECRET_PASSWORD), "{role}: {v}");
        // The install's state, but not its command line (the token is in it).
        let (s, raw) = body_of(
            &other.c,
            &app.url("/api/v1/vms/ks01/kickstart"),
            Some(&other.token),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{role}: {raw}");
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert!(v.get("kernel_cmdline").is_none(), "{role}: {v}");
        assert_eq!(
            (v["kickstart"].as_str(), v["install_running"].as_bool()),
            (Some("fedora.ks"), Some(true))
        );
        assert!(!raw.contains(&token), "{role}: {raw}");
        // Nor anywhere else in the VM's API answer.
        let (_, raw) = body_of(&other.c, &app.url("/api/v1/vms/ks01"), Some(&other.token)).await;
        assert!(!raw.contains(&token), "{role}: {raw}");

        // The pages: size and who changed it, and a sentence instead of the content.
        for path in ["/kickstarts/fedora.ks", "/kickstarts", "/vms/ks01"] {
            let (s, page) = body_of(&session, &app.url(path), None).await;
            assert_eq!(s, StatusCode::OK, "{role} {path}");
            assert!(!page.contains(SECRET_PASSWORD), "{role} {path}: {page}");
            assert!(!page.contains("rootpw"), "{role} {path}");
            assert!(!page.contains(&token), "{role} {path}");
        }
        let page = common::pages::text(&session, &app.url("/kickstarts/fedora.ks")).await;
        assert!(
            page.contains("Only admins can read a kickstart&#x27;s content")
                || page.contains("Only admins can read a kickstart's content"),
            "{page}"
        );
        assert!(page.contains(&format!("{} bytes", ks.len())), "{page}");
        assert!(page.contains("by admin"), "{page}");
        let list = common::pages::text(&session, &app.url("/kickstarts")).await;
        assert!(list.contains("data-kickstart=\"fedora.ks\""), "{list}");
        assert!(list.contains(&format!("<td class=\"num\">{}</td>", ks.len())));
    }
}

// ---- caches ----

#[tokio::test]
async fn private_answers_are_never_stored_by_caches() {
    let app = spawn_app_with(|_| {}).await;
    let no_store = |r: &reqwest::Response| {
        r.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("no-store"))
    };
    // The set-up and sign-in pages.
    let c = common::client();
    let setup = app.setup_url.clone().unwrap();
    let r = c.get(&setup).send().await.unwrap();
    assert!(no_store(&r), "set-up page: {:?}", r.headers());
    let r = c.get(app.url("/login")).send().await.unwrap();
    assert!(no_store(&r), "sign-in page: {:?}", r.headers());

    let admin = app.setup_admin("admin").await;
    // The page that shows a new API token.
    let csrf = app.csrf(&admin, "/users").await;
    let r = admin
        .post(app.url("/tokens"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "admin"),
            ("label", "ci"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin.get(app.url("/users")).send().await.unwrap();
    assert!(r.status() == StatusCode::OK);
    assert!(no_store(&r), "new token page: {:?}", r.headers());
    assert!(r.text().await.unwrap().contains("id=\"new-token\""));
    let token = app.admin_token(&admin).await;
    // Signed-in pages, errors included, and JSON by session or token.
    for path in [
        "/host",
        "/vms",
        "/users",
        "/audit",
        "/kickstarts",
        "/vms/nope",
    ] {
        let r = admin.get(app.url(path)).send().await.unwrap();
        assert!(no_store(&r), "{path} ({}): {:?}", r.status(), r.headers());
    }
    for path in [
        "/api/v1/vms",
        "/api/v1/kickstarts",
        "/api/v1/whoami",
        "/api/v1/vms/nope",
    ] {
        let r = Client::new()
            .get(app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(no_store(&r), "{path} ({}): {:?}", r.status(), r.headers());
    }
    // Gzip'ed answers too.
    let r = admin
        .get(app.url("/vms"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(no_store(&r), "{:?}", r.headers());
    // Static assets keep their caching.
    let r = admin
        .get(app.url("/static/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cc = r.headers()["cache-control"].to_str().unwrap().to_string();
    assert!(cc.contains("max-age") && !cc.contains("no-store"), "{cc}");
}

// ---- the request log and the audit log under a flood ----

#[tokio::test]
async fn a_flood_of_refused_fetches_folds_and_the_log_keeps_no_secrets() {
    let log = captured_log();
    let app = spawn_app_with(|_| {}).await;
    let (admin, api) = admin_api(&app).await;
    let started = std::time::Instant::now();
    let c = Client::new();
    let tokens: Vec<String> = (0..500)
        .map(|i| format!("Guess{i:04}xYzSecretToken"))
        .collect();
    for chunk in tokens.chunks(25) {
        let requests = chunk.iter().map(|t| {
            let c = c.clone();
            let url = app.url(&format!("/ks/{t}"));
            async move { c.get(url).send().await.unwrap().status() }
        });
        for s in futures_util::future::join_all(requests).await {
            assert_eq!(s, StatusCode::NOT_FOUND);
        }
    }
    let minutes = started.elapsed().as_secs() / 60 + 1;

    // A handful of rows (one per minute, two when the flood crossed a minute), whose
    // counts add up to every refusal.
    let page = common::pages::text(
        &admin,
        &app.url("/audit?action=kickstart.fetch&outcome=refused"),
    )
    .await;
    let counts = row_counts(&page);
    assert!(
        !counts.is_empty() && counts.len() as u64 <= 2 * minutes,
        "{counts:?} over {minutes} min"
    );
    assert_eq!(counts.iter().sum::<u64>(), 500, "{counts:?}");
    assert!(page.contains("×"), "the page shows the count");
    let rows = &page[page.find("<tbody>").unwrap()..page.find("</tbody>").unwrap()];
    assert_eq!(
        rows.matches("<td>127.0.0.1</td>").count(),
        counts.len(),
        "every row names the address: {rows}"
    );

    // A console websocket with a ticket that is no good: refused, and logged.
    let r = Client::new()
        .get(app.url("/vms/web1/console/vnc/ws?ticket=TicketSecretValue123"))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());

    // The request log shows where requests went, never the secrets in the address.
    let text = log_text();
    assert!(text.contains("/ks/…"), "the log shows the fetches");
    assert!(
        text.contains("ticket=…"),
        "the log shows the console request"
    );
    for t in tokens
        .iter()
        .chain(["TicketSecretValue123".to_string()].iter())
    {
        assert!(!text.contains(t.as_str()), "{t} is in the log");
    }
    drop(log);
}

#[tokio::test]
async fn signed_in_refusals_still_get_a_row_each() {
    let app = spawn_app_with(|_| {}).await;
    let (admin, _api) = admin_api(&app).await;
    let (viewer, _) = as_user(&app, &admin, "vera", "viewer").await;
    for _ in 0..3 {
        let (s, _) = viewer
            .post("/api/v1/kickstarts", json!({"name": "x", "content": "x"}))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let page = common::pages::text(&admin, &app.url("/audit?user=vera&outcome=denied")).await;
    assert_eq!(row_counts(&page), [1, 1, 1], "{page}");
}

// ---- retention ----

#[tokio::test]
async fn audit_entries_past_their_retention_are_pruned_at_start_up() {
    let app = spawn_app_with(|_| {}).await;
    let admin = app.setup_admin("admin").await;
    app.handle.stop(false).await;
    let day = 86_400;
    let t = now();
    {
        let store = store_of(&app);
        store
            .append_audit(&entry(t - 500 * day, "ann", "vm.start", "ancient", "ok"))
            .unwrap();
        store
            .append_audit(&entry(t - 31 * day, "ann", "vm.start", "last-month", "ok"))
            .unwrap();
        store
            .append_audit(&entry(t - 2 * day, "ann", "vm.start", "recent", "ok"))
            .unwrap();
    }
    // Default retention (400 days) at start-up.
    let (base, _, handle) = spawn_app_on(app.data_dir.path(), |_| {}, None).await;
    let audit_url = format!("{base}/audit");
    let page = wait_for(&admin, &audit_url, "audit.prune").await;
    assert!(!page.contains("ancient"), "{page}");
    assert!(page.contains("last-month") && page.contains("recent"));
    assert!(page.contains("pruned 1 entries older than "), "{page}");
    handle.stop(false).await;

    // A shorter retention prunes more at the next start.
    let (base, _, handle) =
        spawn_app_on(app.data_dir.path(), |c| c.audit.retention_days = 30, None).await;
    let page = wait_for(&admin, &format!("{base}/audit"), "retention_days = 30").await;
    assert!(!page.contains("last-month"), "{page}");
    assert!(page.contains("recent"));
    handle.stop(false).await;
}

/// The audit page once it contains `needle` (polled for up to 10 s).
async fn wait_for(c: &Client, url: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = common::pages::text(c, url).await;
        if page.contains(needle) {
            return page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{needle} never came: {page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

// ---- the audit page ----

#[tokio::test]
async fn the_audit_page_pages_and_filters() {
    let app = spawn_app_with(|_| {}).await;
    let admin = app.setup_admin("admin").await;
    let store = store_of(&app);
    // 2024-03-01 00:00 UTC, then one entry an hour: 250 entries over about ten days.
    let march_1 = 1_709_251_200;
    for i in 0..250 {
        let (actor, action) = if i % 5 == 0 {
            ("bob", "vm.stop")
        } else {
            ("carol", "vm.start")
        };
        store
            .append_audit(&entry(
                march_1 + i * 3600,
                actor,
                action,
                &format!("web{i:03}"),
                if i % 10 == 0 { "denied" } else { "ok" },
            ))
            .unwrap();
    }

    // 100 per page, newest first; the pages link to each other.
    let first = common::pages::text(&admin, &app.url("/audit")).await;
    assert_eq!(row_counts(&first).len(), 100);
    assert!(first.contains("href=\"/audit?page=2\""), "{first}");
    let third = common::pages::text(&admin, &app.url("/audit?page=3")).await;
    assert!(third.contains("web000"), "the oldest is on the last page");
    assert!(!first.contains("web000"));

    // Filters: who, action (or a group of actions), result, target text, days.
    let page = common::pages::text(&admin, &app.url("/audit?user=bob")).await;
    assert_eq!(row_counts(&page).len(), 50, "{page}");
    assert!(!page.contains(">carol<"));
    assert!(page.contains("value=\"bob\""), "the form keeps the filter");
    let page = common::pages::text(&admin, &app.url("/audit?user=bob&outcome=denied")).await;
    assert_eq!(row_counts(&page).len(), 25);
    let page = common::pages::text(&admin, &app.url("/audit?action=vm&user=carol")).await;
    assert_eq!(row_counts(&page).len(), 100);
    assert!(
        page.contains("href=\"/audit?user=carol&#38;action=vm&#38;page=2\"")
            || page.contains("href=\"/audit?user=carol&amp;action=vm&amp;page=2\"")
            || page.contains("href=\"/audit?user=carol&action=vm&page=2\""),
        "page links keep the filter: {page}"
    );
    let second = common::pages::text(&admin, &app.url("/audit?user=carol&action=vm&page=2")).await;
    assert_eq!(row_counts(&second).len(), 100);
    assert!(!second.contains(">bob<"));
    let page = common::pages::text(&admin, &app.url("/audit?target=WEB12")).await;
    assert_eq!(row_counts(&page).len(), 10, "web120…web129");
    // 2024-03-02 is entries 24…47.
    let page = common::pages::text(&admin, &app.url("/audit?from=2024-03-02&to=2024-03-02")).await;
    assert_eq!(row_counts(&page).len(), 24, "{page}");
    assert!(page.contains("web024") && page.contains("web047") && !page.contains("web048"));
    // A date that is not one is refused with what to enter.
    let r = admin
        .get(app.url("/audit?from=March"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = r.text().await.unwrap();
    assert!(page.contains("Enter the from date as YYYY-MM-DD"), "{page}");
    let page = common::pages::text(&admin, &app.url("/audit?user=nobody")).await;
    assert!(page.contains("No entries match this filter."), "{page}");
}
