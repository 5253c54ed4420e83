//! Images on the real `qemu:///system` libvirtd, in a directory pool of its own: an
//! upload comes back byte for byte on download; a cancelled upload, a client that
//! vanishes mid-upload, a fetch that stalls or fails, and a virtdeck killed mid-upload
//! all leave no volume behind; a fetch from a local HTTP server stores the file; a
//! 512 MiB upload keeps the server's memory flat.

use crate::common;

use common::api::Api;
use common::http::serve_dir;
use common::real::{admin_token, qemu_readable_dir, require_libvirtd, start_server, virsh, URI};
use common::{spawn_app_with, TestApp};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A directory pool named `vdimg-PID-N` on the real libvirtd, removed at the end.
struct Pool {
    name: String,
    dir: tempfile::TempDir,
}

impl Pool {
    fn new() -> Pool {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vdimg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let dir = qemu_readable_dir("vdimg-");
        for args in [
            vec![
                "pool-define-as",
                name.as_str(),
                "dir",
                "--target",
                dir.path().to_str().unwrap(),
            ],
            vec!["pool-start", name.as_str()],
        ] {
            let out = virsh(&args);
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Pool { name, dir }
    }

    fn file(&self, volume: &str) -> PathBuf {
        self.dir.path().join(volume)
    }

    /// Files in the pool's directory.
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = virsh(&["pool-destroy", &self.name]);
        let _ = virsh(&["pool-undefine", &self.name]);
    }
}

/// Cancels a running job and waits until it has ended cancelled.
async fn cancel_job(api: &Api, id: i64) -> Value {
    let (s, v) = api
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let j = wait_job_end(&api.base, &api.token, id).await;
    assert_eq!(j["state"], "cancelled", "{j}");
    j
}

/// Starts a fetch into the pool; returns the job (202 asserted).
async fn start_fetch(api: &Api, pool: &Pool, body: Value) -> Value {
    let (s, v) = api
        .post(&format!("/api/v1/pools/{}/fetch", pool.name), body)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    v
}

async fn real_app(tweak: impl FnOnce(&mut virtdeck::config::Config)) -> (TestApp, Api) {
    require_libvirtd();
    let app = spawn_app_with(|c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
        tweak(c);
    })
    .await;
    let api = Api::new(&app).await;
    (app, api)
}

/// Deterministic, non-repeating-looking content.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// `GET base+path` with the token, as JSON.
async fn get_json(base: &str, token: &str, path: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

async fn volume_names(base: &str, token: &str, pool: &str) -> Vec<String> {
    let v = get_json(base, token, &format!("/api/v1/pools/{pool}/volumes")).await;
    v["volumes"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect()
}

async fn job(base: &str, token: &str, id: i64) -> Value {
    get_json(base, token, &format!("/api/v1/jobs/{id}")).await
}

/// The only job's id, once it has stored some bytes.
async fn running_job_with_bytes(base: &str, token: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get_json(base, token, "/api/v1/jobs").await;
        if let Some(j) = v["jobs"].as_array().and_then(|a| a.first()) {
            if j["state"] == "running" && j["bytes_done"].as_u64().unwrap_or(0) > 0 {
                return j["id"].as_i64().unwrap();
            }
            assert_eq!(j["state"], "running", "the job ended early: {j}");
        }
        assert!(Instant::now() < deadline, "no job made progress: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_job_end(base: &str, token: &str, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = job(base, token, id).await;
        if j["state"] != "running" {
            return j;
        }
        assert!(Instant::now() < deadline, "job never ended: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A body of `total` declared bytes that sends `sent` bytes and then nothing, forever.
fn stalled_body(sent: usize) -> reqwest::Body {
    let first = futures_util::stream::iter(
        pattern(sent, 9)
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    reqwest::Body::wrap_stream(first.chain(futures_util::stream::pending()))
}

/// Starts a PUT of `total` declared bytes from `body` in the background.
fn put_in_background(
    base: &str,
    token: &str,
    path: &str,
    total: u64,
    body: reqwest::Body,
) -> tokio::task::JoinHandle<Result<(StatusCode, Value), reqwest::Error>> {
    let (url, token) = (format!("{base}{path}"), token.to_string());
    tokio::spawn(async move {
        let r = reqwest::Client::new()
            .put(url)
            .bearer_auth(token)
            .header("content-length", total.to_string())
            .body(body)
            .send()
            .await?;
        let s = r.status();
        Ok((s, r.json().await.unwrap_or(Value::Null)))
    })
}

#[tokio::test]
async fn an_uploaded_image_downloads_byte_for_byte_and_is_deleted_cleanly() {
    let _gate = crate::gate::enter(module_path!());
    let (_app, api) = real_app(|_| {}).await;
    let pool = Pool::new();
    let data = pattern(3 * 1024 * 1024 + 123, 1);
    let r = api
        .c
        .put(format!(
            "{}/api/v1/pools/{}/volumes/tiny.iso?source=my%20tiny.iso",
            api.base, pool.name
        ))
        .bearer_auth(&api.token)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["bytes_done"], data.len());
    assert_eq!(j["percent"], 100);
    assert_eq!(j["source"], "my tiny.iso");
    assert_eq!(std::fs::read(pool.file("tiny.iso")).unwrap(), data);

    // Download through virtdeck: the same bytes, with size and file name.
    let r = api
        .c
        .get(format!(
            "{}/api/v1/pools/{}/volumes/tiny.iso",
            api.base, pool.name
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        data.len().to_string()
    );
    let cd = r.headers()["content-disposition"].to_str().unwrap();
    assert!(cd.contains("attachment") && cd.contains("tiny.iso"), "{cd}");
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());

    // The pool page offers it; then it is deleted, file and all.
    let (s, v) = api
        .delete(&format!("/api/v1/pools/{}/volumes/tiny.iso", pool.name))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(pool.files().is_empty(), "{:?}", pool.files());
}

#[tokio::test]
async fn a_cancelled_upload_and_a_vanished_client_leave_no_volume() {
    let _gate = crate::gate::enter(module_path!());
    let (_app, api) = real_app(|_| {}).await;
    let pool = Pool::new();
    let total = 64u64 << 20;

    // Cancel through the API while bytes flow.
    let upload = put_in_background(
        &api.base,
        &api.token,
        &format!("/api/v1/pools/{}/volumes/cancel.iso", pool.name),
        total,
        stalled_body(2 << 20),
    );
    let id = running_job_with_bytes(&api.base, &api.token).await;
    assert!(pool.files().contains(&"cancel.iso".to_string()));
    let j = cancel_job(&api, id).await;
    assert!(j["message"]
        .as_str()
        .unwrap()
        .contains("the partial volume was deleted"));
    // The uploader hears 409 (unless its connection was closed before the answer).
    if let Ok(Ok(Ok((s, v)))) = tokio::time::timeout(Duration::from_secs(10), upload).await {
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
    }
    assert!(pool.files().is_empty(), "{:?}", pool.files());
    assert!(volume_names(&api.base, &api.token, &pool.name)
        .await
        .is_empty());

    // The client goes away mid-upload.
    let upload = put_in_background(
        &api.base,
        &api.token,
        &format!("/api/v1/pools/{}/volumes/gone.iso", pool.name),
        total,
        stalled_body(3 << 20),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let (_, v) = api.get("/api/v1/jobs").await;
        let j = &v["jobs"][0];
        if j["volume"] == "gone.iso" && j["bytes_done"].as_u64().unwrap_or(0) > 0 {
            break j["id"].as_i64().unwrap();
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    upload.abort();
    let j = wait_job_end(&api.base, &api.token, id).await;
    assert_eq!(j["state"], "failed", "{j}");
    let m = j["message"].as_str().unwrap();
    assert!(
        m.contains("ended after") && m.contains("the partial volume was deleted"),
        "{m}"
    );
    assert!(pool.files().is_empty(), "{:?}", pool.files());
}

#[tokio::test]
async fn a_fetch_stores_the_file_and_a_failed_or_stalled_fetch_leaves_nothing() {
    let _gate = crate::gate::enter(module_path!());
    let (_app, api) = real_app(|c| {
        c.images.fetch_timeout_seconds = 8;
        c.fetch.allow = vec!["127.0.0.0/8".into()]; // the site is on loopback
    })
    .await;
    let pool = Pool::new();
    let site = tempfile::tempdir().unwrap();
    let data = pattern(2 * 1024 * 1024 + 7, 2);
    std::fs::write(site.path().join("cirros.img"), &data).unwrap();
    std::fs::write(site.path().join("slow.iso"), pattern(1 << 20, 3)).unwrap();
    let server = serve_dir(site.path(), Some("/slow.iso"));

    let v = start_fetch(
        &api,
        &pool,
        json!({"url": format!("{}cirros.img", server.url)}),
    )
    .await;
    assert_eq!(v["volume"], "cirros.img");
    let j = wait_job_end(&api.base, &api.token, v["id"].as_i64().unwrap()).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["bytes_total"], data.len());
    assert_eq!(std::fs::read(pool.file("cirros.img")).unwrap(), data);

    // A missing file: the job fails, nothing is made.
    let v = start_fetch(
        &api,
        &pool,
        json!({"url": format!("{}missing.iso", server.url)}),
    )
    .await;
    let j = wait_job_end(&api.base, &api.token, v["id"].as_i64().unwrap()).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["message"].as_str().unwrap().contains("404"), "{j}");

    // A server that stops sending: the fetch times out and its volume is removed.
    let v = start_fetch(
        &api,
        &pool,
        json!({"url": format!("{}slow.iso", server.url), "name": "stalled.iso"}),
    )
    .await;
    let j = wait_job_end(&api.base, &api.token, v["id"].as_i64().unwrap()).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["message"]
        .as_str()
        .unwrap()
        .contains("the partial volume was deleted"));
    assert_eq!(pool.files(), ["cirros.img"]);

    // Cancelling a fetch whose server sends nothing more takes effect at once.
    start_fetch(
        &api,
        &pool,
        json!({"url": format!("{}slow.iso", server.url), "name": "cancelled.iso"}),
    )
    .await;
    let id = running_job_with_bytes(&api.base, &api.token).await;
    let asked = Instant::now();
    cancel_job(&api, id).await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(pool.files(), ["cirros.img"]);
    assert_eq!(
        volume_names(&api.base, &api.token, &pool.name).await,
        ["cirros.img"]
    );
}

// ---- virtdeck as its own process: killed mid-upload, and its memory ----

#[tokio::test]
async fn a_restart_mid_upload_marks_the_job_interrupted_and_removes_its_volume() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let pool = Pool::new();
    let data = tempfile::tempdir().unwrap();
    let token = admin_token(data.path());
    let mut server = start_server(data.path()).await;
    let upload = put_in_background(
        &server.base,
        &token,
        &format!("/api/v1/pools/{}/volumes/half.iso", pool.name),
        64 << 20,
        stalled_body(4 << 20),
    );
    let id = running_job_with_bytes(&server.base, &token).await;
    assert!(pool.file("half.iso").exists());
    // virtdeck dies without any chance to clean up.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    upload.abort();
    assert!(
        pool.file("half.iso").exists(),
        "the partial file is left by the kill"
    );

    let server = start_server(data.path()).await;
    let j = job(&server.base, &token, id).await;
    assert_eq!(j["state"], "interrupted", "{j}");
    let m = j["message"].as_str().unwrap();
    assert!(m.contains("virtdeck stopped while this upload ran"), "{m}");
    assert!(m.contains("was deleted"), "{m}");
    assert!(pool.files().is_empty(), "{:?}", pool.files());
    assert!(volume_names(&server.base, &token, &pool.name)
        .await
        .is_empty());
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The bench's measurement at test size: a 512 MiB upload through virtdeck into a dir
/// pool; the server process's resident memory must stay far below the upload's size.
#[tokio::test]
async fn a_512_mib_upload_keeps_the_servers_memory_flat() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    const TOTAL: u64 = 512 << 20;
    const CHUNK: usize = 256 * 1024;
    let pool = Pool::new();
    let data = tempfile::tempdir().unwrap();
    let token = admin_token(data.path());
    let server = start_server(data.path()).await;
    let pid = server.child.id();
    // Warm up (pages, a pool listing) before the baseline.
    volume_names(&server.base, &token, &pool.name).await;
    let baseline = vm_rss_kib(pid);

    let chunk = pattern(CHUNK, 5);
    let body = futures_util::stream::iter(0..TOTAL / CHUNK as u64)
        .map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
    let upload = put_in_background(
        &server.base,
        &token,
        &format!("/api/v1/pools/{}/volumes/big.img", pool.name),
        TOTAL,
        reqwest::Body::wrap_stream(body),
    );
    let mut peak = baseline;
    let started = Instant::now();
    while !upload.is_finished() {
        peak = peak.max(vm_rss_kib(pid));
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "upload too slow"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, j) = upload.await.unwrap().unwrap();
    assert_eq!(s, StatusCode::CREATED, "{j}");
    assert_eq!(j["bytes_done"], TOTAL);
    assert_eq!(
        std::fs::metadata(pool.file("big.img")).unwrap().len(),
        TOTAL
    );
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    println!(
        "512 MiB upload in {:.1} s: server VmRSS {} MiB before, {} MiB at peak (+{growth_mib} MiB)",
        started.elapsed().as_secs_f64(),
        baseline / 1024,
        peak / 1024
    );
    assert!(
        growth_mib < 64,
        "the server grew by {growth_mib} MiB during a 512 MiB upload"
    );
    let _ = std::fs::remove_file(pool.file("big.img"));
}

// ---- the pool page in a real browser ----

#[tokio::test]
async fn the_pool_page_uploads_with_a_progress_bar_and_cancels_in_chromium() {
    let _gate = crate::gate::enter(module_path!());
    use common::webdriver::{Browser, WAIT};
    let (app, api) = real_app(|_| {}).await;
    let pool = Pool::new();
    let files = tempfile::tempdir().unwrap();
    let small = files.path().join("small.iso");
    let data = pattern((1 << 20) + 5, 7);
    std::fs::write(&small, &data).unwrap();

    let b = Browser::start().await;
    b.goto(&app.url("/login")).await;
    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", common::ADMIN_PASSWORD)
        .await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    b.wait_for_path("/host").await;

    // A small file: uploaded, the page comes back saying so, the bytes are in the pool.
    b.goto(&app.url(&format!("/host/storage/{}", pool.name)))
        .await;
    let input = b.find("#upload-form input[name=file]").await;
    b.send_keys(&input, small.to_str().unwrap()).await;
    let start = b.find("#upload-start").await;
    b.click(&start).await;
    b.wait_until(
        "return !!document.getElementById('pool-message')",
        Duration::from_secs(30),
        "the pool page after the upload",
    )
    .await;
    let message = b.text_of("#pool-message").await;
    assert!(message.contains("Volume small.iso uploaded"), "{message}");
    assert!(b.text_of("#volume-list").await.contains("small.iso"));
    assert_eq!(std::fs::read(pool.file("small.iso")).unwrap(), data);
    b.screenshot("volumes-uploaded").await;

    // A large (sparse) file: the progress bar moves, Cancel stops it, nothing is left.
    let big = files.path().join("big.img");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let input = b.find("#upload-form input[name=file]").await;
    b.send_keys(&input, big.to_str().unwrap()).await;
    let start = b.find("#upload-start").await;
    b.click(&start).await;
    b.wait_until(
        "return document.getElementById('upload-progress').value > 0",
        WAIT,
        "upload progress",
    )
    .await;
    let cancel = b.find("#upload-cancel").await;
    b.click(&cancel).await;
    b.wait_until(
        "return document.getElementById('upload-status').textContent.startsWith('Upload cancelled')",
        WAIT,
        "the cancelled message",
    )
    .await;
    b.screenshot("volumes-cancelled").await;
    let (_, v) = api.get("/api/v1/jobs").await;
    let id = v["jobs"][0]["id"].as_i64().unwrap();
    assert_eq!(v["jobs"][0]["volume"], "big.img");
    let j = wait_job_end(&api.base, &api.token, id).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["message"]
        .as_str()
        .unwrap()
        .contains("the partial volume was deleted"));
    assert_eq!(pool.files(), ["small.iso"]);
    b.quit().await;
}

#[tokio::test]
async fn a_volume_file_removed_behind_libvirts_back_leaves_the_host_usable() {
    let _gate = crate::gate::enter(module_path!());
    let (app, api) = real_app(|_| {}).await;
    let pool = Pool::new();
    let kept = "kept.qcow2";
    let gone = "gone.qcow2";
    for name in [kept, gone] {
        let out = virsh(&["vol-create-as", &pool.name, name, "1M", "--format", "qcow2"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // An admin deletes a file by hand; libvirt still lists the volume until a refresh.
    std::fs::remove_file(pool.file(gone)).unwrap();
    let (s, host) = api.get("/api/v1/host").await;
    assert_eq!(s, StatusCode::OK, "{host}");
    assert!(
        host["capacity"].is_object(),
        "the capacity is shown: {host}"
    );
    let names = volume_names(&app.base, &api.token, &pool.name).await;
    assert_eq!(
        names,
        vec![kept.to_string()],
        "the removed file is left out"
    );
    let (s, _) = api.get("/api/v1/vms").await;
    assert_eq!(s, StatusCode::OK);
}
