//! The VM page and the VM list over HTTP on the demo host: the tab title is plain text,
//! harmful buttons sit behind a confirmation, a template offers no Start, and the list's
//! per-row Start / Shut down buttons are there for operators (not viewers) and come back
//! to the list.

use crate::common;

use common::api::Api;
use common::spawn_app;
use reqwest::{header, Client, StatusCode};
use serde_json::json;

async fn page(c: &Client, url: String) -> String {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

fn title(html: &str) -> &str {
    let start = html.find("<title>").expect("a title") + "<title>".len();
    &html[start..start + html[start..].find("</title>").expect("title ends")]
}

#[tokio::test]
async fn the_vm_page_has_a_plain_title_and_asks_before_force_off_revert_and_delete() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let api = Api {
        c: Client::new(),
        base: app.base.clone(),
        token: app.admin_token(&admin).await,
    };
    let (s, v) = api
        .post("/api/v1/vms/db01/snapshots", json!({"name": "snap1"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let html = page(&admin, app.url("/vms/db01")).await;
    let t = title(&html);
    assert!(t.starts_with("db01") && !t.contains('<'), "title: {t:?}");
    assert_eq!(html.matches("src=\"/static/live.js\"").count(), 1);
    // Force off, Revert and Delete snapshot: each button is inside a closed disclosure.
    assert!(
        !html.contains(">Force off</button>"),
        "no one-click Force off"
    );
    assert!(html.contains(
        "<details class=\"confirm\" id=\"force-off-confirm\"><summary>Force off…</summary>"
    ));
    assert!(html.contains("<summary>Revert…</summary>"));
    assert!(html.contains("<summary>Delete…</summary>"));
    assert!(html.contains(">Revert to snap1</button>"));
    assert!(html.contains(">Delete snapshot snap1</button>"));
    assert!(
        html.contains(">Turn autostart on</button>"),
        "the button says what it does"
    );

    // A template: no Start, no autostart toggle, and a way to make a VM from it.
    let (s, v) = api.post("/api/v1/vms/win2019-ad/template", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let html = page(&admin, app.url("/vms/win2019-ad")).await;
    assert!(!html.contains(">Start</button>"), "no Start on a template");
    assert!(
        !html.contains("autostart-form"),
        "no autostart toggle on a template"
    );
    assert!(html.contains("id=\"template-note\""));
    assert!(html.contains("href=\"/templates/win2019-ad/new\""));
}

#[tokio::test]
async fn the_list_has_start_and_shut_down_per_row_for_operators_only_and_comes_back() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, "vic", "viewer", "vic-password-1")
        .await;
    app.add_user(&admin, "olga", "operator", "olga-password-1")
        .await;

    let (viewer, _) = app.login("vic", "vic-password-1").await;
    let html = page(&viewer, app.url("/vms")).await;
    assert!(
        !html.contains("data-row-action"),
        "no row buttons for viewers"
    );

    let (operator, _) = app.login("olga", "olga-password-1").await;
    let html = page(&operator, app.url("/vms?state=running")).await;
    assert!(html.contains("action=\"/vms/web01/action/shutdown\""));
    assert!(html.contains("data-row-action=\"shutdown\""));
    // A VM without a picture yet shows a placeholder, never only a broken image.
    assert!(html.contains("<small class=\"no-screen\">No screen yet</small>"));

    // A shut-off VM's row offers Start; it comes back to the list.
    let csrf = app.csrf(&operator, "/vms").await;
    let r = operator
        .post(app.url("/vms/web01/action/force-off"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = page(&operator, app.url("/vms")).await;
    assert!(html.contains("action=\"/vms/web01/action/start\""));
    let r = operator
        .post(app.url("/vms/web01/action/start"))
        .form(&[("csrf", csrf.as_str()), ("back", "/vms?state=off")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[header::LOCATION].to_str().unwrap().to_string();
    assert_eq!(to, "/vms?state=off", "back to the same list");
    let html = page(&operator, app.url(&to)).await;
    assert!(html.contains("id=\"vms-message\">Start: done for web01.</p>"));
    let html = page(&operator, app.url(&to)).await;
    assert!(!html.contains("vms-message"), "the notice is shown once");

    // Only the list is a place to come back to.
    let r = operator
        .post(app.url("/vms/web01/action/shutdown"))
        .form(&[("csrf", csrf.as_str()), ("back", "//evil.example/vms")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[header::LOCATION].to_str().unwrap();
    assert!(to.starts_with("/vms/web01?"), "{to}");
}

/// A notice after a form comes from the server once, never from the address: a link
/// such as `/vms/db01?message=…` that someone sends an admin shows nothing of its text
/// (it would read as virtdeck speaking), and a refresh after an action shows no stale
/// notice.
#[tokio::test]
async fn notices_come_once_from_the_server_never_from_the_address() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let planted = "Your host is compromised, call 555-0100";
    for path in [
        "/vms/db01",
        "/host/storage",
        "/host/storage/default",
        "/jobs",
        "/kickstarts",
        "/host/libvirt-networks",
    ] {
        let html = page(
            &admin,
            app.url(&format!(
                "{path}?message=Your%20host%20is%20compromised%2C%20call%20555-0100"
            )),
        )
        .await;
        assert!(
            !html.contains(planted),
            "{path} shows text from its address"
        );
    }

    // An action from the VM page: a 303 to the plain page, whose notice shows once.
    let html = page(&admin, app.url("/vms/db01")).await;
    let csrf = common::csrf_in(&html);
    let r = admin
        .post(app.url("/vms/db01/action/pause"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/vms/db01");
    let first = page(&admin, app.url("/vms/db01")).await;
    assert!(
        first.contains("Pause: done."),
        "the notice after the action"
    );
    let again = page(&admin, app.url("/vms/db01")).await;
    assert!(
        !again.contains("Pause: done."),
        "a refresh shows it no more"
    );
}
