//! `make bench`, the fleet page at size: one virtdeck paired with 20 peers, each a
//! virtdeck on a generated libvirt test-driver host with 1,000 VMs (21,000 VMs in the
//! fleet), all in this process. Once every peer has answered, the Fleet page (first page
//! of the fleet-wide VM list) is fetched as a browser would (session cookie, gzip) cold
//! (the first load) and warm (median of 30), beside the same host's own VM list page
//! (`/vms`) fetched the same way; plus the bytes each transfers. Writes
//! `target/bench/fleet.json`, which `benches/scale.rs` folds into the report.
//! Targets: the fleet page ≤ 2× the local list, and ≤ 300 ms.

#[allow(dead_code)]
#[path = "scale/host.rs"]
mod host;
#[allow(dead_code)]
#[path = "../tests/common/webdriver.rs"]
mod webdriver;

use anyhow::{anyhow, ensure, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PEERS: usize = 20;
const VMS: usize = 1000;
const WARM_LOADS: usize = 30;
const TOKEN: &str = "vdk_bench-fleet-token-0123456789abcdef0123456789abcdef";
const PASSWORD: &str = "bench-password-1";
const BROWSER_RUNS: usize = 5;

/// Runs before each page's own scripts: the time of the first frame with the page's list
/// on screen (the Fleet page's hosts, at its top; the local VM list).
const MARK_SCRIPT: &str = r#"
document.addEventListener('DOMContentLoaded', () => {
  const list = document.getElementById('fleet-hosts') || document.getElementById('vm-list');
  if (!list) { window.__vdListVisible = -1; return; }
  requestAnimationFrame(() => setTimeout(() => {
    const r = list.getBoundingClientRect();
    window.__vdListVisible = r.height > 0 && r.top < innerHeight ? performance.now() : -1;
  }, 0));
});
"#;

async fn cdp(b: &webdriver::Browser, cmd: &str, params: Value) -> Value {
    b.post("/goog/cdp/execute", json!({"cmd": cmd, "params": params}))
        .await
}

/// Navigation → the list's first frame on screen, in ms; `cold` empties the cache first.
async fn first_paint(b: &webdriver::Browser, url: &str, cold: bool) -> Result<f64> {
    if cold {
        cdp(b, "Network.clearBrowserCache", json!({})).await;
    }
    b.goto("about:blank").await;
    b.goto(url).await;
    b.wait_until(
        "return window.__vdListVisible !== undefined",
        Duration::from_secs(60),
        "the list's first frame",
    )
    .await;
    let v = b.execute("return window.__vdListVisible", json!([])).await;
    let ms = v.as_f64().unwrap_or(-1.0);
    ensure!(ms > 0.0, "the list at {url} is not on screen");
    Ok(ms)
}

/// Cold and warm first paint of `url` (medians of BROWSER_RUNS), signed in.
async fn paints(b: &webdriver::Browser, url: &str) -> Result<(f64, f64)> {
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..BROWSER_RUNS {
        cold.push(first_paint(b, url, true).await?);
        warm.push(first_paint(b, url, false).await?);
    }
    Ok((median(cold), median(warm)))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("fleet: a benchmark, not a test; run `make bench`");
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = rt.block_on(run()) {
        eprintln!("fleet benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Host {
    base: String,
    _data: tempfile::TempDir,
}

async fn start(name: &str, host_xml: &str) -> Result<Host> {
    let data = tempfile::tempdir()?;
    let host_file = data.path().join("host.xml");
    std::fs::write(&host_file, host_xml)?;
    {
        let store = virtdeck::store::Store::open(&data.path().join("virtdeck.db"))?;
        let phc = virtdeck::auth::password::hash_password(PASSWORD)?;
        let id = store.create_user("bench", "admin", &phc, 0)?;
        store.create_api_token(id, &virtdeck::auth::secret::sha256_hex(TOKEN), "bench", 0)?;
    }
    let mut cfg = virtdeck::config::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: data.path().to_path_buf(),
        libvirt_uri: format!("test://{}", host_file.display()),
        ..Default::default()
    };
    cfg.fleet.name = Some(name.into());
    cfg.fleet.refresh_seconds = 5;
    cfg.fetch.allow = vec!["127.0.0.0/8".into()];
    let running = virtdeck::web::server::start(cfg)?;
    let base = running.base_url();
    tokio::spawn(running.server);
    Ok(Host { base, _data: data })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn post(c: &reqwest::Client, url: &str, body: Value) -> Result<Value> {
    let r = c.post(url).bearer_auth(TOKEN).json(&body).send().await?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    ensure!(status.is_success(), "{url}: {status} {v}");
    Ok(v)
}

/// A browser-like session on `base` (signed in through the login form).
async fn signed_in(base: &str) -> Result<reqwest::Client> {
    let c = client();
    let page = c.get(format!("{base}/login")).send().await?.text().await?;
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).ok_or_else(|| anyhow!("no csrf"))? + marker.len();
    let csrf = &page[start..start + page[start..].find('"').unwrap_or(0)];
    let r = c
        .post(format!("{base}/login"))
        .form(&[
            ("username", "bench"),
            ("password", PASSWORD),
            ("csrf", csrf),
        ])
        .send()
        .await?;
    ensure!(r.status().is_redirection(), "sign-in: {}", r.status());
    Ok(c)
}

/// One load as a browser asks for it (gzip accepted): milliseconds until the whole body
/// arrived, and its bytes as sent.
async fn load(c: &reqwest::Client, url: &str) -> Result<(f64, u64)> {
    let started = Instant::now();
    let r = c.get(url).header("accept-encoding", "gzip").send().await?;
    ensure!(r.status().is_success(), "{url}: {}", r.status());
    let body = r.bytes().await?;
    Ok((started.elapsed().as_secs_f64() * 1000.0, body.len() as u64))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn run() -> Result<()> {
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let xml =
        host::scale_host_xml(include_str!("../demo/demo-host.xml"), VMS).map_err(|e| anyhow!(e))?;
    println!("fleet: 1 host and {PEERS} peers with {VMS} VMs each");
    let alpha = start("alpha", &xml).await?;
    let mut peers = Vec::new();
    for i in 0..PEERS {
        peers.push(start(&format!("peer{i:02}"), &xml).await?);
    }
    let c = client();
    for p in &peers {
        let inv = post(
            &c,
            &format!("{}/api/v1/fleet/invitations", p.base),
            json!({}),
        )
        .await?;
        let contact = post(
            &c,
            &format!("{}/api/v1/fleet/peers/check", alpha.base),
            json!({"url": p.base}),
        )
        .await?;
        post(
            &c,
            &format!("{}/api/v1/fleet/peers", alpha.base),
            json!({"url": p.base, "code": inv["code"], "fingerprint": contact["fingerprint"]}),
        )
        .await?;
    }
    // Every peer has answered once.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value = c
            .get(format!("{}/api/v1/fleet/hosts", alpha.base))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        let answered = v["hosts"]
            .as_array()
            .map(|h| h.iter().filter(|h| h["reachable"] == true).count())
            .unwrap_or(0);
        if answered == PEERS + 1 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {answered} hosts answered: {}",
            v["hosts"]
                .as_array()
                .and_then(|h| h.iter().find(|h| h["reachable"] != true))
                .map(|h| h["error"].to_string())
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let browser = signed_in(&alpha.base).await?;
    let fleet_url = format!("{}/fleet", alpha.base);
    let local_url = format!("{}/vms", alpha.base);
    // The first load of either page pays this host's own libvirt listing (shared by the
    // list, the API and the fleet page); the local list goes first, so the fleet page's
    // cold figure is what the peers' part costs.
    let (local_cold, local_bytes) = load(&browser, &local_url).await?;
    let (fleet_cold, fleet_bytes) = load(&browser, &fleet_url).await?;
    let (mut fleet_warm, mut local_warm) = (Vec::new(), Vec::new());
    for _ in 0..WARM_LOADS {
        fleet_warm.push(load(&browser, &fleet_url).await?.0);
        local_warm.push(load(&browser, &local_url).await?.0);
    }
    // In Chromium, signed in through the login form.
    let b = webdriver::Browser::start().await;
    cdp(
        &b,
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": MARK_SCRIPT}),
    )
    .await;
    b.goto(&format!("{}/login", alpha.base)).await;
    b.type_into("input[name=username]", "bench").await;
    b.type_into("input[name=password]", PASSWORD).await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    b.wait_for_path("/host").await;
    let (local_paint_cold, local_paint_warm) = paints(&b, &local_url).await?;
    let (fleet_paint_cold, fleet_paint_warm) = paints(&b, &fleet_url).await?;
    b.quit().await;
    let report = json!({
        "peers": PEERS,
        "vms_per_host": VMS,
        "fleet": {"cold_ms": fleet_cold, "warm_ms": median(fleet_warm), "bytes": fleet_bytes,
                  "paint_cold_ms": fleet_paint_cold, "paint_warm_ms": fleet_paint_warm},
        "local": {"cold_ms": local_cold, "warm_ms": median(local_warm), "bytes": local_bytes,
                  "paint_cold_ms": local_paint_cold, "paint_warm_ms": local_paint_warm},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::write(
        out.join("fleet.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}
