//! `make bench`, backup part: a running VM's 2 GiB qcow2 disk (every block written)
//! backed up in full through virtdeck (`POST /api/v1/vms/{vm}/backups`, libvirt's backup
//! API in push mode, then checksums), 5% of it changed, then an incremental backup; beside
//! it, the same with `virsh backup-begin` (push mode, a checkpoint each, the incremental on
//! the full's checkpoint) into the same target directory. virtdeck's clock runs from the
//! request until the API says the backup succeeded (copied and checksummed); virsh's until
//! libvirt's job has ended (both looked at every 20 ms). virtdeck's resident memory is sampled. Runs
//! alternate which tool goes first. Writes `target/bench/backup.json`, which
//! `benches/scale.rs` folds into the report.
//!
//! Needs a running libvirtd (`make bench` starts it) and ~10 GiB free in /var/tmp.
//! BENCH_BACKUP_RUNS (default 9: a 2 GiB copy varies by ±10% from run to run) sets the runs. Everything made is removed afterwards.

#[allow(dead_code)]
mod real_host;

use anyhow::{ensure, Context, Result};
use real_host::{command, median, rss_mib, virsh, Pool, Virtdeck};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const DISK_MIB: u64 = 2048;
/// What changes between the full and the incremental backup: 5% of the disk.
const CHANGED_MIB: u64 = DISK_MIB / 20;
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
const VM: &str = "vdbench-backup";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("backup: a benchmark, not a test; run `make bench`");
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let outcome = rt.block_on(run());
    remove_vm();
    if let Err(e) = outcome {
        eprintln!("backup benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

fn remove_vm() {
    let _ = virsh(&["destroy", VM]);
    let _ = virsh(&["undefine", VM, "--checkpoints-metadata"]);
}

/// The VM: no OS, only its disk (QEMU runs; the firmware finds nothing to boot).
fn start_vm(disk: &Path) -> Result<()> {
    remove_vm();
    let xml = format!(
        "<domain type='qemu'><name>{VM}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>\
         <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        disk.display()
    );
    let file = disk.with_extension("xml");
    std::fs::write(&file, xml)?;
    virsh(&["define", &file.display().to_string()])?;
    virsh(&["start", VM])?;
    Ok(())
}

/// Writes `mib` MiB at `offset_mib` through the running VM's disk device (QEMU's block
/// layer, so libvirt's checkpoints see the blocks as changed).
fn write_through_vm(offset_mib: u64, mib: u64, pattern: u8) -> Result<()> {
    let out = virsh(&[
        "qemu-monitor-command",
        "--hmp",
        VM,
        &format!(
            "qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P {pattern} {offset_mib}M {mib}M\""
        ),
    ])?;
    ensure!(
        !out.contains("rror") && !out.contains("onflict"),
        "qemu-io: {out}"
    );
    Ok(())
}

/// A backup through virtdeck: seconds until it succeeded, its kind, and virtdeck's peak
/// resident memory meanwhile.
async fn with_virtdeck(vd: &Virtdeck, target: &Pool) -> Result<(f64, String, f64, i64)> {
    let started = Instant::now();
    let (status, begun) = vd
        .call(
            Method::POST,
            &format!("/api/v1/vms/{VM}/backups"),
            Some(json!({"pool": target.name})),
        )
        .await?;
    ensure!(status == 202, "backup answered {status}: {begun}");
    let id = begun["id"].as_i64().unwrap_or_default();
    let mut peak: f64 = 0.0;
    loop {
        peak = peak.max(rss_mib(vd.pid()).unwrap_or(0.0));
        let (_, list) = vd
            .call(Method::GET, &format!("/api/v1/backups?vm={VM}"), None)
            .await?;
        let b = list["backups"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["id"] == id))
            .cloned()
            .unwrap_or(Value::Null);
        if b["state"] != "running" {
            ensure!(b["state"] == "succeeded", "the backup ended so: {b}");
            return Ok((
                started.elapsed().as_secs_f64(),
                b["kind"].as_str().unwrap_or_default().to_string(),
                peak,
                id,
            ));
        }
        ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the backup never ended"
        );
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// A backup with `virsh backup-begin` into `dir`, with checkpoint `checkpoint`,
/// incremental on `since` if given: seconds until libvirt's job ended.
async fn with_virsh(dir: &Path, checkpoint: &str, since: Option<&str>) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let incremental = since
        .map(|c| format!("<incremental>{c}</incremental>"))
        .unwrap_or_default();
    let backup_xml = dir.join("backup.xml");
    std::fs::write(
        &backup_xml,
        format!(
            "<domainbackup mode='push'>{incremental}<disks><disk name='vda' type='file'>\
             <target file='{}'/><driver type='qcow2'/></disk></disks></domainbackup>",
            dir.join("vda.qcow2").display()
        ),
    )?;
    let checkpoint_xml = dir.join("checkpoint.xml");
    std::fs::write(
        &checkpoint_xml,
        format!(
            "<domaincheckpoint><name>{checkpoint}</name><disks><disk name='vda' checkpoint='bitmap'/></disks></domaincheckpoint>"
        ),
    )?;
    let started = Instant::now();
    virsh(&[
        "backup-begin",
        VM,
        &backup_xml.display().to_string(),
        &checkpoint_xml.display().to_string(),
    ])?;
    loop {
        let job = virsh(&["domjobinfo", VM])?;
        if job
            .lines()
            .any(|l| l.starts_with("Job type:") && l.contains("None"))
        {
            let seconds = started.elapsed().as_secs_f64();
            let done = virsh(&["domjobinfo", VM, "--completed"])?;
            ensure!(
                done.lines()
                    .any(|l| l.starts_with("Job type:") && l.contains("Completed")),
                "virsh's backup did not complete: {done}"
            );
            return Ok(seconds);
        }
        ensure!(
            started.elapsed() < Duration::from_secs(900),
            "virsh's backup never ended"
        );
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

#[derive(Default)]
struct Figures {
    virtdeck_full_s: Vec<f64>,
    virtdeck_inc_s: Vec<f64>,
    virsh_full_s: Vec<f64>,
    virsh_inc_s: Vec<f64>,
    rss_growth_mib: Vec<f64>,
}

async fn run() -> Result<()> {
    let out = real_host::root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    virsh(&["version"]).context("libvirtd must run: scripts/start-libvirt.sh")?;
    let runs: usize = std::env::var("BENCH_BACKUP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9)
        .max(1);
    let disks = Pool::new("backup-disks")?;
    let target = Pool::new("backup-target")?;
    let disk = disks.dir.join("data.qcow2");
    let disk_s = disk.display().to_string();
    command(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            &disk_s,
            &format!("{DISK_MIB}M"),
        ],
    )?;
    // Every block written (not zeros), so both copy the whole disk; in 512 MiB writes
    // (qemu-io takes at most 2 GiB less a byte at once).
    let mut args: Vec<String> = vec!["-f".into(), "qcow2".into()];
    for at in (0..DISK_MIB).step_by(512) {
        args.push("-c".into());
        args.push(format!("write -P 0x5a {at}M 512M"));
    }
    args.push(disk_s.clone());
    command(
        "qemu-io",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    virsh(&["pool-refresh", &disks.name])?;
    start_vm(&disk)?;
    let vd = Virtdeck::start(&out, "backup").await?;
    let (status, t) = vd
        .call(
            Method::PUT,
            &format!("/api/v1/backup-targets/{}", target.name),
            Some(json!({})),
        )
        .await?;
    ensure!(status == 200, "the backup target: {status} {t}");
    let mut f = Figures::default();
    for run in 0..runs {
        let before = rss_mib(vd.pid()).unwrap_or(0.0);
        let virsh_dir = |kind: &str| target.dir.join(format!("virsh-{run}-{kind}"));
        let (full_cp, inc_cp) = (format!("vdbench-{run}-full"), format!("vdbench-{run}-inc"));
        let virtdeck_first = run % 2 == 0;
        let mut peak = before;
        let mut ours = Vec::new();
        for step in ["full", "incremental"] {
            if step == "incremental" {
                write_through_vm(run as u64 * CHANGED_MIB, CHANGED_MIB, 0x30 + run as u8)?;
            }
            let (dir, cp, since) = if step == "full" {
                (virsh_dir("full"), full_cp.as_str(), None)
            } else {
                (virsh_dir("inc"), inc_cp.as_str(), Some(full_cp.as_str()))
            };
            let mut theirs = 0.0;
            if !virtdeck_first {
                theirs = with_virsh(&dir, cp, since).await?;
            }
            let (seconds, kind, p, id) = with_virtdeck(&vd, &target).await?;
            ensure!(
                kind == step,
                "virtdeck made a {kind} backup, not a {step} one"
            );
            if virtdeck_first {
                theirs = with_virsh(&dir, cp, since).await?;
            }
            peak = peak.max(p);
            ours.push(id);
            println!(
                "backup run {} {step}: virtdeck {seconds:.2} s, virsh {theirs:.2} s",
                run + 1
            );
            if step == "full" {
                f.virtdeck_full_s.push(seconds);
                f.virsh_full_s.push(theirs);
            } else {
                f.virtdeck_inc_s.push(seconds);
                f.virsh_inc_s.push(theirs);
            }
        }
        f.rss_growth_mib.push(peak - before);
        // Next run starts from full again: both chains removed.
        for id in ours.iter().rev() {
            let (status, e) = vd
                .call(Method::DELETE, &format!("/api/v1/backups/{id}"), None)
                .await?;
            ensure!(status == 200, "deleting backup {id}: {status} {e}");
        }
        for cp in [&inc_cp, &full_cp] {
            virsh(&["checkpoint-delete", VM, cp])?;
        }
        for kind in ["full", "inc"] {
            std::fs::remove_dir_all(virsh_dir(kind))?;
        }
    }
    let mib_s = |mib: u64, v: &mut Vec<f64>| mib as f64 / median(v);
    let report = json!({
        "runs": runs,
        "disk_mib": DISK_MIB,
        "changed_mib": CHANGED_MIB,
        "virtdeck": {
            "full_mib_s": mib_s(DISK_MIB, &mut f.virtdeck_full_s),
            "incremental_mib_s": mib_s(CHANGED_MIB, &mut f.virtdeck_inc_s),
            "full_s": median(&mut f.virtdeck_full_s),
            "incremental_s": median(&mut f.virtdeck_inc_s),
            "rss_growth_mib": f.rss_growth_mib.iter().copied().fold(0.0, f64::max),
        },
        "virsh": {
            "full_mib_s": mib_s(DISK_MIB, &mut f.virsh_full_s),
            "incremental_mib_s": mib_s(CHANGED_MIB, &mut f.virsh_inc_s),
            "full_s": median(&mut f.virsh_full_s),
            "incremental_s": median(&mut f.virsh_inc_s),
        },
    });
    std::fs::write(
        out.join("backup.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
