//! `make bench`, boot part: the time from "Create and start" to the login prompt on the
//! serial console, for the Debian cloud image (`scripts/build-test-image.sh`) provisioned by
//! cloud-init, under BIOS and under UEFI, on the real libvirtd (`qemu:///system`, TCG
//! here). Beside it, what an admin does by hand for the same VM: copy and grow the image
//! with qemu-img, make the same cloud-init seed with genisoimage, and `virt-install
//! --import` it on the same machine type with the seed on the same bus. Both clocks stop at
//! the line `<host name> login:` in the VM's serial log: the prompt with the host name the
//! seed gave (so cloud-init read the seed in both). Runs alternate between the two so that
//! neither always boots on a warmer host. Writes `target/bench/boot.json`, which
//! `benches/scale.rs` folds into the report.
//!
//! Needs a running libvirtd, the test image, virt-install (package virtinst) and
//! genisoimage; `make bench` has them. BENCH_BOOT_RUNS (default 2) sets the runs per tool
//! and firmware. Everything made is removed afterwards.

#[allow(dead_code)]
mod real_host;

use anyhow::{ensure, Context, Result};
use real_host::{command, median, root, virsh, Pool, Virtdeck, URI};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The guest's password, hashed as virtdeck would (SHA-512 crypt), for the hand-made seed.
const GUEST_PASSWORD: &str = "Bench-Guest-Pa55";
const BOOT_DEADLINE: Duration = Duration::from_secs(600);
const SERIAL_LOG_DIR: &str = "/var/log/libvirt/qemu";
/// The test image's name in the bench's pool.
const IMAGE: &str = "debian-12.qcow2";

/// The test image's path in `pool`.
fn image_in(pool: &Pool) -> String {
    pool.dir.join(IMAGE).display().to_string()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("boot: a benchmark, not a test; run `make bench`");
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = rt.block_on(run()) {
        eprintln!("boot benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

fn remove_vm(name: &str) {
    let _ = virsh(&["destroy", name]);
    let _ = virsh(&[
        "undefine",
        name,
        "--remove-all-storage",
        "--nvram",
        "--tpm",
        "--snapshots-metadata",
    ]);
    let _ = std::fs::remove_file(format!("{SERIAL_LOG_DIR}/{name}-serial.log"));
}

/// Waits until the serial log shows `<hostname> login:`; the seconds since `started`.
async fn login_prompt(log: &Path, hostname: &str, started: Instant) -> Result<f64> {
    let want = format!("{hostname} login:");
    loop {
        let text = std::fs::read(log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if text.contains(&want) {
            return Ok(started.elapsed().as_secs_f64());
        }
        ensure!(
            started.elapsed() < BOOT_DEADLINE,
            "no {want:?} in {} after {} s",
            log.display(),
            BOOT_DEADLINE.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ssh_key() -> String {
    // A syntactically valid ed25519 public key (32 bytes of 7s), as an admin pastes one.
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH ops@bench"
        .to_string()
}

/// "Create and start" through the API; the seconds to the login prompt.
async fn boot_with_virtdeck(vd: &Virtdeck, pool: &Pool, name: &str, uefi: bool) -> Result<f64> {
    remove_vm(name);
    let log = PathBuf::from(format!("{SERIAL_LOG_DIR}/{name}-serial.log"));
    let hostname = format!("{name}-host");
    let body = json!({
        "name": name,
        "vcpus": 1,
        "memory_mib": 1024,
        "disk": {"type": "cloud_image", "base": image_in(pool), "size_gib": 3},
        "cloud_init": {
            "hostname": hostname,
            "user": "ops",
            "password": GUEST_PASSWORD,
            "ssh_keys": [ssh_key()]
        },
        "firmware": if uefi { "uefi" } else { "bios" },
        "start": true
    });
    let started = Instant::now();
    let r = vd
        .client
        .post(format!("{}/api/v1/vms", vd.base))
        .bearer_auth(&vd.token)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let answer: Value = r.json().await.unwrap_or(Value::Null);
    ensure!(status == 201, "create answered {status}: {answer}");
    let seconds = login_prompt(&log, &hostname, started).await;
    // Deleted as a user would (virtdeck forgets it too), after a power-off.
    let _ = virsh(&["destroy", name]);
    let (status, answer) = vd
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/vms/{name}?delete_volumes=true"),
            None,
        )
        .await?;
    ensure!(status == 200, "delete answered {status}: {answer}");
    remove_vm(name);
    seconds
}

/// The same VM by hand: qemu-img copy and grow, genisoimage seed, virt-install --import.
async fn boot_with_virt_install(
    pool: &Pool,
    name: &str,
    uefi: bool,
    virt_type: &str,
) -> Result<f64> {
    remove_vm(name);
    let hostname = format!("{name}-host");
    let work = pool.dir.join(name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let hash = command("openssl", &["passwd", "-6", GUEST_PASSWORD])?
        .trim()
        .to_string();
    std::fs::write(
        work.join("user-data"),
        format!(
            "#cloud-config\nhostname: \"{hostname}\"\npreserve_hostname: false\nusers:\n  - name: \"ops\"\n    shell: /bin/bash\n    sudo: \"ALL=(ALL) ALL\"\n    lock_passwd: false\n    hashed_passwd: \"{hash}\"\n    ssh_authorized_keys:\n      - \"{}\"\nssh_pwauth: true\n",
            ssh_key()
        ),
    )?;
    std::fs::write(
        work.join("meta-data"),
        format!("instance-id: \"{name}\"\nlocal-hostname: \"{hostname}\"\n"),
    )?;
    let disk = pool.dir.join(format!("{name}.qcow2"));
    let seed = pool.dir.join(format!("{name}-cidata.iso"));
    let log = work.join("serial.log");
    let (disk_s, seed_s, log_s) = (
        disk.display().to_string(),
        seed.display().to_string(),
        log.display().to_string(),
    );
    let started = Instant::now();
    command(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "qcow2",
            &image_in(pool),
            &disk_s,
        ],
    )?;
    command("qemu-img", &["resize", "-q", &disk_s, "3G"])?;
    command(
        "genisoimage",
        &[
            "-quiet",
            "-output",
            &seed_s,
            "-volid",
            "cidata",
            "-joliet",
            "-rock",
            work.join("user-data").to_str().unwrap_or_default(),
            work.join("meta-data").to_str().unwrap_or_default(),
        ],
    )?;
    let disk_arg = format!("path={disk_s},format=qcow2,bus=virtio");
    let (machine, cd_bus) = if uefi { ("q35", "scsi") } else { ("pc", "ide") };
    let seed_arg = format!("path={seed_s},device=cdrom,bus={cd_bus}");
    let serial_arg = format!("file,path={log_s}");
    let mut args = vec![
        "--connect",
        URI,
        "--name",
        name,
        "--memory",
        "1024",
        "--vcpus",
        "1",
        "--import",
        "--osinfo",
        // bookworm's osinfo-db knows Debian up to 11; its defaults (virtio) are 12's.
        "debian11",
        "--machine",
        machine,
        // The guest type virtdeck's VMs get on this host (TCG where KVM does not work).
        "--virt-type",
        virt_type,
        "--disk",
        &disk_arg,
        "--disk",
        &seed_arg,
        "--network",
        "none",
        "--graphics",
        "vnc,listen=127.0.0.1",
        "--serial",
        &serial_arg,
        "--noautoconsole",
    ];
    if uefi {
        args.extend_from_slice(&[
            "--controller",
            "type=scsi,model=virtio-scsi",
            "--boot",
            "firmware=efi,firmware.feature0.name=secure-boot,firmware.feature0.enabled=no,\
             firmware.feature1.name=enrolled-keys,firmware.feature1.enabled=no",
        ]);
    }
    command("virt-install", &args)?;
    let seconds = login_prompt(&log, &hostname, started).await;
    remove_vm(name);
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_file(&disk);
    let _ = std::fs::remove_file(&seed);
    seconds
}

async fn run() -> Result<()> {
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    virsh(&["version"]).context("libvirtd must run: scripts/start-libvirt.sh")?;
    let image = root().join("target/test-image/debian-12-virtdeck.qcow2");
    ensure!(
        image.exists(),
        "{} is missing: scripts/build-test-image.sh builds it",
        image.display()
    );
    let runs: usize = std::env::var("BENCH_BOOT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let pool = Pool::new("boot")?;
    std::fs::copy(&image, pool.dir.join(IMAGE))?;
    virsh(&["pool-refresh", &pool.name])?;
    let vd = Virtdeck::start(&out, "boot").await?;
    let (_, host) = vd.call(reqwest::Method::GET, "/api/v1/host", None).await?;
    let virt_type = host["virt_type"]
        .as_str()
        .context("virtdeck cannot run guests on this host")?
        .to_string();
    let mut report = json!({"runs": runs});
    for uefi in [false, true] {
        let fw = if uefi { "uefi" } else { "bios" };
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let a = format!("vdbench-vd-{fw}");
            let b = format!("vdbench-vi-{fw}");
            // Alternate which goes first.
            if i % 2 == 0 {
                ours.push(boot_with_virtdeck(&vd, &pool, &a, uefi).await?);
                theirs.push(boot_with_virt_install(&pool, &b, uefi, &virt_type).await?);
            } else {
                theirs.push(boot_with_virt_install(&pool, &b, uefi, &virt_type).await?);
                ours.push(boot_with_virtdeck(&vd, &pool, &a, uefi).await?);
            }
            println!(
                "boot ({fw}) run {}: virtdeck {:.1} s, virt-install {:.1} s",
                i + 1,
                ours[i],
                theirs[i]
            );
        }
        report[fw] = json!({
            "virtdeck_s": median(&mut ours),
            "virt_install_s": median(&mut theirs),
        });
    }
    std::fs::write(
        out.join("boot.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}
