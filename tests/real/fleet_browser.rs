//! The Fleet page in a real headless Chromium: two paired virtdeck hosts (HTTPS, each
//! with its own certificate) and a third peer that accepts connections but never answers.
//! The page lists both hosts' VMs with links to each VM on its own host, filters them,
//! shows the hung peer as unreachable with the reason, and is never slowed by it.

use crate::common;

use common::webdriver::{Browser, WAIT};
use common::{spawn_app_with, TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn host(name: &'static str) -> TestApp {
    spawn_app_with(move |c| {
        c.tls.enabled = true;
        c.fleet.name = Some(name.into());
        c.fleet.refresh_seconds = 1;
        c.fleet.request_timeout_seconds = 4;
        c.fetch.allow = vec!["127.0.0.0/8".into()];
    })
    .await
}

async fn api(
    app: &TestApp,
    c: &reqwest::Client,
    token: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let r = c
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_fleet_page_lists_every_hosts_vms_and_a_hung_peer_never_slows_it() {
    let _gate = crate::gate::enter(module_path!());
    let alpha = host("alpha").await;
    let beta = host("beta").await;
    let a = alpha.setup_admin("admin").await;
    let b = beta.setup_admin("admin").await;
    let (ta, tb) = (alpha.admin_token(&a).await, beta.admin_token(&b).await);
    let (s, inv) = api(&beta, &b, &tb, "/api/v1/fleet/invitations", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{inv}");
    let (s, contact) = api(
        &alpha,
        &a,
        &ta,
        "/api/v1/fleet/peers/check",
        json!({"url": beta.base}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{contact}");
    let (s, peer) = api(
        &alpha,
        &a,
        &ta,
        "/api/v1/fleet/peers",
        json!({"url": beta.base, "code": inv["code"], "fingerprint": contact["fingerprint"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{peer}");

    // A peer that accepts connections and never answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming().flatten() {
            held.push(s);
        }
    });
    virtdeck::store::Store::open(&alpha.data_dir.path().join("virtdeck.db"))
        .unwrap()
        .insert_peer(&virtdeck::store::fleet::PeerRow {
            name: "hung".into(),
            url: format!("https://{hole_addr}/"),
            fingerprint_sha256: "11".repeat(32),
            outbound_credential: "x".repeat(43),
            inbound_credential_sha256: "none".into(),
            paired_by: "admin".into(),
            paired_at: 1,
        })
        .unwrap();

    let br = Browser::start().await;
    br.goto(&alpha.url("/login")).await;
    br.type_into("input[name=username]", "admin").await;
    br.type_into("input[name=password]", ADMIN_PASSWORD).await;
    let submit = br.find("form button[type=submit]").await;
    br.click(&submit).await;
    br.wait_for_path("/host").await;

    // The page, while alpha's requests to the hung peer wait for their timeout.
    br.goto(&alpha.url("/fleet")).await;
    let took = br
        .execute(
            "return performance.getEntriesByType('navigation')[0].duration",
            json!([]),
        )
        .await;
    assert!(
        took.as_f64().unwrap() < 1500.0,
        "the fleet page took {took} ms"
    );
    assert_eq!(br.find_all("#fleet-hosts tr[data-host]").await.len(), 3);
    let beta_row = br.text_of("#fleet-hosts tr[data-host=beta]").await;
    assert!(beta_row.contains("yes"), "beta reachable: {beta_row}");
    // Both hosts' VMs, each linking to its own host.
    let beta_vm_link = br
        .execute(
            "return document.querySelector('#fleet-vms tr[data-host=beta] a').href",
            json!([]),
        )
        .await;
    assert!(
        beta_vm_link.as_str().unwrap().starts_with(&beta.base),
        "{beta_vm_link}"
    );
    assert!(!br
        .find_all("#fleet-vms tr[data-host=alpha]")
        .await
        .is_empty());
    // Each host that answered has its CPU sparkline, drawn here from its numbers.
    for host in ["alpha", "beta"] {
        let spark = br
            .find_all(&format!(
                "#fleet-hosts tr[data-host={host}] td[data-host-spark] svg.spark"
            ))
            .await;
        assert_eq!(spark.len(), 1, "{host}'s sparkline");
    }

    // The hung peer shows as unreachable with the reason once its request timed out;
    // every load meanwhile stays fast.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        br.goto(&alpha.url("/fleet")).await;
        let took = br
            .execute(
                "return performance.getEntriesByType('navigation')[0].duration",
                json!([]),
            )
            .await;
        assert!(
            took.as_f64().unwrap() < 1500.0,
            "the fleet page took {took} ms"
        );
        let reachable = br
            .execute(
                "return document.querySelector('#fleet-hosts tr[data-host=hung]').dataset.reachable",
                json!([]),
            )
            .await;
        let reason = br.text_of("#fleet-hosts tr[data-host=hung]").await;
        if reachable == "no" && reason.contains("not reachable") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hung peer never showed as unreachable: {reason}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The search narrows the list on every host.
    br.type_into("input[name=search]", "web").await;
    let show = br.find("form[role=search] button[type=submit]").await;
    br.click(&show).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let names = br
            .execute(
                "return [...document.querySelectorAll('#fleet-vms tr[data-vm]')].map(r => r.dataset.vm + '@' + r.dataset.host)",
                json!([]),
            )
            .await;
        let names: Vec<String> = serde_json::from_value(names).unwrap_or_default();
        if !names.is_empty() && names.iter().all(|n| n.starts_with("web")) {
            assert!(
                names.contains(&"web01@alpha".to_string())
                    && names.contains(&"web01@beta".to_string()),
                "{names:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the search did not narrow the list: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    br.screenshot("fleet").await;
    br.quit().await;
}
