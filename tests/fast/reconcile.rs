//! A create interrupted by a restart leaves a consistent host after start-up
//! reconciliation: the half-made VM and its volume are removed and its units released.

use virtdeck::adapters::libvirt::Libvirt;
use virtdeck::domain::host::{KvmStatus, VirtType};
use virtdeck::domain::vmspec::{BootSpec, Clock, DiskFormat, DiskSpec, VmName, VmSpec};
use virtdeck::domain::xml::{domain_xml, volume_xml};
use virtdeck::hypervisor::Hypervisor;
use virtdeck::lifecycle::reconcile;
use virtdeck::store::{Store, VmRow};

#[test]
fn interrupted_creates_are_rolled_back_and_vanished_vms_release_their_units() {
    let dir = tempfile::tempdir().unwrap();
    let host_xml = dir.path().join("demo-host.xml");
    std::fs::write(&host_xml, virtdeck::web::server::DEMO_HOST_XML).unwrap();
    let hv = Libvirt::open(
        &format!("test://{}", host_xml.display()),
        KvmStatus::NotApplicable,
    )
    .unwrap();
    let store = Store::open(&dir.path().join("virtdeck.db")).unwrap();

    // The state a crash leaves between "define" and "start": row, volume, definition.
    let path = hv
        .create_volume("default", &volume_xml("half.qcow2", 1, DiskFormat::Qcow2))
        .unwrap();
    let row = |name: &str, state: &str, vol: Option<String>| VmRow {
        name: name.into(),
        uuid: "00000000-0000-4000-8000-000000000001".into(),
        units: 2,
        state: state.into(),
        created_volume: vol,
        created_by: "admin".into(),
        created_at: 1,
    };
    store
        .insert_vm(&row("half", "creating", Some(path.clone())))
        .unwrap();
    hv.define(&domain_xml(&VmSpec {
        name: VmName::parse("half").unwrap(),
        uuid: "00000000-0000-4000-8000-000000000001".into(),
        virt_type: VirtType::Test,
        vcpus: 1,
        memory_mib: 512,
        disks: vec![DiskSpec {
            path: path.clone(),
            block: false,
            format: DiskFormat::Qcow2,
            cdrom: false,
        }],
        boot: BootSpec::Disk,
        nic: None,
        clock: Clock::Utc,
        description: String::new(),
        serial_log: None,
        firmware: Default::default(),
        tpm: false,
        cpu: Default::default(),
    }))
    .unwrap();
    // And a VM virtdeck made that someone removed with virsh while virtdeck was down.
    store.insert_vm(&row("gone", "ready", None)).unwrap();
    // A healthy one stays.
    store.insert_vm(&row("web01", "ready", None)).unwrap();

    let notes = reconcile(&hv, &store).unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].contains("half") || notes[1].contains("half"),
        "{notes:?}"
    );
    let names: Vec<String> = hv.list_vms().unwrap().into_iter().map(|v| v.name).collect();
    assert!(!names.contains(&"half".to_string()), "half-made VM removed");
    let volumes: Vec<String> = hv
        .pools()
        .unwrap()
        .into_iter()
        .flat_map(|p| p.volumes.into_iter().map(|v| v.path))
        .collect();
    assert!(!volumes.contains(&path), "its volume removed");
    let rows: Vec<String> = store
        .vm_rows()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(
        rows,
        vec!["web01".to_string()],
        "only the healthy claim remains"
    );
    // Running it again changes nothing.
    assert!(reconcile(&hv, &store).unwrap().is_empty());
}
