//! The VM list on a big host, as an admin with many VMs uses it: pages, a name search
//! and a state filter; the list follows changes made through virtdeck at once; pages
//! travel gzip'ed while live streams do not.

use crate::common;

use crate::scale_host as host;

use common::api::Api;
use common::{spawn_app_with, TestApp};
use reqwest::StatusCode;
use std::io::Read;

const DEMO: &str = include_str!("../../demo/demo-host.xml");
const VMS: usize = 120;

/// The rows of the list table, by VM name, in order.
fn rows(page: &str) -> Vec<String> {
    page.split("<tr data-vm=\"")
        .skip(1)
        .map(|r| r.split('"').next().unwrap_or_default().to_string())
        .collect()
}

async fn big_host() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.xml");
    std::fs::write(&path, host::scale_host_xml(DEMO, VMS).unwrap()).unwrap();
    let uri = format!("test://{}", path.display());
    let app = spawn_app_with(move |cfg| {
        cfg.demo = false;
        cfg.libvirt_uri = uri;
    })
    .await;
    (app, dir)
}

async fn page(c: &reqwest::Client, url: &str) -> String {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    r.text().await.unwrap()
}

#[tokio::test]
async fn a_big_list_comes_in_pages_with_search_and_state_filter() {
    let (app, _dir) = big_host().await;
    let admin = app.setup_admin("admin").await;
    let all: Vec<String> = (1..=VMS).map(host::vm_name).collect();

    let first = page(&admin, &app.url("/vms")).await;
    assert_eq!(rows(&first), all[..50], "the first 50 by name");
    assert!(first.contains("120 VMs, showing 1–50."), "{first}");
    assert!(first.contains("Page 1 of 3"));
    assert!(first.contains(r#"href="/vms?page=2" rel="next""#));
    assert!(!first.contains(r#"rel="prev""#));

    let last = page(&admin, &app.url("/vms?page=3")).await;
    assert_eq!(rows(&last), all[100..]);
    assert!(last.contains(r#"href="/vms?page=2" rel="prev""#));
    assert!(!last.contains(r#"rel="next""#));
    // A page past the end (an old bookmark) shows the last one; nonsense shows the first.
    assert_eq!(
        rows(&page(&admin, &app.url("/vms?page=40")).await),
        all[100..]
    );
    assert_eq!(
        rows(&page(&admin, &app.url("/vms?page=abc")).await),
        all[..50]
    );
    // Another page size, kept in the links.
    let big = page(&admin, &app.url("/vms?per_page=100")).await;
    assert_eq!(rows(&big).len(), 100);
    assert!(
        big.contains(r#"href="/vms?per_page=100&#38;page=2" rel="next""#),
        "{big}"
    );

    // Name search, case-insensitive, with the count of matches.
    let found = page(&admin, &app.url("/vms?q=VM011")).await;
    let want: Vec<String> = all
        .iter()
        .filter(|n| n.contains("vm011"))
        .cloned()
        .collect();
    assert_eq!(rows(&found), want);
    assert!(found.contains("10 of 120 VMs match."), "{found}");
    assert!(
        found.contains(r#"value="VM011""#),
        "the search stays in its box"
    );

    // State filter, combined with paging.
    let off = page(&admin, &app.url("/vms?state=shut-off")).await;
    let want: Vec<String> = (1..=VMS)
        .filter(|i| [7, 8, 9].contains(&(i % 10)))
        .map(host::vm_name)
        .collect();
    assert_eq!(rows(&off), want);
    assert!(off.contains(r#"<option value="shut-off" selected>"#));
    let running = page(&admin, &app.url("/vms?state=running&page=2")).await;
    let want: Vec<String> = (1..=VMS)
        .filter(|i| host::is_running(*i))
        .map(host::vm_name)
        .skip(50)
        .collect();
    assert_eq!(rows(&running), want);

    // Nothing matches: said so, with the way back.
    let none = page(&admin, &app.url("/vms?q=nosuchvm&state=paused")).await;
    assert!(rows(&none).is_empty());
    assert!(
        none.contains("No VM has “nosuchvm” in its name and is paused (120 on this host)."),
        "{none}"
    );
    assert!(none.contains(r#"<a href="/vms">Show all</a>"#));
    // Search text is escaped like anything else typed.
    let odd = page(&admin, &app.url("/vms?q=%3Cscript%3E")).await;
    assert!(!odd.contains(r#"value="<script>"#), "{odd}");
    assert!(odd.contains(r#"value="&#60;script&#62;""#), "{odd}");

    // The API still lists every VM.
    let api = reqwest::Client::new();
    let token = app.admin_token(&admin).await;
    let v: serde_json::Value = api
        .get(app.url("/api/v1/vms"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["vms"].as_array().unwrap().len(), VMS);
}

#[tokio::test]
async fn the_list_shows_a_change_made_through_virtdeck_at_once() {
    let app = common::spawn_app().await;
    let api = Api::new(&app).await;
    let state_of = |page: &str, vm: &str| -> String {
        let row = page
            .split(&format!("<tr data-vm=\"{vm}\""))
            .nth(1)
            .expect("the VM's row");
        row.split("class=\"state state-")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    let admin = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let before = page(&admin, &app.url("/vms")).await;
    let (s, _) = api.get("/api/v1/vms").await; // the API and the page share one list
    assert_eq!(s, StatusCode::OK);
    let vm = rows(&before)
        .into_iter()
        .find(|vm| state_of(&before, vm) == "shut-off")
        .expect("a shut-off VM on the demo host");
    let (s, v) = api
        .post(&format!("/api/v1/vms/{vm}/start"), serde_json::json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Read right after the change, well within the list's reuse time.
    let after = page(&admin, &app.url("/vms")).await;
    assert_eq!(state_of(&after, &vm), "running");
    let (_, v) = api.get("/api/v1/vms").await;
    let listed = v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == vm.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["state"], "running", "{listed}");
}

#[tokio::test]
async fn pages_are_gzipped_for_browsers_and_streams_are_not() {
    let app = common::spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let gz = |r: &reqwest::Response| {
        r.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let r = admin
        .get(app.url("/vms"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(gz(&r).as_deref(), Some("gzip"));
    let body = r.bytes().await.unwrap();
    let mut html = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut html)
        .expect("valid gzip");
    assert!(html.contains("<table class=\"list\" id=\"vm-list\">"));
    assert!(
        body.len() * 3 < html.len(),
        "compressed well: {} of {}",
        body.len(),
        html.len()
    );

    // Without Accept-Encoding: plain.
    let r = admin.get(app.url("/vms")).send().await.unwrap();
    assert_eq!(gz(&r), None);
    assert!(r.text().await.unwrap().contains("id=\"vm-list\""));

    // Scripts too.
    let r = admin
        .get(app.url("/static/live.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz(&r).as_deref(), Some("gzip"));

    // The live event stream must not be held back by a compressor.
    let r = admin
        .get(app.url("/events"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(gz(&r).as_deref(), Some("gzip"));
    let mut stream = r.bytes_stream();
    use futures_util::StreamExt;
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .expect("the first event arrives uncompressed and at once")
        .unwrap()
        .unwrap();
    assert!(std::str::from_utf8(&first).is_ok(), "plain text: {first:?}");
}
