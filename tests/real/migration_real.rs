//! Migration on real QEMU: two libvirt hosts on this machine (scripts/migration-rig.sh:
//! two session libvirtds that reach each other), a virtdeck on each, paired over HTTPS.
//! A running tiny guest moves live through the Migrate page, with progress; the same
//! shell answers on the destination's serial console (a marker written to its RAM before
//! is read back after); the non-shared data disk arrives byte-equal; units are held
//! there and free here. A cancelled move and a destination that dies mid-way leave the
//! guest running on its host and nothing on the other.

use crate::common;

use common::{spawn_app_with, TestApp};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use virtdeck::hypervisor::Hypervisor;

/// The rig is one pair of daemons: the tests take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rig() -> HashMap<String, String> {
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/migration-rig.sh"))
        .arg("up")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "the migration rig did not come up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn virsh(uri: &str, args: &[&str]) -> std::process::Output {
    Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .expect("virsh runs")
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{}-{nanos:x}", std::process::id())
}

/// A tiny guest on rig host A: boots from files in the shared directory, with an
/// optional qcow2 data disk in A's own pool. Destroyed and undefined on both hosts (and
/// its disks removed) when dropped.
struct Guest {
    name: String,
    a_uri: String,
    b_uri: String,
    disk_a: Option<PathBuf>,
    disk_b: Option<PathBuf>,
    boot: PathBuf,
}

impl Guest {
    fn new(env: &HashMap<String, String>, with_disk: bool, memory_mib: u32) -> Guest {
        let name = unique("vdmig-");
        let boot = Path::new(&env["RIG_SHARED_DIR"]).join(&name);
        std::fs::create_dir_all(&boot).unwrap();
        let src = common::real::guest_dir();
        for f in ["vmlinuz", "initrd.img"] {
            std::fs::copy(src.join(f), boot.join(f)).unwrap();
        }
        chmod_readable(&boot);
        let a_uri = env["RIG_A_URI"].clone();
        let mut disk_xml = String::new();
        let mut disk_a = None;
        let mut disk_b = None;
        if with_disk {
            let file = format!("{name}-data.qcow2");
            let out = virsh(
                &a_uri,
                &[
                    "vol-create-as",
                    &env["RIG_POOL"],
                    &file,
                    "64M",
                    "--format",
                    "qcow2",
                ],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let path = Path::new(&env["RIG_A_POOL_DIR"]).join(&file);
            // Known bytes at known places, written before the guest starts.
            let io = Command::new("qemu-io")
                .args([
                    "-f",
                    "qcow2",
                    "-c",
                    "write -P 0x5a 0 4M",
                    "-c",
                    "write -P 0xa5 32M 1M",
                ])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                io.status.success(),
                "{}",
                String::from_utf8_lossy(&io.stderr)
            );
            disk_xml = format!(
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
                 <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
                path.display()
            );
            disk_b = Some(Path::new(&env["RIG_B_POOL_DIR"]).join(&file));
            disk_a = Some(path);
        }
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{k}</kernel><initrd>{i}</initrd>\
             <cmdline>console=ttyS0,115200 panic=-1</cmdline></os>\
             <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>\
             <features><acpi/></features><clock offset='utc'/>\
             <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>\
             <devices>{disk_xml}<serial type='pty'><target port='0'/></serial>\
             <console type='pty'><target type='serial' port='0'/></console>\
             <memballoon model='none'/></devices></domain>",
            k = boot.join("vmlinuz").display(),
            i = boot.join("initrd.img").display(),
        );
        let xml_path = boot.join("domain.xml");
        std::fs::write(&xml_path, xml).unwrap();
        for verb in [
            vec!["define", xml_path.to_str().unwrap()],
            vec!["start", name.as_str()],
        ] {
            let out = virsh(&a_uri, &verb);
            assert!(
                out.status.success(),
                "virsh {verb:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Guest {
            name,
            a_uri,
            b_uri: env["RIG_B_URI"].clone(),
            disk_a,
            disk_b,
            boot,
        }
    }

    fn state_on(&self, uri: &str) -> Option<String> {
        let out = virsh(uri, &["domstate", &self.name]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        for uri in [&self.a_uri, &self.b_uri] {
            let _ = virsh(uri, &["destroy", &self.name]);
            let _ = virsh(uri, &["undefine", &self.name]);
        }
        for (uri, d) in [(&self.a_uri, &self.disk_a), (&self.b_uri, &self.disk_b)] {
            if let Some(d) = d {
                let _ = virsh(uri, &["vol-delete", d.to_str().unwrap()]);
                let _ = std::fs::remove_file(d);
            }
        }
        let _ = std::fs::remove_dir_all(&self.boot);
    }
}

fn chmod_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// The guest's serial console through virtdeck's own libvirt adapter.
struct Serial {
    console: virtdeck::hypervisor::SerialConsole,
    _hv: virtdeck::adapters::libvirt::Libvirt,
}

impl Serial {
    fn open(uri: &str, vm: &str) -> Serial {
        let hv = virtdeck::adapters::libvirt::Libvirt::open(
            uri,
            virtdeck::domain::host::KvmStatus::Missing,
        )
        .unwrap();
        let console = hv.open_serial(vm, true).expect("serial console opens");
        Serial { console, _hv: hv }
    }

    fn send(&self, line: &str) {
        self.console
            .input
            .write_all(format!("{line}\r").as_bytes())
            .unwrap();
    }

    /// Sends `line` until an output line is exactly `want` (the guest may still boot).
    async fn until_line(&mut self, line: &str, want: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut seen = String::new();
        let mut sent_at = Instant::now() - Duration::from_secs(10);
        loop {
            if sent_at.elapsed() > Duration::from_secs(3) {
                self.send(line);
                sent_at = Instant::now();
            }
            match tokio::time::timeout(Duration::from_millis(300), self.console.output.recv()).await
            {
                Ok(Some(b)) => {
                    self.console.input.output_taken();
                    seen.push_str(&String::from_utf8_lossy(&b));
                }
                Ok(None) => panic!("the serial console closed; output:\n{seen}"),
                Err(_) => {}
            }
            if seen.split(['\r', '\n']).any(|l| l.trim() == want) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "no line {want:?} on the serial console; output:\n{seen}"
            );
        }
    }
}

async fn virtdeck_on(
    env: &HashMap<String, String>,
    host: &'static str,
    tweak: impl FnOnce(&mut virtdeck::config::Config),
) -> TestApp {
    let (uri, migrate_uri) = match host {
        "alpha" => (env["RIG_A_URI"].clone(), env["RIG_A_MIGRATE_URI"].clone()),
        _ => (env["RIG_B_URI"].clone(), env["RIG_B_MIGRATE_URI"].clone()),
    };
    let shared_dir = env["RIG_SHARED_DIR"].clone();
    spawn_app_with(move |c| {
        c.demo = false;
        c.libvirt_uri = uri;
        c.virt_type = virtdeck::domain::host::VirtTypeSetting::Qemu;
        c.tls.enabled = true;
        c.fleet.name = Some(host.into());
        c.fleet.migration_uri = migrate_uri;
        c.fleet.refresh_seconds = 2;
        // The guests' boot files are on the storage both hosts share.
        c.fleet.shared_dirs = vec![shared_dir];
        c.fetch.allow = vec!["127.0.0.0/8".into()];
        tweak(c);
    })
    .await
}

struct Admin {
    client: Client,
    token: String,
}

async fn admin_of(app: &TestApp) -> Admin {
    let client = app.setup_admin("admin").await;
    let token = app.admin_token(&client).await;
    Admin { client, token }
}

async fn api(
    app: &TestApp,
    who: &Admin,
    method: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let req = match method {
        "GET" => who.client.get(app.url(path)),
        _ => who.client.post(app.url(path)).json(&body),
    };
    let r = req.bearer_auth(&who.token).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn pair(alpha: &TestApp, a: &Admin, beta: &TestApp, b: &Admin) {
    let (status, inv) = api(beta, b, "POST", "/api/v1/fleet/invitations", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{inv}");
    let (status, contact) = api(
        alpha,
        a,
        "POST",
        "/api/v1/fleet/peers/check",
        json!({"url": beta.base}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{contact}");
    let (status, peer) = api(
        alpha,
        a,
        "POST",
        "/api/v1/fleet/peers",
        json!({
            "url": beta.base, "code": inv["code"], "fingerprint": contact["fingerprint"]
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{peer}");
}

fn free_units(host: &Value) -> u64 {
    host["capacity"]["usage"]["free"]
        .as_u64()
        .expect("free units")
}

/// The migrate job of `vm` on `app`, once it shows up.
async fn migrate_job(app: &TestApp, who: &Admin, vm: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, jobs) = api(app, who, "GET", "/api/v1/jobs", json!(null)).await;
        if let Some(j) = jobs["jobs"]
            .as_array()
            .and_then(|js| js.iter().find(|j| j["kind"] == "migrate" && j["vm"] == vm))
        {
            return j.clone();
        }
        assert!(Instant::now() < deadline, "no migrate job for {vm}: {jobs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Follows a job to its end; answers it and the steps it showed on the way.
async fn follow(app: &TestApp, who: &Admin, id: i64, within: Duration) -> (Value, Vec<String>) {
    let deadline = Instant::now() + within;
    let mut steps = Vec::new();
    loop {
        let (status, job) = api(app, who, "GET", &format!("/api/v1/jobs/{id}"), json!(null)).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if let Some(step) = job["step"].as_str() {
            if steps.last().map(String::as_str) != Some(step) {
                steps.push(step.to_string());
            }
        }
        if job["state"] != "running" {
            return (job, steps);
        }
        assert!(Instant::now() < deadline, "job {id} still runs: {job}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn store_of(app: &TestApp) -> virtdeck::store::Store {
    virtdeck::store::Store::open(&app.data_dir.path().join("virtdeck.db")).unwrap()
}

#[tokio::test]
async fn a_running_guest_moves_live_through_the_page_with_its_shell_and_its_disk() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    let env = rig();
    let guest = Guest::new(&env, true, 256);
    let alpha = virtdeck_on(&env, "alpha", |_| {}).await;
    let beta = virtdeck_on(&env, "beta", |_| {}).await;
    let (a, b) = (admin_of(&alpha).await, admin_of(&beta).await);
    pair(&alpha, &a, &beta, &b).await;

    // A marker in the guest's RAM, written through its serial console on alpha's host.
    let marker = unique("kept-");
    let mut serial = Serial::open(&env["RIG_A_URI"], &guest.name);
    serial
        .until_line("echo shell-up", "shell-up", Duration::from_secs(120))
        .await;
    serial.send(&format!("echo {marker} > /run/marker"));
    serial
        .until_line("cat /run/marker", &marker, Duration::from_secs(20))
        .await;
    drop(serial);

    // virtdeck's own record of the VM (as if it had made it): its seed and its disk.
    let disk_a_path = guest.disk_a.clone().unwrap().display().to_string();
    {
        let a_store = store_of(&alpha);
        a_store
            .insert_vm(&virtdeck::store::VmRow {
                name: guest.name.clone(),
                uuid: String::new(),
                units: 1,
                state: "ready".into(),
                created_volume: None,
                created_by: "admin".into(),
                created_at: 1,
            })
            .unwrap();
        a_store
            .insert_cloud_init(&virtdeck::store::cloud_init::CloudInitRow {
                vm: guest.name.clone(),
                user: "debian".into(),
                hostname: guest.name.clone(),
                ssh_keys: 1,
                password: false,
                base_volume: "debian-12.qcow2".into(),
                seed_path: String::new(),
            })
            .unwrap();
        a_store
            .record_vm_volume(&guest.name, &disk_a_path, "qcow2", None)
            .unwrap();
    }
    let (_, beta_host) = api(&beta, &b, "GET", "/api/v1/host", json!(null)).await;
    let beta_free = free_units(&beta_host);

    // The Migrate page offers beta, and the form starts the move.
    let page = a
        .client
        .get(alpha.url(&format!("/vms/{}/migrate", guest.name)))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("data-peer=\"beta\" data-fits=\"yes\""),
        "{page}"
    );
    let csrf = common::csrf_in(&page);
    let r = a
        .client
        .post(alpha.url(&format!("/vms/{}/migrate", guest.name)))
        .form(&[("csrf", csrf.as_str()), ("to", "beta"), ("live", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let job = migrate_job(&alpha, &a, &guest.name).await;
    let (job, steps) = follow(
        &alpha,
        &a,
        job["id"].as_i64().unwrap(),
        Duration::from_secs(240),
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}\nsteps: {steps:?}");
    assert!(
        job["message"].as_str().unwrap().contains("moved to beta"),
        "{job}"
    );
    assert!(
        steps.iter().any(|s| s.starts_with("moving to beta")),
        "{steps:?}"
    );

    // It runs on beta and is gone from alpha.
    assert_eq!(
        guest.state_on(&env["RIG_B_URI"]).as_deref(),
        Some("running")
    );
    assert_eq!(
        guest.state_on(&env["RIG_A_URI"]),
        None,
        "still defined on alpha"
    );

    // The same shell, with what was written to its RAM, on beta's serial console.
    let mut serial = Serial::open(&env["RIG_B_URI"], &guest.name);
    serial
        .until_line("cat /run/marker", &marker, Duration::from_secs(30))
        .await;
    drop(serial);

    // Units: held on beta as a VM of its own, free on alpha.
    let (status, vm) = api(
        &beta,
        &b,
        "GET",
        &format!("/api/v1/vms/{}", guest.name),
        json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(vm["managed"], true, "{vm}");
    let units = vm["units"].as_u64().unwrap();
    assert!(units >= 1);
    let (_, beta_host) = api(&beta, &b, "GET", "/api/v1/host", json!(null)).await;
    assert_eq!(free_units(&beta_host), beta_free - units);
    let (status, _) = api(
        &alpha,
        &a,
        "GET",
        &format!("/api/v1/vms/{}", guest.name),
        json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(store_of(&beta).arriving_vms().unwrap().is_empty());
    for (app, who) in [(&alpha, "admin"), (&beta, "peer:alpha")] {
        let rows = store_of(app).audit_for_target(&guest.name, 50).unwrap();
        assert!(
            rows.iter()
                .any(|e| e.action == "vm.migrate" && e.result == "ok" && e.actor == who),
            "{rows:?}"
        );
    }

    // Its record travelled: the seed, and its disk at its path on beta.
    let b_store = store_of(&beta);
    assert_eq!(
        b_store
            .cloud_init(&guest.name)
            .unwrap()
            .map(|c| c.user)
            .as_deref(),
        Some("debian")
    );
    let made: Vec<String> = b_store
        .vm_volumes(&guest.name)
        .unwrap()
        .into_iter()
        .map(|v| v.path)
        .collect();
    assert_eq!(
        made,
        vec![guest.disk_b.clone().unwrap().display().to_string()]
    );
    let a_store = store_of(&alpha);
    assert!(a_store.cloud_init(&guest.name).unwrap().is_none());
    assert!(a_store.vm_volumes(&guest.name).unwrap().is_empty());

    // The data disk was copied by QEMU into beta's pool, byte for byte.
    let (disk_a, disk_b) = (guest.disk_a.clone().unwrap(), guest.disk_b.clone().unwrap());
    assert!(disk_b.exists(), "no copy at {}", disk_b.display());
    let _ = virsh(&env["RIG_B_URI"], &["destroy", &guest.name]);
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "qcow2"])
        .arg(&disk_a)
        .arg(&disk_b)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "the copy differs: {}{}",
        String::from_utf8_lossy(&cmp.stdout),
        String::from_utf8_lossy(&cmp.stderr)
    );
}

#[tokio::test]
async fn a_cancelled_move_and_a_destination_that_dies_leave_the_guest_running_here_and_nothing_there(
) {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    let env = rig();
    // Slow moves (2 MiB/s) of a guest whose RAM holds 96 MiB of random bytes.
    let alpha = virtdeck_on(&env, "alpha", |c| c.fleet.migration_bandwidth_mib_s = 2).await;
    let beta = virtdeck_on(&env, "beta", |_| {}).await;
    let (a, b) = (admin_of(&alpha).await, admin_of(&beta).await);
    pair(&alpha, &a, &beta, &b).await;
    let guest = Guest::new(&env, false, 256);
    let mut serial = Serial::open(&env["RIG_A_URI"], &guest.name);
    serial
        .until_line("echo shell-up", "shell-up", Duration::from_secs(120))
        .await;
    serial.send("dd if=/dev/urandom of=/run/fill bs=1M count=96 2>/dev/null; echo filled");
    serial
        .until_line("", "filled", Duration::from_secs(120))
        .await;
    let (_, beta_host) = api(&beta, &b, "GET", "/api/v1/host", json!(null)).await;
    let beta_free = free_units(&beta_host);

    for how in ["cancel", "destination dies"] {
        let (status, started) = api(
            &alpha,
            &a,
            "POST",
            &format!("/api/v1/vms/{}/migrate", guest.name),
            json!({"to": "beta"}),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{how}: {started}");
        let id = started["job"].as_i64().unwrap();
        // Wait until memory is on its way.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, job) = api(
                &alpha,
                &a,
                "GET",
                &format!("/api/v1/jobs/{id}"),
                json!(null),
            )
            .await;
            if job["step"].as_str().is_some_and(|s| s.contains("MiB left")) {
                break;
            }
            assert_eq!(
                job["state"], "running",
                "{how}: the move ended before it could be stopped: {job}"
            );
            assert!(Instant::now() < deadline, "{how}: no progress: {job}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match how {
            "cancel" => {
                let (status, c) = api(
                    &alpha,
                    &a,
                    "POST",
                    &format!("/api/v1/jobs/{id}/cancel"),
                    json!({}),
                )
                .await;
                assert!(status.is_success(), "{c}");
            }
            _ => {
                // beta's host goes away: its libvirtd and every QEMU it started (again
                // until none is left: a QEMU forked while the first kill ran survives it).
                let user = &env["RIG_B_USER"];
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let _ = Command::new("pkill").args(["-KILL", "-u", user]).status();
                    let ps = Command::new("ps")
                        .args(["-o", "stat=", "-u", user])
                        .output()
                        .unwrap();
                    let alive = String::from_utf8_lossy(&ps.stdout)
                        .lines()
                        .any(|state| !state.trim().starts_with('Z'));
                    if !alive {
                        break;
                    }
                    assert!(Instant::now() < deadline, "{user}'s processes do not die");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let (job, _) = follow(&alpha, &a, id, Duration::from_secs(120)).await;
        let expected = if how == "cancel" {
            "cancelled"
        } else {
            "failed"
        };
        assert_eq!(job["state"], expected, "{how}: {job}");
        assert!(
            job["message"].as_str().unwrap().contains(&guest.name),
            "{job}"
        );
        if how != "cancel" {
            // The rig brings beta's daemon back.
            rig();
        }
        // The guest runs on alpha, with its shell.
        assert_eq!(
            guest.state_on(&env["RIG_A_URI"]).as_deref(),
            Some("running"),
            "{how}"
        );
        serial
            .until_line("echo still-here", "still-here", Duration::from_secs(30))
            .await;
        // Nothing on beta: no held units, and (once beta has settled the arrival, after
        // its libvirtd came back) no domain either.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !store_of(&beta).arriving_vms().unwrap().is_empty() {
            assert!(
                Instant::now() < deadline,
                "{how}: beta still holds the arrival"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            guest.state_on(&env["RIG_B_URI"]),
            None,
            "{how}: left on beta"
        );
        let (_, beta_host) = api(&beta, &b, "GET", "/api/v1/host", json!(null)).await;
        assert_eq!(free_units(&beta_host), beta_free, "{how}");
    }
}

#[tokio::test]
async fn a_shut_off_guest_moves_its_definition_and_its_record() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    let env = rig();
    let alpha = virtdeck_on(&env, "alpha", |_| {}).await;
    let beta = virtdeck_on(&env, "beta", |_| {}).await;
    let (a, b) = (admin_of(&alpha).await, admin_of(&beta).await);
    pair(&alpha, &a, &beta, &b).await;
    let guest = Guest::new(&env, false, 256);
    let out = virsh(&env["RIG_A_URI"], &["destroy", &guest.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        guest.state_on(&env["RIG_A_URI"]).as_deref(),
        Some("shut off")
    );

    let (status, started) = api(
        &alpha,
        &a,
        "POST",
        &format!("/api/v1/vms/{}/migrate", guest.name),
        json!({"to": "beta"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let (job, _) = follow(
        &alpha,
        &a,
        started["job"].as_i64().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        guest.state_on(&env["RIG_B_URI"]).as_deref(),
        Some("shut off")
    );
    assert_eq!(
        guest.state_on(&env["RIG_A_URI"]),
        None,
        "still defined on alpha"
    );
    let (status, vm) = api(
        &beta,
        &b,
        "GET",
        &format!("/api/v1/vms/{}", guest.name),
        json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(vm["managed"], true, "{vm}");
    // It starts there.
    let (status, started) = api(
        &beta,
        &b,
        "POST",
        &format!("/api/v1/vms/{}/start", guest.name),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let mut serial = Serial::open(&env["RIG_B_URI"], &guest.name);
    serial
        .until_line("echo up-on-beta", "up-on-beta", Duration::from_secs(120))
        .await;
}

#[tokio::test]
async fn a_drain_moves_every_guest_to_the_peer_and_keeps_the_host_closed_until_ended() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    let env = rig();
    let alpha = virtdeck_on(&env, "alpha", |_| {}).await;
    let beta = virtdeck_on(&env, "beta", |_| {}).await;
    let (a, b) = (admin_of(&alpha).await, admin_of(&beta).await);
    pair(&alpha, &a, &beta, &b).await;
    let running = Guest::new(&env, false, 256);
    let off = Guest::new(&env, false, 256);
    let out = virsh(&env["RIG_A_URI"], &["destroy", &off.name]);
    assert!(out.status.success());
    let mut serial = Serial::open(&env["RIG_A_URI"], &running.name);
    serial
        .until_line("echo shell-up", "shell-up", Duration::from_secs(120))
        .await;
    drop(serial);

    let (status, d) = api(&alpha, &a, "POST", "/api/v1/fleet/drain", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{d}");
    let deadline = Instant::now() + Duration::from_secs(240);
    let end = loop {
        let rows = store_of(&alpha).audit_for_target("host", 20).unwrap();
        if let Some(end) = rows
            .into_iter()
            .find(|e| e.action == "host.drain" && e.detail.contains("moved"))
        {
            break end;
        }
        assert!(Instant::now() < deadline, "the drain never ended");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(end.result, "ok", "{}", end.detail);
    assert_eq!(
        running.state_on(&env["RIG_B_URI"]).as_deref(),
        Some("running")
    );
    assert_eq!(off.state_on(&env["RIG_B_URI"]).as_deref(), Some("shut off"));
    for g in [&running, &off] {
        assert_eq!(
            g.state_on(&env["RIG_A_URI"]),
            None,
            "{} still on alpha",
            g.name
        );
    }
    let mut serial = Serial::open(&env["RIG_B_URI"], &running.name);
    serial
        .until_line(
            "echo moved-by-drain",
            "moved-by-drain",
            Duration::from_secs(30),
        )
        .await;
    // Still closed for new VMs until an admin ends the drain.
    let (_, fit) = api(
        &beta,
        &b,
        "GET",
        "/api/v1/fleet/fit?vcpus=1&memory_mib=256",
        json!(null),
    )
    .await;
    assert!(fit.to_string().contains("emptied for maintenance"), "{fit}");
}
