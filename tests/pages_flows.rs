//! Pages as an admin uses them: sign-in comes back to the page asked for, forms answer
//! with a redirect and a one-time notice, and the forms say plainly what will happen.

mod common;

use common::*;
use reqwest::{Response, StatusCode};

fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// How often `needle` occurs in `page`.
fn count(page: &str, needle: &str) -> usize {
    page.matches(needle).count()
}

#[tokio::test]
async fn sign_in_comes_back_to_the_page_asked_for() {
    let app = spawn_app().await;
    let _admin = app.setup_admin("admin").await;
    let c = client();
    let r = c.get(app.url("/vms?state=running")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert_eq!(to, "/login?next=%2Fvms%3Fstate%3Drunning");

    // The login page keeps next in its form; signing in with it lands there.
    let page = app.get_text(&c, &to).await;
    assert!(
        page.contains("name=\"next\" value=\"/vms?state=running\""),
        "{page}"
    );
    let csrf = csrf_in(&page);
    let r = c
        .post(app.url("/login"))
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("csrf", csrf.as_str()),
            ("next", "/vms?state=running"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/vms?state=running");

    // A form's action is not a page to come back to; the API answers 401 as before.
    let r = client()
        .post(app.url("/tokens"))
        .form(&[("username", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r), "/login");
    let r = client().get(app.url("/api/v1/vms")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_form_defaults_to_the_signed_in_user_and_the_token_shows_once() {
    let app = spawn_app().await;
    let admin = app.setup_admin("zed").await;
    app.add_user(&admin, "alice", "viewer", "alice-password-1")
        .await;
    let page = app.get_text(&admin, "/users").await;
    assert!(page.contains("<option selected>zed</option>"), "{page}");
    assert!(page.contains("<option>alice</option>"), "{page}");

    let csrf = app.csrf(&admin, "/users").await;
    let r = admin
        .post(app.url("/tokens"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "zed"),
            ("label", "ci"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert_eq!(to, "/users", "never the secret in the URL");
    let set_cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
    assert!(
        set_cookies.is_empty(),
        "no secret in a cookie: {set_cookies:?}"
    );

    let page = app.get_text(&admin, &to).await;
    assert_eq!(count(&page, "id=\"new-token\""), 1, "{page}");
    assert!(page.contains("API token for zed created"), "{page}");
    assert!(page.contains("data-copy=\"new-token\""), "a Copy button");
    assert!(page.contains("src=\"/static/copy.js\""));
    let js = admin.get(app.url("/static/copy.js")).send().await.unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    assert!(js.text().await.unwrap().contains("clipboard.writeText"));

    let again = app.get_text(&admin, "/users").await;
    assert!(!again.contains("id=\"new-token\""), "shown once");
    assert!(!again.contains("API token for zed created"), "notice once");
}

/// POSTs a form and checks the answer is a 303 to `page`; then the page shows
/// `notice` once.
async fn posts_and_notices_once(
    app: &TestApp,
    c: &reqwest::Client,
    action: &str,
    form: &[(&str, &str)],
    page: &str,
    notice: &str,
) {
    let r = c.post(app.url(action)).form(form).send().await.unwrap();
    let status = r.status();
    let to = location(&r);
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::SEE_OTHER, "{action}: {body}");
    assert_eq!(to, page, "{action}");
    let first = app.get_text(c, &to).await;
    assert_eq!(count(&first, notice), 1, "{action}: {notice} in {first}");
    let second = app.get_text(c, &to).await;
    assert_eq!(count(&second, notice), 0, "{action}: shown once");
}

#[tokio::test]
async fn admin_forms_redirect_with_a_one_time_notice() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let csrf = app.csrf(&admin, "/users").await;
    let c = csrf.as_str();
    posts_and_notices_once(
        &app,
        &admin,
        "/users",
        &[
            ("csrf", c),
            ("username", "bob"),
            ("role", "operator"),
            ("password", "bob-password-1"),
            ("password_confirm", "bob-password-1"),
        ],
        "/users",
        "Created bob (operator).",
    )
    .await;
    posts_and_notices_once(
        &app,
        &admin,
        "/users/bob/delete",
        &[("csrf", c)],
        "/users",
        "Deleted bob;",
    )
    .await;
    posts_and_notices_once(
        &app,
        &admin,
        "/flavors",
        &[("csrf", c), ("name", "xl"), ("units", "3")],
        "/flavors",
        "Saved size xl: 3 units.",
    )
    .await;
    posts_and_notices_once(
        &app,
        &admin,
        "/flavors/xl/delete",
        &[("csrf", c)],
        "/flavors",
        "Deleted size xl.",
    )
    .await;
}

#[tokio::test]
async fn snapshot_forms_redirect_with_a_one_time_notice() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let csrf = app.csrf(&admin, "/vms/db01").await;
    let c = csrf.as_str();
    posts_and_notices_once(
        &app,
        &admin,
        "/vms/db01/snapshots",
        &[
            ("csrf", c),
            ("snapshot_name", "before"),
            ("description", ""),
        ],
        "/vms/db01",
        "Snapshot before taken.",
    )
    .await;
    posts_and_notices_once(
        &app,
        &admin,
        "/vms/db01/snapshots/before/revert",
        &[("csrf", c)],
        "/vms/db01",
        "db01 is back at snapshot before.",
    )
    .await;
    posts_and_notices_once(
        &app,
        &admin,
        "/vms/db01/snapshots/before/delete",
        &[("csrf", c)],
        "/vms/db01",
        "Snapshot before deleted.",
    )
    .await;
}

/// The row of the pool page for volume `name`.
fn volume_row(page: &str, name: &str) -> String {
    let start = page
        .find(&format!("data-volume=\"{name}\""))
        .unwrap_or_else(|| panic!("no row for {name}"));
    page[start..start + page[start..].find("</tr>").unwrap()].to_string()
}

#[tokio::test]
async fn the_demo_pool_says_before_an_upload_that_it_cannot_take_one() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = app.get_text(&admin, "/host/storage/default").await;
    let at = page.find("id=\"upload-unavailable\"").expect("said before");
    let said = &page[page[..at].rfind('<').unwrap()..at + 400];
    assert!(said.contains("class=\"error\""), "{said}");
    assert!(said.contains("not available on the demo host"), "{said}");
    assert!(
        page.contains("id=\"upload-start\" disabled"),
        "no upload offered"
    );
    assert!(!page.contains("virStorageVolUpload"));
}

#[tokio::test]
async fn isos_offer_no_resize_and_thin_overcommit_is_warned() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = app.get_text(&admin, "/host/storage/default").await;
    let iso = "debian-12.8.0-amd64-netinst.iso";
    assert!(
        !volume_row(&page, iso).contains("/resize\""),
        "no Resize for an ISO"
    );
    assert!(volume_row(&page, "web01.qcow2").contains("/resize\""));
    let csrf = csrf_in(&page);
    let r = admin
        .post(app.url(&format!("/host/storage/default/volumes/{iso}/resize")))
        .form(&[("csrf", csrf.as_str()), ("size_gib", "50")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("cannot be resized"));

    // A thin volume far larger than the free space is made, with a warning.
    let r = admin
        .post(app.url("/host/storage/default/volumes"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "huge.qcow2"),
            ("size_gib", "5000"),
            ("format", "qcow2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = app.get_text(&admin, &location(&r)).await;
    assert!(page.contains("Volume huge.qcow2 created"), "{page}");
    assert!(
        page.contains("may grow to 5000 GiB but the pool has only"),
        "{page}"
    );
    // One that fits says nothing of the kind.
    let r = admin
        .post(app.url("/host/storage/default/volumes"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "small.qcow2"),
            ("size_gib", "1"),
            ("format", "qcow2"),
        ])
        .send()
        .await
        .unwrap();
    let page = app.get_text(&admin, &location(&r)).await;
    assert!(page.contains("Volume small.qcow2 created"), "{page}");
    assert!(!page.contains("may grow to"), "{page}");
}
