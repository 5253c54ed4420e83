//! On the real `qemu:///system` libvirtd: a VM made from a cloud image in a directory
//! pool, its disk a grown full copy of the image, its cloud-init seed ISO read back
//! with isoinfo; deleting the VM deletes the seed.

use crate::common;

use common::real::{bearer_client, require_libvirtd, virsh, TestPool, VmGuard, URI};
use common::spawn_app_with;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const PASSWORD: &str = "Real-Guest-Pa55";

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ssh_key() -> String {
    use base64::Engine;
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&[3u8; 32]);
    format!(
        "ssh-ed25519 {} ops@desk",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// A 64 MiB qcow2 "cloud image" whose first sector holds `marker`.
fn make_image(dir: &Path, marker: &str) -> String {
    let raw = dir.join("image.raw");
    let mut bytes = vec![0u8; 64 * 1024 * 1024];
    bytes[..marker.len()].copy_from_slice(marker.as_bytes());
    std::fs::write(&raw, &bytes).unwrap();
    let image = dir.join("vdci-base.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            image.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(&raw).unwrap();
    image.display().to_string()
}

#[tokio::test]
async fn a_vm_from_a_cloud_image_gets_a_grown_copy_and_a_readable_cidata_seed() {
    let _gate = crate::gate::enter(module_path!());
    require_libvirtd();
    let pool = TestPool::with_prefix("vdci-pool");
    let marker = format!("vdci-image-marker-{}", std::process::id());
    let image = make_image(&pool.dir, &marker);
    let out = virsh(&["pool-refresh", &pool.name]);
    assert!(out.status.success());

    let app = spawn_app_with(|c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
    })
    .await;
    let admin = app.setup_admin("admin").await;
    let api = bearer_client(&app.admin_token(&admin).await);
    let name = format!("vdci-vm-{}", std::process::id());
    let _guard = VmGuard(name.clone());
    let key = ssh_key();
    let r = api
        .post(app.url("/api/v1/vms"))
        .json(&json!({
            "name": name,
            "vcpus": 1,
            "memory_mib": 256,
            "disk": {"type": "cloud_image", "base": image, "size_gib": 2},
            "cloud_init": {
                "hostname": "web-7.example.com",
                "user": "ops",
                "password": PASSWORD,
                "ssh_keys": [key],
                "user_data": "#cloud-config\npackages:\n  - htop\n"
            },
            "start": false
        }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let created: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let disk = created["disk_path"].as_str().unwrap().to_string();
    assert_eq!(
        disk,
        pool.dir.join(format!("{name}.qcow2")).display().to_string()
    );

    // The disk: a qcow2 copy of the image, grown to 2 GiB, with the image's bytes.
    let info: Value =
        serde_json::from_str(&run("qemu-img", &["info", "--output=json", &disk])).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 2u64 << 30);
    let copy_raw = pool.dir.join("copy.raw");
    run(
        "qemu-img",
        &["convert", "-O", "raw", &disk, copy_raw.to_str().unwrap()],
    );
    let head = std::fs::read(&copy_raw).unwrap();
    std::fs::remove_file(&copy_raw).unwrap();
    assert!(
        head.starts_with(marker.as_bytes()),
        "the copy holds the image"
    );

    // The definition: the seed as a read-only CD-ROM beside the disk.
    let vm_url = app.url(&format!("/api/v1/vms/{name}"));
    let vm: Value = api.get(&vm_url).send().await.unwrap().json().await.unwrap();
    let seed = pool
        .dir
        .join(format!("{name}-cidata.iso"))
        .display()
        .to_string();
    let disks = vm["devices"]["disks"].as_array().unwrap();
    assert!(disks
        .iter()
        .any(|d| d["device"] == "disk" && d["source"] == disk.as_str()));
    assert!(disks
        .iter()
        .any(|d| d["device"] == "cdrom" && d["source"] == seed.as_str()));
    assert!(vm["xml"].as_str().unwrap().contains("<readonly/>"));
    assert_eq!(vm["cloud_init"]["user"], "ops");
    assert_eq!(vm["cloud_init"]["hostname"], "web-7.example.com");
    assert_eq!(vm["cloud_init"]["seed_path"], seed.as_str());
    let uuid = vm["uuid"].as_str().unwrap().to_string();

    // The seed read back: label cidata, user-data and meta-data by their real names.
    let pvd = run("isoinfo", &["-d", "-i", &seed]);
    assert!(
        pvd.lines().any(|l| l.trim() == "Volume id: cidata"),
        "{pvd}"
    );
    let listing = run("isoinfo", &["-R", "-f", "-i", &seed]);
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    assert_eq!(names, vec!["/meta-data", "/user-data"]);
    let meta = run("isoinfo", &["-R", "-i", &seed, "-x", "/meta-data"]);
    assert_eq!(
        meta,
        format!("instance-id: \"{uuid}\"\nlocal-hostname: \"web-7.example.com\"\n")
    );
    let user_data = run("isoinfo", &["-R", "-i", &seed, "-x", "/user-data"]);
    assert!(user_data.starts_with("#cloud-config\n"), "{user_data}");
    assert!(user_data.contains("hostname: \"web-7.example.com\"\n"));
    assert!(user_data.contains("  - name: \"ops\"\n"));
    assert!(user_data.contains(&format!("      - \"{key}\"\n")));
    assert!(user_data.ends_with("packages:\n  - htop\n"), "{user_data}");
    assert!(
        !user_data.contains(PASSWORD),
        "only the hash is in the seed"
    );
    let hash = user_data
        .lines()
        .find_map(|l| l.trim().strip_prefix("hashed_passwd: "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert!(hash.starts_with("$6$rounds=100000$"), "{hash}");
    assert!(sha_crypt::sha512_check(PASSWORD, &hash).is_ok());
    assert!(sha_crypt::sha512_check("wrong", &hash).is_err());

    // The VM page says how it was provisioned, without the password.
    let page = admin
        .get(app.url(&format!("/vms/{name}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Provisioned with cloud-init"));
    assert!(page.contains("<dt>User</dt><dd>ops (sudo; password and 1 SSH key)</dd>"));
    assert!(!page.contains(PASSWORD) && !page.contains(&hash));

    // A clone copies the disk but not the seed (it holds this VM's identity and password
    // hash, and goes with this VM): the clone's CD-ROM drive is empty.
    let copy = format!("{name}-c");
    let _copy_guard = VmGuard(copy.clone());
    let r = api
        .post(app.url(&format!("/api/v1/vms/{name}/clone")))
        .json(&json!({"name": copy}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let job = common::real::job_end(&api, &app.base, &r.json().await.unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let copy_url = app.url(&format!("/api/v1/vms/{copy}"));
    let copy_vm: Value = api
        .get(&copy_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let copy_xml = copy_vm["xml"].as_str().unwrap();
    assert!(!copy_xml.contains(&seed), "{copy_xml}");
    assert!(
        copy_xml.contains("device=\"cdrom\"") || copy_xml.contains("device='cdrom'"),
        "{copy_xml}"
    );
    assert!(copy_vm["cloud_init"].is_null(), "{copy_vm}");

    // The delete page says the seed goes with the VM whatever is chosen for the disks.
    let page = admin
        .get(app.url(&format!("/vms/{name}/delete")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!(
            "Its cloud-init seed <code>{seed}</code> is deleted too, whatever you choose below"
        )),
        "{page}"
    );

    // Deleting the VM (keeping its disk) deletes the seed.
    let r = api.delete(vm_url.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["volumes_deleted"], json!([seed]));
    assert!(!Path::new(&seed).exists());
    assert!(Path::new(&disk).exists(), "the disk was kept as asked");
    assert!(Path::new(&image).exists(), "the image stays");
    // The clone is untouched by the source's delete, and can go too.
    let r = api
        .delete(format!("{copy_url}?delete_volumes=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let audit = app.audit_text(&admin).await;
    assert!(!audit.contains(PASSWORD));
}
