//! Scheduled backups running side by side on the real `qemu:///system` libvirtd: two
//! running tiny guests with 1 GiB data disks of random bytes, backed up at once. A module
//! of its own, so no other module's guests take the host's units or its disk while the
//! two copies overlap.

use crate::backups_real::{
    app_with_target, random_data_disk, running_guest_with, schedule_off_hours,
};
use crate::common::real::{require_libvirtd, TestPool};

use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

/// With `[backups] scheduled_at_once = 2`, "Run now" on a schedule over a tag backs up
/// its two VMs at the same time (both running at once, as the API shows them), and both
/// succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_backs_up_two_vms_at_once_when_set_to() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let disks = TestPool::with_prefix("vdbk-two-disks");
    let target = TestPool::with_prefix("vdbk-two-target");
    // 1 GiB each, so each copy lasts long enough to be seen beside the other (libvirt
    // begins them one after the other).
    let first = running_guest_with(&random_data_disk(&disks, "a.qcow2", 1024), "").await;
    let second = running_guest_with(&random_data_disk(&disks, "b.qcow2", 1024), "").await;
    let (_app, api) = app_with_target(&target, |c| c.backups.scheduled_at_once = 2).await;
    let tag = format!("two{}", std::process::id());
    let names = [first.name.clone(), second.name.clone()];
    for vm in &names {
        let (s, v) = api
            .patch(&format!("/api/v1/vms/{vm}"), json!({"tags": [tag]}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // Off hours: only "Run now" runs it during the test.
    let sched = schedule_off_hours(
        &api,
        json!({"scope": "tag", "scope_value": tag, "pool": target.name, "every": "daily",
               "keep": {"last": 5}}),
    )
    .await;
    let (s, run) = api
        .post(
            &format!("/api/v1/backup-schedules/{}/run", sched["id"]),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run}");
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut most_at_once = 0;
    loop {
        let (_, list) = api.get("/api/v1/backups").await;
        let ours: Vec<&serde_json::Value> = list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| names.iter().any(|n| b["vm"] == n.as_str()))
            .collect();
        most_at_once = most_at_once.max(ours.iter().filter(|b| b["state"] == "running").count());
        if ours.len() == 2 && ours.iter().all(|b| b["state"] != "running") {
            for b in &ours {
                assert_eq!(b["state"], "succeeded", "{b}");
                assert_eq!(b["schedule"], sched["id"], "{b}");
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule's backups did not end: {list}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(most_at_once, 2, "both VMs were backed up at the same time");
}
