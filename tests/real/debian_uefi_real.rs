//! The Debian cloud image under plain UEFI (no Secure Boot, no TPM) on the real libvirtd
//! (TCG: the firmware and the boot to a login prompt take about a minute): it boots from
//! its disk through OVMF, the guest sees EFI firmware with Secure Boot off, and the VM has
//! its own variable store, removed with it.

use crate::common;
use crate::console_support::{serial, serial_until};
use crate::debian_guest_real::{create, log_in, upload_image};

use common::api::Api;
use common::real::{require_libvirtd, TestPool, VmGuard, URI};
use common::spawn_app_with;
use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;

#[tokio::test]
async fn a_debian_cloud_image_boots_under_plain_uefi() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let pool = TestPool::with_prefix("vddeb-efi");
    let app = spawn_app_with(|c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
    })
    .await;
    let api = Api::new(&app).await;
    let base = upload_image(&api, &pool).await;
    let name = format!("vddeb-efi-{}", std::process::id());
    let _guard = VmGuard(name.clone());
    create(&api, &name, &base, json!({"firmware": "uefi"})).await;
    let (_, vm) = api.get(&format!("/api/v1/vms/{name}")).await;
    let def = &vm["devices"];
    assert_eq!(
        (
            def["firmware"].clone(),
            def["secure_boot"].clone(),
            def["tpm"].clone()
        ),
        (json!("uefi"), json!(false), json!(null)),
        "{vm}"
    );
    let nvram = format!("/var/lib/libvirt/qemu/nvram/{name}_VARS.fd");
    assert!(vm["xml"].as_str().unwrap().contains(&nvram), "{vm}");

    let mut ws = serial(&app, &api, &name).await;
    log_in(&mut ws, "ops").await;
    serial_until(
        &mut ws,
        "echo \"EFI=$(test -d /sys/firmware/efi && echo yes)\"",
        "EFI=yes",
    )
    .await;
    serial_until(
        &mut ws,
        "echo \"SB=$(mokutil --sb-state 2>&1)\"",
        "SB=SecureBoot disabled",
    )
    .await;
    drop(ws);

    let (s, d) = api
        .delete(&format!("/api/v1/vms/{name}?delete_volumes=true"))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert!(!Path::new(&nvram).exists(), "NVRAM left behind");
}
