//! A template made from a real Debian guest, cloned with **Reset identity** through the
//! real virt-sysprep (libguestfs's appliance under TCG where KVM does not work): the
//! clone boots with a new machine-id, new SSH host keys and its own host name, all read
//! over virtdeck's serial console. The template boots UEFI with Secure Boot and a TPM:
//! its clone gets its own NVRAM and TPM state and boots with Secure Boot too. Runs after `debian_guest_real` (one module at a time):
//! a template and its clone take more units than the parallel boots leave.

use crate::common;
use crate::console_support::{read_serial_until, serial, serial_until, Ws};
use crate::debian_guest_real::{create, log_in, send, upload_image, PASSWORD};

use common::api::Api;
use common::real::{require_libvirtd, wait_for_state, TestPool, VmGuard, URI};
use common::spawn_app_with;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

/// Reads the value a command prints after `tag=` (the echoed command line has `$(`).
async fn read_value(ws: &mut Ws, tag: &str, command: &str) -> String {
    send(ws, &format!("echo \"{tag}=$({command})\"\r")).await;
    let out = read_serial_until(ws, Duration::from_secs(60), |t| {
        t.split(['\r', '\n'])
            .any(|l| l.starts_with(&format!("{tag}=")) && l.len() > tag.len() + 1)
    })
    .await;
    out.split(['\r', '\n'])
        .find_map(|l| l.strip_prefix(&format!("{tag}=")).filter(|v| !v.is_empty()))
        .unwrap_or_else(|| panic!("no {tag}= line; console:\n{out}"))
        .trim()
        .to_string()
}

#[tokio::test]
async fn a_clone_with_reset_identity_gets_its_own_machine_id_host_keys_and_name() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let pool = TestPool::with_prefix("vddeb-tpl");
    let app = spawn_app_with(|c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
    })
    .await;
    let api = Api::new(&app).await;
    let base_image = upload_image(&api, &pool).await;
    let base = format!("vddeb-tpl-{}", std::process::id());
    let clone = format!("{base}-c");
    let _guards = (VmGuard(clone.clone()), VmGuard(base.clone()));
    create(
        &api,
        &base,
        &base_image,
        json!({"firmware": "uefi_secure_boot", "tpm": true}),
    )
    .await;

    // The template's identity, read in the running guest; then it powers off.
    let mut ws = serial(&app, &api, &base).await;
    log_in(&mut ws, "ops").await;
    let machine_id = read_value(&mut ws, "MID", "cat /etc/machine-id").await;
    let host_key = read_value(
        &mut ws,
        "HOSTKEY",
        "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2",
    )
    .await;
    assert_eq!(machine_id.len(), 32, "{machine_id}");
    assert!(host_key.starts_with("SHA256:"), "{host_key}");
    let cloud_init = read_value(
        &mut ws,
        "CLOUDINIT",
        "cloud-init status --wait >/dev/null; cloud-init status | cut -d' ' -f2",
    )
    .await;
    assert_eq!(cloud_init, "done", "the template's first boot finished");
    // The console is read until the guest says it is going down (it closes once the VM
    // stops): the typed command must have reached it before the console is let go.
    send(
        &mut ws,
        &format!("echo {PASSWORD} | sudo -S systemctl poweroff\r"),
    )
    .await;
    read_serial_until(&mut ws, Duration::from_secs(60), |t| {
        t.contains("The system will power off now!")
    })
    .await;
    drop(ws);
    let url = app.url(&format!("/api/v1/vms/{base}"));
    let bearer = common::real::bearer_client(&api.token);
    wait_for_state(&bearer, &url, "shut_off").await;

    let (s, v) = api
        .post(&format!("/api/v1/vms/{base}/template"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, job) = api
        .post_job(
            &format!("/api/v1/templates/{base}/vms"),
            json!({"name": clone, "mode": "linked", "reset_identity": true, "start": true}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["state"], "succeeded", "{job}");

    // The clone: same user and password (they are on the disk), its own identity.
    let mut ws = serial(&app, &api, &clone).await;
    log_in(&mut ws, "ops").await;
    serial_until(&mut ws, "echo \"HN=$(hostname)\"", &format!("HN={clone}")).await;
    let clone_id = read_value(&mut ws, "MID", "cat /etc/machine-id").await;
    let clone_key = read_value(
        &mut ws,
        "HOSTKEY",
        "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2",
    )
    .await;
    assert_eq!(clone_id.len(), 32, "{clone_id}");
    assert_ne!(clone_id, machine_id, "a new machine-id");
    assert!(clone_key.starts_with("SHA256:"), "{clone_key}");
    assert_ne!(clone_key, host_key, "new SSH host keys");

    // A UEFI template's clone has its own variable store and TPM state, and still boots
    // with Secure Boot.
    serial_until(
        &mut ws,
        "echo \"SB=$(mokutil --sb-state 2>&1)\"",
        "SB=SecureBoot enabled",
    )
    .await;
    serial_until(&mut ws, "echo \"TPM=$(ls /dev/tpm0)\"", "TPM=/dev/tpm0").await;
    let (_, vm) = api.get(&format!("/api/v1/vms/{clone}")).await;
    let xml = vm["xml"].as_str().unwrap();
    assert!(
        xml.contains(&format!("/var/lib/libvirt/qemu/nvram/{clone}_VARS.fd")),
        "{xml}"
    );
    let uuid = vm["uuid"].as_str().unwrap();
    assert!(std::path::Path::new(&format!("/var/lib/libvirt/swtpm/{uuid}")).exists());
    assert!(std::path::Path::new(&format!("/var/lib/libvirt/qemu/nvram/{base}_VARS.fd")).exists());
}
