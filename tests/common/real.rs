//! Helpers for tests on the real `qemu:///system` libvirtd.

use super::{bin, run_bin};
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const URI: &str = "qemu:///system";
pub const BANNER: &str = "virtdeck-test-guest ready";

/// Whether serial output shows the guest's banner. The guest's init prints it while the
/// kernel may still print too, so a kernel message can share its line (seen in CI:
/// `virtdeck-test-guest ready[    1.98] clocksource: …`).
pub fn shows_banner(text: &str) -> bool {
    text.lines().any(|l| l.contains(BANNER))
}

pub fn virsh(args: &[&str]) -> std::process::Output {
    Command::new("virsh")
        .arg("-c")
        .arg(URI)
        .args(args)
        .output()
        .expect("virsh is installed (make test installs it)")
}

pub fn guest_dir() -> PathBuf {
    let dir = std::env::var_os("VIRTDECK_TEST_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-guest"));
    assert!(
        dir.join("vmlinuz").exists() && dir.join("initrd.img").exists(),
        "the tiny test guest is missing in {}: run scripts/build-test-guest.sh (make test does)",
        dir.display()
    );
    dir
}

/// A directory pool on the real libvirtd, removed when the test ends.
pub struct TestPool {
    pub name: String,
    pub dir: PathBuf,
}

impl TestPool {
    pub fn new() -> TestPool {
        TestPool::with_prefix("vdtest-pool")
    }

    /// A pool named `{prefix}-{pid}`, in `/var/tmp` under the same name.
    pub fn with_prefix(prefix: &str) -> TestPool {
        let name = format!("{prefix}-{}", std::process::id());
        let dir = PathBuf::from(format!("/var/tmp/{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for args in [
            vec![
                "pool-define-as",
                &name,
                "dir",
                "--target",
                dir.to_str().unwrap(),
            ],
            vec!["pool-start", &name],
        ] {
            let out = virsh(&args);
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        TestPool { name, dir }
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        let _ = virsh(&["pool-destroy", &self.name]);
        let _ = virsh(&["pool-undefine", &self.name]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes a VM left by a failed run of the test below.
pub struct VmGuard(pub String);

impl Drop for VmGuard {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.0]);
        let _ = virsh(&[
            "undefine",
            &self.0,
            "--remove-all-storage",
            "--nvram",
            "--tpm",
            "--snapshots-metadata",
            "--checkpoints-metadata",
        ]);
        let _ = std::fs::remove_file(format!("/var/log/libvirt/qemu/{}-serial.log", self.0));
    }
}

pub async fn wait_for_state(api: &reqwest::Client, url: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let vm: serde_json::Value = api.get(url).send().await.unwrap().json().await.unwrap();
        if vm["state"] == want {
            return vm;
        }
        assert!(Instant::now() < deadline, "never reached {want}: {vm}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A directory QEMU's user may read (mode 0755 under /var/tmp), removed at the end.
pub fn qemu_readable_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Waits until the file's lines include `line` (a guest's serial log).
pub async fn wait_for_banner(path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if shows_banner(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {BANNER:?} in {path}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asserts libvirtd answers on qemu:///system.
pub fn require_libvirtd() {
    let version = virsh(&["version"]);
    assert!(
        version.status.success(),
        "libvirtd is not answering on {URI}: {}; run scripts/start-libvirt.sh (make test does)",
        String::from_utf8_lossy(&version.stderr)
    );
}

/// A reqwest client that sends the API token on every request.
pub fn bearer_client(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .pool_idle_timeout(super::IDLE_REUSE)
        .build()
        .unwrap()
}

/// A job the API accepted, once it has ended (polled every 100 ms, for at most five
/// minutes), with a client that carries its own credentials.
pub async fn job_end(
    api: &reqwest::Client,
    base: &str,
    job: &serde_json::Value,
) -> serde_json::Value {
    let id = job["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("not a job: {job}"));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let j: serde_json::Value = api
            .get(format!("{base}/api/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["state"] != "running" {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} still runs: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// virtdeck as a process of its own on the real libvirtd (no TLS), for tests that kill
/// and restart it; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An admin and an API token in `data_dir`, made with the shell tools.
pub fn admin_token(data_dir: &Path) -> String {
    let d = data_dir.to_str().unwrap();
    let out = run_bin(
        &[
            "--data-dir",
            d,
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "admin-password-1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_bin(&["--data-dir", d, "token", "create", "--user", "admin"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

/// Starts `virtdeck serve` on `data_dir` and waits until it answers.
pub async fn start_server(data_dir: &Path) -> ServerProcess {
    let port = super::webdriver::free_port();
    let child = bin()
        .args([
            "--data-dir",
            data_dir.to_str().unwrap(),
            "serve",
            "--no-tls",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--libvirt-uri",
            URI,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = ServerProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/healthz", server.base)).await {
            if r.status() == StatusCode::OK {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "virtdeck did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
