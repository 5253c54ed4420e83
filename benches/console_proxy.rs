//! `make bench`: virtdeck's VNC websocket proxy against websockify, side by side on the
//! same loopback TCP source, in one run: throughput (source → browser), round-trip
//! latency (small RFB messages echoed by the source), and proportional memory (PSS) of
//! each proxy with 200 console sessions open. Prints a table with ratios.
//!
//! virtdeck runs in a child process (this binary re-run with VD_BENCH_CHILD set) on the
//! demo host, its VNC endpoint pointed at the bench's TCP source: everything else, from
//! ticket minting to the RFB-reading proxy, is the real code path.

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use virtdeck::hypervisor::*;

const THROUGHPUT_BYTES: usize = 128 * 1024 * 1024;
/// Alternating throughput rounds per proxy (median reported).
const THROUGHPUT_ROUNDS: usize = 5;
const ROUND_TRIPS: usize = 2000;
const SESSIONS: usize = 200;
const CHUNK_BYTES: usize = 64 * 1024;
/// The client's side of the RFB handshake: version, security "none", shared ClientInit.
const HANDSHAKE: &[u8] = b"RFB 003.008\n\x01\x01";
/// A FramebufferUpdateRequest: a valid 10-byte RFB message for the latency test.
const UPDATE_REQUEST: [u8; 10] = [3, 1, 0, 0, 0, 0, 0, 64, 0, 48];

// ---- the child: virtdeck with its VNC endpoint on the bench source ----

struct BenchHv {
    inner: Arc<dyn Hypervisor>,
    source: std::net::SocketAddr,
}

impl Hypervisor for BenchHv {
    fn uri(&self) -> &str {
        "bench:///loopback-source"
    }
    fn host_facts(&self) -> HvResult<virtdeck::domain::host::HostFacts> {
        self.inner.host_facts()
    }
    fn kvm_status(&self) -> virtdeck::domain::host::KvmStatus {
        self.inner.kvm_status()
    }
    fn guest_capabilities(
        &self,
        virt_type: virtdeck::domain::host::VirtType,
    ) -> HvResult<virtdeck::domain::guest_caps::GuestCapabilities> {
        self.inner.guest_capabilities(virt_type)
    }
    fn list_vms(&self) -> HvResult<Vec<virtdeck::domain::vm::VmSummary>> {
        self.inner.list_vms()
    }
    fn pools(&self) -> HvResult<Vec<virtdeck::domain::inventory::PoolInfo>> {
        self.inner.pools()
    }
    fn networks(&self) -> HvResult<Vec<virtdeck::domain::inventory::NetworkInfo>> {
        self.inner.networks()
    }
    fn domain_xml(&self, name: &str) -> HvResult<String> {
        self.inner.domain_xml(name)
    }
    fn all_domain_xml(&self) -> HvResult<Vec<String>> {
        self.inner.all_domain_xml()
    }
    fn create_volume(&self, pool: &str, xml: &str) -> HvResult<String> {
        self.inner.create_volume(pool, xml)
    }
    fn delete_volume(&self, path: &str) -> HvResult<()> {
        self.inner.delete_volume(path)
    }
    fn define(&self, xml: &str) -> HvResult<()> {
        self.inner.define(xml)
    }
    fn undefine(&self, name: &str) -> HvResult<()> {
        self.inner.undefine(name)
    }
    fn act(&self, name: &str, action: virtdeck::domain::vm::VmAction) -> HvResult<()> {
        self.inner.act(name, action)
    }
    fn set_autostart(&self, name: &str, on: bool) -> HvResult<()> {
        self.inner.set_autostart(name, on)
    }
    fn set_vm_metadata(&self, name: &str, element_xml: Option<&str>) -> HvResult<()> {
        self.inner.set_vm_metadata(name, element_xml)
    }
    fn grow_disk(&self, name: &str, target: &str, bytes: u64) -> HvResult<()> {
        self.inner.grow_disk(name, target, bytes)
    }
    fn update_device(&self, name: &str, device_xml: &str) -> HvResult<()> {
        self.inner.update_device(name, device_xml)
    }
    fn backup_begin(&self, name: &str, backup_xml: &str, checkpoint_xml: &str) -> HvResult<()> {
        self.inner.backup_begin(name, backup_xml, checkpoint_xml)
    }
    fn backup_status(&self, name: &str) -> HvResult<virtdeck::hypervisor::BackupStatus> {
        self.inner.backup_status(name)
    }
    fn freeze_filesystems(&self, name: &str) -> HvResult<u32> {
        self.inner.freeze_filesystems(name)
    }
    fn thaw_filesystems(&self, name: &str) -> HvResult<()> {
        self.inner.thaw_filesystems(name)
    }
    fn abort_backup(&self, name: &str) -> HvResult<()> {
        self.inner.abort_backup(name)
    }
    fn checkpoints(&self, name: &str) -> HvResult<Vec<String>> {
        self.inner.checkpoints(name)
    }
    fn delete_checkpoint(&self, name: &str, checkpoint: &str) -> HvResult<()> {
        self.inner.delete_checkpoint(name, checkpoint)
    }
    fn host_devices(&self) -> HvResult<Vec<virtdeck::domain::host_devices::HostDevice>> {
        self.inner.host_devices()
    }
    fn change_device_live(&self, name: &str, change: LiveChange, device_xml: &str) -> HvResult<()> {
        self.inner.change_device_live(name, change, device_xml)
    }
    fn set_description(&self, name: &str, text: &str) -> HvResult<()> {
        self.inner.set_description(name, text)
    }
    fn set_size(&self, name: &str, vcpus: u32, memory_mib: u64) -> HvResult<()> {
        self.inner.set_size(name, vcpus, memory_mib)
    }
    fn clone_volume(&self, source_path: &str, xml: &str) -> HvResult<String> {
        self.inner.clone_volume(source_path, xml)
    }
    fn snapshots(&self, name: &str) -> HvResult<Vec<virtdeck::domain::snapshot::SnapshotInfo>> {
        self.inner.snapshots(name)
    }
    fn create_snapshot(&self, name: &str, xml: &str) -> HvResult<()> {
        self.inner.create_snapshot(name, xml)
    }
    fn revert_snapshot(&self, name: &str, snapshot: &str) -> HvResult<()> {
        self.inner.revert_snapshot(name, snapshot)
    }
    fn delete_snapshot(&self, name: &str, snapshot: &str) -> HvResult<()> {
        self.inner.delete_snapshot(name, snapshot)
    }
    fn guest_addresses(&self, name: &str) -> HvResult<Vec<virtdeck::domain::vm::GuestAddress>> {
        self.inner.guest_addresses(name)
    }
    fn start_transient(&self, xml: &str) -> HvResult<()> {
        self.inner.start_transient(xml)
    }
    fn watch_events(&self, sink: EventSink) -> HvResult<()> {
        self.inner.watch_events(sink)
    }
    fn network_xml(&self, name: &str) -> HvResult<String> {
        self.inner.network_xml(name)
    }
    fn define_network(&self, xml: &str) -> HvResult<()> {
        self.inner.define_network(xml)
    }
    fn start_network(&self, name: &str) -> HvResult<()> {
        self.inner.start_network(name)
    }
    fn stop_network(&self, name: &str) -> HvResult<()> {
        self.inner.stop_network(name)
    }
    fn set_network_autostart(&self, name: &str, on: bool) -> HvResult<()> {
        self.inner.set_network_autostart(name, on)
    }
    fn undefine_network(&self, name: &str) -> HvResult<()> {
        self.inner.undefine_network(name)
    }
    fn vnc_endpoint(&self, _name: &str) -> Result<VncEndpoint, ConsoleError> {
        Ok(VncEndpoint::Tcp(self.source))
    }
    // The rest is what the bench child has always measured with (once the trait's
    // defaults): no serial console, screenshots, storage or usage statistics, and the
    // kickstart lookup composed from `all_domain_xml`.
    fn open_serial(&self, _name: &str, _force: bool) -> Result<SerialConsole, ConsoleError> {
        Err(consoles_not_available())
    }
    fn screenshot(&self, _name: &str) -> Result<Screenshot, ConsoleError> {
        Err(consoles_not_available())
    }
    fn pool_statuses(&self) -> HvResult<Vec<virtdeck::domain::storage::PoolStatus>> {
        Err(storage_not_available("list the storage pools"))
    }
    fn pool_volumes(&self, _pool: &str) -> HvResult<Vec<virtdeck::domain::storage::PoolVolume>> {
        Err(storage_not_available("list a pool's volumes"))
    }
    fn define_pool(&self, _xml: &str) -> HvResult<()> {
        Err(storage_not_available("define the pool"))
    }
    fn build_pool(&self, _name: &str) -> HvResult<()> {
        Err(storage_not_available("build the pool"))
    }
    fn start_pool(&self, _name: &str) -> HvResult<()> {
        Err(storage_not_available("start the pool"))
    }
    fn stop_pool(&self, _name: &str) -> HvResult<()> {
        Err(storage_not_available("stop the pool"))
    }
    fn refresh_pool(&self, _name: &str) -> HvResult<()> {
        Err(storage_not_available("refresh the pool"))
    }
    fn set_pool_autostart(&self, _name: &str, _on: bool) -> HvResult<()> {
        Err(storage_not_available("change the pool's autostart"))
    }
    fn delete_pool_storage(&self, _name: &str) -> HvResult<()> {
        Err(storage_not_available("delete the pool's storage"))
    }
    fn undefine_pool(&self, _name: &str) -> HvResult<()> {
        Err(storage_not_available("remove the pool's definition"))
    }
    fn network_statuses(&self) -> HvResult<Vec<virtdeck::domain::storage::NetworkStatus>> {
        Err(storage_not_available("list the networks"))
    }
    fn remove_network(&self, _name: &str) -> HvResult<()> {
        Err(storage_not_available("remove the network"))
    }
    fn pool_xml(&self, _name: &str) -> HvResult<String> {
        Err(storage_not_available("read the pool's definition"))
    }
    fn usage_sample(&self) -> HvResult<virtdeck::domain::usage::UsageSample> {
        Err(usage_not_available())
    }
    fn resize_volume(&self, _path: &str, _capacity_bytes: u64, _shrink: bool) -> HvResult<()> {
        Err(storage_not_available("resize the volume"))
    }
    fn volume_download_bytes(&self, _path: &str) -> HvResult<u64> {
        Err(storage_not_available("read the volume's size"))
    }
    fn download_volume(
        &self,
        _path: &str,
        _length: u64,
        _to: &mut dyn std::io::Write,
    ) -> HvResult<u64> {
        Err(storage_not_available("download the volume"))
    }
    fn upload_volume(
        &self,
        _path: &str,
        _length: u64,
        _from: &mut dyn std::io::Read,
    ) -> HvResult<()> {
        Err(storage_not_available("upload into the volume"))
    }
    fn volume_xml(&self, _path: &str) -> HvResult<String> {
        Err(storage_not_available("read the volume's description"))
    }
    fn live_domain_xml(&self, name: &str) -> HvResult<Option<String>> {
        live_domain_xml_from_all(self, name)
    }
    fn machine_types(&self) -> HvResult<Vec<String>> {
        Err(migration_not_available("list machine types"))
    }
    fn migrate(&self, _: &str, _: &str, _: &MigrateOptions) -> HvResult<()> {
        Err(migration_not_available("migrate"))
    }
    fn migration_progress(&self, _: &str) -> HvResult<Option<MigrationProgress>> {
        Err(migration_not_available("read migration progress"))
    }
    fn abort_migration(&self, _: &str) -> HvResult<()> {
        Err(migration_not_available("abort a migration"))
    }
    fn cpu_runs_here(&self, _: &str, _: &str) -> HvResult<Option<bool>> {
        Ok(None)
    }
}

fn run_child(source: std::net::SocketAddr) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let data = tempfile::tempdir().expect("temp dir");
        let mut cfg = virtdeck::config::Config {
            listen: "127.0.0.1:0".into(),
            data_dir: data.path().to_path_buf(),
            demo: true,
            ..Default::default()
        };
        cfg.tls.enabled = false;
        cfg.console.max_sessions_per_vm = SESSIONS + 10;
        // Every session comes from 127.0.0.1: the per-address connection cap (64 by
        // default, for strangers' floods) would close most of them at accept.
        cfg.http.max_connections_per_address = SESSIONS * 4;
        cfg.log.filter = "warn".into();
        let running = virtdeck::web::server::start_with(
            cfg,
            Some(Box::new(move |inner| Arc::new(BenchHv { inner, source }))),
        )
        .expect("virtdeck starts");
        println!(
            "READY {} {}",
            running.base_url(),
            running.setup_url.clone().expect("setup link")
        );
        running.server.await.expect("server runs");
    });
}

// ---- the parent ----

/// The TCP source both proxies connect to: after the client's handshake it either
/// streams THROUGHPUT_BYTES ("stream" mode) or echoes every byte back ("echo" mode),
/// chosen by the first connection's order: it reads one mode byte from a side channel.
async fn source(listener: TcpListener, mode: Arc<std::sync::Mutex<&'static str>>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        let mode = *mode.lock().unwrap();
        tokio::spawn(async move {
            let mut hs = [0u8; HANDSHAKE.len()];
            if s.read_exact(&mut hs).await.is_err() {
                return;
            }
            match mode {
                "stream" => {
                    let chunk = vec![0x5au8; CHUNK_BYTES];
                    let mut sent = 0;
                    while sent < THROUGHPUT_BYTES {
                        if s.write_all(&chunk).await.is_err() {
                            return;
                        }
                        sent += CHUNK_BYTES;
                    }
                    let mut rest = [0u8; 1];
                    let _ = s.read(&mut rest).await;
                }
                "echo" => {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
                _ => {
                    // "hold": keep the session open, idle.
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                    }
                }
            }
        });
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str, cookie: Option<&str>, origin: &str) -> Ws {
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("sec-websocket-protocol", HeaderValue::from_static("binary"));
    h.insert("origin", HeaderValue::from_str(origin).unwrap());
    if let Some(c) = cookie {
        h.insert("cookie", HeaderValue::from_str(c).unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .unwrap_or_else(|e| panic!("websocket {url}: {e}"));
    ws.send(Message::Binary(HANDSHAKE.to_vec().into()))
        .await
        .unwrap();
    ws
}

async fn throughput(ws: &mut Ws) -> f64 {
    let start = Instant::now();
    let mut got = 0usize;
    while got < THROUGHPUT_BYTES {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => got += b.len(),
            Some(Ok(_)) => {}
            other => panic!("stream ended after {got} bytes: {other:?}"),
        }
    }
    got as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64()
}

async fn latency(ws: &mut Ws) -> (Duration, Duration) {
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let start = Instant::now();
        ws.send(Message::Binary(UPDATE_REQUEST.to_vec().into()))
            .await
            .unwrap();
        let mut got = 0;
        while got < UPDATE_REQUEST.len() {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => got += b.len(),
                Some(Ok(_)) => {}
                other => panic!("echo ended: {other:?}"),
            }
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

/// Proportional set size of a process and its descendants, in KiB.
fn pss_kib(pid: u32) -> u64 {
    let mut total = 0;
    let mut pids = vec![pid];
    while let Some(p) = pids.pop() {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            total += s
                .lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}

/// CPU time (user + system) of a process and of its exited, reaped children, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at field 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14–17, i.e. 11–14 after the name.
    let ticks: u64 = fields[11..15]
        .iter()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if let Ok(src) = std::env::var("VD_BENCH_CHILD") {
        run_child(src.parse().expect("source address"));
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("console_proxy: a benchmark, not a test; run `make bench`");
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let src = listener.local_addr().unwrap();
    let mode = Arc::new(std::sync::Mutex::new("stream"));
    tokio::spawn(source(listener, mode.clone()));

    // virtdeck, in its own process.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("VD_BENCH_CHILD", src.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start virtdeck child");
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .find_map(|l| l.ok().filter(|l| l.starts_with("READY ")))
        .expect("virtdeck ready");
    let vd = KillOnDrop(child);
    let mut parts = line.split_whitespace().skip(1);
    let base = parts.next().unwrap().to_string();
    let setup = parts.next().unwrap().to_string();

    // websockify, on the same source.
    let ws_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let wsk = KillOnDrop(
        Command::new("websockify")
            .arg(format!("127.0.0.1:{ws_port}"))
            .arg(src.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("websockify is installed (scripts/install-deps.sh test)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", ws_port)).is_err() {
        assert!(Instant::now() < deadline, "websockify did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wsk_url = format!("ws://127.0.0.1:{ws_port}/");
    let wsk_origin = format!("http://127.0.0.1:{ws_port}");

    // Sign in to virtdeck as the first admin.
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let http = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = setup.split("token=").nth(1).unwrap().to_string();
    http.post(format!("{base}/setup"))
        .form(&[
            ("token", token.as_str()),
            ("username", "admin"),
            ("password", "bench-password-1"),
            ("password_confirm", "bench-password-1"),
        ])
        .send()
        .await
        .unwrap();
    let page = http
        .get(format!("{base}/host"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"csrf\" value=\"";
    let i = page.find(marker).expect("csrf") + marker.len();
    let csrf = page[i..i + page[i..].find('"').unwrap()].to_string();
    use reqwest::cookie::CookieStore;
    let cookie = jar
        .cookies(&base.parse().unwrap())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let vd_url = || {
        let http = http.clone();
        let base = base.clone();
        let csrf = csrf.clone();
        async move {
            let v: serde_json::Value = http
                .post(format!("{base}/vms/web01/console/vnc/ticket"))
                .header("x-csrf-token", csrf)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let path = v["websocket"].as_str().unwrap_or_else(|| panic!("{v}"));
            format!("{}{path}", base.replacen("http", "ws", 1))
        }
    };

    println!("virtdeck console proxy vs websockify, same loopback TCP source");
    let vd_pid = vd.0.id();
    let wsk_pid = wsk.0.id();
    let idle_vd = pss_kib(vd_pid);
    let idle_wsk = pss_kib(wsk_pid);

    // Throughput: alternating rounds, so both proxies see the same background load; the
    // median of each is reported.
    *mode.lock().unwrap() = "stream";
    let (mut tps_vd, mut tps_wsk) = (Vec::new(), Vec::new());
    let (mut cpu_vd, mut cpu_wsk) = (0.0, 0.0);
    for _ in 0..THROUGHPUT_ROUNDS {
        let mut ws = open(&vd_url().await, Some(&cookie), &base).await;
        let before = cpu_seconds(vd_pid);
        tps_vd.push(throughput(&mut ws).await);
        cpu_vd += cpu_seconds(vd_pid) - before;
        drop(ws);
        let mut ws = open(&wsk_url, None, &wsk_origin).await;
        let before = cpu_seconds(wsk_pid);
        tps_wsk.push(throughput(&mut ws).await);
        drop(ws);
        // websockify serves each connection in a child process: its CPU time reaches the
        // parent's account once the child has exited and been reaped.
        tokio::time::sleep(Duration::from_millis(300)).await;
        cpu_wsk += cpu_seconds(wsk_pid) - before;
    }
    let gib = (THROUGHPUT_ROUNDS * THROUGHPUT_BYTES) as f64 / (1u64 << 30) as f64;
    let (cpu_vd, cpu_wsk) = (cpu_vd / gib, cpu_wsk / gib);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (tp_vd, tp_wsk) = (median(&mut tps_vd), median(&mut tps_wsk));

    // Latency.
    *mode.lock().unwrap() = "echo";
    let mut ws = open(&vd_url().await, Some(&cookie), &base).await;
    let (p50_vd, p99_vd) = latency(&mut ws).await;
    drop(ws);
    let mut ws = open(&wsk_url, None, &wsk_origin).await;
    let (p50_wsk, p99_wsk) = latency(&mut ws).await;
    drop(ws);

    // Memory with SESSIONS open sessions each.
    *mode.lock().unwrap() = "hold";
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut held = Vec::new();
    for _ in 0..SESSIONS {
        held.push(open(&vd_url().await, Some(&cookie), &base).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mem_vd = pss_kib(vd_pid);
    drop(held);
    let mut held = Vec::new();
    for _ in 0..SESSIONS {
        held.push(open(&wsk_url, None, &wsk_origin).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mem_wsk = pss_kib(wsk_pid);
    drop(held);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!("| measure | virtdeck | websockify | virtdeck / websockify |");
    println!("|---|---|---|---|");
    println!(
        "| throughput, median of {THROUGHPUT_ROUNDS} alternating rounds of {} MiB source → client (MiB/s) | {tp_vd:.0} | {tp_wsk:.0} | {:.2} |",
        THROUGHPUT_BYTES >> 20,
        tp_vd / tp_wsk
    );
    println!(
        "| CPU time per GiB proxied (s), lower is better | {cpu_vd:.2} | {cpu_wsk:.2} | {:.2} |",
        cpu_vd / cpu_wsk
    );
    println!(
        "| round trip p50, {ROUND_TRIPS} × 10-byte RFB message (ms) | {:.3} | {:.3} | {:.2} |",
        ms(p50_vd),
        ms(p50_wsk),
        ms(p50_vd) / ms(p50_wsk)
    );
    println!(
        "| round trip p99 (ms) | {:.3} | {:.3} | {:.2} |",
        ms(p99_vd),
        ms(p99_wsk),
        ms(p99_vd) / ms(p99_wsk)
    );
    println!(
        "| memory idle, PSS (MiB) | {:.1} | {:.1} | {:.2} |",
        idle_vd as f64 / 1024.0,
        idle_wsk as f64 / 1024.0,
        idle_vd as f64 / idle_wsk as f64
    );
    println!(
        "| memory with {SESSIONS} open sessions, PSS (MiB) | {:.1} | {:.1} | {:.2} |",
        mem_vd as f64 / 1024.0,
        mem_wsk as f64 / 1024.0,
        mem_vd as f64 / mem_wsk as f64
    );
    println!();
    println!("virtdeck: release build, in-process RFB reading, tickets and origin checks on every session;");
    println!("websockify: Debian's Python websockify, one process per connection (PSS summed over its processes).");

    // For the `make bench` report (benches/scale.rs folds these in).
    let pair = |vd: f64, wsk: f64| serde_json::json!({"virtdeck": vd, "websockify": wsk});
    let mib = |kib: u64| kib as f64 / 1024.0;
    let figures = serde_json::json!({
        "sessions": SESSIONS,
        "throughput_bytes": THROUGHPUT_BYTES,
        "round_trips": ROUND_TRIPS,
        "throughput_mib_s": pair(tp_vd, tp_wsk),
        "rtt_p50_ms": pair(ms(p50_vd), ms(p50_wsk)),
        "rtt_p99_ms": pair(ms(p99_vd), ms(p99_wsk)),
        "pss_idle_mib": pair(mib(idle_vd), mib(idle_wsk)),
        "pss_sessions_mib": pair(mib(mem_vd), mib(mem_wsk)),
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).expect("create target/bench");
    std::fs::write(
        out.join("console_proxy.json"),
        serde_json::to_string_pretty(&figures).expect("figures as JSON"),
    )
    .expect("write target/bench/console_proxy.json");
}
