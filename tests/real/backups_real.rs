//! Backups on the real `qemu:///system` libvirtd with the tiny guest: a running guest
//! writes known blocks to its qcow2 data disk; a full backup; more writes; an incremental
//! backup that holds about the changed blocks only; each point restored as a new VM whose
//! disk is compared byte for byte with what was written by then; checksums verified; a
//! backup that an incremental needs is not deleted before it.

use crate::common;
use crate::console_support;

use common::api::Api;
use common::real::{require_libvirtd, virsh, TestPool, VmGuard, URI};
use common::spawn_app_with;
use console_support::{has_output_line, read_serial_until, serial, serial_until, Guest, Ws};
use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const MIB: usize = 1 << 20;

/// The disk's bytes as a raw image, read from the volume at `path` (any format).
fn raw_bytes(path: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("disk.raw");
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw", path])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(out_path).unwrap()
}

/// `word\n` repeated to `len` bytes (what `yes WORD | head -c LEN` writes).
fn repeated(word: &str, len: usize) -> Vec<u8> {
    format!("{word}\n").bytes().cycle().take(len).collect()
}

/// Types a command that writes to the disk once (typed again, it would write again after
/// a backup's checkpoint) and waits for the line `marker` it prints when done.
async fn write_once(ws: &mut Ws, command: &str, marker: &str) {
    ws.send(Message::Binary(format!("{command}\r").into_bytes().into()))
        .await
        .unwrap();
    let seen =
        read_serial_until(ws, Duration::from_secs(120), |t| has_output_line(t, marker)).await;
    assert!(
        has_output_line(&seen, marker),
        "{marker} never came; console:\n{seen}"
    );
}

/// Restores `backup` as VM `name` through the API (a job, followed to its end, its
/// progress at the backup's size); the restored disk's path.
async fn restore_as(api: &Api, backup: &Value, name: &str) -> String {
    let (s, job) = api
        .post_job(
            &format!("/api/v1/backups/{backup}/restore"),
            json!({"name": name}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        (job["kind"].clone(), job["state"].clone()),
        (json!("restore"), json!("succeeded")),
        "{job}"
    );
    assert_eq!(job["source"], format!("backup {backup}"), "{job}");
    assert_eq!(job["bytes_done"], job["bytes_total"], "{job}");
    let (_, vm) = api.get(&format!("/api/v1/vms/{name}")).await;
    vm["disks"][0].as_str().unwrap().to_string()
}

/// Begins a backup of `vm` into `pool` through the API (202); the backup as begun.
pub(crate) async fn begin_backup(api: &Api, vm: &str, pool: &str) -> Value {
    let (s, begun) = api
        .post(&format!("/api/v1/vms/{vm}/backups"), json!({"pool": pool}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{begun}");
    begun
}

pub(crate) async fn backup_done(api: &Api, vm: &str, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, list) = api.get(&format!("/api/v1/backups?vm={vm}")).await;
        let b = list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .cloned()
            .unwrap_or(Value::Null);
        // Restorable once succeeded; its checksums are written right after.
        let checksummed = b["files"]
            .as_array()
            .is_some_and(|f| f.iter().all(|f| f["sha256"] != ""));
        if b["state"] != "running" && checksummed {
            assert_eq!(b["state"], "succeeded", "{b}");
            return b;
        }
        assert_ne!(b["state"], "failed", "{b}");
        if b["state"] == "running" {
            // Its job and the progress its watcher records there.
            let job = b["job"].as_i64().unwrap_or_else(|| panic!("no job: {b}"));
            let (_, j) = api.get(&format!("/api/v1/jobs/{job}")).await;
            assert_eq!(j["source"], format!("backup {id}"), "{j}");
            let p = b["progress"].as_array().unwrap_or_else(|| panic!("{b}"));
            assert!(p[0].as_u64() <= j["bytes_done"].as_u64(), "{b} {j}");
        }
        assert!(Instant::now() < deadline, "backup {id} never ended: {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_incremental_backups_restore_each_point_byte_for_byte() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let disks = TestPool::with_prefix("vdbk-disks");
    let target = TestPool::with_prefix("vdbk-target");
    let out = virsh(&[
        "vol-create-as",
        &disks.name,
        "data.qcow2",
        "64M",
        "--format",
        "qcow2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = disks.dir.join("data.qcow2");
    let guest = running_guest_with(
        &data,
        "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
    )
    .await;
    let (app, api) = app_with_target(&target, |_| {}).await;
    let vm = guest.name.clone();

    // Point one: 1 MiB of "ONE" at 1 MiB.
    let mut ws = serial(&app, &api, &vm).await;
    serial_until(&mut ws, "echo SHELL=$((40+2))", "SHELL=42").await;
    write_once(
        &mut ws,
        "yes ONE | head -c 1048576 | dd of=/dev/vda bs=65536 seek=16 conv=fsync 2>/dev/null; sync; echo W1-DONE",
        "W1-DONE",
    )
    .await;
    let full = begin_backup(&api, &vm, &target.name).await;
    assert_eq!(
        (full["kind"].clone(), full["why_full"].clone()),
        (json!("full"), json!("the first backup of this VM"))
    );
    let full = backup_done(&api, &vm, full["id"].as_i64().unwrap()).await;
    // The guest has an agent channel but no agent: not frozen, and said.
    assert_eq!(full["consistency"], "crash", "{full}");
    assert!(
        full["message"]
            .as_str()
            .unwrap()
            .contains("guest agent did not freeze"),
        "{full}"
    );

    // Point two: 128 KiB of "TWO" at the start; the incremental holds about that.
    write_once(
        &mut ws,
        "yes TWO | head -c 131072 | dd of=/dev/vda bs=65536 seek=0 conv=fsync 2>/dev/null; sync; echo W2-DONE",
        "W2-DONE",
    )
    .await;
    drop(ws);
    let inc = begin_backup(&api, &vm, &target.name).await;
    assert_eq!(
        (inc["kind"].clone(), inc["parent"].clone()),
        (json!("incremental"), full["id"].clone()),
        "{inc}"
    );
    let inc = backup_done(&api, &vm, inc["id"].as_i64().unwrap()).await;
    let (full_bytes, inc_bytes) = (
        full["bytes"].as_u64().unwrap(),
        inc["bytes"].as_u64().unwrap(),
    );
    assert!(
        full_bytes > MIB as u64,
        "the full backup holds the 1 MiB written: {full}"
    );
    assert!(
        inc_bytes < MIB as u64 / 2,
        "the incremental holds about 128 KiB, not the disk: {inc}"
    );

    // Each point restored as a new VM, compared byte for byte.
    let mut point_one = vec![0u8; 64 * MIB];
    point_one[MIB..2 * MIB].copy_from_slice(&repeated("ONE", MIB));
    let mut point_two = point_one.clone();
    point_two[..128 * 1024].copy_from_slice(&repeated("TWO", 128 * 1024));
    let mut guards = Vec::new();
    for (backup, want, tag) in [(&full, &point_one, "one"), (&inc, &point_two, "two")] {
        let name = format!("vdbk-{tag}-{}", std::process::id());
        guards.push(VmGuard(name.clone()));
        let volume = restore_as(&api, &backup["id"], &name).await;
        let got = raw_bytes(&volume);
        assert_eq!(got.len(), want.len());
        let first_difference = got.iter().zip(want.iter()).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "restored point {tag} differs");
        let (_, restored) = api.get(&format!("/api/v1/vms/{name}")).await;
        assert_eq!(restored["state"], "shut_off", "{restored}");
        assert_ne!(restored["uuid"], json!(""), "{restored}");
    }

    // Checksums verified; the full backup is kept while the incremental needs it.
    let (s, v) = api
        .post(&format!("/api/v1/backups/{}/verify", inc["id"]), json!({}))
        .await;
    assert_eq!((s, v["ok"].clone()), (StatusCode::OK, json!(true)), "{v}");
    let (s, e) = api.delete(&format!("/api/v1/backups/{}", full["id"])).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");

    // The target alone is enough: beside each backup's files are its record and the VM's
    // definition, and a fresh virtdeck (a host reinstalled, its database lost) that names
    // the same target finds both backups there and restores the incremental byte for byte.
    drop(guards);
    for b in [&full, &inc] {
        let dir = std::path::Path::new(b["dir"].as_str().unwrap());
        let xml = std::fs::read_to_string(dir.join("domain.xml")).unwrap();
        assert!(xml.contains(&format!("<name>{vm}</name>")), "{xml}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let record: Value = loop {
            let r: Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("virtdeck-backup.json")).unwrap(),
            )
            .unwrap();
            // Its checksums are written into it once computed.
            if r["files"][0]["sha256"] == b["files"][0]["sha256"] {
                break r;
            }
            assert!(Instant::now() < deadline, "no checksum in the record: {r}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            (record["vm"].clone(), record["kind"].clone()),
            (json!(vm), b["kind"].clone()),
            "{record}"
        );
    }
    let (_other, found) = app_with_target(&target, |_| {}).await;
    let (_, listed) = found.get("/api/v1/backups").await;
    assert_eq!(listed["backups"], json!([]), "a fresh virtdeck lists none");
    let (s, scan) = found
        .post(
            &format!("/api/v1/backup-targets/{}/scan", target.name),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{scan}");
    assert_eq!(
        (
            scan["added"].as_array().map(Vec::len),
            scan["skipped"].clone()
        ),
        (Some(2), json!([])),
        "{scan}"
    );
    let (_, listed) = found.get(&format!("/api/v1/backups?vm={vm}")).await;
    let found_inc = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["dir"] == inc["dir"])
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    let found_full = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["dir"] == full["dir"])
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    assert_eq!(
        (
            found_inc["kind"].clone(),
            found_inc["parent"].clone(),
            found_inc["state"].clone()
        ),
        (
            json!("incremental"),
            found_full["id"].clone(),
            json!("succeeded")
        ),
        "{found_inc}"
    );
    assert_eq!(found_inc["units"], inc["units"], "{found_inc}");
    let name = format!("vdbk-found-{}", std::process::id());
    let _found_vm = VmGuard(name.clone());
    let volume = restore_as(&found, &found_inc["id"], &name).await;
    assert_eq!(
        raw_bytes(&volume),
        point_two,
        "the found incremental restores point two"
    );
    let (s, v) = found
        .post(
            &format!("/api/v1/backups/{}/verify", found_inc["id"]),
            json!({}),
        )
        .await;
    assert_eq!((s, v["ok"].clone()), (StatusCode::OK, json!(true)), "{v}");
    let (_, again) = found
        .post(
            &format!("/api/v1/backup-targets/{}/scan", target.name),
            json!({}),
        )
        .await;
    assert_eq!(
        (again["added"].clone(), again["known"].clone()),
        (json!([]), json!(2)),
        "a second look adds nothing: {again}"
    );
    let (s, d) = found.delete(&format!("/api/v1/vms/{name}")).await;
    assert!(s.is_success(), "{d}");

    // A backup cut off by a restart of virtdeck (its row still running, a partial file):
    // at start-up it is marked interrupted, its files are gone, and the VM's checkpoints
    // with it, so the next backup is full and says why.
    let store = virtdeck::store::Store::open(&app.data_dir.path().join("virtdeck.db")).unwrap();
    let partial_dir = format!("{}/virtdeck-backups/cut-off", target.dir.display());
    std::fs::create_dir_all(&partial_dir).unwrap();
    std::fs::write(format!("{partial_dir}/vda.qcow2"), b"partial").unwrap();
    let cut = store
        .insert_backup(&virtdeck::store::backups::NewBackup {
            vm: &vm,
            vm_uuid: "",
            kind: "incremental",
            parent: inc["id"].as_i64(),
            checkpoint: "virtdeck-cut-off",
            pool: &target.name,
            dir: &partial_dir,
            why_full: "",
            definition: "",
            units: 1,
            created_by: "test",
            created_at: 1,
            schedule: None,
            consistency: "crash",
            message: "",
            files: vec![("vda".into(), format!("{partial_dir}/vda.qcow2"), 64 << 20)],
        })
        .unwrap();
    let hv = virtdeck::adapters::libvirt::Libvirt::open(
        URI,
        virtdeck::domain::host::KvmStatus::NotApplicable,
    )
    .unwrap();
    let notes = virtdeck::lifecycle::backups::reconcile(&hv, &store, 2);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(store.backup(cut).unwrap().unwrap().state, "interrupted");
    assert!(!std::path::Path::new(&partial_dir).exists());
    let next = begin_backup(&api, &vm, &target.name).await;
    assert_eq!(next["kind"], "full", "{next}");
    assert!(
        next["why_full"].as_str().unwrap().contains("is gone"),
        "{next}"
    );
    let next = backup_done(&api, &vm, next["id"].as_i64().unwrap()).await;
    // Reverted to a snapshot, the running VM stays running (its backup checkpoint, whose
    // dirty bitmap would make QEMU refuse the snapshot and stop the VM, goes first), and
    // its next backup is full, saying why.
    let (s, snap) = api
        .post(
            &format!("/api/v1/vms/{vm}/snapshots"),
            json!({"name": "before-change"}),
        )
        .await;
    assert!(s.is_success(), "{snap}");
    let (s, r) = api
        .post(
            &format!("/api/v1/vms/{vm}/snapshots/before-change/revert"),
            json!({}),
        )
        .await;
    assert!(s.is_success(), "{r}");
    let state = virsh(&["domstate", &vm]);
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "running");
    let (s, d) = api
        .delete(&format!("/api/v1/vms/{vm}/snapshots/before-change"))
        .await;
    assert!(s.is_success(), "{d}");
    let after_revert = begin_backup(&api, &vm, &target.name).await;
    assert_eq!(after_revert["kind"], "full", "{after_revert}");
    assert!(
        after_revert["why_full"]
            .as_str()
            .unwrap()
            .contains("a reverted snapshot"),
        "{after_revert}"
    );
    let after_revert = backup_done(&api, &vm, after_revert["id"].as_i64().unwrap()).await;
    let (s, d) = api
        .delete(&format!("/api/v1/backups/{}", after_revert["id"]))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let (s, d) = api.delete(&format!("/api/v1/backups/{}", next["id"])).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    for b in [&inc, &full] {
        let (s, d) = api.delete(&format!("/api/v1/backups/{}", b["id"])).await;
        assert_eq!(s, StatusCode::OK, "{d}");
        assert!(!std::path::Path::new(b["dir"].as_str().unwrap()).exists());
    }

    // A schedule keeping the last 2, run three times a day apart: two backups stay (the
    // oldest kept one now full, the deleted full merged into it), and both restore.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sched = schedule_off_hours(
        &api,
        json!({"scope": "vm", "scope_value": vm, "pool": target.name, "every": "daily",
               "keep": {"last": 2}}),
    )
    .await;
    let cfg = virtdeck::config::Config::default().lifecycle();
    let lock = virtdeck::lifecycle::AdmissionLock::default();
    let jobs = virtdeck::lifecycle::jobs::Jobs::default();
    let ctx = virtdeck::lifecycle::Ctx {
        hv: &hv,
        store: &store,
        cfg: &cfg,
        lock: &lock,
        jobs: &jobs,
    };
    let mut ws = serial(&app, &api, &vm).await;
    serial_until(&mut ws, "echo SHELL=$((40+2))", "SHELL=42").await;
    let mut state = point_two.clone();
    let mut points = Vec::new();
    for day in 1..=3i64 {
        let word = format!("S{day}");
        write_once(
            &mut ws,
            &format!("yes {word} | head -c 65536 | dd of=/dev/vda bs=65536 seek=0 conv=fsync 2>/dev/null; sync; echo {word}-DONE"),
            &format!("{word}-DONE"),
        )
        .await;
        state[..65536].copy_from_slice(&repeated(&word, 65536));
        points.push(state.clone());
        let at = now + day * 86_400;
        let runs = virtdeck::lifecycle::backups::run_due(ctx, &|| at, &|| {
            Box::new(|| std::thread::sleep(Duration::from_millis(200)))
        })
        .unwrap();
        assert_eq!(runs.len(), 1, "{runs:?}");
        let Ok(virtdeck::lifecycle::backups::Made::Backup(made)) = &runs[0].outcome else {
            panic!("no backup made: {runs:?}");
        };
        assert_eq!(made.state, "succeeded", "{made:?}");
        assert_eq!(runs[0].pruned.len(), usize::from(day == 3), "{runs:?}");
    }
    drop(ws);
    let (_, list) = api.get(&format!("/api/v1/backups?vm={vm}")).await;
    let kept: Vec<&Value> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["state"] == "succeeded")
        .collect();
    assert_eq!(kept.len(), 2, "{list}");
    assert_eq!(
        (kept[1]["kind"].clone(), kept[1]["parent"].clone()),
        (json!("full"), Value::Null),
        "{list}"
    );
    assert_eq!(kept[0]["parent"], kept[1]["id"], "{list}");
    assert_eq!(kept[0]["schedule"], sched["id"]);
    // The record beside the merged backup says so too, with its new checksum.
    let merged: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(kept[1]["dir"].as_str().unwrap()).join("virtdeck-backup.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            merged["kind"].clone(),
            merged["parent"].clone(),
            merged["files"][0]["sha256"].clone()
        ),
        (
            json!("full"),
            Value::Null,
            kept[1]["files"][0]["sha256"].clone()
        ),
        "{merged}"
    );
    let mut guards = Vec::new();
    for (b, want, tag) in [(kept[1], &points[1], "s2"), (kept[0], &points[2], "s3")] {
        let (s, v) = api
            .post(&format!("/api/v1/backups/{}/verify", b["id"]), json!({}))
            .await;
        assert_eq!((s, v["ok"].clone()), (StatusCode::OK, json!(true)), "{v}");
        let name = format!("vdbk-{tag}-{}", std::process::id());
        guards.push(VmGuard(name.clone()));
        let got = raw_bytes(&restore_as(&api, &b["id"], &name).await);
        assert_eq!(
            got.iter().zip(want.iter()).position(|(a, b)| a != b),
            None,
            "point {tag}"
        );
        let _ = virsh(&["undefine", &name, "--remove-all-storage"]);
    }

    // Over the VM itself: refused while it runs; once off, its disk is back at S2 and the
    // volume virtdeck did not make is kept and named.
    let (s, e) = api
        .post(
            &format!("/api/v1/backups/{}/restore-over", kept[1]["id"]),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shut it down"),
        "{e}"
    );
    let _ = virsh(&["destroy", &vm]);
    // Off, it is copied whole and cleanly, and restores to the same bytes.
    let off = begin_backup(&api, &vm, &target.name).await;
    let off = backup_done(&api, &vm, off["id"].as_i64().unwrap()).await;
    assert_eq!(
        (off["kind"].clone(), off["consistency"].clone()),
        (json!("full"), json!("clean")),
        "{off}"
    );
    let name = format!("vdbk-off-{}", std::process::id());
    let _off_guard = VmGuard(name.clone());
    let got = raw_bytes(&restore_as(&api, &off["id"], &name).await);
    assert_eq!(
        got.iter().zip(points[2].iter()).position(|(a, b)| a != b),
        None,
        "off point"
    );
    let (s, job) = api
        .post_job(
            &format!("/api/v1/backups/{}/restore-over", kept[1]["id"]),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        (job["kind"].clone(), job["state"].clone(), job["vm"].clone()),
        (json!("restore-over"), json!("succeeded"), json!(vm)),
        "{job}"
    );
    let message = job["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "{} were not made by virtdeck and are kept",
            data.display()
        )),
        "{message}"
    );
    let inactive =
        String::from_utf8_lossy(&virsh(&["dumpxml", "--inactive", &vm]).stdout).to_string();
    let new_disk = inactive
        .lines()
        .filter_map(|l| l.trim().strip_prefix("<source file='"))
        .filter_map(|l| l.split('\'').next())
        .find(|p| p.contains(&format!("-restored-{}-", kept[1]["id"])))
        .unwrap_or_else(|| panic!("the VM is on a restored volume: {inactive}"))
        .to_string();
    assert!(message.contains(&new_disk), "{message}");
    let got = raw_bytes(&new_disk);
    assert_eq!(
        got.iter().zip(points[1].iter()).position(|(a, b)| a != b),
        None,
        "restored over"
    );
    let _ = std::fs::remove_file(&new_disk);
    drop(guards);
}

/// The app on the real libvirtd (`tweak` changes its settings), signed in as admin, with
/// `target` named a backup target.
pub(crate) async fn app_with_target(
    target: &TestPool,
    tweak: impl FnOnce(&mut virtdeck::config::Config),
) -> (common::TestApp, Api) {
    let app = spawn_app_with(move |c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
        tweak(c);
    })
    .await;
    let api = Api::new(&app).await;
    name_target(&api, target).await;
    (app, api)
}

/// Names `target` a backup target.
pub(crate) async fn name_target(api: &Api, target: &TestPool) {
    let (s, t) = api
        .put(
            &format!("/api/v1/backup-targets/{}", target.name),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
}

/// A backup schedule (`body` without its time) at twelve hours from now, so virtdeck's
/// own scheduler does not run it during a test; as the API answered it.
pub(crate) async fn schedule_off_hours(api: &Api, mut body: Value) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let minute = ((now / 60 + 12 * 60) % (24 * 60)) as u32;
    body["at"] = json!(format!("{:02}:{:02}", minute / 60, minute % 60));
    let (s, sched) = api.post("/api/v1/backup-schedules", body).await;
    assert_eq!(s, StatusCode::CREATED, "{sched}");
    sched
}

/// A qcow2 volume `name` in `pool` holding `mib` MiB of random bytes (so a backup copies
/// every block and takes a while), known to libvirt; its path.
pub(crate) fn random_data_disk(pool: &TestPool, name: &str, mib: usize) -> std::path::PathBuf {
    let raw = pool.dir.join(format!("{name}.raw"));
    let path = pool.dir.join(name);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {}M /dev/urandom > '{raw}' && qemu-img convert -O qcow2 '{raw}' '{path}' && rm '{raw}'",
            mib,
            raw = raw.display(),
            path = path.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = virsh(&["pool-refresh", &pool.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The tiny guest running with `disk` as its data disk, and `more` devices.
pub(crate) async fn running_guest_with(disk: &std::path::Path, more: &str) -> Guest {
    // Laid out as virtdeck lays out its own VMs (kernel in libvirt's boot directory,
    // serial log in libvirt's log directory), so another virtdeck takes its definition.
    let boot = std::path::Path::new("/var/lib/libvirt/boot");
    std::fs::create_dir_all(boot).unwrap();
    let guest = Guest::with_devices_in(
        false,
        &format!(
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
             <source file='{}'/><target dev='vda' bus='virtio'/></disk>{more}",
            disk.display()
        ),
        boot,
        Some(std::path::Path::new("/var/log/libvirt/qemu")),
    );
    let out = virsh(&["start", &guest.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    guest.wait_ready().await;
    guest
}
