//! Kickstarts on libvirt's test driver: the stored files (API and pages, roles, CSRF,
//! validation, audit) and the per-VM URL a network install's installer fetches.

use crate::common;

use common::api::Api;
use common::http::serve_dir;
use common::{client, spawn_app_with, TestApp};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

const KS: &str = "# Fedora server, unattended\nlang en_US.UTF-8\nrootpw --lock\nuser --name=José --groups=wheel\r\n%packages\n@core\n%end\n";

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

async fn as_user(app: &TestApp, admin: &Client, name: &str, role: &str) -> Api {
    app.add_user(admin, name, role, &format!("{name}-password-1"))
        .await;
    Api {
        c: Client::new(),
        base: app.base.clone(),
        token: app.token_for(admin, name).await,
    }
}

async fn post_form(app: &TestApp, c: &Client, path: &str, fields: &[(&str, &str)]) -> Response {
    c.post(app.url(path)).form(fields).send().await.unwrap()
}

/// Follows a form's redirect; the page it lands on.
async fn follow(app: &TestApp, c: &Client, r: Response) -> String {
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let at = r.headers()["location"].to_str().unwrap().to_string();
    c.get(app.url(&at))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn put(api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
    let r = api
        .c
        .put(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("images/pxeboot");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("vmlinuz"), "kernel".repeat(100)).unwrap();
    std::fs::write(p.join("initrd.img"), "initrd".repeat(100)).unwrap();
    dir
}

fn install(name: &str, tree_url: &str, kickstart: &str) -> Value {
    json!({
        "name": name,
        "units": 1,
        "disk": {"type": "new", "pool": "default", "size_gib": 4},
        "install": {"type": "url", "url": tree_url, "kernel_args": "console=ttyS0 inst.text", "kickstart": kickstart},
        "nic": {"bridge": "br0"},
        "start": true
    })
}

/// The kickstart URL in the running installer's kernel command line.
async fn ks_url(api: &Api, vm: &str) -> String {
    let (s, v) = api.get(&format!("/api/v1/vms/{vm}/kickstart")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["install_running"], true, "{v}");
    let cmdline = v["kernel_cmdline"].as_str().unwrap().to_string();
    assert!(cmdline.starts_with("console=ttyS0 inst.text "), "{cmdline}");
    let arg = cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("inst.ks="))
        .unwrap_or_else(|| panic!("no inst.ks= in {cmdline}"));
    arg.to_string()
}

async fn fetch(url: &str) -> (StatusCode, Option<String>, Vec<u8>) {
    let r = Client::new().get(url).send().await.unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status(), ct, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn admins_keep_kickstarts_others_read_them() {
    let app = spawn_app_with(|_| {}).await;
    let (session, api) = admin_api(&app).await;

    let (s, v) = api
        .post(
            "/api/v1/kickstarts",
            json!({"name": "fedora.ks", "content": KS}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api.get("/api/v1/kickstarts/fedora.ks").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["content"], KS);
    assert_eq!(v["updated_by"], "admin");
    let (_, v) = api.get("/api/v1/kickstarts").await;
    assert_eq!(v["kickstarts"][0]["name"], "fedora.ks");
    assert_eq!(v["kickstarts"][0]["bytes"], KS.len());

    // Bad input is refused at its field, and nothing is stored.
    let big = "#".repeat(256 * 1024 + 1);
    for (body, field, words) in [
        (
            json!({"name": "a b", "content": KS}),
            "name",
            "letters, digits",
        ),
        (
            json!({"name": "", "content": KS}),
            "name",
            "letters, digits",
        ),
        (
            json!({"name": "x".repeat(65), "content": KS}),
            "name",
            "at most 64",
        ),
        (json!({"name": "ok", "content": "  \n"}), "content", "empty"),
        (json!({"name": "ok", "content": big}), "content", "256 KiB"),
        (
            json!({"name": "ok", "content": "a\u{0}b"}),
            "content",
            "NUL",
        ),
        (
            json!({"name": "fedora.ks", "content": KS}),
            "name",
            "already a kickstart named fedora.ks",
        ),
    ] {
        let (s, v) = api.post("/api/v1/kickstarts", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(words),
            "{v}"
        );
    }
    assert_eq!(
        api.get("/api/v1/kickstarts").await.1["kickstarts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The largest file fits, through the API and through the page's form.
    let largest = "#".repeat(256 * 1024);
    let (s, v) = api
        .post(
            "/api/v1/kickstarts",
            json!({"name": "big", "content": largest}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{}", v["error"]);
    assert_eq!(
        api.delete("/api/v1/kickstarts/big").await.0,
        StatusCode::NO_CONTENT
    );
    let csrf = app.csrf(&session, "/kickstarts").await;
    let r = post_form(
        &app,
        &session,
        "/kickstarts",
        &[
            ("csrf", csrf.as_str()),
            ("name", "big"),
            ("content", largest.as_str()),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        api.get("/api/v1/kickstarts/big").await.1["content"]
            .as_str()
            .map(str::len),
        Some(largest.len())
    );
    assert_eq!(
        api.delete("/api/v1/kickstarts/big").await.0,
        StatusCode::NO_CONTENT
    );

    // Edit and delete.
    let (s, v) = put(
        &api,
        "/api/v1/kickstarts/fedora.ks",
        json!({"content": "text\n"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        api.get("/api/v1/kickstarts/fedora.ks").await.1["content"],
        "text\n"
    );
    let (s, v) = put(&api, "/api/v1/kickstarts/fedora.ks", json!({"content": ""})).await;
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("content"))
    );
    assert_eq!(
        put(&api, "/api/v1/kickstarts/none", json!({"content": "x"}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Operators and viewers see names, sizes and who changed them, never the content
    // (it may hold passwords); only admins change.
    for (user, role) in [("olga", "operator"), ("vera", "viewer")] {
        let other = as_user(&app, &session, user, role).await;
        assert_eq!(other.get("/api/v1/kickstarts").await.0, StatusCode::OK);
        let (s, v) = other.get("/api/v1/kickstarts/fedora.ks").await;
        assert_eq!((s, v["bytes"].as_u64()), (StatusCode::OK, Some(5)), "{v}");
        assert!(v.get("content").is_none(), "{v}");
        let (s, _) = other
            .post("/api/v1/kickstarts", json!({"name": "mine", "content": KS}))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{role}");
        assert_eq!(
            put(
                &other,
                "/api/v1/kickstarts/fedora.ks",
                json!({"content": "x"})
            )
            .await
            .0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            other.delete("/api/v1/kickstarts/fedora.ks").await.0,
            StatusCode::FORBIDDEN
        );
        let page = app.login(user, &format!("{user}-password-1")).await.0;
        let html = page
            .get(app.url("/kickstarts/fedora.ks"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains("id=\"kickstart-content-hidden\"") && !html.contains("text\n"),
            "{html}"
        );
        assert!(!html.contains("edit-kickstart-form"));
    }

    // The pages: a form without its CSRF token is refused; with it, saved.
    let r = post_form(
        &app,
        &session,
        "/kickstarts",
        &[("name", "page.ks"), ("content", "x")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A signed-in session calling the API needs the CSRF header as well.
    let r = session
        .post(app.url("/api/v1/kickstarts"))
        .json(&json!({"name": "page.ks", "content": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let csrf = app.csrf(&session, "/kickstarts").await;
    let r = post_form(
        &app,
        &session,
        "/kickstarts",
        &[
            ("csrf", csrf.as_str()),
            ("name", "bad name"),
            ("content", "x"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("data-field=\"name\">Enter a name of letters"),
        "{html}"
    );
    assert!(html.contains(">x</textarea>"), "what was typed is kept");
    let r = post_form(
        &app,
        &session,
        "/kickstarts",
        &[
            ("csrf", csrf.as_str()),
            ("name", "page.ks"),
            ("content", "line 1\r\nline 2\r\n"),
        ],
    )
    .await;
    let html = follow(&app, &session, r).await;
    assert!(html.contains("Kickstart page.ks saved."), "{html}");
    assert!(html.contains("edit-kickstart-form") && html.contains("line 1\nline 2\n</textarea>"));
    assert_eq!(
        api.get("/api/v1/kickstarts/page.ks").await.1["content"],
        "line 1\nline 2\n"
    );
    let list = session
        .get(app.url("/kickstarts"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        list.contains("data-kickstart=\"page.ks\"")
            && list.contains("href=\"/kickstarts\" aria-current=\"page\"")
    );
    let r = post_form(
        &app,
        &session,
        "/kickstarts/page.ks/delete",
        &[("csrf", csrf.as_str())],
    )
    .await;
    let html = follow(&app, &session, r).await;
    assert!(
        html.contains("Kickstart page.ks deleted.") && !html.contains("data-kickstart=\"page.ks\"")
    );
    assert_eq!(
        api.delete("/api/v1/kickstarts/fedora.ks").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get("/api/v1/kickstarts/fedora.ks").await.0,
        StatusCode::NOT_FOUND
    );

    let audit = app.audit_text(&session).await;
    for needle in [
        "kickstart.create",
        "kickstart.update",
        "kickstart.delete",
        "denied",
    ] {
        assert!(audit.contains(needle), "{needle} in the audit log");
    }
}

#[tokio::test]
async fn a_network_install_fetches_its_kickstart_only_while_it_runs() {
    let boot = tempfile::tempdir().unwrap();
    let boot_dir = boot.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.boot_dir = boot_dir;
        c.fetch.allow = vec!["127.0.0.0/8".into()]; // the install tree is on loopback
    })
    .await;
    let (session, api) = admin_api(&app).await;
    let t = tree();
    let server = serve_dir(t.path(), None);
    api.post(
        "/api/v1/kickstarts",
        json!({"name": "fedora.ks", "content": KS}),
    )
    .await;

    // An unknown kickstart is refused at its field; nothing is made.
    let before = api.fingerprint().await;
    let (s, v) = api
        .post("/api/v1/vms", install("ks01", &server.url, "nope"))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "kickstart");
    assert_eq!(api.fingerprint().await, before);

    let (s, v) = api
        .post("/api/v1/vms", install("ks01", &server.url, "fedora.ks"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let url = ks_url(&api, "ks01").await;
    // The VM page says which kickstart the install uses and that its URL is served,
    // without showing the URL (its token is the installer's credential).
    let page = common::pages::text(&session, &app.url("/vms/ks01")).await;
    let at = page
        .find("id=\"kickstart-install\"")
        .expect("the install section");
    let section = &page[at..at + page[at..].find("</dl>").unwrap()];
    assert!(
        section.contains("<a href=\"/kickstarts/fedora.ks\">fedora.ks</a>")
            && section.contains("served to the installer until"),
        "{section}"
    );
    let token = url.rsplit('/').next().unwrap();
    assert!(!page.contains(token), "the token stays off the page");
    let port = app.base.rsplit(':').next().unwrap();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/ks/")),
        "{url}"
    );
    // The persistent definition boots the disk and carries no token.
    let xml = api.get("/api/v1/vms/ks01").await.1["xml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!xml.contains("/ks/"), "{xml}");

    // The installer has no session: the URL alone serves the file, byte for byte.
    let (s, ct, body) = fetch(&url).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(body, KS.as_bytes());
    // Another token, or none, gets nothing.
    let wrong = format!("{}x", url);
    assert_eq!(fetch(&wrong).await.0, StatusCode::NOT_FOUND);

    // The file cannot be deleted while the install uses it.
    let (s, v) = api.delete("/api/v1/kickstarts/fedora.ks").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in use by the running install of VM ks01"),
        "{v}"
    );

    // The install boot ends (the installer reboots: on_reboot=destroy): the URL is dead,
    // and stays dead when the VM boots its disk.
    let (s, v) = api.post("/api/v1/vms/ks01/force-off", json!({})).await;
    assert!(s.is_success(), "{v}");
    let (s, _, body) = fetch(&url).await;
    assert_eq!((s, body.len()), (StatusCode::NOT_FOUND, 0), "no detail");
    let (s, v) = api.post("/api/v1/vms/ks01/start", json!({})).await;
    assert!(s.is_success(), "{v}");
    assert_eq!(fetch(&url).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get("/api/v1/vms/ks01/kickstart").await.0,
        StatusCode::NOT_FOUND
    );
    let page = common::pages::text(&session, &app.url("/vms/ks01")).await;
    assert!(!page.contains("kickstart-install"), "the install is over");
    // Now the file is free to go.
    assert_eq!(
        api.delete("/api/v1/kickstarts/fedora.ks").await.0,
        StatusCode::NO_CONTENT
    );

    // A VM deleted during its install takes its URL with it.
    api.post(
        "/api/v1/kickstarts",
        json!({"name": "fedora.ks", "content": KS}),
    )
    .await;
    let (s, v) = api
        .post("/api/v1/vms", install("ks02", &server.url, "fedora.ks"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let url2 = ks_url(&api, "ks02").await;
    assert_ne!(url2, url, "each VM gets its own token");
    assert_eq!(fetch(&url2).await.0, StatusCode::OK);
    let (s, v) = api.delete("/api/v1/vms/ks02?delete_volumes=true").await;
    assert!(s.is_success(), "{v}");
    assert_eq!(fetch(&url2).await.0, StatusCode::NOT_FOUND);

    // Every fetch is audited: VM, remote address, served or refused.
    let audit = app.audit_text(&session).await;
    assert!(audit.contains("kickstart.fetch"), "{audit}");
    assert!(
        audit.contains("served") && audit.contains("refused"),
        "{audit}"
    );
    assert!(audit.contains("127.0.0.1"), "{audit}");
    assert!(
        audit.contains("the VM&#x27;s install boot is not running")
            || audit.contains("install boot is not running"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_kickstart_url_ends_after_its_maximum_lifetime() {
    let boot = tempfile::tempdir().unwrap();
    let boot_dir = boot.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.boot_dir = boot_dir;
        c.fetch.allow = vec!["127.0.0.0/8".into()]; // the install tree is on loopback
        c.install.kickstart_max_lifetime_seconds = 2;
        c.install.kickstart_argument = virtdeck::domain::kickstart::KsArgument::Ks;
    })
    .await;
    let (_session, api) = admin_api(&app).await;
    let t = tree();
    let server = serve_dir(t.path(), None);
    api.post(
        "/api/v1/kickstarts",
        json!({"name": "old.ks", "content": KS}),
    )
    .await;
    let (s, v) = api
        .post("/api/v1/vms", install("ks03", &server.url, "old.ks"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let cmdline = api.get("/api/v1/vms/ks03/kickstart").await.1["kernel_cmdline"]
        .as_str()
        .unwrap()
        .to_string();
    let url = cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("ks="))
        .unwrap_or_else(|| panic!("older installers get ks=: {cmdline}"))
        .to_string();
    assert!(!cmdline.contains("inst.ks="), "{cmdline}");
    assert_eq!(fetch(&url).await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(api.get("/api/v1/vms/ks03").await.1["state"], "running");
    assert_eq!(fetch(&url).await.0, StatusCode::NOT_FOUND, "expired");
}

#[tokio::test]
async fn the_new_vm_form_offers_kickstarts() {
    let app = spawn_app_with(|c| c.install.kickstart_base_url = None).await;
    let (session, api) = admin_api(&app).await;
    api.post(
        "/api/v1/kickstarts",
        json!({"name": "fedora.ks", "content": KS}),
    )
    .await;
    let html = session
        .get(app.url("/vms/new"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<option value=\"fedora.ks\">fedora.ks</option>"),
        "{html}"
    );
    assert!(html.contains("guests on other networks need the base URL set"));
    let _ = client();
}
