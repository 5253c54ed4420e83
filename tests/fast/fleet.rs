//! Peer hosts: two virtdeck instances (HTTPS, each with its own certificate) pair with a
//! single-use code and a pinned fingerprint, see each other's VMs and capacity, refuse a
//! changed certificate, keep the peer credential to the peer routes, and unpair from
//! either side. A peer that does not answer never slows the fleet page.

use crate::common;

use common::{spawn_app_with, TestApp};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn host(name: &'static str) -> TestApp {
    spawn_app_with(move |c| {
        c.tls.enabled = true;
        c.fleet.name = Some(name.into());
        c.fleet.refresh_seconds = 1;
        c.fleet.request_timeout_seconds = 3;
        c.fetch.allow = vec!["127.0.0.0/8".into()];
    })
    .await
}

struct Admin {
    client: Client,
    token: String,
}

async fn admin_of(app: &TestApp) -> Admin {
    let client = app.setup_admin("admin").await;
    let token = app.admin_token(&client).await;
    Admin { client, token }
}

async fn api(
    app: &TestApp,
    who: &Admin,
    method: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let req = match method {
        "GET" => who.client.get(app.url(path)),
        "POST" => who.client.post(app.url(path)).json(&body),
        "DELETE" => who.client.delete(app.url(path)),
        other => panic!("{other}"),
    };
    let r = req.bearer_auth(&who.token).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn store_of(app: &TestApp) -> virtdeck::store::Store {
    virtdeck::store::Store::open(&app.data_dir.path().join("virtdeck.db")).unwrap()
}

fn audit_rows(app: &TestApp, action: &str) -> Vec<virtdeck::store::AuditEntry> {
    store_of(app)
        .audit_page(0, 500)
        .unwrap()
        .0
        .into_iter()
        .filter(|e| e.action == action)
        .collect()
}

async fn invite(app: &TestApp, who: &Admin) -> (String, String) {
    let (status, inv) = api(app, who, "POST", "/api/v1/fleet/invitations", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{inv}");
    (
        inv["code"].as_str().unwrap().to_string(),
        inv["fingerprint"].as_str().unwrap().to_string(),
    )
}

fn same_fingerprint(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace(':', "").to_lowercase();
    norm(a) == norm(b)
}

/// Waits until `check` holds for this host's view of the fleet.
async fn fleet_until(
    app: &TestApp,
    who: &Admin,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = api(app, who, "GET", "/api/v1/fleet/hosts", json!(null)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} never showed: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn host_in<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {v}"))
}

#[tokio::test]
async fn two_hosts_pair_with_a_pinned_certificate_see_each_other_and_unpair() {
    let alpha = host("alpha").await;
    let beta = host("beta").await;
    let a = admin_of(&alpha).await;
    let b = admin_of(&beta).await;

    // beta's admin invites; alpha's admin checks beta and sees the certificate beta shows.
    let (code, beta_fingerprint) = invite(&beta, &b).await;
    assert!(code.starts_with("vdpair_"), "{code}");
    let (status, contact) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/fleet/peers/check",
        json!({"url": beta.base}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{contact}");
    assert_eq!(contact["name"], "beta");
    let seen = contact["fingerprint"].as_str().unwrap().to_string();
    assert!(
        same_fingerprint(&seen, &beta_fingerprint),
        "{seen} vs {beta_fingerprint}"
    );

    // Pinned to another certificate: refused before anything is sent (the code stays good).
    let wrong = "00".repeat(32);
    let (status, err) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/fleet/peers",
        json!({"url": beta.base, "code": code, "fingerprint": wrong}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("certificate changed"),
        "{err}"
    );
    assert!(store_of(&alpha).peers().unwrap().is_empty());
    assert!(store_of(&beta).peers().unwrap().is_empty());

    // With the fingerprint alpha's admin confirmed: paired on both sides.
    let (status, peer) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/fleet/peers",
        json!({"url": beta.base, "code": code, "fingerprint": seen}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{peer}");
    assert_eq!(peer["name"], "beta");
    let on_alpha = store_of(&alpha).peers().unwrap();
    let on_beta = store_of(&beta).peers().unwrap();
    assert_eq!((on_alpha.len(), on_beta.len()), (1, 1));
    assert_eq!(on_beta[0].name, "alpha");
    // Each holds only the digest of what the other presents.
    assert_ne!(
        on_alpha[0].outbound_credential,
        on_beta[0].inbound_credential_sha256
    );
    assert_eq!(
        virtdeck::auth::secret::sha256_hex(&on_alpha[0].outbound_credential),
        on_beta[0].inbound_credential_sha256
    );
    assert!(!audit_rows(&alpha, "peer.pair").is_empty());
    assert!(audit_rows(&beta, "peer.pair")
        .iter()
        .any(|e| e.actor == "peer:alpha" && e.result == "ok"));

    // The code worked once.
    let (status, err) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/fleet/peers",
        json!({"url": beta.base, "code": code, "fingerprint": seen}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(err.to_string().contains("not valid"), "{err}");

    // Both see both hosts, and each other's VMs (the demo host's) with their host.
    let v = fleet_until(&alpha, &a, "beta's VMs on alpha", |v| {
        host_in(v, "beta")["reachable"] == true
    })
    .await;
    assert_eq!(host_in(&v, "alpha")["local"], true);
    let beta_vms = host_in(&v, "beta")["summary"]["vms"]
        .as_array()
        .unwrap()
        .len();
    assert!(beta_vms > 0, "{v}");
    fleet_until(&beta, &b, "alpha on beta", |v| {
        host_in(v, "alpha")["reachable"] == true
    })
    .await;
    let (status, list) = api(
        &alpha,
        &a,
        "GET",
        "/api/v1/fleet/vms?per_page=200",
        json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rows = list["vms"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["host"] == "beta" && r["url"].as_str().unwrap().starts_with(&beta.base)),
        "{list}"
    );
    assert!(
        rows.iter()
            .any(|r| r["host"] == "alpha" && r["local"] == true),
        "{list}"
    );
    let (_, running) = api(
        &alpha,
        &a,
        "GET",
        "/api/v1/fleet/vms?state=running&per_page=200",
        json!(null),
    )
    .await;
    assert!(
        running["vms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "running"),
        "{running}"
    );

    // The peer credential opens the peer routes only, never a user's.
    let credential = on_alpha[0].outbound_credential.clone();
    let plain = common::client();
    let as_peer = |path: &str| {
        plain
            .get(beta.url(path))
            .header("Authorization", format!("VirtdeckPeer {credential}"))
    };
    assert_eq!(
        as_peer("/api/v1/peer/summary")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        as_peer("/api/v1/vms").send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        as_peer("/api/v1/whoami").send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let as_bearer = plain
        .get(beta.url("/api/v1/vms"))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(as_bearer.status(), StatusCode::UNAUTHORIZED);
    let nobody = plain
        .get(beta.url("/api/v1/peer/summary"))
        .send()
        .await
        .unwrap();
    assert_eq!(nobody.status(), StatusCode::UNAUTHORIZED);

    // Unpair from beta's side: both forget, and the old credential stops working.
    let (status, told) = api(
        &beta,
        &b,
        "DELETE",
        "/api/v1/fleet/peers/alpha",
        json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{told}");
    assert!(
        told["detail"]
            .as_str()
            .unwrap()
            .contains("forgot this host too"),
        "{told}"
    );
    assert!(store_of(&beta).peers().unwrap().is_empty());
    assert!(store_of(&alpha).peers().unwrap().is_empty());
    assert_eq!(
        as_peer("/api/v1/peer/summary")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(audit_rows(&alpha, "peer.unpair")
        .iter()
        .any(|e| e.actor == "peer:beta"));
}

#[tokio::test]
async fn a_peer_that_does_not_answer_never_slows_the_fleet_page() {
    let alpha = host("alpha").await;
    let a = admin_of(&alpha).await;
    // A host that accepts connections and never answers (a hung machine).
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming().flatten() {
            held.push(s);
        }
    });
    store_of(&alpha)
        .insert_peer(&virtdeck::store::fleet::PeerRow {
            name: "hung".into(),
            url: format!("https://{hole_addr}/"),
            fingerprint_sha256: "11".repeat(32),
            outbound_credential: "x".repeat(43),
            inbound_credential_sha256: "digest".into(),
            paired_by: "admin".into(),
            paired_at: 1,
        })
        .unwrap();
    // While alpha's requests to it hang (3 s timeout), the page answers from what it knows.
    for _ in 0..5 {
        let started = Instant::now();
        let page = a.client.get(alpha.url("/fleet")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let text = page.text().await.unwrap();
        assert!(text.contains("data-host=\"hung\""), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the page waited {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let v = fleet_until(&alpha, &a, "the hung peer's reason", |v| {
        host_in(v, "hung")["error"]
            .as_str()
            .is_some_and(|e| e.contains("not reachable"))
    })
    .await;
    assert_eq!(host_in(&v, "hung")["reachable"], false);
    let page = a
        .client
        .get(alpha.url("/fleet"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-reachable=\"no\""), "{page}");
}

/// alpha and beta, paired through the API; their admins.
async fn paired() -> (TestApp, TestApp, Admin, Admin) {
    let alpha = host("alpha").await;
    let beta = host("beta").await;
    let a = admin_of(&alpha).await;
    let b = admin_of(&beta).await;
    let (code, _) = invite(&beta, &b).await;
    let (_, contact) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/fleet/peers/check",
        json!({"url": beta.base}),
    )
    .await;
    let (status, peer) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/fleet/peers",
        json!({"url": beta.base, "code": code, "fingerprint": contact["fingerprint"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{peer}");
    (alpha, beta, a, b)
}

async fn job_end(app: &TestApp, who: &Admin, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, job) = api(app, who, "GET", &format!("/api/v1/jobs/{id}"), json!(null)).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        let job = if job.get("job").is_some() {
            job["job"].clone()
        } else {
            job
        };
        if job["state"] != "running" {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never ended: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_migration_that_cannot_happen_is_refused_first_and_a_failed_one_leaves_nothing_there() {
    let (alpha, beta, a, b) = paired().await;

    // Both demo hosts have a web01: the page says why it cannot go, and the API refuses
    // before anything starts, with beta's reasons.
    let page = a
        .client
        .get(alpha.url("/vms/web01/migrate"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("data-peer=\"beta\" data-fits=\"no\""),
        "{page}"
    );
    assert!(
        page.contains("A VM named web01 exists there already."),
        "{page}"
    );
    let (status, err) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/vms/web01/migrate",
        json!({"to": "beta"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("web01 cannot come to beta") && message.contains("exists there already"),
        "{err}"
    );
    assert!(store_of(&beta).arriving_vms().unwrap().is_empty());
    assert!(audit_rows(&beta, "vm.migrate")
        .iter()
        .any(|e| e.result == "refused" && e.actor == "peer:alpha"));
    let (status, err) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/vms/web01/migrate",
        json!({"to": "nowhere"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["field"], "to", "{err}");

    // A VM only alpha has: beta holds its units and makes the volume its disk is copied
    // into; the move itself fails (the demo hosts cannot migrate), and beta lets go of
    // everything while the VM stays on alpha.
    let (beta_free, beta_volumes) = {
        let (_, h) = api(&beta, &b, "GET", "/api/v1/host", json!(null)).await;
        let (_, vols) = api(
            &beta,
            &b,
            "GET",
            "/api/v1/pools/default/volumes",
            json!(null),
        )
        .await;
        (h["capacity"]["usage"]["free"].clone(), vols)
    };
    let (status, made) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/vms",
        json!({
            "name": "mover", "flavor": "small",
            "disk": {"type": "new", "pool": "default", "size_gib": 2},
            "install": {"type": "import"},
            "nic": {"network": "default"},
            "start": true
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    // With a snapshot it cannot go (libvirt would leave the snapshot behind).
    let (status, snap) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/vms/mover/snapshots",
        json!({"name": "before"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{snap}");
    let (status, err) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/vms/mover/migrate",
        json!({"to": "beta"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has 1 snapshot"),
        "{err}"
    );
    assert!(store_of(&beta).arriving_vms().unwrap().is_empty());
    let (status, _) = api(
        &alpha,
        &a,
        "DELETE",
        "/api/v1/vms/mover/snapshots/before",
        json!(null),
    )
    .await;
    assert!(status.is_success());
    let (status, started) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/vms/mover/migrate",
        json!({"to": "beta"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let job = job_end(&alpha, &a, started["job"].as_i64().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["message"]
            .as_str()
            .unwrap()
            .contains("mover stays on this host"),
        "{job}"
    );
    let (status, vm) = api(&alpha, &a, "GET", "/api/v1/vms/mover", json!(null)).await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(vm["state"], "running");
    // Nothing on beta: no units held, no volume, no VM, and its arrival job failed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store_of(&beta).arriving_vms().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "beta still holds the arrival");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, h) = api(&beta, &b, "GET", "/api/v1/host", json!(null)).await;
    assert_eq!(h["capacity"]["usage"]["free"], beta_free);
    let (_, vols) = api(
        &beta,
        &b,
        "GET",
        "/api/v1/pools/default/volumes",
        json!(null),
    )
    .await;
    assert_eq!(vols, beta_volumes);
    let (status, _) = api(&beta, &b, "GET", "/api/v1/vms/mover", json!(null)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let rows = audit_rows(&beta, "vm.migrate");
    assert!(
        rows.iter()
            .any(|e| e.result == "ok" && e.detail.contains("arriving from alpha")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|e| e.result == "failed" && e.detail.contains("did not arrive")),
        "{rows:?}"
    );
    let (_, jobs) = api(&beta, &b, "GET", "/api/v1/jobs", json!(null)).await;
    assert!(
        jobs.to_string().contains("did not arrive from alpha"),
        "{jobs}"
    );
}

#[tokio::test]
async fn every_host_says_where_a_size_fits_and_a_draining_host_takes_nothing_new() {
    let (alpha, beta, a, b) = paired().await;

    // Where does a size fit: each host by its own rule.
    let (status, fit) = api(
        &alpha,
        &a,
        "GET",
        "/api/v1/fleet/fit?vcpus=2&memory_mib=2048",
        json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{fit}");
    let hosts = fit["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{fit}");
    assert!(
        hosts
            .iter()
            .all(|h| h["fits"] == true && h["units"].as_u64() >= Some(1)),
        "{fit}"
    );
    let (_, huge) = api(
        &alpha,
        &a,
        "GET",
        "/api/v1/fleet/fit?vcpus=1000&memory_mib=9000000",
        json!(null),
    )
    .await;
    assert!(
        huge["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["fits"] == false && h["reason"].as_str().unwrap().contains("free")),
        "{huge}"
    );
    let (status, bad) = api(
        &alpha,
        &a,
        "GET",
        "/api/v1/fleet/fit?vcpus=0&memory_mib=x",
        json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let page = a
        .client
        .get(alpha.url("/fleet?fit_vcpus=2&fit_memory_mib=2048"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("data-fit-host=\"beta\" data-fits=\"yes\""),
        "{page}"
    );

    // A viewer may look but not drain.
    alpha
        .add_user(&a.client, "vera", "viewer", "viewer-password-1")
        .await;
    let vera = alpha.token_for(&a.client, "vera").await;
    let r = common::client()
        .post(alpha.url("/api/v1/fleet/drain"))
        .bearer_auth(&vera)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Drain alpha: nothing new is made or accepted there until it ends.
    let (status, d) = api(&alpha, &a, "POST", "/api/v1/fleet/drain", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{d}");
    assert!(
        d["vms"].as_array().unwrap().iter().any(|v| v == "web01"),
        "{d}"
    );
    let new_vm = json!({
        "name": "fresh", "flavor": "small",
        "disk": {"type": "new", "pool": "default", "size_gib": 2},
        "install": {"type": "import"}, "nic": {"network": "default"}, "start": false
    });
    let (status, err) = api(&alpha, &a, "POST", "/api/v1/vms", new_vm.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("being emptied for maintenance"),
        "{err}"
    );
    // Asked by beta, alpha says it takes nothing now.
    let (_, fit) = api(
        &beta,
        &b,
        "GET",
        "/api/v1/fleet/fit?vcpus=1&memory_mib=512",
        json!(null),
    )
    .await;
    let on_alpha = fit["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "alpha")
        .cloned()
        .unwrap();
    assert_eq!(on_alpha["fits"], false, "{fit}");
    assert!(
        on_alpha["reason"]
            .as_str()
            .unwrap()
            .contains("emptied for maintenance"),
        "{fit}"
    );
    // The demo hosts share their VM names: nothing can move, and the drain says why.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = audit_rows(&alpha, "host.drain");
        if let Some(end) = rows.iter().find(|e| e.detail.contains("stayed")) {
            assert!(
                end.detail.contains("web01 (it fits on no peer)"),
                "{}",
                end.detail
            );
            break;
        }
        assert!(Instant::now() < deadline, "the drain never ended: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = a
        .client
        .get(alpha.url("/fleet"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"draining\""), "{page}");

    // Ended: VMs are made here again.
    let (status, ended) = api(&alpha, &a, "DELETE", "/api/v1/fleet/drain", json!(null)).await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    let (status, made) = api(&alpha, &a, "POST", "/api/v1/vms", new_vm).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert!(audit_rows(&alpha, "host.drain.end")
        .iter()
        .any(|e| e.result == "ok"));
}

#[tokio::test]
async fn a_peer_cannot_learn_which_files_exist_on_this_host() {
    let (alpha, beta, _a, _b) = paired().await;
    let credential = store_of(&alpha).peers().unwrap()[0]
        .outbound_credential
        .clone();
    let ask = |file: &str| {
        json!({
            "needs": {"vm": "probe", "units": 1, "networks": [], "bridges": [], "machine": "",
                      "disks": [], "boot_files": [file]},
            "running": true
        })
    };
    let plain = common::client();
    let mut answers = Vec::new();
    for file in [
        "/etc/passwd",
        "/etc/no-such-file-here",
        "/var/lib/libvirt/images/../../../../etc/passwd",
    ] {
        let r = plain
            .post(beta.url("/api/v1/peer/fit"))
            .header("Authorization", format!("VirtdeckPeer {credential}"))
            .json(&ask(file))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["fits"], false, "{file}: {v}");
        answers.push(v["reasons"].to_string().replace(file, "FILE"));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
}

#[tokio::test]
async fn a_drain_sends_each_vm_to_the_peer_with_the_most_free_units() {
    let (alpha, beta, a, b) = paired().await;
    let gamma = host("gamma").await;
    let g = admin_of(&gamma).await;
    let (code, _) = invite(&gamma, &g).await;
    let (_, contact) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/fleet/peers/check",
        json!({"url": gamma.base}),
    )
    .await;
    let (status, peer) = api(
        &alpha,
        &a,
        "POST",
        "/api/v1/fleet/peers",
        json!({"url": gamma.base, "code": code, "fingerprint": contact["fingerprint"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{peer}");
    // beta gets busier than gamma.
    let vm = |name: &str| {
        json!({
            "name": name, "flavor": "medium",
            "disk": {"type": "new", "pool": "default", "size_gib": 1},
            "install": {"type": "import"}, "nic": {"network": "default"}, "start": false
        })
    };
    let (status, made) = api(&beta, &b, "POST", "/api/v1/vms", vm("busy1")).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    // A running VM only alpha has (a shut-off one would need shared storage).
    let mut mover = vm("mover");
    mover["start"] = json!(true);
    let (status, made) = api(&alpha, &a, "POST", "/api/v1/vms", mover).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");

    let (status, d) = api(&alpha, &a, "POST", "/api/v1/fleet/drain", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{d}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if audit_rows(&alpha, "host.drain")
            .iter()
            .any(|e| e.detail.contains("stayed"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the drain never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The demo hosts cannot really move it, but the move was tried toward gamma.
    let (_, jobs) = api(&alpha, &a, "GET", "/api/v1/jobs", json!(null)).await;
    let tried: Vec<&Value> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "migrate" && j["vm"] == "mover")
        .collect();
    assert_eq!(tried.len(), 1, "{jobs}");
    assert_eq!(tried[0]["source"], "gamma", "{jobs}");
}
