//! A host change as a plan: the files it writes (with unified diffs) and the typed live
//! operations it performs, each with an exact inverse for rolling back.

use super::{Cidr, IfName, Kind, NetConfig, V4, V6};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One file a plan writes, replaces or removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileChange {
    /// Relative to the host root, e.g. `etc/systemd/network/10-virtdeck-br0.netdev`.
    pub path: String,
    pub before: Option<String>,
    /// `None` removes the file.
    pub after: Option<String>,
    pub mode: u32,
    /// Unified diff from before to after.
    pub diff: String,
}

impl FileChange {
    pub fn new(path: &str, before: Option<String>, after: Option<String>, mode: u32) -> Self {
        let diff = unified_diff(path, before.as_deref(), after.as_deref());
        FileChange {
            path: path.to_string(),
            before,
            after,
            mode,
            diff,
        }
    }

    pub fn action(&self) -> &'static str {
        match (&self.before, &self.after) {
            (None, Some(_)) => "create",
            (Some(_), None) => "remove",
            _ => "change",
        }
    }
}

/// A unified diff of two versions of a file (`None`: the file does not exist).
pub fn unified_diff(path: &str, before: Option<&str>, after: Option<&str>) -> String {
    let a = if before.is_some() {
        format!("a/{path}")
    } else {
        "/dev/null".into()
    };
    let b = if after.is_some() {
        format!("b/{path}")
    } else {
        "/dev/null".into()
    };
    similar::TextDiff::from_lines(before.unwrap_or(""), after.unwrap_or(""))
        .unified_diff()
        .context_radius(3)
        .header(&a, &b)
        .to_string()
}

/// Bridge settings as the kernel holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BridgeLive {
    pub name: String,
    pub stp: bool,
    pub forward_delay_s: u32,
    pub ageing_s: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BondLive {
    pub name: String,
    /// Kernel mode number (0 balance-rr … 6 balance-alb).
    pub mode: u8,
    pub miimon_ms: u32,
    pub lacp_fast: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VlanLive {
    pub name: String,
    pub parent: String,
    pub id: u16,
}

/// One live change, made through netlink or /proc/sys. Each knows its inverse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LiveOp {
    CreateBond(BondLive),
    DeleteBond(BondLive),
    CreateBridge(BridgeLive),
    DeleteBridge(BridgeLive),
    SetBridge {
        to: BridgeLive,
        from: BridgeLive,
    },
    CreateVlan(VlanLive),
    DeleteVlan(VlanLive),
    /// Enslave `link` to `master`, or release it (`None`).
    SetMaster {
        link: String,
        master: Option<String>,
        previous: Option<String>,
    },
    SetPrimary {
        bond: String,
        primary: String,
    },
    SetUp {
        link: String,
        up: bool,
        previous: bool,
    },
    SetMtu {
        link: String,
        mtu: u32,
        previous: u32,
    },
    AddAddress {
        link: String,
        address: Cidr,
    },
    DelAddress {
        link: String,
        address: Cidr,
    },
    AddDefaultRoute {
        link: String,
        #[schema(value_type = String)]
        gateway: IpAddr,
    },
    DelDefaultRoute {
        link: String,
        #[schema(value_type = String)]
        gateway: IpAddr,
    },
    SetSysctl {
        key: String,
        value: String,
        previous: String,
    },
}

impl LiveOp {
    /// The operation that undoes this one.
    pub fn inverse(&self) -> Option<LiveOp> {
        use LiveOp::*;
        Some(match self {
            CreateBond(b) => DeleteBond(b.clone()),
            DeleteBond(b) => CreateBond(b.clone()),
            CreateBridge(b) => DeleteBridge(b.clone()),
            DeleteBridge(b) => CreateBridge(b.clone()),
            SetBridge { to, from } => SetBridge {
                to: from.clone(),
                from: to.clone(),
            },
            CreateVlan(v) => DeleteVlan(v.clone()),
            DeleteVlan(v) => CreateVlan(v.clone()),
            SetMaster {
                link,
                master,
                previous,
            } => SetMaster {
                link: link.clone(),
                master: previous.clone(),
                previous: master.clone(),
            },
            // Leaving a bond clears its primary; nothing to undo on its own.
            SetPrimary { .. } => return None,
            SetUp { link, up, previous } => SetUp {
                link: link.clone(),
                up: *previous,
                previous: *up,
            },
            SetMtu {
                link,
                mtu,
                previous,
            } => SetMtu {
                link: link.clone(),
                mtu: *previous,
                previous: *mtu,
            },
            AddAddress { link, address } => DelAddress {
                link: link.clone(),
                address: *address,
            },
            DelAddress { link, address } => AddAddress {
                link: link.clone(),
                address: *address,
            },
            AddDefaultRoute { link, gateway } => DelDefaultRoute {
                link: link.clone(),
                gateway: *gateway,
            },
            DelDefaultRoute { link, gateway } => AddDefaultRoute {
                link: link.clone(),
                gateway: *gateway,
            },
            SetSysctl {
                key,
                value,
                previous,
            } => SetSysctl {
                key: key.clone(),
                value: previous.clone(),
                previous: value.clone(),
            },
        })
    }

    /// What the operation does, as the plan page lists it (like the `ip` command would).
    pub fn describe(&self) -> String {
        use LiveOp::*;
        match self {
            CreateBond(b) => format!(
                "create bond {} (mode {}, miimon {} ms)",
                b.name,
                mode_name(b.mode),
                b.miimon_ms
            ),
            DeleteBond(b) => format!("delete bond {}", b.name),
            CreateBridge(b) => format!(
                "create bridge {} (STP {}, forward delay {} s, ageing {} s)",
                b.name,
                if b.stp { "on" } else { "off" },
                b.forward_delay_s,
                b.ageing_s
            ),
            DeleteBridge(b) => format!("delete bridge {}", b.name),
            SetBridge { to, .. } => format!(
                "set bridge {}: STP {}, forward delay {} s, ageing {} s",
                to.name,
                if to.stp { "on" } else { "off" },
                to.forward_delay_s,
                to.ageing_s
            ),
            CreateVlan(v) => format!("create VLAN {} (id {} on {})", v.name, v.id, v.parent),
            DeleteVlan(v) => format!("delete VLAN {}", v.name),
            SetMaster {
                link,
                master: Some(m),
                ..
            } => format!("add {link} to {m}"),
            SetMaster {
                link,
                master: None,
                previous,
            } => format!(
                "release {link} from {}",
                previous.as_deref().unwrap_or("its master")
            ),
            SetPrimary { bond, primary } => format!("make {primary} the primary member of {bond}"),
            SetUp { link, up, .. } => {
                format!("set {link} {}", if *up { "up" } else { "down" })
            }
            SetMtu { link, mtu, .. } => format!("set MTU of {link} to {mtu}"),
            AddAddress { link, address } => format!("add address {address} to {link}"),
            DelAddress { link, address } => format!("remove address {address} from {link}"),
            AddDefaultRoute { link, gateway } => {
                format!("add default route via {gateway} on {link}")
            }
            DelDefaultRoute { link, gateway } => {
                format!("remove default route via {gateway} on {link}")
            }
            SetSysctl {
                key,
                value,
                previous,
            } => format!("set {key} = {value} (now {previous})"),
        }
    }
}

fn mode_name(n: u8) -> &'static str {
    super::BondMode::ALL
        .get(usize::from(n))
        .map(|m| m.as_str())
        .unwrap_or("?")
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    /// `bridge`, `bond`, `vlan`, `veth`… `None` for plain network cards.
    pub kind: Option<String>,
    pub master: Option<String>,
    pub mtu: u32,
    pub up: bool,
    pub carrier: bool,
    pub operstate: String,
    pub mac: String,
    pub bridge: Option<BridgeLive>,
    pub bond: Option<BondLive>,
    pub vlan: Option<VlanLive>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AddrState {
    pub link: String,
    pub address: Cidr,
    /// Link-local (fe80::/10, 169.254/16): made by the kernel, never planned.
    pub link_local: bool,
    /// Handed out for a while rather than set by hand: the kernel's SLAAC and privacy
    /// addresses (made from router advertisements, flagged `mngtmpaddr`) and DHCP leases
    /// (no `permanent` flag, i.e. a finite lifetime). Such an address comes back by
    /// itself where the network offers it again (IPv6 `auto`, IPv4 `dhcp`).
    #[serde(default)]
    pub dynamic: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteState {
    /// `None`: the default route.
    pub destination: Option<Cidr>,
    #[schema(value_type = Option<String>)]
    pub gateway: Option<IpAddr>,
    pub link: Option<String>,
}

/// The host's links, addresses and main-table routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct LiveNet {
    pub links: Vec<LinkState>,
    pub addresses: Vec<AddrState>,
    pub routes: Vec<RouteState>,
}

impl LiveNet {
    pub fn link(&self, name: &str) -> Option<&LinkState> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn link_names(&self) -> Vec<String> {
        self.links.iter().map(|l| l.name.clone()).collect()
    }

    /// Addresses virtdeck may plan for (not the kernel's link-local ones).
    pub fn addresses_of(&self, link: &str) -> Vec<Cidr> {
        self.addresses
            .iter()
            .filter(|a| a.link == link && !a.link_local)
            .map(|a| a.address)
            .collect()
    }

    pub fn default_routes_on(&self, link: &str) -> Vec<IpAddr> {
        self.routes
            .iter()
            .filter(|r| r.destination.is_none() && r.link.as_deref() == Some(link))
            .filter_map(|r| r.gateway)
            .collect()
    }

    /// `link`'s global IPv6 addresses (everything but fe80::/10), as read.
    pub fn global_v6_of(&self, link: &str) -> Vec<&AddrState> {
        self.addresses
            .iter()
            .filter(|a| a.link == link && !a.link_local && a.address.addr.is_ipv6())
            .collect()
    }

    /// The IPv6 a new interface over `links` (the cards a recipe enslaves, the first
    /// preferred) must have for the host to keep the IPv6 they carry now: their first
    /// address set by hand, with their IPv6 default gateway, as `static`; `auto` when
    /// all they have came from router advertisements or DHCPv6 (or there is only a
    /// default route); `off` when they have nothing but link-local addresses.
    pub fn carried_v6(&self, links: &[&str]) -> V6 {
        let addresses: Vec<&AddrState> = links.iter().flat_map(|l| self.global_v6_of(l)).collect();
        let gateway = links
            .iter()
            .flat_map(|l| self.default_routes_on(l))
            .find_map(|g| match g {
                IpAddr::V6(g) => Some(g),
                IpAddr::V4(_) => None,
            });
        if let Some(a) = addresses.iter().find(|a| !a.dynamic) {
            V6::Static {
                address: a.address,
                gateway,
            }
        } else if !addresses.is_empty() || gateway.is_some() {
            V6::Auto
        } else {
            V6::Off
        }
    }

    pub fn default_routes(&self) -> Vec<(&str, IpAddr)> {
        self.routes
            .iter()
            .filter(|r| r.destination.is_none())
            .filter_map(|r| Some((r.link.as_deref()?, r.gateway?)))
            .collect()
    }

    /// A stable digest input: what a plan depends on (no counters, no carrier flaps).
    pub fn fingerprint_text(&self) -> String {
        let mut s = String::new();
        for l in &self.links {
            s.push_str(&format!(
                "link {} {:?} {:?} {} {} {:?} {:?} {:?}\n",
                l.name, l.kind, l.master, l.mtu, l.up, l.bridge, l.bond, l.vlan
            ));
        }
        for a in self.addresses.iter().filter(|a| !a.link_local) {
            s.push_str(&format!("addr {} {}\n", a.link, a.address));
        }
        for r in &self.routes {
            s.push_str(&format!(
                "route {:?} {:?} {:?}\n",
                r.destination, r.gateway, r.link
            ));
        }
        s
    }
}

fn bridge_live(cfg: &NetConfig, name: &str) -> Option<BridgeLive> {
    cfg.bridges
        .iter()
        .find(|b| b.name.as_str() == name)
        .map(|b| BridgeLive {
            name: name.to_string(),
            stp: b.stp,
            forward_delay_s: b.forward_delay_s,
            ageing_s: b.ageing_s,
        })
}

fn bond_live(cfg: &NetConfig, name: &str) -> Option<BondLive> {
    cfg.bonds
        .iter()
        .find(|b| b.name.as_str() == name)
        .map(|b| BondLive {
            name: name.to_string(),
            mode: b.mode.number(),
            miimon_ms: b.miimon_ms,
            lacp_fast: b.lacp_rate.map(|r| r == super::LacpRate::Fast),
        })
}

fn vlan_live(cfg: &NetConfig, name: &str) -> Option<VlanLive> {
    cfg.vlans
        .iter()
        .find(|v| v.name.as_str() == name)
        .map(|v| VlanLive {
            name: name.to_string(),
            parent: v.parent.to_string(),
            id: v.id,
        })
}

/// Whether `name` must be made anew: a new interface, another kind, or a bond/VLAN
/// whose kernel settings changed (those cannot be changed in place).
fn needs_create(old: &NetConfig, new: &NetConfig, live: &LiveNet, name: &str) -> bool {
    let Some(link) = live.link(name) else {
        return true;
    };
    match new.kind_of(name) {
        Some(Kind::Bond) => {
            old.kind_of(name) != Some(Kind::Bond)
                || link.kind.as_deref() != Some("bond")
                || bond_live(old, name) != bond_live(new, name)
        }
        Some(Kind::Vlan) => {
            old.kind_of(name) != Some(Kind::Vlan)
                || link.kind.as_deref() != Some("vlan")
                || vlan_live(old, name) != vlan_live(new, name)
        }
        Some(Kind::Bridge) => link.kind.as_deref() != Some("bridge"),
        None => false,
    }
}

/// The live operations that take the host from `live` (configured as `old`) to `new`.
///
/// Order: tear down what goes away (addresses and routes first, so undoing puts them
/// back), create new interfaces, change kept ones, enslave, bring up, address, route.
pub fn live_ops(old: &NetConfig, new: &NetConfig, live: &LiveNet) -> Vec<LiveOp> {
    let mut ops = Vec::new();
    let new_order = new.creation_order();
    let mut old_order = old.creation_order();
    old_order.reverse();
    // 1. Interfaces that go away or must be made anew, uppermost first.
    let mut removed: Vec<String> = Vec::new();
    for name in &old_order {
        let n = name.as_str();
        let gone = new.kind_of(n).is_none() || needs_create(old, new, live, n);
        if !gone {
            continue;
        }
        let Some(link) = live.link(n) else { continue };
        strip(&mut ops, live, n);
        for port in live.links.iter().filter(|l| l.master.as_deref() == Some(n)) {
            ops.push(LiveOp::SetMaster {
                link: port.name.clone(),
                master: None,
                previous: Some(n.to_string()),
            });
        }
        if link.up {
            ops.push(LiveOp::SetUp {
                link: n.to_string(),
                up: false,
                previous: true,
            });
        }
        if let Some(b) = &link.bridge {
            ops.push(LiveOp::DeleteBridge(b.clone()));
        } else if let Some(b) = &link.bond {
            ops.push(LiveOp::DeleteBond(b.clone()));
        } else if let Some(v) = &link.vlan {
            ops.push(LiveOp::DeleteVlan(v.clone()));
        } else {
            continue;
        }
        removed.push(n.to_string());
    }
    let exists =
        |n: &str, removed: &[String]| live.link(n).is_some() && !removed.iter().any(|r| r == n);
    // 2. New interfaces.
    let mut created: Vec<String> = Vec::new();
    for name in &new_order {
        let n = name.as_str();
        if exists(n, &removed) {
            continue;
        }
        if let Some(b) = bond_live(new, n) {
            ops.push(LiveOp::CreateBond(b));
        } else if let Some(b) = bridge_live(new, n) {
            ops.push(LiveOp::CreateBridge(b));
        } else if let Some(v) = vlan_live(new, n) {
            ops.push(LiveOp::CreateVlan(v));
        }
        created.push(n.to_string());
    }
    // 3. Kept bridges whose settings changed.
    for b in &new.bridges {
        let n = b.name.as_str();
        if created.iter().any(|c| c == n) {
            continue;
        }
        let want = bridge_live(new, n);
        if let (Some(want), Some(have)) = (want, live.link(n).and_then(|l| l.bridge.clone())) {
            if want != have {
                ops.push(LiveOp::SetBridge {
                    to: want,
                    from: have,
                });
            }
        }
    }
    // 4. Ports: release those that leave, enslave those that join.
    let current_master = |port: &str| -> Option<String> {
        if created.iter().any(|c| c == port) {
            return None;
        }
        let m = live.link(port).and_then(|l| l.master.clone())?;
        (!removed.contains(&m)).then_some(m)
    };
    for name in &new_order {
        let n = name.as_str();
        if created.iter().any(|c| c == n) {
            continue;
        }
        for port in live.links.iter().filter(|l| l.master.as_deref() == Some(n)) {
            if new.master_of(&port.name).map(|m| m.as_str()) != Some(n) {
                ops.push(LiveOp::SetMaster {
                    link: port.name.clone(),
                    master: None,
                    previous: Some(n.to_string()),
                });
            }
        }
    }
    for name in &new_order {
        let n = name.as_str();
        for lower in new.lower_of(n) {
            let l = lower.as_str();
            if new.kind_of(n) == Some(Kind::Vlan) {
                continue;
            }
            let have = current_master(l);
            if have.as_deref() == Some(n) {
                continue;
            }
            // An interface that joins a bond or bridge gives up its addresses.
            strip(&mut ops, live, l);
            let is_up = if created.iter().any(|c| c == l) {
                false
            } else {
                live.link(l).is_some_and(|x| x.up)
            };
            if new.kind_of(n) == Some(Kind::Bond) && is_up {
                ops.push(LiveOp::SetUp {
                    link: l.to_string(),
                    up: false,
                    previous: true,
                });
            }
            ops.push(LiveOp::SetMaster {
                link: l.to_string(),
                master: Some(n.to_string()),
                previous: have,
            });
        }
        if let Some(b) = new.bonds.iter().find(|b| b.name.as_str() == n) {
            if let Some(p) = &b.primary {
                let old_primary = old
                    .bonds
                    .iter()
                    .find(|o| o.name == b.name)
                    .and_then(|o| o.primary.clone());
                if created.iter().any(|c| c == n) || old_primary.as_ref() != Some(p) {
                    ops.push(LiveOp::SetPrimary {
                        bond: n.to_string(),
                        primary: p.to_string(),
                    });
                }
            }
        }
    }
    // 5. MTU and up, lower interfaces first.
    let mut seen: Vec<String> = Vec::new();
    for name in &new_order {
        let n = name.as_str();
        let lowers: Vec<&IfName> = if new.kind_of(n) == Some(Kind::Vlan) {
            Vec::new()
        } else {
            new.lower_of(n)
        };
        let mtu = new
            .all_ip()
            .into_iter()
            .find(|(x, _, _)| x.as_str() == n)
            .and_then(|(_, m, _)| m);
        for l in lowers.iter().map(|l| l.as_str()).chain(std::iter::once(n)) {
            if seen.iter().any(|s| s == l) {
                continue;
            }
            seen.push(l.to_string());
            let is_new = created.iter().any(|c| c == l);
            let link = live.link(l);
            if l == n {
                if let (Some(m), Some(link)) = (mtu, link) {
                    if !is_new && link.mtu != m {
                        ops.push(LiveOp::SetMtu {
                            link: l.to_string(),
                            mtu: m,
                            previous: link.mtu,
                        });
                    }
                }
                if let (Some(m), true) = (mtu, is_new) {
                    ops.push(LiveOp::SetMtu {
                        link: l.to_string(),
                        mtu: m,
                        previous: 1500,
                    });
                }
            }
            let was_up = !is_new && link.is_some_and(|x| x.up);
            let taken_down = ops
                .iter()
                .any(|o| matches!(o, LiveOp::SetUp { link, up: false, .. } if link == l));
            if !was_up || taken_down {
                ops.push(LiveOp::SetUp {
                    link: l.to_string(),
                    up: true,
                    previous: false,
                });
            }
        }
    }
    // 6. Addresses and default routes of managed interfaces.
    let mut routes_to_add = Vec::new();
    for (name, _, ip) in new.all_ip() {
        let n = name.as_str();
        let is_new = created.iter().any(|c| c == n);
        let have: Vec<Cidr> = if is_new {
            Vec::new()
        } else {
            live.addresses_of(n)
        };
        let want = ip.static_addresses();
        let v4_managed = !matches!(ip.v4, V4::Dhcp);
        let v6_managed = !matches!(ip.v6, V6::Auto);
        for a in &have {
            let managed = if a.addr.is_ipv4() {
                v4_managed
            } else {
                v6_managed
            };
            if managed && !want.contains(a) {
                for g in live.default_routes_on(n) {
                    if g.is_ipv4() == a.addr.is_ipv4() {
                        ops.push(LiveOp::DelDefaultRoute {
                            link: n.to_string(),
                            gateway: g,
                        });
                    }
                }
                ops.push(LiveOp::DelAddress {
                    link: n.to_string(),
                    address: *a,
                });
            }
        }
        for a in &want {
            if !have.contains(a) {
                ops.push(LiveOp::AddAddress {
                    link: n.to_string(),
                    address: *a,
                });
            }
        }
        for g in [
            ip.gateway_v4().map(IpAddr::V4),
            ip.gateway_v6().map(IpAddr::V6),
        ]
        .into_iter()
        .flatten()
        {
            routes_to_add.push((n.to_string(), g));
        }
    }
    // Default routes: drop the other interfaces' ones of the same family, then add ours.
    for (link, gw) in &routes_to_add {
        let already = !created.contains(link)
            && live
                .default_routes()
                .iter()
                .any(|(l, g)| *l == link && g == gw)
            && !ops_removed_route(&ops, link, *gw);
        if already {
            continue;
        }
        for (l, g) in live.default_routes() {
            if g.is_ipv4() == gw.is_ipv4()
                && (l != link || g != *gw)
                && !ops_removed_route(&ops, l, g)
            {
                ops.push(LiveOp::DelDefaultRoute {
                    link: l.to_string(),
                    gateway: g,
                });
            }
        }
        ops.push(LiveOp::AddDefaultRoute {
            link: link.clone(),
            gateway: *gw,
        });
    }
    ops
}

fn ops_removed_route(ops: &[LiveOp], link: &str, gw: IpAddr) -> bool {
    ops.iter().any(|o| {
        matches!(o, LiveOp::DelDefaultRoute { link: l, gateway } if l == link && *gateway == gw)
    })
}

/// Removes `link`'s default routes and addresses (when it is taken down or enslaved).
fn strip(ops: &mut Vec<LiveOp>, live: &LiveNet, link: &str) {
    for g in live.default_routes_on(link) {
        if !ops_removed_route(ops, link, g) {
            ops.push(LiveOp::DelDefaultRoute {
                link: link.to_string(),
                gateway: g,
            });
        }
    }
    for a in live.addresses_of(link) {
        let op = LiveOp::DelAddress {
            link: link.to_string(),
            address: a,
        };
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
}

/// The interface that carries `link`'s addresses in `new`: the top of the bond/bridge
/// stack it joins, or itself while it stays a managed interface; `None` when nothing
/// virtdeck manages takes them over.
fn carrier<'a>(new: &'a NetConfig, link: &'a str) -> Option<&'a str> {
    let mut at = link;
    for _ in 0..16 {
        match new.master_of(at) {
            Some(m) => at = m.as_str(),
            None => break,
        }
    }
    (at != link || new.kind_of(link).is_some()).then_some(at)
}

fn v6_of<'a>(new: &'a NetConfig, name: &str) -> Option<&'a V6> {
    new.all_ip()
        .into_iter()
        .find(|(n, _, _)| n.as_str() == name)
        .map(|(_, _, ip)| &ip.v6)
}

/// What a change takes from the host's IPv6 without giving it back, one sentence per
/// global address or IPv6 default route, naming it: `ops` remove it, do not add it again,
/// and the interface that takes over does not get it back by itself either (IPv6 `auto`
/// gets back what router advertisements or DHCPv6 handed out, and the default route).
/// Link-local addresses are never planned, so they never count.
pub fn ipv6_losses(new: &NetConfig, live: &LiveNet, ops: &[LiveOp]) -> Vec<String> {
    let added_route = ops.iter().find_map(|o| match o {
        LiveOp::AddDefaultRoute {
            link,
            gateway: g @ IpAddr::V6(_),
        } => Some((link.as_str(), *g)),
        _ => None,
    });
    let mut out = Vec::new();
    for op in ops {
        match op {
            LiveOp::DelAddress { link, address } if address.addr.is_ipv6() => {
                let re_added = ops
                    .iter()
                    .any(|o| matches!(o, LiveOp::AddAddress { address: a, .. } if a == address));
                if re_added {
                    continue;
                }
                let dynamic = live
                    .addresses
                    .iter()
                    .any(|a| a.link == *link && a.address == *address && a.dynamic);
                let to = carrier(new, link);
                let v6 = to.and_then(|c| v6_of(new, c));
                if dynamic && v6 == Some(&V6::Auto) {
                    continue;
                }
                let why = match (to, v6) {
                    (None, _) => "no interface takes it over".to_string(),
                    (Some(c), Some(V6::Auto)) => format!(
                        "{c} will take IPv6 from router advertisements, which do not hand out \
                         an address set by hand"
                    ),
                    (Some(c), Some(V6::Static { address: other, .. })) => {
                        format!("{c} will have {other} instead")
                    }
                    (Some(c), _) => format!("{c} will have IPv6 off"),
                };
                let keep = match to {
                    Some(c) if dynamic => format!(" To keep IPv6, set IPv6 on {c} to auto."),
                    Some(c) => format!(" To keep it, set IPv6 on {c} to static {address}."),
                    None => String::new(),
                };
                out.push(format!(
                    "IPv6 address {address} on {link} will be lost: {why}.{keep}"
                ));
            }
            LiveOp::DelDefaultRoute {
                link,
                gateway: gateway @ IpAddr::V6(_),
            } => {
                let re_added = ops.iter().any(
                    |o| matches!(o, LiveOp::AddDefaultRoute { gateway: g, .. } if g == gateway),
                );
                let to = carrier(new, link);
                let v6 = to.and_then(|c| v6_of(new, c));
                if re_added || v6 == Some(&V6::Auto) {
                    continue;
                }
                let why = match (added_route, to, v6) {
                    (Some((l, g)), _, _) => {
                        format!("it is replaced by the default route via {g} on {l}")
                    }
                    (None, None, _) => "no interface takes it over".to_string(),
                    (None, Some(c), Some(V6::Static { .. })) => {
                        format!("{c} will have no IPv6 gateway")
                    }
                    (None, Some(c), _) => format!("{c} will have IPv6 off"),
                };
                let keep = match to {
                    Some(c) => format!(
                        " To keep it, give {c} the IPv6 gateway {gateway} (IPv6 static), or set \
                         IPv6 on {c} to auto if the router advertises it."
                    ),
                    None => String::new(),
                };
                out.push(format!(
                    "IPv6 default route via {gateway} on {link} will be lost: {why}.{keep}"
                ));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::tests::{classic, n};
    use super::super::*;
    use super::*;

    fn nic(index: u32, name: &str) -> LinkState {
        LinkState {
            index,
            name: name.into(),
            kind: None,
            master: None,
            mtu: 1500,
            up: true,
            carrier: true,
            operstate: "up".into(),
            mac: "52:54:00:00:00:01".into(),
            bridge: None,
            bond: None,
            vlan: None,
        }
    }

    /// A host with eth0 carrying 192.0.2.10/24 and the default route, and eth1 idle.
    pub(crate) fn fresh_host() -> LiveNet {
        let mut eth1 = nic(3, "eth1");
        eth1.up = false;
        LiveNet {
            links: vec![nic(2, "eth0"), eth1, nic(4, "eth2")],
            addresses: vec![
                AddrState {
                    link: "eth0".into(),
                    address: Cidr::parse("192.0.2.10/24").unwrap(),
                    link_local: false,
                    dynamic: false,
                },
                AddrState {
                    link: "eth0".into(),
                    address: Cidr::parse("fe80::1/64").unwrap(),
                    link_local: true,
                    dynamic: false,
                },
            ],
            routes: vec![RouteState {
                destination: None,
                gateway: Some("192.0.2.1".parse().unwrap()),
                link: Some("eth0".into()),
            }],
        }
    }

    fn described(ops: &[LiveOp]) -> Vec<String> {
        ops.iter().map(|o| o.describe()).collect()
    }

    #[test]
    fn classic_recipe_moves_the_address_to_the_bridge() {
        let ops = live_ops(&NetConfig::default(), &classic(), &fresh_host());
        assert_eq!(
            described(&ops),
            vec![
                "create bond bond0 (mode active-backup, miimon 100 ms)",
                "create bridge br0 (STP off, forward delay 0 s, ageing 300 s)",
                "remove default route via 192.0.2.1 on eth0",
                "remove address 192.0.2.10/24 from eth0",
                "set eth0 down",
                "add eth0 to bond0",
                "add eth1 to bond0",
                "make eth0 the primary member of bond0",
                "add bond0 to br0",
                "set eth0 up",
                "set eth1 up",
                "set bond0 up",
                "set br0 up",
                "add address 192.0.2.10/24 to br0",
                "add default route via 192.0.2.1 on br0",
            ]
        );
    }

    #[test]
    fn every_op_but_primary_has_an_exact_inverse() {
        for op in live_ops(&NetConfig::default(), &classic(), &fresh_host()) {
            match op.inverse() {
                Some(inv) => assert_eq!(inv.inverse(), Some(op.clone()), "{op:?}"),
                None => assert!(matches!(op, LiveOp::SetPrimary { .. })),
            }
        }
    }

    /// The host after the classic recipe was applied.
    fn after_classic() -> LiveNet {
        let mut h = fresh_host();
        for l in &mut h.links {
            l.master = Some("bond0".into());
            l.up = true;
        }
        h.links[2].master = None;
        let mut bond = nic(5, "bond0");
        bond.kind = Some("bond".into());
        bond.master = Some("br0".into());
        bond.bond = Some(BondLive {
            name: "bond0".into(),
            mode: 1,
            miimon_ms: 100,
            lacp_fast: None,
        });
        let mut br = nic(6, "br0");
        br.kind = Some("bridge".into());
        br.bridge = Some(BridgeLive {
            name: "br0".into(),
            stp: false,
            forward_delay_s: 0,
            ageing_s: 300,
        });
        h.links.push(bond);
        h.links.push(br);
        h.addresses = vec![AddrState {
            link: "br0".into(),
            address: Cidr::parse("192.0.2.10/24").unwrap(),
            link_local: false,
            dynamic: false,
        }];
        h.routes[0].link = Some("br0".into());
        h
    }

    #[test]
    fn applied_config_needs_nothing() {
        assert!(live_ops(&classic(), &classic(), &after_classic()).is_empty());
    }

    #[test]
    fn edit_changes_in_place() {
        let mut next = classic();
        next.bridges[0].stp = true;
        next.bridges[0].forward_delay_s = 4;
        next.bridges[0].ports.push(n("eth2"));
        next.bridges[0].ip.v4 = V4::Static {
            address: Cidr::parse("192.0.2.11/24").unwrap(),
            gateway: Some("192.0.2.1".parse().unwrap()),
        };
        let ops = live_ops(&classic(), &next, &after_classic());
        assert_eq!(
            described(&ops),
            vec![
                "set bridge br0: STP on, forward delay 4 s, ageing 300 s",
                "add eth2 to br0",
                "remove default route via 192.0.2.1 on br0",
                "remove address 192.0.2.10/24 from br0",
                "add address 192.0.2.11/24 to br0",
                "add default route via 192.0.2.1 on br0",
            ]
        );
    }

    #[test]
    fn delete_tears_down_and_undo_restores() {
        let next = classic()
            .with_change(
                &NetChange::Delete { name: n("br0") },
                &super::super::tests::live(),
            )
            .unwrap();
        let ops = live_ops(&classic(), &next, &after_classic());
        assert_eq!(
            described(&ops),
            vec![
                "remove default route via 192.0.2.1 on br0",
                "remove address 192.0.2.10/24 from br0",
                "release bond0 from br0",
                "set br0 down",
                "delete bridge br0",
            ]
        );
        let undo: Vec<String> = ops
            .iter()
            .rev()
            .filter_map(|o| o.inverse())
            .map(|o| o.describe())
            .collect();
        assert_eq!(
            undo,
            vec![
                "create bridge br0 (STP off, forward delay 0 s, ageing 300 s)",
                "set br0 up",
                "add bond0 to br0",
                "add address 192.0.2.10/24 to br0",
                "add default route via 192.0.2.1 on br0",
            ]
        );
    }

    #[test]
    fn bond_mode_change_recreates_the_bond() {
        let mut next = classic();
        next.bonds[0].mode = BondMode::BalanceRr;
        next.bonds[0].primary = None;
        let ops = described(&live_ops(&classic(), &next, &after_classic()));
        assert_eq!(ops[0], "release eth0 from bond0");
        assert!(ops.contains(&"delete bond bond0".to_string()), "{ops:?}");
        assert!(
            ops.contains(&"create bond bond0 (mode balance-rr, miimon 100 ms)".to_string()),
            "{ops:?}"
        );
        assert!(ops.contains(&"add bond0 to br0".to_string()), "{ops:?}");
    }

    /// `fresh_host` with IPv6 on eth0 as well: `address` (set by hand, or `dynamic`: from
    /// router advertisements) and the IPv6 default route via the router's fe80::1.
    pub(crate) fn dual_stack(address: &str, dynamic: bool) -> LiveNet {
        let mut h = fresh_host();
        h.addresses.push(AddrState {
            link: "eth0".into(),
            address: Cidr::parse(address).unwrap(),
            link_local: false,
            dynamic,
        });
        h.routes.push(RouteState {
            destination: None,
            gateway: Some("fe80::1".parse().unwrap()),
            link: Some("eth0".into()),
        });
        h
    }

    /// The classic recipe (eth0+eth1 → bond0 → br0) with `v6` on br0.
    fn classic_v6(v6: V6) -> NetConfig {
        let mut c = classic();
        c.bridges[0].ip.v6 = v6;
        c
    }

    fn static_v6(address: &str, gateway: Option<&str>) -> V6 {
        V6::Static {
            address: Cidr::parse(address).unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
        }
    }

    /// The warnings of the plan that takes `host` (nothing managed yet) to `next`.
    fn losses(host: &LiveNet, next: &NetConfig) -> Vec<String> {
        ipv6_losses(next, host, &live_ops(&NetConfig::default(), next, host))
    }

    #[test]
    fn carried_v6_reads_what_the_cards_have() {
        let cards = ["eth0", "eth1"];
        assert_eq!(
            dual_stack("2001:db8::10/64", false).carried_v6(&cards),
            static_v6("2001:db8::10/64", Some("fe80::1"))
        );
        assert_eq!(
            dual_stack("2001:db8::10/64", true).carried_v6(&cards),
            V6::Auto
        );
        // Link-local only: nothing to carry.
        assert_eq!(fresh_host().carried_v6(&cards), V6::Off);
        // A hand-set address wins over SLAAC ones next to it.
        let mut h = dual_stack("2001:db8::abcd/64", true);
        h.addresses.push(AddrState {
            link: "eth1".into(),
            address: Cidr::parse("2001:db8:1::10/64").unwrap(),
            link_local: false,
            dynamic: false,
        });
        assert_eq!(
            h.carried_v6(&cards),
            static_v6("2001:db8:1::10/64", Some("fe80::1"))
        );
        // Only cards that are taken count.
        assert_eq!(h.carried_v6(&["eth2"]), V6::Off);
    }

    #[test]
    fn ipv6_off_on_a_dual_stack_host_warns_naming_the_address_and_route() {
        let w = losses(&dual_stack("2001:db8::10/64", false), &classic());
        assert_eq!(w.len(), 2, "{w:?}");
        let addr = w.iter().find(|m| m.contains("address")).unwrap();
        assert!(
            addr.starts_with(
                "IPv6 address 2001:db8::10/64 on eth0 will be lost: br0 will have IPv6 off."
            ),
            "{addr}"
        );
        assert!(
            addr.contains("set IPv6 on br0 to static 2001:db8::10/64"),
            "{addr}"
        );
        let route = w.iter().find(|m| m.contains("default route")).unwrap();
        assert!(
            route.starts_with(
                "IPv6 default route via fe80::1 on eth0 will be lost: br0 will have IPv6 off."
            ),
            "{route}"
        );
    }

    #[test]
    fn carried_ipv6_gives_no_warning() {
        let host = dual_stack("2001:db8::10/64", false);
        let next = classic_v6(static_v6("2001:db8::10/64", Some("fe80::1")));
        let ops = described(&live_ops(&NetConfig::default(), &next, &host));
        assert!(
            ops.contains(&"add address 2001:db8::10/64 to br0".to_string()),
            "{ops:?}"
        );
        assert!(
            ops.contains(&"add default route via fe80::1 on br0".to_string()),
            "{ops:?}"
        );
        assert_eq!(losses(&host, &next), Vec::<String>::new());
        // SLAAC addresses and the RA route come back by themselves with auto.
        let slaac = dual_stack("2001:db8::5054:ff:fe00:1/64", true);
        assert_eq!(losses(&slaac, &classic_v6(V6::Auto)), Vec::<String>::new());
        // Link-local only: nothing to lose.
        assert_eq!(losses(&fresh_host(), &classic()), Vec::<String>::new());
    }

    #[test]
    fn other_ipv6_than_the_host_has_warns() {
        let host = dual_stack("2001:db8::10/64", false);
        // Another static address, same gateway: the address is lost, the route is not.
        let w = losses(
            &host,
            &classic_v6(static_v6("2001:db8::11/64", Some("fe80::1"))),
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "IPv6 address 2001:db8::10/64 on eth0 will be lost: br0 will have 2001:db8::11/64 instead."
            ),
            "{w:?}"
        );
        // The same address without its gateway: the route is lost.
        let w = losses(&host, &classic_v6(static_v6("2001:db8::10/64", None)));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains(
                "default route via fe80::1 on eth0 will be lost: br0 will have no IPv6 gateway"
            ),
            "{w:?}"
        );
        // Auto does not hand back an address set by hand (the route comes from RAs).
        let w = losses(&host, &classic_v6(V6::Auto));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("2001:db8::10/64 on eth0 will be lost: br0 will take IPv6 from router advertisements"),
            "{w:?}"
        );
        // SLAAC host, IPv6 off: advice is auto.
        let w = losses(&dual_stack("2001:db8::abcd/64", true), &classic());
        let addr = w.iter().find(|m| m.contains("2001:db8::abcd/64")).unwrap();
        assert!(addr.contains("set IPv6 on br0 to auto"), "{addr}");
    }

    #[test]
    fn turning_ipv6_off_on_a_managed_bridge_warns() {
        let before = classic_v6(static_v6("2001:db8::10/64", Some("fe80::1")));
        let mut host = after_classic();
        host.addresses.push(AddrState {
            link: "br0".into(),
            address: Cidr::parse("2001:db8::10/64").unwrap(),
            link_local: false,
            dynamic: false,
        });
        host.routes.push(RouteState {
            destination: None,
            gateway: Some("fe80::1".parse().unwrap()),
            link: Some("br0".into()),
        });
        assert!(live_ops(&before, &before, &host).is_empty());
        let next = classic();
        let w = ipv6_losses(&next, &host, &live_ops(&before, &next, &host));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w.iter().any(|m| m.starts_with(
            "IPv6 address 2001:db8::10/64 on br0 will be lost: br0 will have IPv6 off."
        )));
        // Deleting the bridge: nothing takes its IPv6 over.
        let gone = before
            .with_change(
                &NetChange::Delete { name: n("br0") },
                &super::super::tests::live(),
            )
            .unwrap();
        let w = ipv6_losses(&gone, &host, &live_ops(&before, &gone, &host));
        assert!(
            w.iter().any(|m| m
                == "IPv6 address 2001:db8::10/64 on br0 will be lost: no interface takes it over."),
            "{w:?}"
        );
    }

    #[test]
    fn diffs() {
        let d = unified_diff("etc/x", Some("a\nb\n"), Some("a\nc\n"));
        assert!(d.starts_with("--- a/etc/x\n+++ b/etc/x\n"), "{d}");
        assert!(d.contains("-b\n+c\n"), "{d}");
        let d = unified_diff("etc/x", None, Some("new\n"));
        assert!(d.starts_with("--- /dev/null\n+++ b/etc/x\n"), "{d}");
        let c = FileChange::new("etc/x", Some("old\n".into()), None, 0o644);
        assert_eq!(c.action(), "remove");
        assert!(c.diff.contains("+++ /dev/null"));
    }
}
