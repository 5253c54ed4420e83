//! `make bench`, migration: the same running TCG guest moved live between the two libvirt
//! hosts of scripts/migration-rig.sh, alternately by `virsh migrate --live --p2p
//! --persistent --undefinesource` and by virtdeck (POST /api/v1/vms/{name}/migrate to a
//! paired peer, timed until its job has ended), there and back, in one run. Reports the
//! median wall time and the median downtime libvirt measured (`domjobinfo --completed` on
//! the destination) of each, in `target/bench/migration.json`, which `benches/scale.rs`
//! folds into the report. virtdeck's time includes its bookkeeping on both hosts (the
//! destination's admission and record, the job); the target is a ratio ≤ 1.05.

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const TOKEN: &str = "vdk_bench-migration-token-0123456789abcdef0123456789";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("migration: a benchmark, not a test; run `make bench`");
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = rt.block_on(run()) {
        eprintln!("migration benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rig() -> Result<HashMap<String, String>> {
    let out = Command::new("bash")
        .arg(root().join("scripts/migration-rig.sh"))
        .arg("up")
        .output()?;
    ensure!(
        out.status.success(),
        "migration rig: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn virsh(uri: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// libvirt's measured downtime of the last completed migration job, on the destination.
fn downtime_ms(uri: &str, vm: &str) -> f64 {
    virsh(uri, &["domjobinfo", vm, "--completed"])
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Total downtime:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

struct Host {
    base: String,
    _data: tempfile::TempDir,
}

async fn start_virtdeck(
    name: &str,
    uri: &str,
    migrate_uri: &str,
    shared_dir: &str,
) -> Result<Host> {
    let data = tempfile::tempdir()?;
    {
        // An admin with an API token, as `virtdeck user add` and `token create` make them.
        let store = virtdeck::store::Store::open(&data.path().join("virtdeck.db"))?;
        let phc = virtdeck::auth::password::hash_password("bench-password-1")?;
        let id = store.create_user("bench", "admin", &phc, 0)?;
        store.create_api_token(id, &virtdeck::auth::secret::sha256_hex(TOKEN), "bench", 0)?;
    }
    let mut cfg = virtdeck::config::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: data.path().to_path_buf(),
        libvirt_uri: uri.into(),
        ..Default::default()
    };
    cfg.virt_type = virtdeck::domain::host::VirtTypeSetting::Qemu;
    cfg.fleet.name = Some(name.into());
    cfg.fleet.migration_uri = migrate_uri.into();
    cfg.fleet.shared_dirs = vec![shared_dir.into()];
    cfg.fetch.allow = vec!["127.0.0.0/8".into()];
    let running = virtdeck::web::server::start(cfg)?;
    let base = running.base_url();
    tokio::spawn(running.server);
    Ok(Host { base, _data: data })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
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

/// virtdeck moves `vm` from `from` to the peer `to`; answers the wall time until its job
/// has ended.
async fn through_virtdeck(c: &reqwest::Client, from: &Host, vm: &str, to: &str) -> Result<f64> {
    let started = Instant::now();
    let job = post(
        c,
        &format!("{}/api/v1/vms/{vm}/migrate", from.base),
        json!({"to": to}),
    )
    .await?;
    let id = job["job"]
        .as_i64()
        .ok_or_else(|| anyhow!("no job in {job}"))?;
    loop {
        let j: Value = c
            .get(format!("{}/api/v1/jobs/{id}", from.base))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        match j["state"].as_str() {
            Some("running") => tokio::time::sleep(Duration::from_millis(10)).await,
            Some("succeeded") => return Ok(started.elapsed().as_secs_f64()),
            _ => return Err(anyhow!("the migration failed: {j}")),
        }
    }
}

fn through_virsh(from_uri: &str, vm: &str, to_uri: &str) -> Result<f64> {
    let started = Instant::now();
    virsh(
        from_uri,
        &[
            "migrate",
            "--live",
            "--p2p",
            "--persistent",
            "--undefinesource",
            vm,
            to_uri,
        ],
    )?;
    Ok(started.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Waits until the guest prints its banner on the serial console (through virtdeck's own
/// adapter), so the moves copy a booted guest.
async fn wait_booted(uri: &str, vm: &str) -> Result<()> {
    use virtdeck::hypervisor::Hypervisor;
    let hv = virtdeck::adapters::libvirt::Libvirt::open(
        uri,
        virtdeck::domain::host::KvmStatus::Missing,
    )?;
    let mut console = hv.open_serial(vm, true).map_err(|e| anyhow!("{e}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = String::new();
    while Instant::now() < deadline {
        console
            .input
            .write_all(b"echo booted-for-bench\r")
            .map_err(|e| anyhow!("{e}"))?;
        if let Ok(Some(b)) =
            tokio::time::timeout(Duration::from_secs(2), console.output.recv()).await
        {
            console.input.output_taken();
            seen.push_str(&String::from_utf8_lossy(&b));
            if seen.lines().any(|l| l.trim() == "booted-for-bench") {
                return Ok(());
            }
        }
    }
    Err(anyhow!("the guest never answered on its serial console"))
}

async fn run() -> Result<()> {
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let env = rig().context("scripts/migration-rig.sh up (needs root and libvirt)")?;
    let (a, b) = (env["RIG_A_URI"].clone(), env["RIG_B_URI"].clone());
    let vm = format!("vdbench-mig-{}", std::process::id());
    let boot = Path::new(&env["RIG_SHARED_DIR"]).join(&vm);
    std::fs::create_dir_all(&boot)?;
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::copy(root().join("target/test-guest").join(f), boot.join(f))
            .context("the test guest (scripts/build-test-guest.sh)")?;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&boot, std::fs::Permissions::from_mode(0o755))?;
        for f in ["vmlinuz", "initrd.img"] {
            std::fs::set_permissions(boot.join(f), std::fs::Permissions::from_mode(0o644))?;
        }
    }
    let xml = format!(
        "<domain type='qemu'><name>{vm}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{k}</kernel><initrd>{i}</initrd>\
         <cmdline>console=ttyS0,115200 panic=-1</cmdline></os><features><acpi/></features>\
         <devices><serial type='pty'><target port='0'/></serial>\
         <console type='pty'><target type='serial' port='0'/></console>\
         <memballoon model='none'/></devices></domain>",
        k = boot.join("vmlinuz").display(),
        i = boot.join("initrd.img").display(),
    );
    std::fs::write(boot.join("domain.xml"), xml)?;
    virsh(
        &a,
        &[
            "define",
            boot.join("domain.xml").to_str().unwrap_or_default(),
        ],
    )?;
    virsh(&a, &["start", &vm])?;
    let result = measure(&env, &vm).await;
    for uri in [&a, &b] {
        let _ = virsh(uri, &["destroy", &vm]);
        let _ = virsh(uri, &["undefine", &vm]);
    }
    let _ = std::fs::remove_dir_all(&boot);
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::write(
        out.join("migration.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}

async fn measure(env: &HashMap<String, String>, vm: &str) -> Result<Value> {
    let (a, b) = (env["RIG_A_URI"].clone(), env["RIG_B_URI"].clone());
    wait_booted(&a, vm).await?;
    let shared = &env["RIG_SHARED_DIR"];
    let alpha = start_virtdeck("alpha", &a, &env["RIG_A_MIGRATE_URI"], shared).await?;
    let beta = start_virtdeck("beta", &b, &env["RIG_B_MIGRATE_URI"], shared).await?;
    let c = client();
    let inv = post(
        &c,
        &format!("{}/api/v1/fleet/invitations", beta.base),
        json!({}),
    )
    .await?;
    let contact = post(
        &c,
        &format!("{}/api/v1/fleet/peers/check", alpha.base),
        json!({"url": beta.base}),
    )
    .await?;
    post(
        &c,
        &format!("{}/api/v1/fleet/peers", alpha.base),
        json!({"url": beta.base, "code": inv["code"], "fingerprint": contact["fingerprint"]}),
    )
    .await?;

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut ours_down, mut theirs_down) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        println!("migration: round {} of {ROUNDS}", round + 1);
        // virsh there and back.
        theirs.push(through_virsh(&a, vm, &env["RIG_B_MIGRATE_URI"])?);
        theirs_down.push(downtime_ms(&b, vm));
        theirs.push(through_virsh(&b, vm, &env["RIG_A_MIGRATE_URI"])?);
        theirs_down.push(downtime_ms(&a, vm));
        // virtdeck there (alpha → beta) and back (beta → alpha).
        ours.push(through_virtdeck(&c, &alpha, vm, "beta").await?);
        ours_down.push(downtime_ms(&b, vm));
        ours.push(through_virtdeck(&c, &beta, vm, "alpha").await?);
        ours_down.push(downtime_ms(&a, vm));
    }
    Ok(json!({
        "guest": "256 MiB TCG guest, booted, boot files on shared storage",
        "rounds": ROUNDS,
        "virtdeck": {
            "seconds_median": median(ours.clone()),
            "downtime_ms_median": median(ours_down.clone()),
            "seconds": ours,
            "downtime_ms": ours_down,
        },
        "virsh": {
            "seconds_median": median(theirs.clone()),
            "downtime_ms_median": median(theirs_down.clone()),
            "seconds": theirs,
            "downtime_ms": theirs_down,
        },
    }))
}
