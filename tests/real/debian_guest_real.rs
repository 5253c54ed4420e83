//! A real Debian 12 guest on the real `qemu:///system` libvirtd, under TCG: the cloud
//! image `scripts/build-test-image.sh` builds from Debian packages is uploaded through
//! virtdeck's upload API, a VM is made from it as a cloud image (host name, user,
//! password, SSH key, a bigger disk) through the API, and boots from its own disk. Over
//! virtdeck's serial-console websocket the test logs in as that user with that password
//! and reads back what cloud-init did: the host name, the key in authorized_keys,
//! `cloud-init status` = done, the root file system grown to the disk asked for.
//!
//! Under BIOS; and under UEFI with Secure Boot and an emulated TPM, where the guest says
//! `SecureBoot enabled` (mokutil) and has `/dev/tpm0`; deleting that VM removes its NVRAM
//! and TPM state. A backup of the running BIOS guest is file-system consistent (its
//! guest agent froze it). A snapshot of the running BIOS guest, reverted, takes away a file
//! written after it; then the same login in Chromium on the serial console page
//! (xterm.js), with a screenshot (target/test-artifacts/console-debian-serial.png). Boot to the login prompt takes 35-45 s on an idle 2-core machine under
//! TCG and several times that on a loaded one: the deadlines are generous.

use crate::common;
use crate::console_support::{has_output_line, read_serial_until, serial, serial_until, Ws};

use common::api::Api;
use common::real::{require_libvirtd, virsh, TestPool, VmGuard, URI};
use common::spawn_app_with;
use common::webdriver::Browser;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub(crate) const PASSWORD: &str = "Debian-Guest-Pa55";
/// From "Create and start" to the login prompt, on a loaded CI machine.
const BOOT_DEADLINE: Duration = Duration::from_secs(600);

pub(crate) fn image() -> PathBuf {
    let path = std::env::var_os("VIRTDECK_TEST_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-image/debian-12-virtdeck.qcow2")
        });
    assert!(
        path.exists(),
        "the Debian test image is missing at {}: run scripts/build-test-image.sh (make test does)",
        path.display()
    );
    path
}

pub(crate) fn ssh_key(tag: &str) -> String {
    use base64::Engine;
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&[7u8; 32]);
    format!(
        "ssh-ed25519 {} {tag}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

pub(crate) async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Binary(text.as_bytes().to_vec().into()))
        .await
        .expect("typed into the serial console");
}

/// Waits for the login prompt and logs in; returns once a shell answers.
pub(crate) async fn log_in(ws: &mut Ws, user: &str) {
    let mut seen = read_serial_until(ws, BOOT_DEADLINE, |t| t.contains("login: ")).await;
    assert!(
        seen.contains("login: "),
        "no login prompt; console:\n{seen}"
    );
    for _ in 0..5 {
        send(ws, &format!("{user}\r")).await;
        seen = read_serial_until(ws, Duration::from_secs(60), |t| t.contains("Password:")).await;
        if !seen.contains("Password:") {
            send(ws, "\r").await;
            continue;
        }
        send(ws, &format!("{PASSWORD}\r")).await;
        seen = read_serial_until(ws, Duration::from_secs(60), |t| {
            t.contains("$ ") || t.contains("incorrect")
        })
        .await;
        if seen.contains("$ ") {
            serial_until(ws, "echo SHELL=$((40+2))", "SHELL=42").await;
            return;
        }
        // Too early (cloud-init had not made the user yet): the prompt comes back.
        read_serial_until(ws, Duration::from_secs(30), |t| t.contains("login: ")).await;
    }
    panic!("could not log in as {user}; console:\n{seen}");
}

pub(crate) async fn upload_image(api: &Api, pool: &TestPool) -> String {
    let bytes = std::fs::read(image()).expect("the test image is readable");
    let r = api
        .c
        .put(format!(
            "{}/api/v1/pools/{}/volumes/debian-12.qcow2?source=debian-12-virtdeck.qcow2",
            api.base, pool.name
        ))
        .bearer_auth(&api.token)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"], "succeeded", "{body}");
    pool.dir.join("debian-12.qcow2").display().to_string()
}

pub(crate) async fn create(api: &Api, name: &str, base: &str, extra: Value) -> Value {
    let mut body = json!({
        "name": name,
        "vcpus": 1,
        "memory_mib": 1024,
        "disk": {"type": "cloud_image", "base": base, "size_gib": 3},
        "cloud_init": {
            "hostname": format!("{name}-host"),
            "user": "ops",
            "password": PASSWORD,
            "ssh_keys": [ssh_key(&format!("ops@{name}"))]
        },
        "start": true
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, created) = api.post("/api/v1/vms", body).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    created
}

/// Logs in and checks what cloud-init did.
pub(crate) async fn check_provisioned(ws: &mut Ws, name: &str) {
    log_in(ws, "ops").await;
    serial_until(ws, "echo \"HN=$(hostname)\"", &format!("HN={name}-host")).await;
    serial_until(
        ws,
        &format!("echo \"KEY=$(grep -c ' ops@{name}$' ~/.ssh/authorized_keys)\""),
        "KEY=1",
    )
    .await;
    // `--long` says which module failed, if one did.
    send(ws, "cloud-init status --wait --long; echo CLOUD-INIT-END\r").await;
    let status = read_serial_until(ws, Duration::from_secs(300), |t| {
        t.matches("CLOUD-INIT-END").count() >= 2
    })
    .await;
    assert!(
        has_output_line(&status, "status: done"),
        "cloud-init did not finish cleanly:\n{status}"
    );
    // The disk is the 3 GiB asked for and growpart gave the root file system the rest.
    serial_until(
        ws,
        "echo \"DISK=$(lsblk -bdno SIZE /dev/vda)\"",
        "DISK=3221225472",
    )
    .await;
    serial_until(
        ws,
        "echo \"GROWN=$(( $(df -BM --output=size / | tail -n 1 | tr -dc 0-9) > 2700 ))\"",
        "GROWN=1",
    )
    .await;
}

#[tokio::test]
async fn a_debian_cloud_image_boots_under_bios_and_cloud_init_provisions_it() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let pool = TestPool::with_prefix("vddeb-bios");
    let app = spawn_app_with(|c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
    })
    .await;
    let api = Api::new(&app).await;
    let base = upload_image(&api, &pool).await;
    let name = format!("vddeb-bios-{}", std::process::id());
    let _guard = VmGuard(name.clone());
    create(&api, &name, &base, json!({})).await;
    let (_, vm) = api.get(&format!("/api/v1/vms/{name}")).await;
    assert_eq!(vm["devices"]["firmware"], "bios", "{vm}");
    let mut ws = serial(&app, &api, &name).await;
    check_provisioned(&mut ws, &name).await;
    serial_until(
        &mut ws,
        "echo \"EFI=$(test -d /sys/firmware/efi && echo yes || echo no)\"",
        "EFI=no",
    )
    .await;

    // A snapshot of the running guest, then a file written after it: reverting to the
    // snapshot brings back the guest as it was, without the file.
    serial_until(
        &mut ws,
        "sync; echo BEFORE=$(echo kept | tee ~/before)",
        "BEFORE=kept",
    )
    .await;
    let (s, snap) = api
        .post(
            &format!("/api/v1/vms/{name}/snapshots"),
            json!({"name": "provisioned"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{snap}");
    serial_until(
        &mut ws,
        "sync; echo AFTER=$(echo new | tee ~/after)",
        "AFTER=new",
    )
    .await;
    drop(ws);
    let (s, r) = api
        .post(
            &format!("/api/v1/vms/{name}/snapshots/provisioned/revert"),
            json!({}),
        )
        .await;
    assert!(s.is_success(), "{s} {r}");
    let mut ws = serial(&app, &api, &name).await;
    serial_until(
        &mut ws,
        "echo \"FILES=$(ls ~/before ~/after 2>/dev/null | wc -l) $(cat ~/before)\"",
        "FILES=1 kept",
    )
    .await;

    // A backup of the running guest: its guest agent (in the image, reached through the
    // channel every new VM has) freezes the file systems, so it is file-system consistent.
    let target = TestPool::with_prefix("vddeb-bk");
    crate::backups_real::name_target(&api, &target).await;
    let (s, b) = api
        .post(
            &format!("/api/v1/vms/{name}/backups"),
            json!({"pool": target.name}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let backup = loop {
        let (_, list) = api.get(&format!("/api/v1/backups?vm={name}")).await;
        let b = list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .cloned()
            .unwrap_or(Value::Null);
        if b["state"] != "running" {
            break b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never ended: {b}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(backup["state"], "succeeded", "{backup}");
    assert_eq!(backup["consistency"], "filesystem", "{backup}");
    serial_until(&mut ws, "touch ~/thawed && echo THAWED=yes", "THAWED=yes").await;

    // The same login in Chromium, through the VM's serial console page (xterm.js).
    send(&mut ws, "exit\r").await;
    ws.close(None).await.expect("the console closes");
    while let Some(Ok(_)) = ws.next().await {}
    let b = Browser::start().await;
    b.goto(&app.url("/login")).await;
    b.type_into("input[name=username]", "admin").await;
    b.type_into(
        "input[name=password]",
        &format!("{}\u{E007}", common::ADMIN_PASSWORD),
    )
    .await;
    b.wait_for_path("/host").await;
    b.goto(&app.url(&format!("/vms/{name}/console/serial")))
        .await;
    // The websocket session above may still hold the console: take it over, as an admin would.
    b.wait_until(
        "return ['connected', 'taken'].includes(document.getElementById('console-status').dataset.state);",
        Duration::from_secs(30),
        "the serial console to connect or say it is in use",
    )
    .await;
    let taken = "return document.getElementById('console-status').dataset.state === 'taken';";
    if b.execute(taken, json!([])).await == json!(true) {
        let take = b.find("#serial-takeover").await;
        b.click(&take).await;
    }
    b.wait_until(
        "return document.getElementById('console-status').dataset.state === 'connected';",
        Duration::from_secs(30),
        "the serial console to connect",
    )
    .await;
    let input = b.find(".xterm-helper-textarea").await;
    let screen_has = |text: &str| {
        format!(
            r#"const buf = window.virtdeckTerminal.buffer.active;
            for (let i = 0; i < buf.length; i++) {{
              const line = buf.getLine(i);
              if (line && line.translateToString(true).includes({text:?})) return true;
            }}
            return false;"#
        )
    };
    let wait_for = |text: String, keys: String| {
        let b = &b;
        let input = &input;
        let script = screen_has(&text);
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                if !keys.is_empty() {
                    b.send_keys(input, &keys).await;
                }
                let seen = async {
                    for _ in 0..20 {
                        if b.execute(&script, json!([])).await == json!(true) {
                            return true;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    false
                };
                if seen.await {
                    return;
                }
                if std::time::Instant::now() > deadline {
                    b.screenshot("console-debian-serial").await;
                    panic!("{text:?} never appeared in the terminal");
                }
            }
        }
    };
    wait_for("login:".into(), "\u{E007}".into()).await;
    b.send_keys(&input, "ops\u{E007}").await;
    wait_for("Password:".into(), String::new()).await;
    b.send_keys(&input, &format!("{PASSWORD}\u{E007}")).await;
    wait_for(format!("ops@{name}-host:~$"), String::new()).await;
    // The echoed command line shows `$(hostname)`; only its output has the name.
    wait_for(
        format!("BROWSER-HN={name}-host"),
        "echo \"BROWSER-HN=$(hostname)\"\u{E007}".into(),
    )
    .await;
    // The terminal's buffer has it; the rows on screen are drawn on a later frame.
    let on_screen = [
        format!("ops@{name}-host"),
        format!("BROWSER-HN={name}-host"),
    ];
    b.wait_until(
        &format!(
            "const rows = document.querySelector('.xterm-rows');
             return !!rows && {on_screen:?}.every(t => rows.textContent.includes(t));"
        ),
        Duration::from_secs(30),
        "the shell prompt and the host name to be drawn on screen",
    )
    .await;
    b.screenshot("console-debian-serial").await;
    b.quit().await;
}

#[tokio::test]
async fn a_debian_cloud_image_boots_under_uefi_secure_boot_with_a_tpm() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let pool = TestPool::with_prefix("vddeb-sb");
    let app = spawn_app_with(|c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
    })
    .await;
    let api = Api::new(&app).await;
    let (_, host) = api.get("/api/v1/host").await;
    assert_eq!(
        host["guest"]["secure_boot"], true,
        "OVMF is installed: {host}"
    );
    assert_eq!(
        host["guest"]["tpm_emulator"], true,
        "swtpm is installed: {host}"
    );
    let base = upload_image(&api, &pool).await;
    let name = format!("vddeb-sb-{}", std::process::id());
    let _guard = VmGuard(name.clone());
    create(
        &api,
        &name,
        &base,
        json!({"firmware": "uefi_secure_boot", "tpm": true}),
    )
    .await;
    let (_, vm) = api.get(&format!("/api/v1/vms/{name}")).await;
    let def = &vm["devices"];
    assert_eq!(def["firmware"], "uefi", "{vm}");
    assert_eq!(def["secure_boot"], true, "{vm}");
    assert_eq!(def["tpm"], "tpm-crb 2.0", "{vm}");
    let uuid = vm["uuid"].as_str().unwrap().to_string();
    // libvirt made the VM its own variable store from the Secure Boot template.
    let xml = vm["xml"].as_str().unwrap();
    let nvram = format!("/var/lib/libvirt/qemu/nvram/{name}_VARS.fd");
    assert!(xml.contains(&nvram), "{xml}");

    let mut ws = serial(&app, &api, &name).await;
    check_provisioned(&mut ws, &name).await;
    serial_until(
        &mut ws,
        "echo \"SB=$(mokutil --sb-state 2>&1)\"",
        "SB=SecureBoot enabled",
    )
    .await;
    serial_until(&mut ws, "echo \"TPM=$(ls /dev/tpm0)\"", "TPM=/dev/tpm0").await;
    drop(ws);

    // Snapshots are refused with the reason; deleting the VM removes NVRAM and TPM state.
    let (s, e) = api
        .post(
            &format!("/api/v1/vms/{name}/snapshots"),
            json!({"name": "s1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let tpm_state = format!("/var/lib/libvirt/swtpm/{uuid}");
    assert!(Path::new(&nvram).exists());
    assert!(Path::new(&tpm_state).exists(), "{tpm_state}");
    let (s, d) = api
        .delete(&format!("/api/v1/vms/{name}?delete_volumes=true"))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert!(!Path::new(&nvram).exists(), "NVRAM left behind");
    assert!(!Path::new(&tpm_state).exists(), "TPM state left behind");
    let out = virsh(&["dominfo", &name]);
    assert!(!out.status.success(), "the VM is gone");
}
