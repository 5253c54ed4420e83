//! A clone started from a VM's page in a real headless Chromium, on the demo host
//! (libvirt's test driver) with a hypervisor that holds the disk copy until the test lets
//! it go: the clone form hands over to the Jobs page, which shows the job running with
//! its step, then follows it by itself (no reload from the test) until it has succeeded
//! and links to the new VM, and that link opens the copy's page.

use crate::common;

use common::api::Api;
use common::faults::{FailAt, Gate, Step};
use common::webdriver::{Browser, WAIT};
use common::{spawn_app_wrapped, TestApp, ADMIN_PASSWORD};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The app with `step` held at a gate the test opens.
async fn held_app(step: Step) -> (TestApp, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let g = gate.clone();
    let app = spawn_app_wrapped(
        |_| {},
        Some(Box::new(move |inner| {
            Arc::new(FailAt::holding(inner, step, g.clone()))
        })),
    )
    .await;
    (app, gate)
}

/// The clone's row on the open Jobs page, read in one script so that a reload of the
/// page between two reads cannot mix two versions of it: its state, whether it links to
/// the copy, its text, and whether the list still asks to be refreshed.
const CLONE_ROW: &str = r#"
const row = document.querySelector('tr[data-job-kind="clone"]');
const list = document.getElementById('job-list');
return {
  rows: document.querySelectorAll('tr[data-job-kind="clone"]').length,
  state: row ? row.dataset.jobState : null,
  link: row ? !!row.querySelector('a[href="/vms/browser-copy"]') : false,
  text: row ? row.textContent : null,
  refresh: list ? (list.dataset.refresh || null) : null,
  navigation: (performance.getEntriesByType('navigation')[0] || {}).type || null,
};
"#;

#[tokio::test]
async fn a_clone_started_from_the_vm_page_is_followed_on_the_jobs_page_until_it_is_done_in_chromium(
) {
    let _gate = crate::gate::enter(module_path!());
    let (app, gate) = held_app(Step::HoldCloneVolume).await;
    let session = app.setup_admin("admin").await;
    let api = Api {
        c: Client::new(),
        base: app.base.clone(),
        token: app.admin_token(&session).await,
    };
    // The demo VM with a qcow2 disk, off so that its page offers the clone form.
    let (s, v) = api
        .post("/api/v1/vms/build-runner/force-off", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let b = Browser::start().await;
    b.goto(&app.url("/login")).await;
    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", ADMIN_PASSWORD).await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    b.wait_for_path("/host").await;

    // 1. The VM page's clone form, filled in and sent as an admin would.
    b.goto(&app.url("/vms/build-runner")).await;
    b.type_into("#clone-form input[name=clone_name]", "browser-copy")
        .await;
    let clone = b.find("#clone-form button[type=submit]").await;
    assert_eq!(b.text(&clone).await, "Clone");
    b.click(&clone).await;

    // 2. The copy is held, so after its wait the form hands over to the Jobs page.
    let deadline = Instant::now() + WAIT;
    let path = loop {
        let path = b.path().await;
        if path.starts_with("/jobs") {
            break path;
        }
        assert!(
            Instant::now() < deadline,
            "the clone form never led to the Jobs page; still on {path}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        path, "/jobs",
        "the Jobs page, its notice not in the address (a refresh does not show it again)"
    );
    assert_eq!(
        gate.arrived.load(Ordering::SeqCst),
        1,
        "the one disk copy is held at the gate"
    );
    assert_eq!(
        b.text_of("#jobs-message").await,
        "Cloning build-runner to browser-copy runs as job 1; its progress is below."
    );
    let row = b.execute(CLONE_ROW, json!([])).await;
    assert_eq!(row["rows"], 1, "one clone job: {row}");
    assert_eq!(row["state"], "running", "{row}");
    let text = row["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("copying disk 1 of 1"),
        "the row shows the copy step: {text:?}"
    );
    assert_eq!(row["link"], false, "no link to a VM not made yet: {row}");
    assert_eq!(
        row["refresh"], "2",
        "the list asks to be refreshed while the job runs: {row}"
    );
    b.screenshot("jobs-browser-running").await;

    // 3. The copy goes on; the open page follows the job by itself until it is done.
    gate.open();
    let deadline = Instant::now() + Duration::from_secs(15);
    let done: Value = loop {
        let row = b.execute(CLONE_ROW, json!([])).await;
        if row["state"] == "succeeded" && row["link"] == true {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "the open Jobs page never showed the clone succeeded with a link to it: {row}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        done["navigation"], "reload",
        "the page reloaded itself to show the outcome: {done}"
    );
    assert_eq!(
        done["refresh"],
        Value::Null,
        "nothing runs any more, so the page stops reloading: {done}"
    );
    assert_eq!(
        b.path().await,
        "/jobs",
        "the page was reloaded in place, not navigated away"
    );
    let text = done["text"].as_str().unwrap_or_default();
    assert!(
        !text.contains("copying disk"),
        "no step once the job has ended: {text:?}"
    );
    b.screenshot("jobs-browser-succeeded").await;

    // 4. The link opens the copy's page.
    let link = b
        .find("tr[data-job-kind=\"clone\"] a[href=\"/vms/browser-copy\"]")
        .await;
    assert_eq!(b.text(&link).await, "browser-copy");
    b.click(&link).await;
    b.wait_for_path("/vms/browser-copy").await;
    assert!(
        b.text_of("main h1").await.starts_with("browser-copy"),
        "the copy's own page"
    );

    b.quit().await;
}
