//! `make bench`: virtdeck at scale, each figure beside a reference measured in the same
//! run (these machines are noisy, so ratios say more than absolute numbers):
//!
//! - Scale: the release binary (`virtdeck serve`, a separate process, as an admin runs it)
//!   on a libvirt test-driver host with 1,000 VMs; the VM list page (session cookie) and
//!   `GET /api/v1/vms` (Bearer token) under wrk at 64 connections and at 1; reference: the
//!   bare libvirt listing they wrap (the same adapter call, in this process).
//! - Browser: headless Chromium, navigation → the VM list's first frame on screen, and
//!   the bytes transferred; reference: the same responses replayed by a static server.
//! - Memory: VmRSS idle, with the 1,000 VMs listed, after 10,000 requests; reference:
//!   virsh holding the same test-driver host.
//! - Start-up: exec → `/healthz` answering; reference: `virsh list --all` on the same host.
//! - Console proxy: the figures `benches/console_proxy.rs` wrote earlier in the same run.
//!
//! Writes target/bench/report.md and report.json and updates docs/benchmarks.md.
//! Under `cargo test` (no `--bench` argument) it only says how to run it.

#[path = "scale/host.rs"]
mod host;
#[path = "scale/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "../tests/common/webdriver.rs"]
mod webdriver;

use anyhow::{anyhow, bail, ensure, Context, Result};
use report::{num, percentile, Figure, Report, Target, WrkResult};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtdeck::hypervisor::Hypervisor;

const VMS: usize = 1000;
/// Rows on the VM list's first page (its default page size).
const LIST_PAGE_ROWS: usize = 50;
/// The memory figures' reference.
const FLOOR: &str = "a program that only holds a libvirt connection to the same host";
const CONNECTIONS: u32 = 64;
const LOAD_SECONDS: u32 = 15;
const SINGLE_CLIENT_SECONDS: u32 = 5;
const BARE_LISTING_SECONDS: u64 = 5;
const MEMORY_REQUESTS: u64 = 10_000;
/// The memory phase stops here even before MEMORY_REQUESTS (BENCH_MEMORY_SECONDS).
const DEFAULT_MEMORY_SECONDS: u64 = 240;
const MEMORY_CHUNK_SECONDS: u32 = 30;
const STARTS: usize = 9;
const BROWSER_RUNS: usize = 5;
const PASSWORD: &str = "bench-password-1";

const SCALE: &str = "Scale: 1,000 VMs";
const BROWSER: &str = "Browser";
const MEMORY: &str = "Memory";
const STARTUP: &str = "Start-up";
const CONSOLE: &str = "Console proxy";
const UPLOAD: &str = "Upload";
const BOOT: &str = "Boot: Debian cloud image to its login prompt";
const MIGRATION: &str = "Migration";
const BACKUP: &str = "Backup of a running VM's 2 GiB disk";
const FLEET: &str = "Fleet page: 20 peers × 1,000 VMs";
const SIGN_IN: &str = "Sign-in flood";
/// Parallel sign-ins in the flood.
const FLOOD: usize = 500;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "scale: a benchmark, not a test; run `make bench` (or `cargo bench --bench scale`)"
        );
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = rt.block_on(run()) {
        eprintln!("scale benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn run() -> Result<()> {
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    // Another build (e.g. an older commit's, by scripts/bench-compare.sh) measured by the
    // same harness: its report goes to report-LABEL.{md,json}, docs are left alone.
    let label = std::env::var("BENCH_LABEL").ok().filter(|l| !l.is_empty());
    let bin = std::env::var_os("BENCH_VIRTDECK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/release/virtdeck"));
    ensure!(
        bin.exists(),
        "{} is missing: `make bench` builds it (cargo build --release)",
        bin.display()
    );
    let host_xml = out.join("host-1000.xml");
    let xml =
        host::scale_host_xml(include_str!("../demo/demo-host.xml"), VMS).map_err(|e| anyhow!(e))?;
    std::fs::write(&host_xml, xml)?;
    let uri = format!("test://{}", host_xml.canonicalize()?.display());
    let log = out.join("virtdeck.log");
    let _ = std::fs::remove_file(&log);
    let wrk_script = out.join("wrk-report.lua");
    std::fs::write(&wrk_script, report::WRK_SCRIPT)?;

    let mut figures = Vec::new();
    let mut notes = Vec::new();

    // ---- accounts, start-up ----
    let data = out.join("data-1000");
    let _ = std::fs::remove_dir_all(&data);
    let token = create_admin(&bin, &data)?;
    println!("start-up: {STARTS} × exec → /healthz");
    let mut starts = Vec::new();
    for _ in 0..STARTS {
        let (server, took) = Server::start(&bin, &data, Some(&uri), &log)?;
        drop(server);
        starts.push(ms(took));
    }
    let mut virsh_runs = Vec::new();
    for _ in 0..STARTS {
        let t = Instant::now();
        let st = Command::new("virsh")
            .args(["-c", &uri, "list", "--all"])
            .stdout(Stdio::null())
            .status()
            .context("virsh (libvirt-clients) is needed for the references")?;
        ensure!(st.success(), "virsh list on the 1,000-VM host failed");
        virsh_runs.push(ms(t.elapsed()));
    }
    figures.push(
        Figure::new(
            STARTUP,
            "startup_ms",
            &format!("exec → /healthz answers, 1,000-VM host, median of {STARTS}"),
            "ms",
            median(&starts),
        )
        .vs(
            "`virsh list --all` on the same host, exec → exit",
            median(&virsh_runs),
        ),
    );

    // ---- the server under test ----
    let (server, _) = Server::start(&bin, &data, Some(&uri), &log)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss_mib(server.pid())?;
    let session = sign_in(&server.base).await?;
    let (page_bytes, page_gz_bytes) = check_lists(&server.base, &session, &token).await?;
    let rss_listed = rss_mib(server.pid())?;
    let virsh_rss = virsh_holding(&uri).await?;
    let floor_rss = floor_holding(&uri).await?;

    // ---- the bare listing, in this process ----
    println!("reference: the bare libvirt listing, {BARE_LISTING_SECONDS} s");
    let bare = bare_listing(&uri)?;

    // ---- load ----
    let page_url = format!("{}/vms", server.base);
    let api_url = format!("{}/api/v1/vms", server.base);
    // As a browser asks for the page: with its session and accepting gzip.
    let cookie_h = format!("Cookie: {session}\nAccept-Encoding: gzip");
    let bearer_h = format!("Authorization: Bearer {token}");
    let mut requests = 2u64;
    println!("load: wrk, {CONNECTIONS} connections × {LOAD_SECONDS} s, and 1 × {SINGLE_CLIENT_SECONDS} s");
    let page64 = wrk(&page_url, &cookie_h, CONNECTIONS, LOAD_SECONDS, &wrk_script)?;
    requests += page64.requests;
    let rss_first_load = rss_mib(server.pid())?;
    let requests_first_load = requests;
    let api64 = wrk(&api_url, &bearer_h, CONNECTIONS, LOAD_SECONDS, &wrk_script)?;
    requests += api64.requests;
    let page1 = wrk(&page_url, &cookie_h, 1, SINGLE_CLIENT_SECONDS, &wrk_script)?;
    requests += page1.requests;
    let api1 = wrk(&api_url, &bearer_h, 1, SINGLE_CLIENT_SECONDS, &wrk_script)?;
    requests += api1.requests;

    for (what, key, c64, c1) in [
        ("VM list page", "page", &page64, &page1),
        ("GET /api/v1/vms", "api", &api64, &api1),
    ] {
        let rps = c64.requests_per_second();
        figures.push(
            Figure::new(
                SCALE,
                &format!("{key}_c64_rps"),
                &format!("{what}, {CONNECTIONS} clients: requests/s"),
                "req/s",
                rps,
            )
            .vs("bare libvirt listings/s, 1 thread", bare.per_second),
        );
        figures.push(
            Figure::new(
                SCALE,
                &format!("{key}_c64_p50_ms"),
                &format!("{what}, {CONNECTIONS} clients: p50 latency"),
                "ms",
                c64.p50_us as f64 / 1000.0,
            )
            .vs("bare listing p50", bare.p50_ms),
        );
        figures.push(
            Figure::new(
                SCALE,
                &format!("{key}_c64_p99_ms"),
                &format!("{what}, {CONNECTIONS} clients: p99 latency"),
                "ms",
                c64.p99_us as f64 / 1000.0,
            )
            .vs("bare listing p99", bare.p99_ms),
        );
        figures.push(
            Figure::new(
                SCALE,
                &format!("{key}_c1_p50_ms"),
                &format!("{what}, 1 client: p50 latency"),
                "ms",
                c1.p50_us as f64 / 1000.0,
            )
            .vs("bare listing p50", bare.p50_ms),
        );
    }
    figures.push(Figure::new(
        SCALE,
        "page_html_kib",
        &format!("VM list page HTML, first {LIST_PAGE_ROWS} of 1,000 VMs (uncompressed)"),
        "KiB",
        page_bytes as f64 / 1024.0,
    ));
    figures.push(Figure::new(
        SCALE,
        "page_html_gzip_kib",
        "the same page gzip'ed (as sent to browsers)",
        "KiB",
        page_gz_bytes as f64 / 1024.0,
    ));
    notes.push((
        SCALE.to_string(),
        format!(
            "Where a listing's time goes (in this process, through the same adapter, median of 5): {}. \
             The page and the API share one VM list (listing, every VM's definition, guest \
             addresses of each running VM), read again only after a libvirt event or a change \
             made through virtdeck, and at most 2 s old; under load most requests reuse it. The page \
             adds the pools for the capacity summary and renders one page of rows; the API \
             serializes all 1,000 VMs.",
            bare.breakdown
                .iter()
                .map(|(k, v)| format!("{k} {} ms", num(*v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));

    // ---- 10,000 requests (or the time cap), then memory ----
    let cap = memory_seconds_cap();
    println!("memory: up to {MEMORY_REQUESTS} requests in {MEMORY_CHUNK_SECONDS} s wrk runs, at most {cap} s");
    let phase = Instant::now();
    let mut series = vec![(requests, rss_mib(server.pid())?)];
    let mut turn = 0;
    while requests < MEMORY_REQUESTS && phase.elapsed() < Duration::from_secs(cap) {
        let (url, header) = if turn % 2 == 0 {
            (&page_url, &cookie_h)
        } else {
            (&api_url, &bearer_h)
        };
        turn += 1;
        requests += wrk(url, header, CONNECTIONS, MEMORY_CHUNK_SECONDS, &wrk_script)?.requests;
        series.push((requests, rss_mib(server.pid())?));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss_mib(server.pid())?;
    let rss_peak = peak_rss_mib(server.pid())?;
    notes.push((
        MEMORY.to_string(),
        format!(
            "VmRSS along the way (requests → MiB), page and API alternating at {CONNECTIONS} \
             connections: {}.{}",
            series
                .iter()
                .map(|(r, m)| format!("{r} → {}", num(*m)))
                .collect::<Vec<_>>()
                .join(", "),
            if requests < MEMORY_REQUESTS {
                format!(
                    " The run stopped at {requests} requests after its {cap} s cap (at this host's \
                     speed {MEMORY_REQUESTS} requests take longer); `BENCH_MEMORY_SECONDS=1800 \
                     make bench` runs them all."
                )
            } else {
                String::new()
            }
        ),
    ));
    figures.push(
        Figure::new(
            MEMORY,
            "memory_requests",
            "requests made before the last memory reading",
            "requests",
            requests as f64,
        )
        .target(Target::AtLeast(MEMORY_REQUESTS as f64)),
    );
    figures.push(
        Figure::new(
            MEMORY,
            "rss_idle_1000_mib",
            "VmRSS idle, 1,000-VM host (the test driver holds the VMs in virtdeck's process)",
            "MiB",
            rss_idle,
        )
        .vs(FLOOR, floor_rss)
        .target(Target::Below(20.0)),
    );
    figures.push(
        Figure::new(
            MEMORY,
            "rss_listed_mib",
            "VmRSS after listing the 1,000 VMs (page and API once)",
            "MiB",
            rss_listed,
        )
        .vs(FLOOR, floor_rss)
        .target(Target::Below(40.0)),
    );
    figures.push(
        Figure::new(
            MEMORY,
            "rss_after_requests_mib",
            &format!("VmRSS after {requests} requests"),
            "MiB",
            rss_after,
        )
        .vs(FLOOR, floor_rss)
        .target(Target::Below(40.0)),
    );
    figures.push(
        Figure::new(
            MEMORY,
            "rss_peak_mib",
            "peak VmRSS during the whole run (VmHWM)",
            "MiB",
            rss_peak,
        )
        .vs(FLOOR, floor_rss)
        .target(Target::Below(40.0)),
    );
    figures.push(
        Figure::new(
            MEMORY,
            "rss_growth_mib",
            &format!(
                "growth from the first load run ({requests_first_load} requests) to {requests} requests"
            ),
            "MiB",
            rss_after - rss_first_load,
        )
        .target(Target::Below(2.0)),
    );
    notes.push((
        MEMORY.to_string(),
        format!(
            "The reference is the floor: `examples/libvirt_floor`, a program that only opens a \
             libvirt connection to the same host and lists its VMs once ({} MiB; virsh after \
             `list --all` on the same host: {} MiB). With the test driver the 1,000 VMs live \
             in the client's process, so the floor includes them; on a real host they live in \
             libvirtd. Virtdeck's own share is its VmRSS minus the floor.",
            num(floor_rss),
            num(virsh_rss)
        ),
    ));
    if let Some(l) = libvirtd_rss() {
        notes.push((
            MEMORY.to_string(),
            format!(
                "For context: libvirtd on this machine (qemu:///system, shared with other work) had \
                 VmRSS {} MiB during the run.",
                num(l)
            ),
        ));
    }
    drop(server);

    // ---- browser ----
    println!("browser: headless Chromium, {BROWSER_RUNS} cold-cache navigations per page");
    let mut browser = webdriver::Browser::start().await;
    cdp(
        &browser,
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": MARK_SCRIPT}),
    )
    .await;
    let demo_data = out.join("data-demo");
    let _ = std::fs::remove_dir_all(&demo_data);
    create_admin(&bin, &demo_data)?;
    let (demo, _) = Server::start(&bin, &demo_data, None, &log)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_demo_idle = rss_mib(demo.pid())?;
    let demo_host = root().join("demo/demo-host.xml").canonicalize()?;
    let demo_floor_rss = floor_holding(&format!("test://{}", demo_host.display())).await?;
    figures.insert(
        figures
            .iter()
            .position(|f| f.section == MEMORY)
            .unwrap_or(figures.len()),
        Figure::new(
            MEMORY,
            "rss_idle_demo_mib",
            "VmRSS idle, demo host (6 VMs)",
            "MiB",
            rss_demo_idle,
        )
        .vs(FLOOR, demo_floor_rss)
        .target(Target::Below(20.0)),
    );
    let demo_session = sign_in(&demo.base).await?;
    let demo_page = browse(&mut browser, &demo.base, &demo_session, 6).await?;
    drop(demo);
    let (server, _) = Server::start(&bin, &data, Some(&uri), &log)?;
    let session = sign_in(&server.base).await?;
    let big_page = browse(&mut browser, &server.base, &session, LIST_PAGE_ROWS).await?;
    drop(server);
    browser.quit().await;
    for (host_label, key, p) in [
        ("demo host, 6 VMs", "demo", &demo_page),
        ("1,000 VMs (first page of 50)", "1000", &big_page),
    ] {
        figures.push(
            Figure::new(
                BROWSER,
                &format!("list_visible_{key}_ms"),
                &format!("navigation → VM list on screen, {host_label}, median of {BROWSER_RUNS}"),
                "ms",
                p.visible_ms,
            )
            .vs("same responses from a static server", p.static_visible_ms),
        );
        figures.push(
            Figure::new(
                BROWSER,
                &format!("page_bytes_{key}_kib"),
                &format!("bytes transferred for the page, cold cache, {host_label}"),
                "KiB",
                p.bytes as f64 / 1024.0,
            )
            .target(Target::Below(50.0)),
        );
        notes.push((
            BROWSER.to_string(),
            format!(
                "{host_label}: {} requests; document {} KiB, stylesheets and scripts {} KiB, \
                 VM screen thumbnails {} requests / {} KiB (one per running or paused VM whose row is on screen; asked again once 1.5 s later if the first answer had no picture yet).",
                p.requests,
                num(p.document_bytes as f64 / 1024.0),
                num(p.asset_bytes as f64 / 1024.0),
                p.thumb_requests,
                num(p.thumb_bytes as f64 / 1024.0)
            ),
        ));
    }

    // ---- a flood of sign-ins ----
    sign_in_flood(&bin, &out, &log, &mut figures, &mut notes).await?;

    // ---- console proxy, from the same make bench run ----
    console_figures(&out, &mut figures, &mut notes);
    upload_figures(&out, &mut figures, &mut notes);
    boot_figures(&out, &mut figures, &mut notes);
    backup_figures(&out, &mut figures, &mut notes);
    migration_figures(&out, &mut figures, &mut notes);
    fleet_figures(&out, &mut figures, &mut notes);

    if std::env::var_os("BENCH_COUNT_WRK_ERRORS").is_some() {
        figures.push(Figure::new(
            "Load",
            "wrk_errors",
            "wrk connection errors, all load runs",
            "errors",
            WRK_ERRORS.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ));
    }

    // ---- the report ----
    let report = Report {
        machine: machine_info(),
        figures,
        notes,
    };
    let md = report.markdown();
    let stem = match &label {
        Some(label) => format!("report-{label}"),
        None => "report".to_string(),
    };
    std::fs::write(out.join(format!("{stem}.md")), &md)?;
    std::fs::write(
        out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&report.json())?,
    )?;
    if label.is_some() {
        println!("\n{md}\nwritten: target/bench/{stem}.md, {stem}.json");
        return Ok(());
    }
    let doc_path = root().join("docs/benchmarks.md");
    let doc = std::fs::read_to_string(&doc_path)
        .with_context(|| format!("read {}", doc_path.display()))?;
    let doc = report::splice_results(&doc, &md).map_err(|e| anyhow!(e))?;
    std::fs::write(&doc_path, doc)?;
    println!("\n{md}");
    println!(
        "written: target/bench/report.md, target/bench/report.json, docs/benchmarks.md (results section)"
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0).unwrap_or(f64::NAN)
}

// ---- processes ----

/// `virtdeck serve` as a child process, plain HTTP on a loopback port; killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// Starts the server (`uri` None: `--demo`) and returns it with the time from exec
    /// to `/healthz` answering 200.
    fn start(bin: &Path, data: &Path, uri: Option<&str>, log: &Path) -> Result<(Server, Duration)> {
        let port = webdriver::free_port();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir").arg(data).args([
            "serve",
            "--no-tls",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]);
        match uri {
            Some(u) => cmd.args(["--libvirt-uri", u]),
            None => cmd.arg("--demo"),
        };
        let started = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = started + Duration::from_secs(60);
        loop {
            if healthz(port) {
                return Ok((server, started.elapsed()));
            }
            if let Some(st) = server.child.try_wait()? {
                bail!("virtdeck exited at start ({st}); see {}", log.display());
            }
            ensure!(
                Instant::now() < deadline,
                "virtdeck did not answer /healthz within 60 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /healthz` answers 200 on the port right now.
fn healthz(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf[..got].starts_with(b"HTTP/1.1 200")
}

/// The first admin and an API token, made with the shell tools like an admin would.
fn create_admin(bin: &Path, data: &Path) -> Result<String> {
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(data)
        .args([
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(PASSWORD.as_bytes())?;
    ensure!(child.wait()?.success(), "virtdeck user add failed");
    let out = Command::new(bin)
        .arg("--data-dir")
        .arg(data)
        .args(["token", "create", "--user", "admin", "--label", "bench"])
        .output()?;
    ensure!(out.status.success(), "virtdeck token create failed");
    String::from_utf8(out.stdout)?
        .lines()
        .last()
        .map(|l| l.trim().to_string())
        .ok_or_else(|| anyhow!("virtdeck token create printed nothing"))
}

fn rss_mib(pid: u32) -> Result<f64> {
    status_mib(pid, "VmRSS:")
}

fn status_mib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no {field} for pid {pid}"))?;
    Ok(kib / 1024.0)
}

/// VmHWM: the highest VmRSS the process has had.
fn peak_rss_mib(pid: u32) -> Result<f64> {
    status_mib(pid, "VmHWM:")
}

fn libvirtd_rss() -> Option<f64> {
    let out = Command::new("pidof").arg("libvirtd").output().ok()?;
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    rss_mib(pid).ok()
}

/// VmRSS of an interactive virsh connected to the same test-driver host, after it
/// listed every VM.
/// VmRSS of `examples/libvirt_floor` holding a connection to `uri` after listing its VMs:
/// what any program using libvirt pays before doing anything of its own.
async fn floor_holding(uri: &str) -> Result<f64> {
    use std::io::BufRead;
    let bin = root().join("target/release/examples/libvirt_floor");
    ensure!(
        bin.exists(),
        "{} is missing: `make bench` builds it (cargo build --release --example libvirt_floor)",
        bin.display()
    );
    let mut child = Command::new(bin)
        .arg(uri)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    ensure!(
        line.starts_with("ready"),
        "libvirt_floor did not start: {line:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_mib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    rss
}

async fn virsh_holding(uri: &str) -> Result<f64> {
    let mut child = Command::new("virsh")
        .args(["-c", uri])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
    stdin.write_all(b"list --all\n")?;
    stdin.flush()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mib(child.id());
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    rss
}

// ---- HTTP ----

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// Peak memory above idle while `FLOOD` wrong sign-ins (each for another account, all at
/// once, the per-address lock set out of reach as for a botnet) hit a demo-host server
/// with `max_parallel_password_checks` = `checks`. Returns MiB above idle and the answers
/// by status.
async fn flood_peak(
    bin: &Path,
    out: &Path,
    log: &Path,
    checks: usize,
) -> Result<(f64, HashMap<u16, usize>)> {
    let data = out.join(format!("data-flood-{checks}"));
    let _ = std::fs::remove_dir_all(&data);
    create_admin(bin, &data)?;
    let config = out.join(format!("flood-{checks}.toml"));
    std::fs::write(
        &config,
        format!(
            "[login]\nmax_parallel_password_checks = {checks}\nlock_after_failures = 100000\n\
             address_lock_after_failures = 100000\nslow_after_failures = 100000\n\
             [http]\nmax_connections_per_address = 100000\n"
        ),
    )?;
    std::env::set_var("VIRTDECK_CONFIG", &config);
    let started = Server::start(bin, &data, None, log);
    std::env::remove_var("VIRTDECK_CONFIG");
    let (server, _) = started?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_mib(server.pid())?;
    // Every client first fetches the form (its CSRF cookie), then all post at once.
    let gate = Arc::new(tokio::sync::Barrier::new(FLOOD));
    let tasks: Vec<_> = (0..FLOOD)
        .map(|i| {
            let (base, gate) = (server.base.clone(), gate.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::builder()
                    .cookie_store(true)
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(Duration::from_secs(300))
                    .build()?;
                let page = c.get(format!("{base}/login")).send().await?.text().await?;
                let marker = "name=\"csrf\" value=\"";
                let at = page.find(marker).ok_or_else(|| anyhow!("no csrf"))? + marker.len();
                let csrf = page[at..at + page[at..].find('"').unwrap_or(0)].to_string();
                gate.wait().await;
                let user = format!("guess{i}");
                let r = c
                    .post(format!("{base}/login"))
                    .form(&[
                        ("username", user.as_str()),
                        ("password", "not-it-at-all"),
                        ("csrf", &csrf),
                    ])
                    .send()
                    .await?;
                Ok::<u16, anyhow::Error>(r.status().as_u16())
            })
        })
        .collect();
    let mut answers: HashMap<u16, usize> = HashMap::new();
    for t in tasks {
        *answers.entry(t.await??).or_default() += 1;
    }
    let peak = peak_rss_mib(server.pid())?;
    Ok((peak - idle, answers))
}

async fn sign_in_flood(
    bin: &Path,
    out: &Path,
    log: &Path,
    figures: &mut Vec<Figure>,
    notes: &mut Vec<(String, String)>,
) -> Result<()> {
    println!("sign-in flood: {FLOOD} parallel wrong passwords, default cap and the most allowed");
    let (capped, capped_answers) = flood_peak(bin, out, log, 2).await?;
    let (wide, wide_answers) = flood_peak(bin, out, log, 64).await?;
    figures.push(
        Figure::new(
            SIGN_IN,
            "sign_in_flood_peak_mib",
            &format!("peak memory above idle, {FLOOD} parallel sign-ins (default: 2 password checks at once)"),
            "MiB",
            capped,
        )
        .vs("the same flood with 64 checks at once (the most allowed)", wide)
        .target(Target::Below(100.0)),
    );
    let show = |a: &HashMap<u16, usize>| {
        let mut v: Vec<_> = a.iter().map(|(k, n)| format!("{n}× {k}")).collect();
        v.sort();
        v.join(", ")
    };
    notes.push((
        "Sign-in flood answers".into(),
        format!(
            "default cap: {}; 64 at once: {} (401 = checked and wrong, 503 = refused at once \
             with Retry-After because every check place was taken)",
            show(&capped_answers),
            show(&wide_answers)
        ),
    ));
    Ok(())
}

/// Signs in through the login form; returns the `Cookie` header value of the session.
async fn sign_in(base: &str) -> Result<String> {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let c = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = c.get(format!("{base}/login")).send().await?.text().await?;
    let marker = "name=\"csrf\" value=\"";
    let i = page
        .find(marker)
        .ok_or_else(|| anyhow!("no csrf on /login"))?
        + marker.len();
    let csrf = &page[i..i + page[i..].find('"').unwrap_or(0)];
    let r = c
        .post(format!("{base}/login"))
        .form(&[
            ("username", "admin"),
            ("password", PASSWORD),
            ("csrf", csrf),
        ])
        .send()
        .await?;
    ensure!(r.status() == 303, "sign-in answered {}", r.status());
    use reqwest::cookie::CookieStore;
    let cookies = jar
        .cookies(&base.parse()?)
        .ok_or_else(|| anyhow!("no cookies after sign-in"))?;
    let session = cookies
        .to_str()?
        .split("; ")
        .find(|c| c.starts_with("vd_session="))
        .ok_or_else(|| anyhow!("no session cookie after sign-in"))?
        .to_string();
    Ok(session)
}

/// Checks that the page shows the first page of the 1,000 VMs with the count, and the API
/// lists every VM; returns the page's size in bytes, uncompressed and gzip'ed.
async fn check_lists(base: &str, session: &str, token: &str) -> Result<(usize, usize)> {
    let c = http();
    let r = c
        .get(format!("{base}/vms"))
        .header("cookie", session)
        .send()
        .await?;
    ensure!(r.status() == 200, "GET /vms answered {}", r.status());
    let page = r.text().await?;
    let rows = page.matches("<tr data-vm=").count();
    ensure!(
        rows == LIST_PAGE_ROWS,
        "the VM list's first page shows {rows} VMs, not {LIST_PAGE_ROWS}"
    );
    ensure!(
        page.contains(&format!("{VMS} VMs, showing 1–{LIST_PAGE_ROWS}.")),
        "the VM list does not say it has {VMS} VMs"
    );
    let gz = c
        .get(format!("{base}/vms"))
        .header("cookie", session)
        .header("accept-encoding", "gzip")
        .send()
        .await?;
    ensure!(
        gz.headers()
            .get("content-encoding")
            .is_some_and(|v| v == "gzip"),
        "GET /vms is not gzip'ed for a browser"
    );
    let gz_len = gz.bytes().await?.len();
    let v: Value = c
        .get(format!("{base}/api/v1/vms"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    let n = v["vms"].as_array().map_or(0, |a| a.len());
    ensure!(n == VMS, "GET /api/v1/vms lists {n} VMs, not {VMS}");
    Ok((page.len(), gz_len))
}

// ---- load ----

/// wrk errors counted under `BENCH_COUNT_WRK_ERRORS` (any run without it stops at one).
static WRK_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn wrk(
    url: &str,
    header: &str,
    connections: u32,
    seconds: u32,
    script: &Path,
) -> Result<WrkResult> {
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", connections.min(2)))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "30s"]);
    for h in header.split('\n') {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .context("wrk is needed: scripts/install-deps.sh bench")?;
    let r = WrkResult::parse(&String::from_utf8_lossy(&out.stdout)).map_err(|e| anyhow!(e))?;
    ensure!(r.requests > 0, "wrk on {url} made no request: {r:?}");
    if r.errors() > 0 {
        // An older build measured for a comparison (scripts/bench-compare.sh) may drop
        // connections; its errors are counted and reported as a figure instead.
        ensure!(
            std::env::var_os("BENCH_COUNT_WRK_ERRORS").is_some(),
            "wrk on {url} had errors (the figure would be wrong): {r:?}"
        );
        println!("  {url}: {} errors counted", r.errors());
        WRK_ERRORS.fetch_add(r.errors(), std::sync::atomic::Ordering::Relaxed);
    }
    println!(
        "  {url} c={connections}: {} req/s, p50 {} ms, p99 {} ms",
        num(r.requests_per_second()),
        num(r.p50_us as f64 / 1000.0),
        num(r.p99_us as f64 / 1000.0)
    );
    Ok(r)
}

fn memory_seconds_cap() -> u64 {
    std::env::var("BENCH_MEMORY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MEMORY_SECONDS)
}

// ---- the bare listing ----

struct Bare {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    breakdown: Vec<(&'static str, f64)>,
}

fn bare_listing(uri: &str) -> Result<Bare> {
    use virtdeck::domain::host::KvmStatus;
    let hv = virtdeck::adapters::libvirt::Libvirt::open(uri, KvmStatus::NotApplicable)?;
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(BARE_LISTING_SECONDS) {
        let t = Instant::now();
        let n = hv.list_vms()?.len();
        samples.push(ms(t.elapsed()));
        ensure!(n == VMS, "the bare listing found {n} VMs");
    }
    let per_second = samples.len() as f64 / start.elapsed().as_secs_f64();
    let db = root().join("target/bench/breakdown.sqlite");
    let _ = std::fs::remove_file(&db);
    let store = virtdeck::store::Store::open(&db)?;
    let cfg = virtdeck::config::Config::default().lifecycle();
    let running: Vec<String> = (1..=VMS)
        .filter(|i| host::is_running(*i))
        .map(host::vm_name)
        .collect();
    let time5 = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
        let mut v = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            f()?;
            v.push(ms(t.elapsed()));
        }
        Ok(median(&v))
    };
    let breakdown = vec![
        (
            "VM listing",
            time5(&|| hv.list_vms().map(drop).map_err(Into::into))?,
        ),
        (
            "every VM's definition",
            time5(&|| hv.all_domain_xml().map(drop).map_err(Into::into))?,
        ),
        (
            "guest addresses of the running VMs",
            time5(&|| {
                for n in &running {
                    let _ = hv.guest_addresses(n);
                }
                Ok(())
            })?,
        ),
        (
            "the whole VM list (lifecycle::list)",
            time5(&|| {
                virtdeck::lifecycle::list(&hv, &store, &cfg)
                    .map(drop)
                    .map_err(|e| anyhow!("{e}"))
            })?,
        ),
        (
            "capacity summary",
            time5(&|| {
                virtdeck::lifecycle::capacity(&hv, &store, &cfg)
                    .map(drop)
                    .map_err(|e| anyhow!("{e}"))
            })?,
        ),
    ];
    Ok(Bare {
        per_second,
        p50_ms: median(&samples),
        p99_ms: percentile(&samples, 99.0).unwrap_or(f64::NAN),
        breakdown,
    })
}

// ---- browser ----

struct PageRun {
    visible_ms: f64,
    static_visible_ms: f64,
    bytes: u64,
    document_bytes: u64,
    asset_bytes: u64,
    thumb_bytes: u64,
    thumb_requests: usize,
    requests: usize,
}

/// Runs before each page's own scripts: a big resource timing buffer, and the time of the
/// first frame after the whole list is in the document (the list's first frame on screen).
const MARK_SCRIPT: &str = r#"
performance.setResourceTimingBufferSize(10000);
document.addEventListener('DOMContentLoaded', () => {
  const list = document.getElementById('vm-list');
  if (!list) return;
  requestAnimationFrame(() => setTimeout(() => {
    const r = list.getBoundingClientRect();
    window.__vdListVisible = r.height > 0 && r.top < innerHeight ? performance.now() : -1;
    window.__vdRows = list.querySelectorAll('tbody tr').length;
  }, 0));
});
"#;

const COLLECT_SCRIPT: &str = r#"
const nav = performance.getEntriesByType('navigation')[0];
return {
  visible: window.__vdListVisible, rows: window.__vdRows,
  document: nav.transferSize,
  resources: performance.getEntriesByType('resource').map(r => ({
    url: r.name, bytes: r.transferSize, kind: r.initiatorType })),
};
"#;

async fn cdp(b: &webdriver::Browser, cmd: &str, params: Value) -> Value {
    b.post("/goog/cdp/execute", json!({"cmd": cmd, "params": params}))
        .await
}

/// One cold-cache navigation to `url`: (the measurement's JSON).
async fn navigate(b: &webdriver::Browser, url: &str, rows: usize) -> Result<Value> {
    cdp(b, "Network.clearBrowserCache", json!({})).await;
    b.goto("about:blank").await;
    b.goto(url).await;
    b.wait_until(
        "return window.__vdListVisible !== undefined",
        Duration::from_secs(60),
        "the VM list's first frame",
    )
    .await;
    // Let the thumbnails' requests (started at load) finish before counting bytes.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let v = b.execute(COLLECT_SCRIPT, json!([])).await;
    ensure!(
        v["visible"].as_f64().unwrap_or(-1.0) > 0.0,
        "the VM list at {url} is not on screen: {v}"
    );
    ensure!(
        v["rows"].as_u64() == Some(rows as u64),
        "the VM list at {url} shows {} rows, not {rows}",
        v["rows"]
    );
    Ok(v)
}

/// The VM list page in Chromium: virtdeck, then the same responses from a static server.
async fn browse(
    b: &mut webdriver::Browser,
    base: &str,
    session: &str,
    rows: usize,
) -> Result<PageRun> {
    b.goto(&format!("{base}/login")).await;
    let (name, value) = session
        .split_once('=')
        .ok_or_else(|| anyhow!("bad session cookie"))?;
    b.post(
        "/cookie",
        json!({"cookie": {"name": name, "value": value, "path": "/", "httpOnly": true}}),
    )
    .await;
    let url = format!("{base}/vms");
    let mut visible = Vec::new();
    let mut first = None;
    for _ in 0..BROWSER_RUNS {
        let v = navigate(b, &url, rows).await?;
        visible.push(v["visible"].as_f64().unwrap_or(f64::NAN));
        first.get_or_insert(v);
    }
    let first = first.ok_or_else(|| anyhow!("no browser run"))?;
    let resources = first["resources"].as_array().cloned().unwrap_or_default();
    let size = |r: &Value| r["bytes"].as_u64().unwrap_or(0);
    let is_thumb = |r: &Value| r["url"].as_str().unwrap_or("").contains("/screenshot");
    let document_bytes = first["document"].as_u64().unwrap_or(0);
    let thumb: Vec<&Value> = resources.iter().filter(|r| is_thumb(r)).collect();
    let thumb_bytes: u64 = thumb.iter().map(|r| size(r)).sum();
    let asset_bytes: u64 = resources.iter().filter(|r| !is_thumb(r)).map(size).sum();

    // The reference: every same-origin response of that navigation, replayed as is.
    let mut paths: Vec<String> = vec!["/vms".into()];
    for r in &resources {
        if let Some(p) = r["url"].as_str().and_then(|u| u.strip_prefix(base)) {
            let p = p.split('?').next().unwrap_or(p).to_string();
            if !paths.contains(&p) && p != "/events" {
                paths.push(p);
            }
        }
    }
    let replay = capture(base, session, &paths).await?;
    let static_base = serve_static(replay).await?;
    let mut static_visible = Vec::new();
    for _ in 0..BROWSER_RUNS {
        let v = navigate(b, &format!("{static_base}/vms"), rows).await?;
        static_visible.push(v["visible"].as_f64().unwrap_or(f64::NAN));
    }
    Ok(PageRun {
        visible_ms: median(&visible),
        static_visible_ms: median(&static_visible),
        bytes: document_bytes + asset_bytes + thumb_bytes,
        document_bytes,
        asset_bytes,
        thumb_bytes,
        thumb_requests: thumb.len(),
        requests: resources.len() + 1,
    })
}

struct Captured {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn capture(base: &str, session: &str, paths: &[String]) -> Result<HashMap<String, Captured>> {
    let c = http();
    let mut out = HashMap::new();
    for p in paths {
        let r = c
            .get(format!("{base}{p}"))
            .header("cookie", session)
            .header("accept-encoding", "gzip") // the same bytes the browser got
            .send()
            .await?;
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "content-length" | "transfer-encoding" | "connection" | "date" | "set-cookie"
                )
            })
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = r.bytes().await?.to_vec();
        out.insert(
            p.clone(),
            Captured {
                status,
                headers,
                body,
            },
        );
    }
    Ok(out)
}

/// A minimal keep-alive HTTP/1.1 server answering captured responses by path.
async fn serve_static(pages: HashMap<String, Captured>) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let pages = Arc::new(pages);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let pages = pages.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end + 4);
                    let target = head.split_whitespace().nth(1).unwrap_or("/");
                    let path = target.split('?').next().unwrap_or(target);
                    let mut resp = Vec::new();
                    match pages.get(path) {
                        Some(p) => {
                            resp.extend(format!("HTTP/1.1 {} X\r\n", p.status).bytes());
                            for (k, v) in &p.headers {
                                resp.extend(format!("{k}: {v}\r\n").bytes());
                            }
                            resp.extend(
                                format!("content-length: {}\r\n\r\n", p.body.len()).bytes(),
                            );
                            resp.extend(&p.body);
                        }
                        None => resp.extend(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
                    }
                    if s.write_all(&resp).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(base)
}

// ---- boot figures from benches/boot.rs ----

fn boot_figures(out: &Path, figures: &mut Vec<Figure>, notes: &mut Vec<(String, String)>) {
    let Some(v) = std::fs::read_to_string(out.join("boot.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    else {
        notes.push((
            BOOT.to_string(),
            "Not measured in this run: `make bench` runs `cargo bench --bench boot` first \
             (it needs libvirtd and the Debian test image), which writes target/bench/boot.json."
                .into(),
        ));
        return;
    };
    const VIRT_INSTALL: &str =
        "qemu-img copy + genisoimage seed + `virt-install --import` of the same image and seed";
    for (fw, label) in [("bios", "BIOS"), ("uefi", "UEFI")] {
        let f = |k: &str| v[fw][k].as_f64().unwrap_or(f64::NAN);
        figures.push(
            Figure::new(
                BOOT,
                &format!("boot_{fw}_login_s"),
                &format!("{label}: \"Create and start\" to the login prompt (median)"),
                "s",
                f("virtdeck_s"),
            )
            .vs(VIRT_INSTALL, f("virt_install_s"))
            .target(Target::RatioAtMost(1.05)),
        );
    }
    notes.push((
        BOOT.to_string(),
        format!(
            "The guest runs under TCG here, so most of either figure is the emulated boot; \
             the difference is what each does before QEMU starts (copying the image, the \
             seed, defining). Both clocks stop at the prompt that carries the seed's host \
             name. {} runs per tool and firmware, alternating.",
            v["runs"]
        ),
    ));
}

// ---- backup figures from benches/backup.rs ----

fn backup_figures(out: &Path, figures: &mut Vec<Figure>, notes: &mut Vec<(String, String)>) {
    let Some(v) = std::fs::read_to_string(out.join("backup.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    else {
        notes.push((
            BACKUP.to_string(),
            "Not measured in this run: `make bench` runs `cargo bench --bench backup` first \
             (it needs libvirtd), which writes target/bench/backup.json."
                .into(),
        ));
        return;
    };
    let f = |who: &str, k: &str| v[who][k].as_f64().unwrap_or(f64::NAN);
    const VIRSH: &str = "`virsh backup-begin` (push mode, with a checkpoint) of the same disk";
    figures.push(
        Figure::new(
            BACKUP,
            "backup_full_mib_s",
            "full backup throughput, request → restorable (median)",
            "MiB/s",
            f("virtdeck", "full_mib_s"),
        )
        .vs(VIRSH, f("virsh", "full_mib_s"))
        .target(Target::RatioAtLeast(0.95)),
    );
    figures.push(
        Figure::new(
            BACKUP,
            "backup_incremental_mib_s",
            &format!(
                "incremental backup after {} MiB (5%) changed, changed MiB per second (median)",
                v["changed_mib"]
            ),
            "MiB/s",
            f("virtdeck", "incremental_mib_s"),
        )
        .vs(VIRSH, f("virsh", "incremental_mib_s"))
        .target(Target::RatioAtLeast(0.95)),
    );
    figures.push(
        Figure::new(
            BACKUP,
            "backup_rss_growth_mib",
            "virtdeck's VmRSS growth during the backups (peak − before)",
            "MiB",
            f("virtdeck", "rss_growth_mib"),
        )
        .target(Target::Below(8.0)),
    );
    notes.push((
        BACKUP.to_string(),
        format!(
            "libvirt and QEMU copy the blocks in both cases (push mode into a file in the same \
             target directory). virtdeck's clock stops when its API says the backup succeeded: \
             the job ended, its row written and an incremental file chained to the one before \
             (its SHA-256 checksums are computed right after, off the clock); virsh's clock \
             stops when `virsh domjobinfo` shows no job. {} runs, alternating which goes first.",
            v["runs"]
        ),
    ));
}

// ---- upload figures from benches/upload.rs ----

fn upload_figures(out: &Path, figures: &mut Vec<Figure>, notes: &mut Vec<(String, String)>) {
    let Some(v) = std::fs::read_to_string(out.join("upload.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    else {
        notes.push((
            UPLOAD.to_string(),
            "Not measured in this run: `make bench` runs `cargo bench --bench upload` first \
             (it needs libvirtd), which writes target/bench/upload.json."
                .into(),
        ));
        return;
    };
    let f = |who: &str, k: &str| v[who][k].as_f64().unwrap_or(f64::NAN);
    const VIRSH: &str = "`virsh vol-upload` of the same bytes from a file";
    figures.push(
        Figure::new(
            UPLOAD,
            "upload_rss_growth_mib",
            "VmRSS growth during a 2 GiB upload into a directory pool (peak − before)",
            "MiB",
            f("virtdeck", "rss_growth_mib"),
        )
        .vs(VIRSH, f("virsh", "rss_growth_mib"))
        .target(Target::Below(8.0)),
    );
    figures.push(
        Figure::new(
            UPLOAD,
            "upload_rss_peak_mib",
            "peak VmRSS during that upload",
            "MiB",
            f("virtdeck", "rss_peak_mib"),
        )
        .vs(VIRSH, f("virsh", "rss_peak_mib")),
    );
    figures.push(
        Figure::new(
            UPLOAD,
            "upload_mib_s",
            "upload throughput, HTTP client → libvirt volume",
            "MiB/s",
            f("virtdeck", "mib_s"),
        )
        .vs(VIRSH, f("virsh", "mib_s")),
    );
    notes.push((
        UPLOAD.to_string(),
        "virtdeck is a web server holding its pages and a libvirt connection; virsh is a \
         command that starts, uploads and exits, so its peak is mostly the library it loads. \
         The figure that matters is virtdeck's growth: the upload streams through a fixed-size \
         buffer into libvirt's volume upload, so memory does not grow with the image's size."
            .into(),
    ));
}

// ---- migration figures from benches/migration.rs ----

fn migration_figures(out: &Path, figures: &mut Vec<Figure>, notes: &mut Vec<(String, String)>) {
    let Some(v) = std::fs::read_to_string(out.join("migration.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    else {
        notes.push((
            MIGRATION.to_string(),
            "Not measured in this run: `make bench` runs `cargo bench --bench migration` \
             first (it needs root and libvirt for scripts/migration-rig.sh), which writes \
             target/bench/migration.json."
                .into(),
        ));
        return;
    };
    let f = |who: &str, k: &str| v[who][k].as_f64().unwrap_or(f64::NAN);
    const VIRSH: &str =
        "`virsh migrate --live --p2p --persistent --undefinesource`, same guest and hosts";
    figures.push(
        Figure::new(
            MIGRATION,
            "migration_seconds",
            "live migration of a running 256 MiB guest between two libvirt hosts, request → job ended (median)",
            "s",
            f("virtdeck", "seconds_median"),
        )
        .vs(VIRSH, f("virsh", "seconds_median"))
        .target(Target::RatioAtMost(1.05)),
    );
    figures.push(
        Figure::new(
            MIGRATION,
            "migration_downtime_ms",
            "downtime libvirt measured on the destination (median)",
            "ms",
            f("virtdeck", "downtime_ms_median"),
        )
        .vs(VIRSH, f("virsh", "downtime_ms_median"))
        .target(Target::RatioAtMost(1.05)),
    );
    notes.push((
        MIGRATION.to_string(),
        "The rig is two session libvirtds on one machine (scripts/migration-rig.sh); each round \
         moves the guest there and back with virsh, then there and back with virtdeck. \
         virtdeck's time includes asking the destination to hold the units (its admission, \
         over HTTPS), the job's records and telling the destination the outcome; libvirt does \
         the move itself in both cases, with the same flags."
            .into(),
    ));
}

// ---- fleet figures from benches/fleet.rs ----

fn fleet_figures(out: &Path, figures: &mut Vec<Figure>, notes: &mut Vec<(String, String)>) {
    let Some(v) = std::fs::read_to_string(out.join("fleet.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    else {
        notes.push((
            FLEET.to_string(),
            "Not measured in this run: `make bench` runs `cargo bench --bench fleet` first, \
             which writes target/bench/fleet.json."
                .into(),
        ));
        return;
    };
    let f = |who: &str, k: &str| v[who][k].as_f64().unwrap_or(f64::NAN);
    const LOCAL: &str = "the same host's own VM list page (`/vms`), loaded the same way";
    figures.push(
        Figure::new(
            FLEET,
            "fleet_paint_cold_ms",
            "Chromium: navigation → the Fleet page's hosts on screen, empty cache (median of 5)",
            "ms",
            f("fleet", "paint_cold_ms"),
        )
        .vs(LOCAL, f("local", "paint_cold_ms"))
        .target(Target::RatioAtMost(2.0)),
    );
    figures.push(
        Figure::new(
            FLEET,
            "fleet_paint_warm_ms",
            "Chromium: the same with the browser's cache (median of 5)",
            "ms",
            f("fleet", "paint_warm_ms"),
        )
        .vs(LOCAL, f("local", "paint_warm_ms"))
        .target(Target::Below(300.0)),
    );
    figures.push(
        Figure::new(
            FLEET,
            "fleet_page_warm_ms",
            "HTTP: the Fleet page (21,000 VMs, first page) until its whole body arrived, warm, median of 30",
            "ms",
            f("fleet", "warm_ms"),
        )
        .vs(LOCAL, f("local", "warm_ms"))
        .target(Target::RatioAtMost(2.0)),
    );
    figures.push(
        Figure::new(
            FLEET,
            "fleet_page_bytes",
            "bytes sent for the Fleet page (gzip)",
            "B",
            f("fleet", "bytes"),
        )
        .vs(LOCAL, f("local", "bytes")),
    );
    notes.push((
        FLEET.to_string(),
        "21 virtdecks in one process on generated test-driver hosts, paired over HTTPS. The \
         page answers from the per-peer cache (never from the peers): each peer's VMs are \
         sorted once when they arrive, and a page merges those lists, so only its 50 rows are \
         compared and copied. The first load of either page pays this host's own libvirt \
         listing; the local list is loaded first."
            .into(),
    ));
}

// ---- console proxy figures from benches/console_proxy.rs ----

fn console_figures(out: &Path, figures: &mut Vec<Figure>, notes: &mut Vec<(String, String)>) {
    let path = out.join("console_proxy.json");
    let Some(v) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    else {
        notes.push((
            CONSOLE.to_string(),
            "Not measured in this run: `make bench` runs `cargo bench --bench console_proxy` \
             first, which writes target/bench/console_proxy.json."
                .into(),
        ));
        return;
    };
    let f = |k: &str, who: &str| v[k][who].as_f64().unwrap_or(f64::NAN);
    let sessions = v["sessions"].as_f64().unwrap_or(f64::NAN);
    figures.push(
        Figure::new(
            CONSOLE,
            "console_throughput_mib_s",
            "VNC proxy throughput, source → browser",
            "MiB/s",
            f("throughput_mib_s", "virtdeck"),
        )
        .vs(
            "websockify (Debian), same source",
            f("throughput_mib_s", "websockify"),
        )
        .target(Target::RatioAtLeast(1.5)),
    );
    figures.push(
        Figure::new(
            CONSOLE,
            "console_rtt_p50_ms",
            "round trip p50, 10-byte RFB message",
            "ms",
            f("rtt_p50_ms", "virtdeck"),
        )
        .vs("websockify", f("rtt_p50_ms", "websockify"))
        .target(Target::RatioAtMost(1.0)),
    );
    figures.push(
        Figure::new(
            CONSOLE,
            "console_rtt_p99_ms",
            "round trip p99",
            "ms",
            f("rtt_p99_ms", "virtdeck"),
        )
        .vs("websockify", f("rtt_p99_ms", "websockify")),
    );
    let per_session = |who: &str| (f("pss_sessions_mib", who) - f("pss_idle_mib", who)) / sessions;
    figures.push(
        Figure::new(
            CONSOLE,
            "console_mib_per_session",
            &format!("memory per open console session (PSS with {sessions} sessions − idle, ÷ {sessions})"),
            "MiB",
            per_session("virtdeck"),
        )
        .vs("websockify", per_session("websockify"))
        .target(Target::Below(1.0)),
    );
    figures.push(
        Figure::new(
            CONSOLE,
            "console_pss_sessions_mib",
            &format!("PSS with {sessions} open console sessions"),
            "MiB",
            f("pss_sessions_mib", "virtdeck"),
        )
        .vs("websockify", f("pss_sessions_mib", "websockify")),
    );
}

// ---- machine ----

fn first_line(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

fn machine_info() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|k| format!("{:.1} GiB", k / 1024.0 / 1024.0))
        .unwrap_or_default();
    let dirty = !first_line("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    vec![
        (
            "date (UTC)".into(),
            first_line("date", &["-u", "+%Y-%m-%d %H:%M"]),
        ),
        (
            "commit".into(),
            format!(
                "{}{}",
                first_line("git", &["rev-parse", "--short", "HEAD"]),
                if dirty {
                    " (with uncommitted changes)"
                } else {
                    ""
                }
            ),
        ),
        (
            "CPU".into(),
            format!(
                "{} × {cpu} (shared with other work)",
                std::thread::available_parallelism().map_or(0, |n| n.get())
            ),
        ),
        ("memory".into(), mem),
        ("kernel".into(), first_line("uname", &["-r"])),
        (
            "libvirt (virsh)".into(),
            first_line("virsh", &["--version"]),
        ),
        ("Chromium".into(), first_line("chromium", &["--version"])),
        ("wrk".into(), first_line("wrk", &["-v"])),
        (
            "virtdeck".into(),
            "release build, `virtdeck serve --no-tls` on 127.0.0.1, default settings".into(),
        ),
    ]
}
