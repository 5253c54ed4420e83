//! `/metrics` and the usage charts on the demo host (libvirt's test driver): the text
//! format, token auth, request and login-failure counters, job durations, sparklines.

use crate::common;

use common::api::Api;
use common::pages::{json, status, text};
use common::prom::{parse, Scrape};
use common::{spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

const ISO: &str = "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso";

async fn scrape(app: &TestApp, token: &str) -> Scrape {
    let r = reqwest::Client::new()
        .get(app.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse(&r.text().await.unwrap())
}

/// Scrapes until `ok` holds (the sampler runs in the background).
async fn scrape_until(app: &TestApp, token: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = scrape(app, token).await;
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never true; last scrape: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn requests(s: &Scrape, method: &str, route: &str, status: &str) -> f64 {
    s.value(
        "virtdeck_http_requests_total",
        &[("method", method), ("route", route), ("status", status)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_need_a_token_and_count_requests_logins_and_jobs() {
    let app = spawn_app_with(|c| c.usage.interval_seconds = 1).await;
    let api = Api::new(&app).await;

    // No token, a bad token, a session cookie: all 401, with the Bearer challenge.
    let admin = app.login("admin", common::ADMIN_PASSWORD).await.0;
    for (what, req) in [
        ("no token", reqwest::Client::new().get(app.url("/metrics"))),
        (
            "bad token",
            reqwest::Client::new()
                .get(app.url("/metrics"))
                .bearer_auth("not-a-token"),
        ),
        ("session cookie", admin.get(app.url("/metrics"))),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"virtdeck\"");
        assert!(!r.text().await.unwrap().contains("virtdeck_"), "{what}");
    }

    let first = scrape(&app, &api.token).await;
    let vms_before = requests(&first, "GET", "/vms/{name}", "200");
    let failures_before = first
        .value(
            "virtdeck_login_failures_total",
            &[("reason", "wrong_password")],
        )
        .unwrap();

    // Some traffic: pages by pattern, a 404, a failed sign-in, a VM create.
    for vm in ["web01", "db01", "web01"] {
        let r = admin
            .get(app.url(&format!("/vms/{vm}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let s = status(&admin, &app.url("/no/such/page")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, r) = app.login("admin", "wrong-password-1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (s, created) = api
        .post(
            "/api/v1/vms",
            json!({
                "name": "metrics01",
                "flavor": "small",
                "disk": {"type": "new", "pool": "default", "size_gib": 2},
                "install": {"type": "cdrom", "volume": ISO},
                "nic": {"bridge": "br0"},
                "start": true
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let (s, _) = api
        .post(
            "/api/v1/vms",
            json!({"name": "bad/name", "flavor": "small"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // Two samples after the create, so the new VM is in the usage snapshot.
    let base = first.value("virtdeck_usage_samples_total", &[]).unwrap();
    let s = scrape_until(&app, &api.token, |s| {
        s.value("virtdeck_usage_samples_total", &[]).unwrap() >= base + 2.0
            && s.value("virtdeck_vm_state", &[("vm", "metrics01")])
                .is_some()
    })
    .await;

    // Types and names follow the conventions (the parser checks _total on counters).
    for (name, kind) in [
        ("virtdeck_http_requests_total", "counter"),
        ("virtdeck_login_failures_total", "counter"),
        ("virtdeck_job_duration_seconds", "histogram"),
        ("virtdeck_console_sessions_open", "gauge"),
        ("virtdeck_console_sessions_opened_total", "counter"),
        ("virtdeck_host_cpus", "gauge"),
        ("virtdeck_host_memory_bytes", "gauge"),
        ("virtdeck_host_capacity_units", "gauge"),
        ("virtdeck_host_used_units", "gauge"),
        ("virtdeck_host_free_units", "gauge"),
        ("virtdeck_vm_state", "gauge"),
        ("virtdeck_vm_cpu_seconds_total", "counter"),
        ("virtdeck_vm_network_receive_bytes_total", "counter"),
        ("virtdeck_usage_samples_total", "counter"),
    ] {
        assert_eq!(s.kind(name), Some(kind), "{name}");
    }

    // Requests are counted by route pattern, never by raw path.
    assert_eq!(requests(&s, "GET", "/vms/{name}", "200"), vms_before + 3.0);
    assert!(requests(&s, "GET", "unmatched", "404") >= 1.0);
    assert!(requests(&s, "POST", "/api/v1/vms", "201") >= 1.0);
    assert!(requests(&s, "GET", "/metrics", "401") >= 3.0);
    assert!(requests(&s, "GET", "/metrics", "200") >= 1.0);
    assert!(
        !s.all("virtdeck_http_requests_total")
            .iter()
            .any(|(_, l, _)| l["route"].contains("web01")),
        "a VM name leaked into a route label"
    );

    // The failed sign-in.
    assert_eq!(
        s.value(
            "virtdeck_login_failures_total",
            &[("reason", "wrong_password")]
        ),
        Some(failures_before + 1.0)
    );

    // Job durations: the create that worked and the one refused at its fields.
    let ok = [("job", "vm.create"), ("result", "ok")];
    assert_eq!(
        s.value("virtdeck_job_duration_seconds_count", &ok),
        Some(1.0)
    );
    assert!(s.value("virtdeck_job_duration_seconds_sum", &ok).unwrap() > 0.0);
    assert_eq!(
        s.value(
            "virtdeck_job_duration_seconds_bucket",
            &[("job", "vm.create"), ("result", "ok"), ("le", "+Inf")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "virtdeck_job_duration_seconds_count",
            &[("job", "vm.create"), ("result", "invalid")]
        ),
        Some(1.0)
    );

    // Host capacity and per-VM state as the API reports them.
    let (_, host) = api.get("/api/v1/host").await;
    let usage = &host["capacity"]["usage"];
    assert_eq!(
        s.value("virtdeck_host_capacity_units", &[]),
        usage["total"].as_f64()
    );
    assert_eq!(
        s.value("virtdeck_host_free_units", &[]),
        usage["free"].as_f64()
    );
    assert!(s.value("virtdeck_host_cpus", &[]).unwrap() > 0.0);
    assert!(s.value("virtdeck_host_memory_bytes", &[]).unwrap() > 0.0);
    let (_, vms) = api.get("/api/v1/vms").await;
    for vm in vms["vms"].as_array().unwrap() {
        let name = vm["name"].as_str().unwrap();
        let state = vm["state"].as_str().unwrap();
        assert_eq!(
            s.value("virtdeck_vm_state", &[("vm", name), ("state", state)]),
            Some(1.0),
            "{name} {state}"
        );
    }
    assert_eq!(s.value("virtdeck_console_sessions_open", &[]), Some(0.0));
}

#[tokio::test]
async fn the_vm_list_shows_sparklines_and_pages_have_live_charts() {
    let app = spawn_app_with(|c| c.usage.interval_seconds = 1).await;
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, "vera", "viewer", "viewer-password-1")
        .await;
    let (viewer, _) = app.login("vera", "viewer-password-1").await;

    let list = text(&viewer, &app.url("/vms")).await;
    let row = list
        .split("<tr data-vm=\"web01\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("web01 row");
    let cell = row
        .split("<td class=\"spark\" data-usage=\"spark:web01\">")
        .nth(1)
        .expect("sparkline cell");
    assert!(
        cell.starts_with(
            "<svg class=\"spark\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 120 24\""
        ),
        "{cell}"
    );
    assert!(cell.contains("<title>CPU of web01 (percent of its vCPUs), last 1 hour: "));
    assert!(list.contains("data-usage-src=\"/usage/vms\""));
    assert!(list.contains("/static/usage.js"));

    // The live parts: JSON of SVGs keyed as the page's data-usage attributes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut parts = json(&viewer, &app.url("/usage/vms")).await;
    while parts.get("spark:web01").is_none() {
        assert!(Instant::now() < deadline, "no sparkline parts: {parts}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        parts = json(&viewer, &app.url("/usage/vms")).await;
    }
    assert!(parts["spark:web01"].as_str().unwrap().starts_with("<svg"));

    // The VM and host pages: four charts each for the last hour and the last day.
    for (page, parts_url, subject) in [
        ("/vms/web01", "/vms/web01/usage", "web01"),
        ("/host", "/host/usage", "the host"),
    ] {
        let html = text(&viewer, &app.url(page)).await;
        assert!(
            html.contains(&format!("data-usage-src=\"{parts_url}\"")),
            "{page}"
        );
        for key in ["cpu", "memory", "disk", "network"] {
            for window in ["recent", "long"] {
                let marker = format!("<div data-usage=\"{window}:{key}\"><svg class=\"chart\"");
                assert!(html.contains(&marker), "{page}: {marker}");
            }
        }
        assert!(
            html.contains(&format!("<title>CPU of {subject} (")),
            "{page}"
        );
        let parts = json(&viewer, &app.url(parts_url)).await;
        assert_eq!(parts.as_object().unwrap().len(), 8, "{parts}");
        assert!(parts["recent:cpu"]
            .as_str()
            .unwrap()
            .contains("viewBox=\"0 0 600 160\""));
    }

    // Signed out: no charts.
    for path in ["/usage/vms", "/vms/web01/usage", "/host/usage"] {
        let s = status(&common::client(), &app.url(path)).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{path}");
    }
}

#[tokio::test]
async fn bad_usage_settings_are_refused_at_start() {
    let mut cfg = virtdeck::config::Config::default();
    cfg.usage.interval_seconds = 0;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("usage.interval_seconds"), "{err}");
    let r: Result<virtdeck::config::Config, _> = toml::from_str("[usage]\ninterval_secs = 5\n");
    assert!(r.is_err(), "unknown keys are errors");
}
