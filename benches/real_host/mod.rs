//! What the benches on the real libvirtd (`qemu:///system`) share: virsh, a directory
//! pool removed afterwards, the release build of virtdeck started as its own process
//! with an admin's API token, and a process's resident memory.

use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const URI: &str = "qemu:///system";
pub const PASSWORD: &str = "bench-password-1";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program`; its standard output, or its standard error as the error.
pub fn command(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| program.to_string())?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn virsh(args: &[&str]) -> Result<String> {
    let mut all = vec!["-c", URI];
    all.extend_from_slice(args);
    command("virsh", &all)
}

/// A directory pool `vdbench-<what>-<pid>` under /var/tmp, removed (with its files) on
/// drop.
pub struct Pool {
    pub name: String,
    pub dir: PathBuf,
}

impl Pool {
    pub fn new(what: &str) -> Result<Pool> {
        let name = format!("vdbench-{what}-{}", std::process::id());
        let dir = PathBuf::from(format!("/var/tmp/{name}"));
        std::fs::create_dir_all(&dir)?;
        let pool = Pool { name, dir };
        virsh(&[
            "pool-define-as",
            &pool.name,
            "dir",
            "--target",
            pool.dir.to_str().unwrap_or_default(),
        ])?;
        virsh(&["pool-start", &pool.name])?;
        Ok(pool)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = virsh(&["pool-destroy", &self.name]);
        let _ = virsh(&["pool-undefine", &self.name]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process killed on drop.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process's resident memory (VmRSS), in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// `virtdeck --data-dir DATA ARGS` with `stdin`; its standard output.
fn cli(bin: &Path, data: &Path, args: &[&str], stdin: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "virtdeck {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The release build of virtdeck serving on the real libvirtd, without TLS, with an
/// admin's API token.
pub struct Virtdeck {
    pub server: Server,
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl Virtdeck {
    /// Starts it on a fresh data directory `out/data-<what>` and waits until it answers.
    pub async fn start(out: &Path, what: &str) -> Result<Virtdeck> {
        let bin = root().join("target/release/virtdeck");
        ensure!(
            bin.exists(),
            "{} is missing: `make bench` builds it",
            bin.display()
        );
        let data = out.join(format!("data-{what}"));
        let _ = std::fs::remove_dir_all(&data);
        cli(
            &bin,
            &data,
            &[
                "user",
                "add",
                "admin",
                "--role",
                "admin",
                "--password-stdin",
            ],
            &format!("{PASSWORD}\n"),
        )?;
        let token = cli(&bin, &data, &["token", "create", "--user", "admin"], "")?
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let server = Server(
            Command::new(&bin)
                .arg("--data-dir")
                .arg(&data)
                .args(["serve", "--no-tls", "--libvirt-uri", URI, "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            ensure!(Instant::now() < deadline, "virtdeck did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Virtdeck {
            server,
            base,
            token,
            client,
        })
    }

    pub fn pid(&self) -> u32 {
        self.server.0.id()
    }

    /// `method` `path` with the admin's token and `body`; the status and the JSON answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(reqwest::StatusCode, serde_json::Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status();
        Ok((status, r.json().await.unwrap_or(serde_json::Value::Null)))
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
