//! Backups that are cut off or watched on the real `qemu:///system` libvirtd, each with a
//! running tiny guest whose data disk holds random bytes (so copying it takes a while):
//! virtdeck killed mid-backup, and the Backups page following one in Chromium. A module
//! of their own: their guests and the restored VMs of `backups_real` would not fit the
//! host's units together.

use crate::backups_real::{
    app_with_target, backup_done, begin_backup, name_target, random_data_disk, running_guest_with,
};
use crate::common;

use common::api::Api;
use common::real::{admin_token, require_libvirtd, start_server, virsh, TestPool};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

/// virtdeck is killed (SIGKILL) while a backup of a running guest copies 1 GiB: started
/// again, it says the backup was interrupted, its files are gone, libvirt's job and
/// checkpoint with them, and the next backup is full and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_cut_off_by_a_kill_is_interrupted_cleaned_up_and_the_next_is_full() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let disks = TestPool::with_prefix("vdbk-kill-disks");
    let target = TestPool::with_prefix("vdbk-kill-target");
    let disk = random_data_disk(&disks, "data.qcow2", 1024);
    let guest = running_guest_with(&disk, "").await;
    let vm = guest.name.clone();
    let data_dir = tempfile::tempdir().unwrap();
    let token = admin_token(data_dir.path());
    let mut server = start_server(data_dir.path()).await;
    let api = |base: &str| Api {
        c: reqwest::Client::new(),
        base: base.to_string(),
        token: token.clone(),
    };
    let before = api(&server.base);
    name_target(&before, &target).await;

    // A backup is a job too: Cancel on it aborts libvirt's job, removes its files and says
    // so on the job and on the backup.
    let first = begin_backup(&before, &vm, &target.name).await;
    let (_, jobs) = before.get("/api/v1/jobs").await;
    let job = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "backup" && j["source"] == format!("backup {}", first["id"]))
        .unwrap_or_else(|| panic!("the backup's job: {jobs}"))
        .clone();
    assert_eq!(
        (job["state"].clone(), job["vm"].clone(), job["pool"].clone()),
        (json!("running"), json!(vm), json!(target.name)),
        "{job}"
    );
    let (s, c) = before
        .post(&format!("/api/v1/jobs/{}/cancel", job["id"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{c}");
    ended_cancelled(&before, &job, &first).await;
    no_checkpoint_left(&vm);
    let begun = begin_backup(&before, &vm, &target.name).await;
    assert_eq!(
        (begun["kind"].clone(), begun["state"].clone()),
        (json!("full"), json!("running")),
        "{begun}"
    );
    let backup_dir = std::path::PathBuf::from(begun["dir"].as_str().unwrap());

    // No chance to clean up.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert!(backup_dir.exists(), "the cut-off backup left its files");

    let mut server = start_server(data_dir.path()).await;
    let after = api(&server.base);
    let (_, list) = after.get(&format!("/api/v1/backups?vm={vm}")).await;
    let cut = &list["backups"][0];
    assert_eq!(
        (cut["id"].clone(), cut["state"].clone()),
        (begun["id"].clone(), json!("interrupted")),
        "{list}"
    );
    assert!(
        cut["message"]
            .as_str()
            .unwrap()
            .contains("virtdeck stopped while this backup ran"),
        "{cut}"
    );
    assert!(!backup_dir.exists(), "its files are removed");
    let (_, jobs) = after.get("/api/v1/jobs").await;
    let cut_job = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["source"] == format!("backup {}", begun["id"]))
        .unwrap_or_else(|| panic!("the cut-off backup's job: {jobs}"));
    assert_eq!(cut_job["state"], "interrupted", "{cut_job}");
    assert!(
        cut_job["message"]
            .as_str()
            .unwrap()
            .contains("its files were removed and the VM's next backup is full"),
        "{cut_job}"
    );
    let jobs = virsh(&["domjobinfo", &vm]);
    let jobs = String::from_utf8_lossy(&jobs.stdout);
    assert!(
        jobs.lines()
            .any(|l| l.starts_with("Job type:") && l.contains("None")),
        "libvirt's backup job is ended: {jobs}"
    );
    no_checkpoint_left(&vm);

    let next = begin_backup(&after, &vm, &target.name).await;
    assert_eq!(next["kind"], "full", "{next}");
    let next = backup_done(&after, &vm, next["id"].as_i64().unwrap()).await;
    assert!(
        next["bytes"].as_u64().unwrap() > 1 << 30,
        "all of it: {next}"
    );

    // Restored over, once shut off: the VM is held while the 1 GiB is read back (starting
    // or backing it up is refused with the reason), and a kill midway leaves it as it was,
    // with nothing read kept.
    let _ = virsh(&["destroy", &vm]);
    let over_path = format!("/api/v1/backups/{}/restore-over", next["id"]);
    let (s, over) = after.post(&over_path, json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{over}");
    assert_eq!(
        (over["kind"].clone(), over["state"].clone()),
        (json!("restore-over"), json!("running")),
        "{over}"
    );
    for (path, body) in [
        (format!("/api/v1/vms/{vm}/start"), json!({})),
        (
            format!("/api/v1/vms/{vm}/backups"),
            json!({"pool": target.name}),
        ),
        (over_path.clone(), json!({})),
    ] {
        let (s, e) = after.post(&path, body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{path}: {e}");
        let said = e["error"]["message"].as_str().unwrap();
        assert!(
            said.contains(&format!(
                "{vm} is being restored from backup {}",
                next["id"]
            )),
            "{path}: {said}"
        );
    }
    let job_path = format!("/api/v1/jobs/{}", over["id"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, j) = after.get(&job_path).await;
        assert_eq!(j["state"], "running", "killed before it ended: {j}");
        if j["bytes_done"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = start_server(data_dir.path()).await;
    let after = api(&server.base);
    let (_, cut) = after.get(&job_path).await;
    assert_eq!(cut["state"], "interrupted", "{cut}");
    assert!(
        cut["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{vm} is as it was")),
        "{cut}"
    );
    let restored_files = || {
        std::fs::read_dir(&disks.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains("-restored-"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        restored_files(),
        Vec::<String>::new(),
        "the volume read so far is gone"
    );
    let inactive =
        String::from_utf8_lossy(&virsh(&["dumpxml", "--inactive", &vm]).stdout).to_string();
    assert!(inactive.contains(&disk.display().to_string()), "{inactive}");
    // Asked again, it runs to its end: the VM is on the restored disk and starts.
    let (s, done) = after.post_job(&over_path, json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{done}");
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(restored_files().len(), 1, "{done}");
    let (s, e) = after
        .post(&format!("/api/v1/vms/{vm}/start"), json!({}))
        .await;
    assert!(s.is_success(), "{e}");
    let _ = virsh(&["destroy", &vm]);

    // A restore whose backup file went bad on the target fails as a job and leaves no
    // VM, no volume and no units behind.
    let file = next["files"][0]["path"].as_str().unwrap().to_string();
    std::fs::write(&file, b"not a disk image any more").unwrap();
    let name = format!("vdbk-bad-{}", std::process::id());
    let _bad = common::real::VmGuard(name.clone());
    let (s, job) = after
        .post_job(
            &format!("/api/v1/backups/{}/restore", next["id"]),
            json!({"name": name, "pool": disks.name}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["state"], "failed", "{job}");
    let message = job["message"].as_str().unwrap();
    assert!(
        message.contains("reading the backup into the disk failed")
            && message.contains("Nothing was left behind"),
        "{message}"
    );
    let (s, _) = after.get(&format!("/api/v1/vms/{name}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        !disks.dir.join(format!("{name}-vda.qcow2")).exists(),
        "the restore's volume is gone"
    );
    // Its units: no claim of it is left (the host's free units also move with the other
    // tests of this module, so they are not compared).
    let (_, host) = after.get("/api/v1/host").await;
    let claims = host["capacity"]["claims"].as_array().unwrap();
    assert!(
        claims.iter().any(|c| c["vm"] == vm.as_str()),
        "claims are listed: {claims:?}"
    );
    assert!(
        !claims.iter().any(|c| c["vm"] == name.as_str()),
        "its units are released: {claims:?}"
    );
}

/// VM `vm` has no checkpoint (libvirt's list of them is empty).
fn no_checkpoint_left(vm: &str) {
    let checkpoints = virsh(&["checkpoint-list", vm, "--name"]);
    assert!(
        String::from_utf8_lossy(&checkpoints.stdout)
            .trim()
            .is_empty(),
        "no checkpoint is left: {}",
        String::from_utf8_lossy(&checkpoints.stdout)
    );
}

/// The Backups page in Chromium shows a running backup's progress bar, and its end
/// without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backups_page_shows_a_running_backups_progress_in_chromium() {
    use common::webdriver::Browser;
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let disks = TestPool::with_prefix("vdbk-page-disks");
    let target = TestPool::with_prefix("vdbk-page-target");
    let disk = random_data_disk(&disks, "data.qcow2", 2048);
    let guest = running_guest_with(&disk, "").await;
    let vm = guest.name.clone();
    let (app, api) = app_with_target(&target, |_| {}).await;
    let b = Browser::start().await;
    b.goto(&app.url("/login")).await;
    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", common::ADMIN_PASSWORD)
        .await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    b.wait_for_path("/host").await;

    let begun = begin_backup(&api, &vm, &target.name).await;
    b.goto(&app.url("/backups")).await;
    let row = format!("tr[data-backup=\"{}\"]", begun["id"]);
    let bar = b
        .execute(
            &format!(
                "const p = document.querySelector('{row} progress');
                 return p ? [p.value, p.max, p.closest('td').textContent.trim()] : null;"
            ),
            json!([]),
        )
        .await;
    assert!(
        bar.is_array(),
        "the running backup's row has a progress bar: {}",
        b.text_of(&row).await
    );
    assert_eq!(bar[1], json!(100), "{bar}");
    let cancel = b
        .execute(
            &format!(
                "const f = document.querySelector('{row} form.backup-cancel');
                 return f ? f.getAttribute('action') : null;"
            ),
            json!([]),
        )
        .await;
    assert!(
        cancel
            .as_str()
            .is_some_and(|a| a == format!("/backups/{}/cancel", begun["id"])),
        "a running backup can be cancelled from its row: {cancel}"
    );
    assert!(
        bar[2].as_str().unwrap().ends_with('%'),
        "the percentage is written beside it: {bar}"
    );
    b.execute(
        &format!("document.querySelector('{row}').scrollIntoView(); return true;"),
        json!([]),
    )
    .await;
    b.screenshot("backups-progress").await;
    // The page reloads itself while a backup runs, until it has ended.
    b.wait_until(
        &format!(
            "const r = document.querySelector('{row}');
             return !!r && r.dataset.state === 'succeeded' && !r.querySelector('progress');"
        ),
        Duration::from_secs(300),
        "the backup to show as succeeded",
    )
    .await;
    let state = b.text_of(&format!("{row} .backup-state")).await;
    assert!(state.contains("succeeded"), "{state}");
    let by = b.text_of(&format!("{row} .backup-by")).await;
    assert_eq!(by, "by admin", "who made it, or the schedule that did");

    // Cancel on a running backup's row stops it and comes back to the Backups page.
    let (s, gone) = api
        .delete(&format!("/api/v1/backups/{}", begun["id"]))
        .await;
    assert_eq!(s, StatusCode::OK, "{gone}");
    let again = begin_backup(&api, &vm, &target.name).await;
    assert_eq!(
        again["kind"], "full",
        "the only backup was deleted: {again}"
    );
    b.goto(&app.url("/backups")).await;
    let row = format!("tr[data-backup=\"{}\"]", again["id"]);
    let cancel = b.find(&format!("{row} form.backup-cancel button")).await;
    b.click(&cancel).await;
    b.wait_for_path("/backups").await;
    let notice = b.text_of("#backups-notice").await;
    assert!(
        notice.contains(&format!("Cancelling backup {}", again["id"])),
        "{notice}"
    );
    b.wait_until(
        &format!(
            "const r = document.querySelector('{row}');
             return !!r && r.dataset.state === 'failed';"
        ),
        Duration::from_secs(120),
        "the cancelled backup to show as failed",
    )
    .await;
    let state = b.text_of(&format!("{row} .backup-state")).await;
    assert!(
        state.contains("The backup was cancelled; its files were removed."),
        "{state}"
    );
    assert!(
        !std::path::Path::new(again["dir"].as_str().unwrap()).exists(),
        "its files are removed"
    );
    b.quit().await;
}

/// Cancel on the backup of a VM that is off stops the copy of its disk part-way (qemu-img
/// is stopped, not waited for): the job ends cancelled, the backup is recorded failed as
/// cancelled, and its files are gone. A restore over the VM, cancelled, stops part-way
/// the same way and leaves the VM on its disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_copy_of_a_vm_that_is_off_and_its_restore_part_way() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let disks = TestPool::with_prefix("vdbk-off-disks");
    let target = TestPool::with_prefix("vdbk-off-target");
    let disk = random_data_disk(&disks, "data.qcow2", 512);
    let guest = crate::console_support::Guest::with_devices(
        false,
        &format!(
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
             <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
            disk.display()
        ),
    );
    let vm = guest.name.clone();
    let (_app, api) = app_with_target(&target, |_| {}).await;
    let begun = begin_backup(&api, &vm, &target.name).await;
    assert_eq!(begun["consistency"], "clean", "{begun}");
    let (_, list) = api.get(&format!("/api/v1/backups?vm={vm}")).await;
    let job = list["backups"][0]["job"].clone();
    assert!(job.is_i64(), "the running backup's job: {list}");
    let (s, c) = api
        .post(&format!("/api/v1/jobs/{job}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{c}");
    ended_cancelled(&api, &json!({"id": job}), &begun).await;
    // The VM is off and whole: the next backup copies it to its end.
    let next = begin_backup(&api, &vm, &target.name).await;
    let next = backup_done(&api, &vm, next["id"].as_i64().unwrap()).await;
    assert_eq!(next["kind"], "full", "{next}");

    // Restoring it over the VM, cancelled, stops reading part-way too: the VM stays on
    // its disk and no restored volume is left.
    let (s, over) = api
        .post(
            &format!("/api/v1/backups/{}/restore-over", next["id"]),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{over}");
    let (s, c) = api
        .post(&format!("/api/v1/jobs/{}/cancel", over["id"]), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{c}");
    let ended = api.job_end(&over).await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
    assert!(
        ended["bytes_done"].as_u64() < ended["bytes_total"].as_u64(),
        "stopped before the whole disk was read: {ended}"
    );
    let (_, now) = api.get(&format!("/api/v1/vms/{vm}")).await;
    assert_eq!(now["disks"][0], json!(disk.display().to_string()), "{now}");
    let left: Vec<_> = std::fs::read_dir(&disks.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("restored"))
        .collect();
    assert!(left.is_empty(), "restored volumes left: {left:?}");
}

/// Waits for the cancelled backup `backup`'s job `job` to end: cancelled, the backup
/// recorded failed as cancelled, its files gone.
async fn ended_cancelled(api: &Api, job: &serde_json::Value, backup: &serde_json::Value) {
    let ended = api.job_end(job).await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
    let (_, list) = api
        .get(&format!(
            "/api/v1/backups?vm={}",
            backup["vm"].as_str().unwrap()
        ))
        .await;
    let b = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == backup["id"])
        .unwrap_or_else(|| panic!("{list}"))
        .clone();
    assert_eq!(b["state"], "failed", "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("The backup was cancelled; its files were removed."),
        "{b}"
    );
    assert!(
        !std::path::Path::new(backup["dir"].as_str().unwrap()).exists(),
        "its files are removed"
    );
}
