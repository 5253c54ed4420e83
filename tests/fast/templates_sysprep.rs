//! "Reset identity" on the demo host, with a stand-in `virt-sysprep` script configured
//! as `[images] sysprep_program`: it records the arguments virtdeck passes, and fails when
//! told to, so that the rollback of a failed reset is seen. The real tool on a real Debian
//! guest is tests/real/debian_template_real.rs; its absence is tests/fast/templates.rs.

use crate::common;

use common::api::Api;
use common::spawn_app_with;
use reqwest::StatusCode;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn the_identity_is_reset_with_virt_sysprep_and_a_failure_rolls_the_clone_back() {
    let tools = tempfile::tempdir().unwrap();
    let args_file = tools.path().join("args");
    let fail_flag = tools.path().join("fail");
    let script = tools.path().join("virt-sysprep");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nif [ -e '{}' ]; then echo 'virt-sysprep: error: the disk is locked' >&2; exit 1; fi\n",
            args_file.display(),
            fail_flag.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let configured = script.clone();
    let app = spawn_app_with(move |c| c.images.sysprep_program = Some(configured)).await;
    let api = Api::new(&app).await;
    let (s, _) = api
        .post("/api/v1/vms/build-runner/force-off", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api
        .post("/api/v1/vms/build-runner/template", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        api.get("/api/v1/templates").await.1["sysprep_available"],
        true
    );

    // The form offers the checkbox instead of the "not installed" sentence.
    let (admin, _) = app.login("admin", common::ADMIN_PASSWORD).await;
    let page = common::pages::text(&admin, &app.url("/templates/build-runner/new")).await;
    assert!(
        page.contains("name=\"reset_identity\"")
            && page.contains("Reset identity (hostname, machine-id, SSH host keys)"),
        "{page}"
    );
    assert!(!page.contains("sysprep-missing"));

    // A linked clone with its identity reset: the tool got the clone's disk and name.
    let (s, v) = api
        .post_job(
            "/api/v1/templates/build-runner/vms",
            json!({"name": "runner-2", "mode": "linked", "reset_identity": true}),
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::ACCEPTED, Some("succeeded")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains(", identity reset"),
        "{v}"
    );
    let vm = api.get("/api/v1/vms/runner-2").await.1;
    let volume = vm["disks"][0].as_str().unwrap();
    let args = std::fs::read_to_string(&args_file).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        vec![
            "--quiet",
            "--operations",
            "machine-id,ssh-hostkeys,net-hostname,customize",
            "--hostname",
            "runner-2",
            "--format",
            "qcow2",
            "-a",
            volume
        ]
    );

    // When the tool fails, the clone is undone: no VM, no volume, no claim.
    std::fs::write(&fail_flag, "").unwrap();
    let before = (
        api.fingerprint().await,
        api.get("/api/v1/pools").await.1.to_string(),
    );
    let (s, v) = api
        .post_job(
            "/api/v1/templates/build-runner/vms",
            json!({"name": "runner-3", "mode": "full", "reset_identity": true, "start": true}),
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::ACCEPTED, Some("failed")),
        "{v}"
    );
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("resetting the identity with virt-sysprep failed")
            && m.contains("the disk is locked")
            && m.contains("Nothing was left behind"),
        "{m}"
    );
    assert!(std::fs::read_to_string(&args_file)
        .unwrap()
        .contains("runner-3"));
    let after = (
        api.fingerprint().await,
        api.get("/api/v1/pools").await.1.to_string(),
    );
    assert_eq!(after, before);
    assert_eq!(
        api.get("/api/v1/vms/runner-3").await.0,
        StatusCode::NOT_FOUND
    );
}
