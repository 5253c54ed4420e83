//! `make bench`, upload part: a 2 GiB image uploaded through virtdeck into a directory
//! pool on the real libvirtd (`qemu:///system`), with virtdeck's resident memory sampled
//! every 50 ms; next to it, the same bytes uploaded with `virsh vol-upload` from a file
//! (what an admin does by hand), its memory sampled the same way. Writes
//! `target/bench/upload.json`, which `benches/scale.rs` folds into the report.
//!
//! Needs a running libvirtd (`make bench` starts it with scripts/start-libvirt.sh) and
//! ~2 GiB free in /var/tmp. The pool, volumes and file are removed afterwards.

#[allow(dead_code)]
mod real_host;

use anyhow::{anyhow, ensure, Context, Result};
use futures_util::StreamExt;
use real_host::{root, rss_mib, virsh, Pool, Virtdeck, URI};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOTAL: u64 = 2 << 30;
const CHUNK: usize = 1 << 20;
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("upload: a benchmark, not a test; run `make bench`");
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = rt.block_on(run()) {
        eprintln!("upload benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

/// The same pseudo-random bytes for both uploads, so neither gets a sparse shortcut.
fn chunk(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[derive(Default)]
struct Run {
    seconds: f64,
    before_mib: f64,
    peak_mib: f64,
}

impl Run {
    fn json(&self) -> Value {
        json!({
            "seconds": self.seconds,
            "mib_s": (TOTAL >> 20) as f64 / self.seconds,
            "rss_before_mib": self.before_mib,
            "rss_peak_mib": self.peak_mib,
            "rss_growth_mib": self.peak_mib - self.before_mib,
        })
    }
}

async fn through_virtdeck(pool: &Pool, out: &Path) -> Result<Run> {
    let vd = Virtdeck::start(out, "upload").await?;
    let (c, base, token) = (&vd.client, &vd.base, &vd.token);
    // Warm up: the pool page's listing, as before any upload.
    c.get(format!("{base}/api/v1/pools/{}/volumes", pool.name))
        .bearer_auth(token)
        .send()
        .await?;
    let pid = vd.pid();
    let before = rss_mib(pid).ok_or_else(|| anyhow!("no VmRSS"))?;
    let body = futures_util::stream::iter(0..TOTAL / CHUNK as u64)
        .map(|i| Ok::<_, std::io::Error>(chunk(i)));
    let url = format!("{base}/api/v1/pools/{}/volumes/bench.img", pool.name);
    let started = Instant::now();
    let upload = tokio::spawn(
        c.put(url)
            .bearer_auth(token)
            .header("content-length", TOTAL.to_string())
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    let mut peak = before;
    while !upload.is_finished() {
        peak = peak.max(rss_mib(pid).unwrap_or(0.0));
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let r = upload.await??;
    ensure!(r.status() == 201, "the upload answered {}", r.status());
    let len = std::fs::metadata(pool.dir.join("bench.img"))?.len();
    ensure!(len == TOTAL, "the volume has {len} bytes, not {TOTAL}");
    virsh(&["vol-delete", "--pool", &pool.name, "bench.img"])?;
    Ok(Run {
        seconds,
        before_mib: before,
        peak_mib: peak,
    })
}

async fn through_virsh(pool: &Pool) -> Result<Run> {
    use std::io::Write;
    let file = PathBuf::from(format!(
        "/var/tmp/vdbench-upload-{}.img",
        std::process::id()
    ));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for i in 0..TOTAL / CHUNK as u64 {
            f.write_all(&chunk(i))?;
        }
        f.flush()?;
    }
    let size = TOTAL.to_string();
    virsh(&[
        "vol-create-as",
        &pool.name,
        "ref.img",
        &size,
        "--format",
        "raw",
    ])?;
    let started = Instant::now();
    let mut child = Command::new("virsh")
        .args(["-c", URI, "vol-upload", "--pool", &pool.name, "ref.img"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut before = None;
    let mut peak: f64 = 0.0;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if let Some(m) = rss_mib(pid) {
            before.get_or_insert(m);
            peak = peak.max(m);
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    ensure!(status.success(), "virsh vol-upload failed");
    let _ = virsh(&["vol-delete", "--pool", &pool.name, "ref.img"]);
    Ok(Run {
        seconds,
        before_mib: before.unwrap_or(peak),
        peak_mib: peak,
    })
}

async fn run() -> Result<()> {
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    virsh(&["version"]).context("libvirtd must run: scripts/start-libvirt.sh")?;
    let pool = Pool::new("upload")?;
    println!("upload: 2 GiB through virtdeck into pool {}", pool.name);
    let ours = through_virtdeck(&pool, &out).await?;
    println!(
        "  virtdeck: {:.1} s, VmRSS {:.1} → peak {:.1} MiB",
        ours.seconds, ours.before_mib, ours.peak_mib
    );
    println!("upload: the same bytes with virsh vol-upload from a file");
    let reference = through_virsh(&pool).await?;
    println!(
        "  virsh: {:.1} s, VmRSS peak {:.1} MiB",
        reference.seconds, reference.peak_mib
    );
    let report = json!({
        "bytes": TOTAL,
        "virtdeck": ours.json(),
        "virsh": reference.json(),
    });
    std::fs::write(
        out.join("upload.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}
