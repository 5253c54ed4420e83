//! Templates on the real `qemu:///system` libvirtd: the tiny guest on a qcow2 disk that
//! holds a marker written by the test is marked as a template; a full clone and a linked
//! clone are made from it and started. Each boots, and reads the marker from its own
//! /dev/vda through the serial console; what the linked clone writes stays in its overlay
//! (the template's volume is unchanged), and libvirt shows the template's volume as the
//! overlay's backing store. Everything is removed at the end.
//!
//! `make test` installs libvirt and QEMU, starts the daemons and builds the tiny guest;
//! this test fails (it does not skip) when any of that is missing.

use crate::common;
use crate::console_support;

use common::api::Api;
use common::real::{guest_dir, qemu_readable_dir, require_libvirtd, virsh, URI};
use common::spawn_app_with;
use console_support::{serial, serial_until};
use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// Removes VMs and the pool a failed run leaves behind (all named `vdtpl-…`).
struct Leftovers {
    vms: Vec<String>,
    pool: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for vm in &self.vms {
            let _ = virsh(&["destroy", vm]);
            let _ = virsh(&["undefine", vm, "--remove-all-storage"]);
            let _ = std::fs::remove_file(format!("/var/log/libvirt/qemu/{vm}-serial.log"));
        }
        let _ = virsh(&["pool-destroy", &self.pool]);
        let _ = virsh(&["pool-undefine", &self.pool]);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn full_and_linked_clones_of_a_template_boot_the_tiny_guest_and_read_its_disk() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let id = std::process::id();
    let base = format!("vdtpl-base-{id}");
    let full = format!("vdtpl-full-{id}");
    let linked = format!("vdtpl-linked-{id}");
    let pool = format!("vdtpl-pool-{id}");
    let _leftovers = Leftovers {
        vms: vec![linked.clone(), full.clone(), base.clone()],
        pool: pool.clone(),
    };

    // A directory pool; the template's qcow2 disk starts with the marker line.
    let pool_dir = qemu_readable_dir("vdtpl-pool-");
    let boot = qemu_readable_dir("vdtpl-boot-");
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::copy(guest_dir().join(f), boot.path().join(f)).unwrap();
    }
    let marker = format!("VDTPL-MARK-{id}");
    let raw = boot.path().join("marker.raw");
    let mut bytes = format!("{marker}\n").into_bytes();
    bytes.resize(64 << 20, 0);
    std::fs::write(&raw, &bytes).unwrap();
    let disk = pool_dir.path().join(format!("{base}.qcow2"));
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&disk));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let disk = disk.to_str().unwrap().to_string();
    run(Command::new("virsh")
        .args(["-c", URI, "pool-define-as", &pool, "dir", "--target"])
        .arg(pool_dir.path()));
    run(Command::new("virsh").args(["-c", URI, "pool-start", &pool]));

    let boot_dir = boot.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
        c.boot_dir = boot_dir;
    })
    .await;
    let api = Api::new(&app).await;

    // The template: the tiny guest booting its kernel, with the marked disk.
    let (s, v) = api
        .post(
            "/api/v1/vms",
            json!({
                "name": base,
                "vcpus": 1,
                "memory_mib": 256,
                "disk": {"type": "existing", "path": disk},
                "install": {"type": "kernel", "kernel": "vmlinuz", "initrd": "initrd.img",
                            "cmdline": "console=tty0 console=ttyS0,115200 panic=-1"},
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api
        .post(&format!("/api/v1/vms/{base}/template"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .post(&format!("/api/v1/vms/{base}/start"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "a template never starts: {v}");
    let template_bytes = std::fs::read(&disk).unwrap();

    // A full clone, then a linked clone (one at a time: the host has few units), started.
    for (name, mode) in [(&full, "full"), (&linked, "linked")] {
        let (s, job) = api
            .post_job(
                &format!("/api/v1/templates/{base}/vms"),
                json!({"name": name, "mode": mode, "start": true}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{mode}: {job}");
        assert_eq!(job["state"], "succeeded", "{mode}: {job}");
        if mode == "full" {
            // The copy's bytes are counted: the template volume's allocation, all done.
            let total = job["bytes_total"].as_u64().unwrap();
            assert!(total > 0, "{job}");
            assert_eq!(job["bytes_done"].as_u64(), Some(total), "{job}");
        }
        let v = api.get(&format!("/api/v1/vms/{name}")).await.1;
        let volume = v["disks"][0].as_str().unwrap().to_string();
        assert!(
            volume.starts_with(pool_dir.path().to_str().unwrap()) && volume != disk,
            "{v}"
        );
        let xml = String::from_utf8(virsh(&["vol-dumpxml", &volume]).stdout).unwrap();
        if mode == "linked" {
            // libvirt shows the overlay backed by the template's volume.
            assert!(
                xml.contains("<backingStore>") && xml.contains(&format!("<path>{disk}</path>")),
                "{xml}"
            );
            assert!(xml.contains("<format type='qcow2'/>"), "{xml}");
            let size = std::fs::metadata(&volume).unwrap().len();
            assert!(size < 4 << 20, "the overlay is small: {size} bytes");
        } else {
            assert!(
                !xml.contains("<backingStore>"),
                "a full copy has no backing: {xml}"
            );
        }

        // It boots and reads the marker from its own disk.
        let vm = api.get(&format!("/api/v1/vms/{name}")).await.1;
        assert_eq!(vm["state"], "running", "{vm}");
        let log = vm["devices"]["serial_log"].as_str().unwrap().to_string();
        common::real::wait_for_banner(&log).await;
        let mut ws = serial(&app, &api, name).await;
        serial_until(&mut ws, "head -n 1 /dev/vda", &marker).await;
        if mode == "linked" {
            // What the linked clone writes lands in its overlay only.
            let mine = format!("VDTPL-LINKED-{id}");
            serial_until(
                &mut ws,
                &format!("printf '{mine}\\n' > /dev/vda; sync; echo wrote-{id}"),
                &format!("wrote-{id}"),
            )
            .await;
            serial_until(&mut ws, "head -n 1 /dev/vda", &mine).await;
            // While the linked clone exists, the template stays.
            let (s, v) = api
                .delete(&format!("/api/v1/vms/{base}?delete_volumes=true"))
                .await;
            assert_eq!(s, StatusCode::CONFLICT, "{v}");
            assert!(Path::new(&disk).exists());
        }
        drop(ws);
        assert!(
            std::fs::read(&disk).unwrap() == template_bytes,
            "the template's volume is unchanged after the {mode} clone ran"
        );

        let (s, v) = api
            .post(&format!("/api/v1/vms/{name}/force-off"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v) = api
            .delete(&format!("/api/v1/vms/{name}?delete_volumes=true"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(!Path::new(&volume).exists(), "{volume} removed");
    }

    // Then the template itself: nothing is left.
    let (s, v) = api
        .delete(&format!("/api/v1/vms/{base}?delete_volumes=true"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        !Path::new(&disk).exists(),
        "the template's volume is removed"
    );
    assert!(!virsh(&["dominfo", &base]).status.success());
}
