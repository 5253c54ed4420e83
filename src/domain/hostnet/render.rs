//! Rendering the managed interfaces to the host's own network files, one renderer per
//! backend. Paths are relative to the host root (no leading `/`).
//!
//! Every network card a managed interface uses (bond member, bridge port, VLAN parent)
//! gets a file of ours too, without addresses of its own.

use super::{Backend, BondSpec, BridgeSpec, IfName, IpSpec, Kind, NetConfig, VlanSpec, V4, V6};
use std::fmt::Write;
use std::net::IpAddr;

/// One file as virtdeck wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: String,
    pub content: String,
    /// Unix permission bits.
    pub mode: u32,
}

pub const HEADER: &str =
    "# Managed by virtdeck: the next host network change from virtdeck replaces this file.\n";

const NETWORKD_DIR: &str = "etc/systemd/network";
const NM_DIR: &str = "etc/NetworkManager/system-connections";
pub const IFUPDOWN_FILE: &str = "etc/network/interfaces.d/virtdeck";
pub const IFUPDOWN_MAIN: &str = "etc/network/interfaces";
const IFCFG_DIR: &str = "etc/sysconfig/network-scripts";
const MODPROBE_FILE: &str = "etc/modprobe.d/virtdeck-bonding.conf";

/// The files for `cfg` on `backend`, sorted by path.
pub fn render(cfg: &NetConfig, backend: Backend) -> Vec<RenderedFile> {
    let mut files = match backend {
        Backend::Networkd => networkd(cfg),
        Backend::NetworkManager => network_manager(cfg),
        Backend::Ifupdown => ifupdown(cfg),
        Backend::Ifcfg => ifcfg(cfg),
    };
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// Every interface a file is written for, in creation order: the network cards that
/// managed interfaces use, then the managed interfaces.
fn all_interfaces(cfg: &NetConfig) -> Vec<IfName> {
    let order = cfg.creation_order();
    let mut out: Vec<IfName> = Vec::new();
    for name in &order {
        for lower in cfg.lower_of(name.as_str()) {
            if cfg.kind_of(lower.as_str()).is_none() && !out.contains(lower) {
                out.push(lower.clone());
            }
        }
    }
    out.extend(order);
    out
}

fn bond<'a>(cfg: &'a NetConfig, name: &str) -> Option<&'a BondSpec> {
    cfg.bonds.iter().find(|b| b.name.as_str() == name)
}
fn bridge<'a>(cfg: &'a NetConfig, name: &str) -> Option<&'a BridgeSpec> {
    cfg.bridges.iter().find(|b| b.name.as_str() == name)
}
fn vlan<'a>(cfg: &'a NetConfig, name: &str) -> Option<&'a VlanSpec> {
    cfg.vlans.iter().find(|v| v.name.as_str() == name)
}

/// Addresses and MTU of a managed interface; a plain network card has none.
fn ip_of<'a>(cfg: &'a NetConfig, name: &str) -> (Option<u32>, Option<&'a IpSpec>) {
    cfg.all_ip()
        .into_iter()
        .find(|(n, _, _)| n.as_str() == name)
        .map(|(_, mtu, ip)| (mtu, Some(ip)))
        .unwrap_or((None, None))
}

fn vlans_on<'a>(cfg: &'a NetConfig, name: &str) -> Vec<&'a VlanSpec> {
    cfg.vlans
        .iter()
        .filter(|v| v.parent.as_str() == name)
        .collect()
}

fn is_primary(cfg: &NetConfig, name: &str) -> bool {
    cfg.bonds
        .iter()
        .any(|b| b.primary.as_ref().is_some_and(|p| p.as_str() == name))
}

// ---------------------------------------------------------------- systemd-networkd

fn networkd(cfg: &NetConfig) -> Vec<RenderedFile> {
    let mut files = Vec::new();
    for name in all_interfaces(cfg) {
        let n = name.as_str();
        let (mtu, ip) = ip_of(cfg, n);
        if let Some(kind) = cfg.kind_of(n) {
            let mut d = format!("{HEADER}\n[NetDev]\nName={n}\n");
            match kind {
                Kind::Bond => d.push_str("Kind=bond\n"),
                Kind::Bridge => d.push_str("Kind=bridge\n"),
                Kind::Vlan => d.push_str("Kind=vlan\n"),
            }
            if let Some(m) = mtu {
                let _ = writeln!(d, "MTUBytes={m}");
            }
            if let Some(b) = bond(cfg, n) {
                let _ = write!(
                    d,
                    "\n[Bond]\nMode={}\nMIIMonitorSec={}ms\n",
                    b.mode.as_str(),
                    b.miimon_ms
                );
                if let Some(r) = b.lacp_rate {
                    let _ = writeln!(d, "LACPTransmitRate={}", r.as_str());
                }
            }
            if let Some(b) = bridge(cfg, n) {
                let _ = write!(
                    d,
                    "\n[Bridge]\nSTP={}\nForwardDelaySec={}\nAgeingTimeSec={}\n",
                    yes_no(b.stp),
                    b.forward_delay_s,
                    b.ageing_s
                );
            }
            if let Some(v) = vlan(cfg, n) {
                let _ = write!(d, "\n[VLAN]\nId={}\n", v.id);
            }
            files.push(RenderedFile {
                path: format!("{NETWORKD_DIR}/10-virtdeck-{n}.netdev"),
                content: d,
                mode: 0o644,
            });
        }
        let mut w = format!("{HEADER}\n[Match]\nName={n}\n");
        if cfg.kind_of(n).is_none() {
            // A network card of ours: keep the MTU of what it belongs to.
            if let Some(master) = cfg.master_of(n) {
                if let (Some(m), _) = ip_of(cfg, master.as_str()) {
                    let _ = write!(w, "\n[Link]\nMTUBytes={m}\n");
                }
            }
        }
        w.push_str("\n[Network]\n");
        if let Some(master) = cfg.master_of(n) {
            match cfg.kind_of(master.as_str()) {
                Some(Kind::Bond) => {
                    let _ = writeln!(w, "Bond={master}");
                    if is_primary(cfg, n) {
                        w.push_str("PrimarySlave=true\n");
                    }
                }
                _ => {
                    let _ = writeln!(w, "Bridge={master}");
                }
            }
        }
        for v in vlans_on(cfg, n) {
            let _ = writeln!(w, "VLAN={}", v.name);
        }
        match ip {
            Some(ip) if !ip.is_off() => {
                let dhcp = match (&ip.v4, &ip.v6) {
                    (V4::Dhcp, V6::Auto) => Some("yes"),
                    (V4::Dhcp, _) => Some("ipv4"),
                    (_, V6::Auto) => Some("ipv6"),
                    _ => None,
                };
                if let Some(d) = dhcp {
                    let _ = writeln!(w, "DHCP={d}");
                }
                for a in ip.static_addresses() {
                    let _ = writeln!(w, "Address={a}");
                }
                if let Some(g) = ip.gateway_v4() {
                    let _ = writeln!(w, "Gateway={g}");
                }
                if let Some(g) = ip.gateway_v6() {
                    let _ = writeln!(w, "Gateway={g}");
                }
                for d in &ip.dns {
                    let _ = writeln!(w, "DNS={d}");
                }
                let _ = writeln!(w, "IPv6AcceptRA={}", yes_no(ip.v6 == V6::Auto));
                if ip.v6 == V6::Off {
                    w.push_str("LinkLocalAddressing=no\n");
                }
                if cfg.kind_of(n) == Some(Kind::Bridge) {
                    w.push_str("ConfigureWithoutCarrier=yes\n");
                }
            }
            _ => w.push_str("LinkLocalAddressing=no\nIPv6AcceptRA=no\n"),
        }
        files.push(RenderedFile {
            path: format!("{NETWORKD_DIR}/10-virtdeck-{n}.network"),
            content: w,
            mode: 0o644,
        });
    }
    files
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

// ---------------------------------------------------------------- NetworkManager

fn network_manager(cfg: &NetConfig) -> Vec<RenderedFile> {
    let mut files = Vec::new();
    for name in all_interfaces(cfg) {
        let n = name.as_str();
        let (mtu, ip) = ip_of(cfg, n);
        let kind = cfg.kind_of(n);
        let ty = match kind {
            Some(Kind::Bond) => "bond",
            Some(Kind::Bridge) => "bridge",
            Some(Kind::Vlan) => "vlan",
            None => "ethernet",
        };
        let mut s = format!(
            "{HEADER}\n[connection]\nid=virtdeck-{n}\ntype={ty}\ninterface-name={n}\nautoconnect=true\n"
        );
        if let Some(master) = cfg.master_of(n) {
            let port_type = match cfg.kind_of(master.as_str()) {
                Some(Kind::Bond) => "bond",
                _ => "bridge",
            };
            let _ = write!(s, "master={master}\nslave-type={port_type}\n");
        }
        if kind.is_some() {
            s.push_str("autoconnect-slaves=1\n");
        }
        if let Some(m) = mtu.or_else(|| {
            cfg.master_of(n)
                .and_then(|master| ip_of(cfg, master.as_str()).0)
        }) {
            let _ = write!(s, "\n[ethernet]\nmtu={m}\n");
        }
        if let Some(b) = bond(cfg, n) {
            let _ = write!(
                s,
                "\n[bond]\nmode={}\nmiimon={}\n",
                b.mode.as_str(),
                b.miimon_ms
            );
            if let Some(p) = &b.primary {
                let _ = writeln!(s, "primary={p}");
            }
            if let Some(r) = b.lacp_rate {
                let _ = writeln!(s, "lacp_rate={}", r.as_str());
            }
        }
        if let Some(b) = bridge(cfg, n) {
            let _ = write!(
                s,
                "\n[bridge]\nstp={}\nforward-delay={}\nageing-time={}\n",
                b.stp, b.forward_delay_s, b.ageing_s
            );
        }
        if let Some(v) = vlan(cfg, n) {
            let _ = write!(s, "\n[vlan]\nid={}\nparent={}\n", v.id, v.parent);
        }
        if cfg.master_of(n).is_none() {
            let off = IpSpec::default();
            let ip = ip.unwrap_or(&off);
            let (m4, a4) = match &ip.v4 {
                V4::Off => ("disabled", None),
                V4::Dhcp => ("auto", None),
                V4::Static { address, gateway } => {
                    ("manual", Some((*address, gateway.map(IpAddr::V4))))
                }
            };
            nm_ip_section(&mut s, "ipv4", m4, a4, &ip.dns);
            let (m6, a6) = match &ip.v6 {
                V6::Off => ("disabled", None),
                V6::Auto => ("auto", None),
                V6::Static { address, gateway } => {
                    ("manual", Some((*address, gateway.map(IpAddr::V6))))
                }
            };
            nm_ip_section(&mut s, "ipv6", m6, a6, &ip.dns);
        }
        files.push(RenderedFile {
            path: format!("{NM_DIR}/virtdeck-{n}.nmconnection"),
            content: s,
            // NetworkManager ignores keyfiles others can read.
            mode: 0o600,
        });
    }
    files
}

/// One `[ipv4]`/`[ipv6]` section of a keyfile; DNS servers of that family only.
fn nm_ip_section(
    s: &mut String,
    family: &str,
    method: &str,
    address: Option<(super::Cidr, Option<IpAddr>)>,
    dns: &[IpAddr],
) {
    let _ = write!(s, "\n[{family}]\nmethod={method}\n");
    match address {
        Some((a, Some(g))) => {
            let _ = writeln!(s, "address1={a},{g}");
        }
        Some((a, None)) => {
            let _ = writeln!(s, "address1={a}");
        }
        None => {}
    }
    let servers: String = dns
        .iter()
        .filter(|d| d.is_ipv4() == (family == "ipv4"))
        .map(|d| format!("{d};"))
        .collect();
    if !servers.is_empty() {
        let _ = writeln!(s, "dns={servers}");
    }
}

// ---------------------------------------------------------------- ifupdown

fn ifupdown(cfg: &NetConfig) -> Vec<RenderedFile> {
    if cfg.is_empty() {
        return Vec::new();
    }
    let mut s = String::from(HEADER);
    for name in all_interfaces(cfg) {
        let n = name.as_str();
        let (mtu, ip) = ip_of(cfg, n);
        let off = IpSpec::default();
        let ip = ip.unwrap_or(&off);
        let _ = write!(s, "\nauto {n}\n");
        match &ip.v4 {
            V4::Static { address, gateway } => {
                let _ = writeln!(s, "iface {n} inet static");
                let _ = writeln!(s, "    address {address}");
                if let Some(g) = gateway {
                    let _ = writeln!(s, "    gateway {g}");
                }
            }
            V4::Dhcp => {
                let _ = writeln!(s, "iface {n} inet dhcp");
            }
            V4::Off => {
                let _ = writeln!(s, "iface {n} inet manual");
            }
        }
        if !ip.dns.is_empty() {
            let dns: Vec<String> = ip.dns.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(s, "    dns-nameservers {}", dns.join(" "));
        }
        if let Some(master) = cfg.master_of(n) {
            if cfg.kind_of(master.as_str()) == Some(Kind::Bond) {
                let _ = writeln!(s, "    bond-master {master}");
            }
        }
        if let Some(b) = bond(cfg, n) {
            let members: Vec<&str> = b.members.iter().map(|m| m.as_str()).collect();
            let _ = writeln!(s, "    bond-slaves {}", members.join(" "));
            let _ = writeln!(s, "    bond-mode {}", b.mode.as_str());
            let _ = writeln!(s, "    bond-miimon {}", b.miimon_ms);
            if let Some(p) = &b.primary {
                let _ = writeln!(s, "    bond-primary {p}");
            }
            if let Some(r) = b.lacp_rate {
                let _ = writeln!(s, "    bond-lacp-rate {}", r.as_str());
            }
        }
        if let Some(b) = bridge(cfg, n) {
            let ports: Vec<&str> = b.ports.iter().map(|p| p.as_str()).collect();
            let ports = if ports.is_empty() {
                "none".to_string()
            } else {
                ports.join(" ")
            };
            let _ = writeln!(s, "    bridge_ports {ports}");
            let _ = writeln!(s, "    bridge_stp {}", on_off(b.stp));
            let _ = writeln!(s, "    bridge_fd {}", b.forward_delay_s);
            let _ = writeln!(s, "    bridge_ageing {}", b.ageing_s);
        }
        if let Some(v) = vlan(cfg, n) {
            let _ = writeln!(s, "    vlan-raw-device {}", v.parent);
            let _ = writeln!(s, "    vlan-id {}", v.id);
        }
        if let Some(m) = mtu {
            let _ = writeln!(s, "    mtu {m}");
        }
        match &ip.v6 {
            V6::Static { address, gateway } => {
                let _ = write!(s, "\niface {n} inet6 static\n    address {address}\n");
                if let Some(g) = gateway {
                    let _ = writeln!(s, "    gateway {g}");
                }
            }
            V6::Auto => {
                let _ = write!(s, "\niface {n} inet6 auto\n");
            }
            V6::Off => {}
        }
    }
    vec![RenderedFile {
        path: IFUPDOWN_FILE.into(),
        content: s,
        mode: 0o644,
    }]
}

const DISABLED: &str = "#virtdeck# ";

/// /etc/network/interfaces with the stanzas of interfaces virtdeck now manages turned
/// into comments, and a `source` line for virtdeck's file. `None`: leave it as it is.
pub fn ifupdown_main(existing: &str, cfg: &NetConfig) -> Option<String> {
    if cfg.is_empty() {
        return None;
    }
    let owned = all_interfaces(cfg);
    let is_owned = |n: &str| owned.iter().any(|o| o.as_str() == n);
    let mut out = String::new();
    let mut in_owned_stanza = false;
    let mut sources = false;
    for line in existing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let first = words.first().copied().unwrap_or("");
        let top_level = !line.starts_with(char::is_whitespace) && !first.is_empty();
        if top_level && !first.starts_with('#') {
            in_owned_stanza = first == "iface" && words.get(1).is_some_and(|n| is_owned(n));
        }
        if first == "source" || first == "source-directory" {
            let target = words.get(1).copied().unwrap_or("");
            if target.starts_with("/etc/network/interfaces.d") || target.starts_with("interfaces.d")
            {
                sources = true;
            }
        }
        let auto_owned = (first == "auto" || first.starts_with("allow-"))
            && words.len() > 1
            && words[1..].iter().all(|n| is_owned(n));
        if (in_owned_stanza || auto_owned) && !first.starts_with('#') && !first.is_empty() {
            out.push_str(DISABLED);
        }
        out.push_str(line);
        out.push('\n');
    }
    if !sources {
        out.push_str("\nsource /etc/network/interfaces.d/*\n");
    }
    (out != existing).then_some(out)
}

// ---------------------------------------------------------------- RHEL ifcfg

fn ifcfg(cfg: &NetConfig) -> Vec<RenderedFile> {
    let mut files = Vec::new();
    for name in all_interfaces(cfg) {
        let n = name.as_str();
        let (mtu, ip) = ip_of(cfg, n);
        let off = IpSpec::default();
        let ip = ip.unwrap_or(&off);
        let mut s = format!("{HEADER}DEVICE={n}\nNAME={n}\n");
        match cfg.kind_of(n) {
            Some(Kind::Bond) => s.push_str("TYPE=Bond\nBONDING_MASTER=yes\n"),
            Some(Kind::Bridge) => s.push_str("TYPE=Bridge\n"),
            Some(Kind::Vlan) => s.push_str("VLAN=yes\n"),
            None => s.push_str("TYPE=Ethernet\n"),
        }
        s.push_str("ONBOOT=yes\n");
        match &ip.v4 {
            V4::Static { address, gateway } => {
                let _ = write!(
                    s,
                    "BOOTPROTO=none\nIPADDR={}\nPREFIX={}\n",
                    address.addr, address.prefix
                );
                if let Some(g) = gateway {
                    let _ = writeln!(s, "GATEWAY={g}");
                }
            }
            V4::Dhcp => s.push_str("BOOTPROTO=dhcp\n"),
            V4::Off => s.push_str("BOOTPROTO=none\n"),
        }
        for (i, d) in ip.dns.iter().enumerate() {
            let _ = writeln!(s, "DNS{}={d}", i + 1);
        }
        match &ip.v6 {
            V6::Off => s.push_str("IPV6INIT=no\n"),
            V6::Auto => s.push_str("IPV6INIT=yes\nIPV6_AUTOCONF=yes\nDHCPV6C=yes\n"),
            V6::Static { address, gateway } => {
                let _ = writeln!(s, "IPV6INIT=yes\nIPV6_AUTOCONF=no\nIPV6ADDR={address}");
                if let Some(g) = gateway {
                    let _ = writeln!(s, "IPV6_DEFAULTGW={g}");
                }
            }
        }
        if let Some(m) = mtu {
            let _ = writeln!(s, "MTU={m}");
        }
        if let Some(master) = cfg.master_of(n) {
            match cfg.kind_of(master.as_str()) {
                Some(Kind::Bond) => {
                    let _ = write!(s, "MASTER={master}\nSLAVE=yes\n");
                }
                _ => {
                    let _ = writeln!(s, "BRIDGE={master}");
                }
            }
        }
        if let Some(b) = bond(cfg, n) {
            let _ = writeln!(s, "BONDING_OPTS=\"{}\"", bonding_opts(b));
        }
        if let Some(b) = bridge(cfg, n) {
            let _ = writeln!(
                s,
                "STP={}\nDELAY={}\nBRIDGING_OPTS=\"ageing_time={}\"",
                on_off(b.stp),
                b.forward_delay_s,
                u64::from(b.ageing_s) * 100
            );
        }
        if let Some(v) = vlan(cfg, n) {
            let _ = writeln!(s, "PHYSDEV={}\nVLAN_ID={}", v.parent, v.id);
        }
        files.push(RenderedFile {
            path: format!("{IFCFG_DIR}/ifcfg-{n}"),
            content: s,
            mode: 0o644,
        });
    }
    if !cfg.bonds.is_empty() {
        let mut m = String::from(HEADER);
        for b in &cfg.bonds {
            let _ = writeln!(m, "alias {} bonding", b.name);
            let _ = writeln!(m, "options {} {}", b.name, bonding_opts(b));
        }
        files.push(RenderedFile {
            path: MODPROBE_FILE.into(),
            content: m,
            mode: 0o644,
        });
    }
    files
}

fn bonding_opts(b: &BondSpec) -> String {
    let mut o = format!("mode={} miimon={}", b.mode.as_str(), b.miimon_ms);
    if let Some(p) = &b.primary {
        let _ = write!(o, " primary={p}");
    }
    if let Some(r) = b.lacp_rate {
        let _ = write!(o, " lacp_rate={}", r.as_str());
    }
    o
}

/// Paths virtdeck may have written for `backend` (its own files), for finding leftovers.
pub fn is_ours(path: &str) -> bool {
    path.contains("virtdeck") || path.starts_with(IFCFG_DIR)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{classic, n};
    use super::super::*;
    use super::*;

    fn expected(name: &str) -> String {
        let p = format!(
            "{}/tests/fixtures/hostnet/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// Compares every rendered file with tests/fixtures/hostnet/<case>/<path>, and that
    /// there are no files more or fewer than the fixtures.
    fn assert_matches_fixtures(case: &str, files: &[RenderedFile]) {
        let root = format!(
            "{}/tests/fixtures/hostnet/{case}",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut want = Vec::new();
        collect(std::path::Path::new(&root), &root, &mut want);
        want.sort();
        let got: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(got, want, "file list for {case}");
        for f in files {
            assert_eq!(
                f.content,
                expected(&format!("{case}/{}", f.path)),
                "{case}/{}",
                f.path
            );
        }
    }

    fn collect(dir: &std::path::Path, root: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                collect(&p, root, out);
            } else {
                out.push(p.to_string_lossy()[root.len() + 1..].to_string());
            }
        }
    }

    #[test]
    fn classic_recipe_on_every_backend() {
        for b in Backend::ALL {
            assert_matches_fixtures(&format!("classic/{}", b.as_str()), &render(&classic(), b));
        }
    }

    /// An edit: br0 gets STP, a second port (a VLAN on eth2) and IPv6; bond0 LACP.
    fn edited() -> NetConfig {
        let mut c = classic();
        c.bonds[0].mode = BondMode::Lacp;
        c.bonds[0].primary = None;
        c.bonds[0].lacp_rate = Some(LacpRate::Fast);
        c.bonds[0].mtu = Some(9000);
        c.vlans.push(VlanSpec {
            name: n("eth2.100"),
            parent: n("eth2"),
            id: 100,
            mtu: None,
            ip: IpSpec::default(),
        });
        let br = &mut c.bridges[0];
        br.stp = true;
        br.forward_delay_s = 4;
        br.ports.push(n("eth2.100"));
        br.ip.v6 = V6::Static {
            address: Cidr::parse("2001:db8::10/64").unwrap(),
            gateway: Some("2001:db8::1".parse().unwrap()),
        };
        c.validate(&super::super::tests::live()).unwrap();
        c
    }

    #[test]
    fn edit_on_every_backend() {
        for b in Backend::ALL {
            assert_matches_fixtures(&format!("edited/{}", b.as_str()), &render(&edited(), b));
        }
    }

    #[test]
    fn delete_leaves_only_the_rest() {
        // Deleting br0 leaves the bond with no address; deleting both leaves nothing.
        let c = classic()
            .with_change(
                &NetChange::Delete { name: n("br0") },
                &super::super::tests::live(),
            )
            .unwrap();
        for b in Backend::ALL {
            assert_matches_fixtures(&format!("deleted/{}", b.as_str()), &render(&c, b));
        }
        let empty = c
            .with_change(
                &NetChange::Delete { name: n("bond0") },
                &super::super::tests::live(),
            )
            .unwrap();
        for b in Backend::ALL {
            assert!(render(&empty, b).is_empty(), "{b:?}");
        }
    }

    #[test]
    fn keyfiles_are_private() {
        for f in render(&classic(), Backend::NetworkManager) {
            assert_eq!(f.mode, 0o600, "{}", f.path);
        }
    }

    #[test]
    fn ifupdown_main_file_hands_over_managed_interfaces() {
        let main = "# The loopback network interface\nauto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n    address 192.0.2.10/24\n    gateway 192.0.2.1\n\nallow-hotplug eth2\niface eth2 inet dhcp\n";
        let out = ifupdown_main(main, &classic()).unwrap();
        assert_eq!(
            out,
            "# The loopback network interface\nauto lo\niface lo inet loopback\n\n#virtdeck# auto eth0\n#virtdeck# iface eth0 inet static\n#virtdeck#     address 192.0.2.10/24\n#virtdeck#     gateway 192.0.2.1\n\nallow-hotplug eth2\niface eth2 inet dhcp\n\nsource /etc/network/interfaces.d/*\n"
        );
        // Once handed over, nothing more to do.
        assert_eq!(ifupdown_main(&out, &classic()), None);
        assert_eq!(ifupdown_main(main, &NetConfig::default()), None);
    }
}
