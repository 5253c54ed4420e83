//! Outbound requests and the `[fetch]` policy, through the real app: image fetches and
//! network-install trees refuse loopback unless allowed, redirects are checked hop by
//! hop, every refusal or connection failure reads the same, and a server that never
//! answers cannot hold a create.

use crate::common;

use common::api::Api;
use common::http::serve_dir;
use common::spawn_app_with;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NEUTRAL: &str = "The address could not be fetched: it is not reachable from this host or is not allowed by the [fetch] settings.";

/// A server on `bind` (e.g. `127.0.0.2:0`) that answers every request with `302` to
/// `to` + the path asked for (or, with `to` empty, a 404), recording each path.
struct Recorder {
    url: String,
    port: u16,
    hits: Arc<Mutex<Vec<String>>>,
}

fn recorder(bind: &str, to: Option<String>) -> Recorder {
    let listener = TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(Mutex::new(Vec::new()));
    let seen = hits.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let Some(path) = request_path(&mut conn) else {
                continue;
            };
            seen.lock().unwrap().push(path.clone());
            let answer = match &to {
                Some(to) => format!(
                    "HTTP/1.1 302 Found\r\nLocation: {to}{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    path.trim_start_matches('/')
                ),
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string(),
            };
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    Recorder {
        url: format!("http://{addr}/"),
        port: addr.port(),
        hits,
    }
}

fn request_path(conn: &mut TcpStream) -> Option<String> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head);
    head.split_whitespace().nth(1).map(str::to_string)
}

/// A server that accepts connections and never sends a byte; answers its URL.
fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    url
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (p, content) in [
        ("images/pxeboot/vmlinuz", "kernel"),
        ("images/pxeboot/initrd.img", "initrd"),
    ] {
        let f = dir.path().join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, content.repeat(1000)).unwrap();
    }
    dir
}

fn install_request(name: &str, url: &str) -> Value {
    json!({
        "name": name,
        "units": 1,
        "disk": {"type": "new", "pool": "default", "size_gib": 4},
        "install": {"type": "url", "url": url, "kernel_args": "console=ttyS0"},
        "nic": {"bridge": "br0"},
        "start": true
    })
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs an image fetch job to its end; answers the ended job.
async fn fetch_job(api: &Api, url: &str, name: &str) -> Value {
    let (s, j) = api
        .post_job(
            "/api/v1/pools/default/fetch",
            json!({"url": url, "name": name}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
    j
}

/// What a failed create must leave unchanged: VMs, free units and the pools' volumes.
async fn host_state(api: &Api) -> ((Vec<String>, u64), Value) {
    (api.fingerprint().await, api.get("/api/v1/pools").await.1)
}

#[tokio::test]
async fn loopback_is_refused_by_default_without_a_request() {
    let boot = tempfile::tempdir().unwrap();
    let boot_dir = boot.path().to_path_buf();
    let app = spawn_app_with(move |c| c.boot_dir = boot_dir).await;
    let api = Api::new(&app).await;
    let site = tree();
    std::fs::write(site.path().join("disk.img"), vec![1u8; 4096]).unwrap();
    let server = serve_dir(site.path(), None);
    let before = host_state(&api).await;

    // An image fetch (admin).
    let j = fetch_job(&api, &format!("{}disk.img", server.url), "disk.img").await;
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["message"], NEUTRAL, "{j}");

    // A network install (operator's create).
    let (s, v) = api
        .post("/api/v1/vms", install_request("ssrf01", &server.url))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(NEUTRAL), "{msg}");

    // The same address written as IPv4-mapped IPv6, and the unspecified address.
    let port = server.url.rsplit(':').next().unwrap().trim_end_matches('/');
    for url in [
        format!("http://[::ffff:127.0.0.1]:{port}/disk.img"),
        format!("http://0.0.0.0:{port}/disk.img"),
    ] {
        let j = fetch_job(&api, &url, "disk.img").await;
        assert_eq!(j["message"], NEUTRAL, "{url}: {j}");
    }

    assert!(
        server.hits.lock().unwrap().is_empty(),
        "the loopback server saw no request: {:?}",
        server.hits.lock().unwrap()
    );
    assert_eq!(host_state(&api).await, before, "no VM, no volume, no claim");
    assert!(files_in(boot.path()).is_empty());
}

#[tokio::test]
async fn a_redirect_to_an_address_not_allowed_is_not_followed() {
    let boot = tempfile::tempdir().unwrap();
    let boot_dir = boot.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.boot_dir = boot_dir;
        // Only the first server's address; 127.0.0.2 is loopback, refused by default.
        c.fetch.allow = vec!["127.0.0.1/32".into()];
    })
    .await;
    let api = Api::new(&app).await;
    let inner = recorder("127.0.0.2:0", None);
    let outer = recorder(
        "127.0.0.1:0",
        Some(format!("http://127.0.0.2:{}/latest/meta-data/", inner.port)),
    );
    let before = host_state(&api).await;

    let (s, v) = api
        .post("/api/v1/vms", install_request("ssrf02", &outer.url))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(NEUTRAL), "{msg}");
    assert!(msg.contains("Nothing was left behind"), "{msg}");

    let j = fetch_job(&api, &format!("{}disk.img", outer.url), "disk.img").await;
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["message"], NEUTRAL, "{j}");

    assert!(
        !outer.hits.lock().unwrap().is_empty(),
        "the allowed server was asked"
    );
    assert!(
        inner.hits.lock().unwrap().is_empty(),
        "the redirect target saw no request: {:?}",
        inner.hits.lock().unwrap()
    );
    assert_eq!(host_state(&api).await, before, "no VM, no volume, no claim");
    assert!(files_in(boot.path()).is_empty(), "no downloaded file left");

    // A redirect between allowed addresses is followed.
    let site = tree();
    let server = serve_dir(site.path(), None);
    let hop = recorder("127.0.0.1:0", Some(server.url.clone()));
    let (s, v) = api
        .post("/api/v1/vms", install_request("redir01", &hop.url))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(server
        .hits
        .lock()
        .unwrap()
        .contains(&"/images/pxeboot/initrd.img".to_string()));
}

#[tokio::test]
async fn refusals_and_connection_failures_read_the_same() {
    let app = spawn_app_with(|c| {
        c.fetch.allow = vec!["127.0.0.1/32".into()];
        c.fetch.connect_timeout_seconds = 3;
    })
    .await;
    let api = Api::new(&app).await;
    // A live server on an address the policy refuses, a closed port on an allowed
    // address, a metadata address, and a name that does not resolve.
    let live = recorder("127.0.0.2:0", None);
    let mut messages = Vec::new();
    for url in [
        format!("{}a.iso", live.url),
        format!("http://127.0.0.1:{}/a.iso", closed_port()),
        "http://169.254.169.254/a.iso".to_string(),
        "http://no-such-host.invalid/a.iso".to_string(),
    ] {
        let j = fetch_job(&api, &url, "a.iso").await;
        assert_eq!(j["state"], "failed", "{url}: {j}");
        messages.push(j["message"].as_str().unwrap().to_string());
    }
    assert!(
        messages.iter().all(|m| m == NEUTRAL),
        "one text for every cause: {messages:#?}"
    );
    assert!(live.hits.lock().unwrap().is_empty());

    // Install trees read the same, whatever the cause.
    let mut texts = Vec::new();
    for (name, url) in [
        ("scan01", live.url.clone()),
        ("scan02", format!("http://127.0.0.1:{}/", closed_port())),
    ] {
        let (s, v) = api.post("/api/v1/vms", install_request(name, &url)).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
        texts.push(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .replace(name, "NAME"),
        );
    }
    assert_eq!(texts[0], texts[1]);
}

#[tokio::test]
async fn a_server_that_never_answers_cannot_hold_a_create() {
    let boot = tempfile::tempdir().unwrap();
    let boot_dir = boot.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.boot_dir = boot_dir;
        c.fetch.allow = vec!["127.0.0.1/32".into()];
        c.fetch.read_timeout_seconds = 2;
    })
    .await;
    let api = Api::new(&app).await;
    let silent = silent_server();
    let before = host_state(&api).await;

    let asked = Instant::now();
    let (s, v) = tokio::time::timeout(
        Duration::from_secs(30),
        api.post("/api/v1/vms", install_request("hang01", &silent)),
    )
    .await
    .expect("the create ends instead of hanging");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(NEUTRAL),
        "{v}"
    );
    assert_eq!(host_state(&api).await, before, "no VM, no volume, no claim");
    assert!(files_in(boot.path()).is_empty());

    // An image fetch from it ends as soon.
    let asked = Instant::now();
    let j = fetch_job(&api, &format!("{silent}a.iso"), "a.iso").await;
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["message"], NEUTRAL, "{j}");
}
