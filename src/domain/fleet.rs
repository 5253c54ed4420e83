//! The fleet's pure rules: host names, the libvirt URI a peer migrates to, what a host
//! tells its peers, and whether a VM can go to a host (and why not).

use serde::{Deserialize, Serialize};

/// A fleet host name: 1-63 of letters, digits, `-`, `_`, `.`.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err("Use 1-63 letters, digits, '-', '_' or '.' for a host name.".into())
    }
}

/// The migration URI from its template: `{host}` is the host part of `public_url`.
pub fn migration_uri(template: &str, public_host: &str) -> String {
    template.replace("{host}", public_host)
}

/// A VM as a host tells its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerVm {
    pub name: String,
    pub state: crate::domain::vm::VmState,
    pub units: u32,
    pub vcpus: u32,
    pub memory_mib: u64,
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// Units of a host: total, used, free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct PeerUnits {
    pub total: u32,
    pub used: u32,
    pub free: u32,
}

/// What a host tells its peers about itself (`GET /api/v1/peer/summary`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostSummary {
    pub name: String,
    pub version: String,
    pub libvirt_version: String,
    pub hypervisor_version: String,
    /// "kvm" or "qemu" (TCG).
    pub virt_type: String,
    pub units: PeerUnits,
    pub vms: Vec<PeerVm>,
    /// Where a peer's libvirtd reaches this host's libvirtd to migrate a VM here.
    pub migration_uri: String,
    /// The host's recent CPU use: (Unix seconds, percent of all CPUs), oldest first, at
    /// most [`SPARK_POINTS`].
    #[serde(default)]
    pub cpu_percent: Vec<(u32, f32)>,
}

/// Points of a host's CPU history a summary carries.
pub const SPARK_POINTS: usize = 60;

/// A host's CPU history as its summary carries it: points without a value (NaN, which
/// JSON cannot carry) left out, thinned to [`SPARK_POINTS`].
pub fn cpu_for_peers(points: &[(u32, f32)]) -> Vec<(u32, f32)> {
    let known: Vec<(u32, f32)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    thin(&known, SPARK_POINTS)
}

/// At most `max` points of `points`, evenly picked, the newest kept.
pub fn thin<T: Copy>(points: &[T], max: usize) -> Vec<T> {
    if points.len() <= max || max == 0 {
        return points.to_vec();
    }
    let step = points.len().div_ceil(max);
    let mut out: Vec<T> = points.iter().rev().step_by(step).copied().collect();
    out.reverse();
    out
}

impl HostSummary {
    /// VMs by state, e.g. [("running", 3), ("shut off", 1)], most first.
    pub fn states(&self) -> Vec<(&'static str, usize)> {
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        for vm in &self.vms {
            let label = vm.state.label();
            match counts.iter_mut().find(|(s, _)| *s == label) {
                Some((_, n)) => *n += 1,
                None => counts.push((label, 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts
    }
}

/// A disk of a VM to migrate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiskNeed {
    /// The disk's file on the source host.
    pub path: String,
    /// The storage pool it is a volume of there, if any.
    #[serde(default)]
    pub pool: Option<String>,
    pub capacity_bytes: u64,
    /// "qcow2" or "raw".
    pub format: String,
}

/// What a VM needs of the host it moves to (sent with the request to hold its units).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MigrationNeeds {
    pub vm: String,
    pub units: u32,
    /// libvirt networks the VM's interfaces use.
    pub networks: Vec<String>,
    /// Host bridges the VM's interfaces use.
    pub bridges: Vec<String>,
    /// The machine type, e.g. "pc-q35-10.0".
    pub machine: String,
    pub disks: Vec<DiskNeed>,
    /// Files the VM boots from directly (kernel, initrd): they must be at the same path.
    pub boot_files: Vec<String>,
    /// `<domain type=…>`: `kvm` needs KVM there; `qemu` (TCG) runs anywhere.
    #[serde(default)]
    pub domain_type: String,
    /// The VM's `<cpu>` when it names a model, for the destination's libvirt to compare.
    #[serde(default)]
    pub cpu_xml: Option<String>,
}

/// A directory-backed pool on the host a VM moves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolOffer {
    pub name: String,
    pub path: String,
    pub available_bytes: u64,
}

/// What the destination host has (read under its admission lock).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostOffer {
    pub free_units: u32,
    pub vm_names: Vec<String>,
    pub active_networks: Vec<String>,
    pub bridges: Vec<String>,
    pub machines: Vec<String>,
    pub pools: Vec<PoolOffer>,
    /// Boot files (and disk paths) that exist here.
    pub existing_files: Vec<String>,
    /// Disk paths that exist here on storage the hosts share (a network pool, or a
    /// directory listed in `[fleet] shared_dirs`): these disks are not copied. A file
    /// that merely has the same path on a local disk is another file.
    pub shared_disks: Vec<String>,
    /// KVM works there.
    pub kvm: bool,
    /// libvirt's answer to whether the VM's CPU runs there; `None` when not asked or it
    /// could not tell.
    pub cpu_ok: Option<bool>,
}

/// How each disk travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskMove {
    /// The same file is here (shared storage): nothing is copied.
    Shared { path: String },
    /// Copied by QEMU into a volume made beforehand in `pool`, at the same path.
    Copied {
        path: String,
        pool: String,
        capacity_bytes: u64,
        format: String,
    },
}

/// Whether a VM can come to a host: how its disks travel, or every reason it cannot.
pub fn plan_arrival(
    needs: &MigrationNeeds,
    offer: &HostOffer,
) -> Result<Vec<DiskMove>, Vec<String>> {
    let mut refusals = Vec::new();
    if offer.vm_names.contains(&needs.vm) {
        refusals.push(format!("A VM named {} exists there already.", needs.vm));
    }
    if needs.units > offer.free_units {
        refusals.push(format!(
            "It needs {} and {} free there.",
            crate::domain::capacity::units_text(needs.units),
            match offer.free_units {
                0 => "no unit is".to_string(),
                1 => "1 unit is".to_string(),
                n => format!("{n} units are"),
            }
        ));
    }
    for net in &needs.networks {
        if !offer.active_networks.contains(net) {
            refusals.push(format!(
                "The libvirt network {net} is missing or stopped there."
            ));
        }
    }
    for br in &needs.bridges {
        if !offer.bridges.contains(br) {
            refusals.push(format!("The bridge {br} is missing there."));
        }
    }
    // A host that lists no machine types (libvirt's test driver) cannot be checked.
    if !needs.machine.is_empty()
        && !offer.machines.is_empty()
        && !machine_supported(&needs.machine, &offer.machines)
    {
        refusals.push(format!(
            "Its machine type {} is not offered by the QEMU there.",
            needs.machine
        ));
    }
    if needs.domain_type == "kvm" && !offer.kvm {
        refusals.push("It runs with KVM, and KVM does not work there.".to_string());
    }
    if offer.cpu_ok == Some(false) {
        refusals.push(
            "Its CPU model is not one that host's CPU can run (libvirt's comparison).".to_string(),
        );
    }
    for file in &needs.boot_files {
        if !offer.existing_files.contains(file) {
            refusals.push(format!(
                "Its boot file {file} is not there (in its boot directory, a pool or a \
                 shared directory)."
            ));
        }
    }
    let mut moves = Vec::new();
    let mut wanted: Vec<(String, u64)> = Vec::new();
    for disk in &needs.disks {
        if offer.shared_disks.contains(&disk.path) {
            moves.push(DiskMove::Shared {
                path: disk.path.clone(),
            });
            continue;
        }
        let dir = parent_dir(&disk.path);
        let same_name = disk
            .pool
            .as_ref()
            .and_then(|name| offer.pools.iter().find(|p| p.name == *name));
        let same_dir = || {
            offer
                .pools
                .iter()
                .find(|p| p.path.trim_end_matches('/') == dir)
        };
        match same_name.or_else(same_dir) {
            Some(pool) => {
                match wanted.iter_mut().find(|(n, _)| *n == pool.name) {
                    Some((_, bytes)) => *bytes += disk.capacity_bytes,
                    None => wanted.push((pool.name.clone(), disk.capacity_bytes)),
                }
                moves.push(DiskMove::Copied {
                    path: disk.path.clone(),
                    pool: pool.name.clone(),
                    capacity_bytes: disk.capacity_bytes,
                    format: disk.format.clone(),
                });
            }
            None => refusals.push(format!(
                "Its disk {} is not on shared storage, and no storage pool there has the \
                 same name{} or the directory {dir} to copy it into.",
                disk.path,
                disk.pool
                    .as_ref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            )),
        }
    }
    for (pool, bytes) in wanted {
        if let Some(p) = offer.pools.iter().find(|p| p.name == pool) {
            if bytes > p.available_bytes {
                refusals.push(format!(
                    "Pool {pool} there has {} GiB free; the disks need {} GiB.",
                    p.available_bytes >> 30,
                    bytes.div_ceil(1 << 30)
                ));
            }
        }
    }
    if refusals.is_empty() {
        Ok(moves)
    } else {
        Err(refusals)
    }
}

/// The `<cpu>…</cpu>` element of domain XML when it names a model to compare (mode
/// `custom` or `host-model`); not for `host-passthrough`/`maximum`, which take whatever
/// CPU the host has.
pub fn cpu_element(xml: &str) -> Option<String> {
    let start = xml.find("<cpu")?;
    let rest = &xml[start..];
    let open_end = rest.find('>')?;
    let open = &rest[..open_end];
    if open.ends_with('/') || open.contains("host-passthrough") || open.contains("maximum") {
        return None;
    }
    let end = rest.find("</cpu>")? + "</cpu>".len();
    let element = &rest[..end];
    element.contains("<model").then(|| element.to_string())
}

/// Domain XML with each disk file moved from its old path to its new one (`file='…'`
/// attributes of `<source>` only, matched whole).
pub fn rewrite_disk_paths(xml: &str, moves: &[(String, String)]) -> String {
    let mut out = xml.to_string();
    for (from, to) in moves {
        for q in ['\'', '"'] {
            out = out.replace(
                &format!("<source file={q}{}{q}", xml_escape(from)),
                &format!("<source file={q}{}{q}", xml_escape(to)),
            );
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn parent_dir(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) => "/".into(),
        Some((dir, _)) => dir.to_string(),
        None => String::new(),
    }
}

/// A machine type is offered when the destination's QEMU lists it (QEMU keeps older
/// versioned types, so a VM from an older host usually finds its type).
fn machine_supported(machine: &str, offered: &[String]) -> bool {
    offered.iter().any(|m| m == machine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs() -> MigrationNeeds {
        MigrationNeeds {
            vm: "web1".into(),
            units: 2,
            networks: vec!["default".into()],
            bridges: vec![],
            machine: "pc-q35-10.0".into(),
            disks: vec![DiskNeed {
                path: "/var/lib/libvirt/images/web1.qcow2".into(),
                pool: None,
                capacity_bytes: 10 << 30,
                format: "qcow2".into(),
            }],
            boot_files: vec![],
            domain_type: "qemu".into(),
            cpu_xml: None,
        }
    }

    fn offer() -> HostOffer {
        HostOffer {
            free_units: 4,
            vm_names: vec!["db1".into()],
            active_networks: vec!["default".into()],
            bridges: vec!["br0".into()],
            machines: vec!["pc-q35-10.0".into(), "pc-i440fx-10.0".into()],
            pools: vec![PoolOffer {
                name: "default".into(),
                path: "/var/lib/libvirt/images".into(),
                available_bytes: 100 << 30,
            }],
            existing_files: vec![],
            shared_disks: vec![],
            kvm: false,
            cpu_ok: None,
        }
    }

    #[test]
    fn a_vm_that_fits_has_its_disks_copied_into_the_pool_with_the_same_directory() {
        let moves = plan_arrival(&needs(), &offer()).unwrap();
        assert_eq!(
            moves,
            vec![DiskMove::Copied {
                path: "/var/lib/libvirt/images/web1.qcow2".into(),
                pool: "default".into(),
                capacity_bytes: 10 << 30,
                format: "qcow2".into(),
            }]
        );
    }

    #[test]
    fn a_disk_goes_into_the_pool_of_the_same_name_wherever_its_directory_is() {
        let mut n = needs();
        n.disks[0].path = "/srv/a/pool/web1.qcow2".into();
        n.disks[0].pool = Some("rig".into());
        let mut o = offer();
        o.pools.push(PoolOffer {
            name: "rig".into(),
            path: "/srv/b/pool".into(),
            available_bytes: 50 << 30,
        });
        assert_eq!(
            plan_arrival(&n, &o).unwrap(),
            vec![DiskMove::Copied {
                path: "/srv/a/pool/web1.qcow2".into(),
                pool: "rig".into(),
                capacity_bytes: 10 << 30,
                format: "qcow2".into(),
            }]
        );
    }

    #[test]
    fn a_local_file_at_the_same_path_is_another_file_and_the_disk_is_copied() {
        let mut o = offer();
        o.existing_files = vec!["/var/lib/libvirt/images/web1.qcow2".into()];
        assert!(matches!(
            plan_arrival(&needs(), &o).unwrap()[0],
            DiskMove::Copied { .. }
        ));
    }

    #[test]
    fn a_disk_already_there_is_shared_and_not_copied() {
        let mut o = offer();
        o.pools.clear();
        o.existing_files = vec!["/var/lib/libvirt/images/web1.qcow2".into()];
        o.shared_disks = vec!["/var/lib/libvirt/images/web1.qcow2".into()];
        assert_eq!(
            plan_arrival(&needs(), &o).unwrap(),
            vec![DiskMove::Shared {
                path: "/var/lib/libvirt/images/web1.qcow2".into()
            }]
        );
    }

    #[test]
    fn every_reason_a_vm_cannot_come_is_told() {
        let mut n = needs();
        n.vm = "db1".into();
        n.units = 6;
        n.networks = vec!["lab".into()];
        n.bridges = vec!["br1".into()];
        n.machine = "pc-q35-11.0".into();
        n.boot_files = vec!["/srv/boot/vmlinuz".into()];
        n.domain_type = "kvm".into();
        let mut o = offer();
        o.cpu_ok = Some(false);
        n.disks[0].path = "/data/db1.qcow2".into();
        let why = plan_arrival(&n, &o).unwrap_err();
        let all = why.join("\n");
        for expected in [
            "A VM named db1 exists there already.",
            "It needs 6 units and 4 units are free there.",
            "The libvirt network lab is missing or stopped there.",
            "The bridge br1 is missing there.",
            "machine type pc-q35-11.0",
            "boot file /srv/boot/vmlinuz",
            "or the directory /data to copy it into",
            "It runs with KVM, and KVM does not work there.",
            "Its CPU model is not one that host's CPU can run",
        ] {
            assert!(all.contains(expected), "{expected} not in:\n{all}");
        }
    }

    #[test]
    fn a_pool_too_small_for_the_copies_refuses() {
        let mut o = offer();
        o.pools[0].available_bytes = 5 << 30;
        let why = plan_arrival(&needs(), &o).unwrap_err();
        assert_eq!(
            why,
            vec!["Pool default there has 5 GiB free; the disks need 10 GiB.".to_string()]
        );
    }

    #[test]
    fn disk_paths_are_rewritten_in_source_elements_only() {
        let xml = "<domain><devices><disk type='file'><source file='/a/pool/x.qcow2'/>\
                   </disk><disk><source file=\"/a/pool/x.qcow2.bak\"/></disk>\
                   <description>/a/pool/x.qcow2</description></devices></domain>";
        let out = rewrite_disk_paths(xml, &[("/a/pool/x.qcow2".into(), "/b/pool/x.qcow2".into())]);
        assert!(out.contains("<source file='/b/pool/x.qcow2'/>"), "{out}");
        assert!(out.contains("/a/pool/x.qcow2.bak"), "{out}");
        assert!(
            out.contains("<description>/a/pool/x.qcow2</description>"),
            "{out}"
        );
    }

    #[test]
    fn a_cpu_is_compared_only_when_it_names_a_model() {
        let custom = "<domain><cpu mode='custom' match='exact'><model>EPYC</model></cpu></domain>";
        assert_eq!(
            cpu_element(custom).as_deref(),
            Some("<cpu mode='custom' match='exact'><model>EPYC</model></cpu>")
        );
        assert_eq!(
            cpu_element("<domain><cpu mode='host-passthrough'/></domain>"),
            None
        );
        assert_eq!(
            cpu_element(
                "<domain><cpu mode='host-passthrough'><cache mode='passthrough'/></cpu></domain>"
            ),
            None
        );
        assert_eq!(cpu_element("<domain><vcpu>2</vcpu></domain>"), None);
    }

    #[test]
    fn a_long_history_is_thinned_to_the_points_a_sparkline_needs() {
        let points: Vec<u32> = (0..720).collect();
        let thin = thin(&points, SPARK_POINTS);
        assert!(thin.len() <= SPARK_POINTS, "{}", thin.len());
        assert_eq!(thin.last(), Some(&719), "the newest point is kept");
        assert!(thin.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(super::thin(&[1, 2, 3], 60), vec![1, 2, 3]);
    }

    #[test]
    fn a_summary_with_gaps_in_its_cpu_history_still_reads_back() {
        let cpu = cpu_for_peers(&[(1, 5.0), (2, f32::NAN), (3, 7.5), (4, f32::INFINITY)]);
        assert_eq!(cpu, vec![(1, 5.0), (3, 7.5)]);
        let s = HostSummary {
            name: "a".into(),
            version: "0".into(),
            libvirt_version: String::new(),
            hypervisor_version: String::new(),
            virt_type: "qemu".into(),
            units: PeerUnits::default(),
            vms: vec![],
            migration_uri: String::new(),
            cpu_percent: cpu,
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<HostSummary>(&json).unwrap(), s);
    }

    #[test]
    fn host_names_and_migration_uris() {
        assert!(check_host_name("kvm-1.lan").is_ok());
        assert!(check_host_name("").is_err());
        assert!(check_host_name("-x").is_err());
        assert!(check_host_name("a b").is_err());
        assert!(check_host_name(&"a".repeat(64)).is_err());
        assert_eq!(
            migration_uri("qemu+tls://{host}/system", "kvm2.lan"),
            "qemu+tls://kvm2.lan/system"
        );
    }

    #[test]
    fn states_are_counted_most_first() {
        use crate::domain::vm::VmState;
        let vm = |name: &str, state: VmState| PeerVm {
            name: name.into(),
            state,
            units: 1,
            vcpus: 1,
            memory_mib: 512,
            addresses: vec![],
        };
        let s = HostSummary {
            name: "a".into(),
            version: "0".into(),
            libvirt_version: String::new(),
            hypervisor_version: String::new(),
            virt_type: "qemu".into(),
            units: PeerUnits::default(),
            vms: vec![
                vm("a", VmState::ShutOff),
                vm("b", VmState::Running),
                vm("c", VmState::Running),
            ],
            migration_uri: String::new(),
            cpu_percent: vec![],
        };
        assert_eq!(s.states(), vec![("running", 2), ("shut off", 1)]);
    }
}
