//! Day-two device changes on the real `qemu:///system` libvirtd with the tiny guest: a
//! CD-ROM swapped through virtdeck's API while the guest runs is seen by the guest
//! (`/dev/sr0`'s size follows the disc; no medium once ejected), a data disk grown while it
//! runs shows its new size in the guest (and grows through its volume when the VM is off),
//! and boot-and-devices changes
//! (RNG, watchdog, balloon off, boot menu, serial log) are taken by QEMU at the next
//! start, the guest finding its virtio RNG.
//!
//! `make test` installs libvirt, QEMU and genisoimage, starts the daemons and builds the
//! tiny guest (which loads ata_piix, sr_mod and virtio_rng); this test fails, never
//! skips, when any of that is missing.

use crate::common;
use crate::console_support;

use common::api::Api;
use common::real::{require_libvirtd, virsh, TestPool, URI};
use common::spawn_app_with;
use console_support::{serial, serial_until, Guest};
use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;

/// An ISO image of `bytes` bytes of data at `path`; its size in 512-byte sectors.
fn iso(path: &Path, bytes: usize) -> u64 {
    let content = tempfile::tempdir().unwrap();
    std::fs::write(content.path().join("data.bin"), vec![0x5a; bytes]).unwrap();
    let out = std::process::Command::new("genisoimage")
        .args(["-quiet", "-V", "VDTEST", "-o"])
        .arg(path)
        .arg(content.path())
        .output()
        .expect("genisoimage runs (make test-deps installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::metadata(path).unwrap().len() / 512
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdrom_swap_is_seen_by_the_running_guest_and_new_devices_by_its_next_boot() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let pool = TestPool::with_prefix("vddev-pool");
    let small = pool.dir.join("small.iso");
    let big = pool.dir.join("big.iso");
    let small_sectors = iso(&small, 300 * 1024);
    let big_sectors = iso(&big, 3 * 1024 * 1024);
    assert_ne!(small_sectors, big_sectors);
    let out = virsh(&["pool-refresh", &pool.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A 64 MiB qcow2 data disk in the pool.
    let out = virsh(&[
        "vol-create-as",
        &pool.name,
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
    let data = pool.dir.join("data.qcow2");

    // The tiny guest with an empty IDE CD-ROM drive (the "pc" machine) and the data disk,
    // defined and started.
    let guest = Guest::with_devices(
        false,
        &format!(
            "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
             <target dev='hdc' bus='ide'/><readonly/></disk>\
             <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
             <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
            data.display()
        ),
    );
    let out = virsh(&["start", &guest.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    guest.wait_ready().await;

    let app = spawn_app_with(move |c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
    })
    .await;
    let api = Api::new(&app).await;
    let vm = guest.name.clone();
    let mut ws = serial(&app, &api, &vm).await;
    // Opening the drive makes the kernel look at the disc (it does not poll for one).
    const DISC: &str =
        "dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>/dev/null && echo HAS-DISC || echo NO-DISC";
    const SIZE: &str =
        "dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>/dev/null; cat /sys/block/sr0/size";
    serial_until(&mut ws, DISC, "NO-DISC").await;

    // A disc in, another, then none: the guest sees each (sizes in 512-byte sectors).
    for (disc, sectors) in [(&small, small_sectors), (&big, big_sectors)] {
        let (s, c) = api
            .put(
                &format!("/api/v1/vms/{vm}/cdrom"),
                json!({"iso": disc.to_str().unwrap()}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{c}");
        serial_until(&mut ws, SIZE, &sectors.to_string()).await;
    }
    let (s, c) = api
        .put(&format!("/api/v1/vms/{vm}/cdrom"), json!({"iso": null}))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    serial_until(&mut ws, DISC, "NO-DISC").await;

    // The data disk grows while the guest runs, and the guest sees it (512-byte sectors;
    // libvirt's target vdb is the guest's only virtio disk, so its vda).
    serial_until(&mut ws, "cat /sys/block/vda/size", "131072").await;
    let (s, g) = api
        .patch(
            &format!("/api/v1/vms/{vm}/disks/vdb"),
            json!({"size_gib": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert_eq!(g["live"], true, "{g}");
    serial_until(&mut ws, "cat /sys/block/vda/size", "2097152").await;
    drop(ws);

    // Boot and devices: written for the next start, which QEMU accepts.
    let (s, v) = api
        .patch(
            &format!("/api/v1/vms/{vm}"),
            json!({"rng": true, "watchdog": true, "balloon": false, "boot_menu": true, "serial_log": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .post(&format!("/api/v1/vms/{vm}/force-off"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .post(&format!("/api/v1/vms/{vm}/start"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "QEMU starts with the new devices: {v}");
    let live = virsh(&["dumpxml", &vm]);
    let live = String::from_utf8_lossy(&live.stdout);
    assert!(
        live.contains("<rng model='virtio'>") && live.contains("i6300esb"),
        "{live}"
    );
    let mut ws = serial(&app, &api, &vm).await;
    serial_until(
        &mut ws,
        "[ -e /dev/hwrng ] && echo RNG-PRESENT",
        "RNG-PRESENT",
    )
    .await;
    drop(ws);
    let _ = virsh(&["destroy", &vm]);
    let _ = std::fs::remove_file(format!("/var/log/libvirt/qemu/{vm}-serial.log"));
}

/// A shell command that prints `yes` when `cond` holds and `no` otherwise, as one line
/// with a marker so the echoed command line never matches.
fn check(cond: &str, marker: &str) -> String {
    format!("if {cond}; then echo {marker}-yes; else echo {marker}-no; fi")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_and_nics_plug_into_the_running_guest_and_come_out() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let pool = TestPool::with_prefix("vdplug-pool");
    // A Linux bridge for the NIC, gone with the test.
    let bridge = format!("vdtbr{}", std::process::id() % 100_000);
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&["link", "add", &bridge, "type", "bridge"]);
    struct Bridge(String);
    impl Drop for Bridge {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.0])
                .output();
        }
    }
    let _bridge = Bridge(bridge.clone());
    ip(&["link", "set", &bridge, "up"]);

    // The tiny guest: no disk, no NIC; defined (so it has a definition to change), started.
    let guest = Guest::with_devices(false, "");
    let out = virsh(&["start", &guest.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    guest.wait_ready().await;
    let app = spawn_app_with(move |c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
    })
    .await;
    let api = Api::new(&app).await;
    let vm = guest.name.clone();
    let mut ws = serial(&app, &api, &vm).await;
    serial_until(&mut ws, &check("[ -e /sys/block/vda ]", "VDA"), "VDA-no").await;

    // A new 1 GiB volume, plugged in while the guest runs: its first virtio disk.
    let (s, d) = api
        .post(
            &format!("/api/v1/vms/{vm}/disks"),
            json!({"pool": pool.name, "size_gib": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(
        (d["target"].clone(), d["live"].clone()),
        (json!("vda"), json!(true)),
        "{d}"
    );
    let path = d["path"].as_str().unwrap().to_string();
    serial_until(&mut ws, "cat /sys/block/vda/size", "2097152").await;
    serial_until(
        &mut ws,
        "echo VDPLUG-DATA | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null && sync && echo WROTE-OK",
        "WROTE-OK",
    )
    .await;

    // Taken out: the guest lets go of it (ACPI unplug) and the definition loses it.
    let (s, t) = api.delete(&format!("/api/v1/vms/{vm}/disks/vda")).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    serial_until(&mut ws, &check("[ -e /sys/block/vda ]", "VDA"), "VDA-no").await;
    let inactive =
        String::from_utf8_lossy(&virsh(&["dumpxml", "--inactive", &vm]).stdout).to_string();
    assert!(!inactive.contains(&path), "{inactive}");

    // Back as the free volume it now is: the data is there.
    let (s, d) = api
        .post(&format!("/api/v1/vms/{vm}/disks"), json!({"volume": path}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["new_volume"], false, "{d}");
    serial_until(&mut ws, "head -c 11 /dev/vda; echo", "VDPLUG-DATA").await;

    // A NIC on the bridge: the guest finds it by its MAC, sees its carrier go when the
    // cable is pulled, and loses it when it is taken out.
    let (s, n) = api
        .post(&format!("/api/v1/vms/{vm}/nics"), json!({"bridge": bridge}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    let mac = n["mac"].as_str().unwrap().to_string();
    serial_until(&mut ws, "cat /sys/class/net/eth0/address", &mac).await;
    serial_until(
        &mut ws,
        "ip link set eth0 up; cat /sys/class/net/eth0/carrier",
        "1",
    )
    .await;
    let (s, c) = api
        .patch(
            &format!("/api/v1/vms/{vm}/nics/{mac}"),
            json!({"link_up": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    serial_until(&mut ws, "cat /sys/class/net/eth0/carrier", "0").await;
    let (s, c) = api.delete(&format!("/api/v1/vms/{vm}/nics/{mac}")).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    serial_until(
        &mut ws,
        &check("[ -e /sys/class/net/eth0 ]", "ETH0"),
        "ETH0-no",
    )
    .await;
    drop(ws);
    let _ = virsh(&["destroy", &vm]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_hosts_devices_are_listed_and_pci_is_refused_without_an_iommu() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let has_iommu = std::fs::read_dir("/sys/kernel/iommu_groups")
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    let guest = Guest::with_devices(false, "");
    let app = spawn_app_with(move |c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
    })
    .await;
    let api = Api::new(&app).await;
    let (s, devices) = api.get("/api/v1/host/devices").await;
    assert_eq!(s, StatusCode::OK, "{devices}");
    assert_eq!(devices["iommu"], has_iommu, "{devices}");
    let pci: Vec<&serde_json::Value> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "pci")
        .collect();
    assert!(!pci.is_empty(), "this host has PCI devices: {devices}");
    if has_iommu {
        // Passing through needs hardware this rig does not have; the listing is the proof.
        return;
    }
    // Without an IOMMU, every PCI device says why it cannot go, and a try changes nothing.
    for d in &pci {
        let why = d["refusal"].as_str().unwrap_or_default();
        assert!(why.contains("no IOMMU") || why.contains("bridge"), "{d}");
    }
    let target = pci
        .iter()
        .find(|d| {
            d["refusal"]
                .as_str()
                .unwrap_or_default()
                .contains("no IOMMU")
        })
        .expect("a PCI device that is not a bridge");
    let before = virsh(&["dumpxml", "--inactive", &guest.name]);
    let (s, e) = api
        .post(
            &format!("/api/v1/vms/{}/hostdevs", guest.name),
            json!({"device": target["name"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], "device");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("IOMMU"),
        "{e}"
    );
    let after = virsh(&["dumpxml", "--inactive", &guest.name]);
    assert_eq!(before.stdout, after.stdout, "the definition is unchanged");
}
