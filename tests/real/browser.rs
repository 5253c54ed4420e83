//! A new admin in a real headless Chromium: setup link, host page, VM list, sign out,
//! a wrong and a right password. Driven through chromedriver's W3C WebDriver HTTP API;
//! screenshots land in `target/test-artifacts/`.

use crate::common;

use common::webdriver::{Browser, WAIT};
use common::{spawn_app, ADMIN_PASSWORD};
use std::time::{Duration, Instant};

#[tokio::test]
async fn new_admin_sets_up_browses_signs_out_and_back_in_in_chromium() {
    let _gate = crate::gate::enter(module_path!());
    let started = Instant::now();
    let app = spawn_app().await;
    let setup_url = app.setup_url.clone().expect("no accounts → setup link");
    let b = Browser::start().await;

    // 1. The one-time setup link: create the first admin, land on /host signed in.
    b.set_up_first_admin(&setup_url, "admin", ADMIN_PASSWORD)
        .await;
    let h1 = b.text_of("main h1").await;
    assert!(h1.starts_with("Host"), "host heading: {h1:?}");
    let main = b.text_of("main").await;
    assert!(main.contains("16 CPUs"), "demo host facts shown: {main}");
    let who = b.text_of("header form.who span").await;
    assert!(who.contains("admin"), "signed in as admin: {who:?}");
    b.screenshot("browser-host").await;

    // 2. The "Virtual machines" nav link: the table lists web01 and a paused VM.
    let link = b
        .find_by("link text", "Virtual machines")
        .await
        .expect("nav link \"Virtual machines\"");
    b.click(&link).await;
    b.wait_for_path("/vms").await;
    let mut rows = Vec::new();
    for row in b.find_all("#vm-list tbody tr").await {
        rows.push(b.text(&row).await);
    }
    assert!(
        rows.iter().any(|r| r.starts_with("web01")),
        "web01 listed: {rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.contains("paused")),
        "a paused VM listed: {rows:?}"
    );
    b.screenshot("browser-vms").await;

    // 3. Sign out, then a wrong password, then the right one.
    let sign_out = b.find("header form.who button[type=submit]").await;
    assert_eq!(b.text(&sign_out).await, "Sign out");
    b.click(&sign_out).await;
    b.wait_for_path("/login?signed_out=1").await;
    assert_eq!(b.text_of("form h2").await, "Sign in");
    assert_eq!(b.text_of("p.notice").await, "You have signed out.");

    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", "not-the-password")
        .await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    let deadline = Instant::now() + WAIT;
    let error = loop {
        if let Some(el) = b.find_by("css selector", "#login-error").await {
            break b.text(&el).await;
        }
        assert!(
            Instant::now() < deadline,
            "no #login-error after a wrong password"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(error, "Wrong user name or password.");
    b.screenshot("browser-login-error").await;

    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", ADMIN_PASSWORD).await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    b.wait_for_path("/host").await;
    assert!(b.text_of("main").await.contains("16 CPUs"));

    // 4. The VM page updates live: web01 is paused from another session and the open
    // page shows it without a reload.
    b.goto(&app.url("/vms/web01")).await;
    assert_eq!(b.text_of("#vm-state").await, "running");
    let (other, _) = app.login("admin", ADMIN_PASSWORD).await;
    let csrf = app.csrf(&other, "/vms/web01").await;
    // Give the page's EventSource a moment to connect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = other
        .post(app.url("/vms/web01/action/pause"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    let deadline = Instant::now() + WAIT;
    loop {
        let state = b.text_of("#vm-state").await;
        if state == "paused" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the open page never showed the pause: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.path().await, "/vms/web01", "no reload or navigation");
    let actions = b.text_of("#vm-actions").await;
    assert!(
        actions.contains("Resume"),
        "actions follow the state: {actions}"
    );
    b.screenshot("browser-vm-live").await;

    b.quit().await;
    eprintln!("browser test took {:.1?}", started.elapsed());
}
