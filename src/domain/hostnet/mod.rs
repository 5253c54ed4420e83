//! The host network as virtdeck manages it: bonds, bridges and VLAN interfaces with their
//! addresses, validated from plain values. Rendering to the host's network files lives in
//! [`render`], the change plan (file diffs + live operations) in [`plan`].

pub mod form;
pub mod plan;
pub mod render;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A problem with one field of a host change, shown next to that field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

pub fn field_error(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// A kernel interface name: 1–15 characters of letters, digits, `_`, `-` and `.`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

/// In JSON, a string.
impl utoipa::PartialSchema for IfName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A kernel interface name: 1–15 characters of letters, digits, `_`, `-` and `.`.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for IfName {}

impl IfName {
    pub fn parse(s: &str) -> Result<IfName, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("Enter an interface name.".into());
        }
        if s.len() > 15 {
            return Err(format!(
                "\"{s}\" is too long: interface names have at most 15 characters."
            ));
        }
        if s == "." || s == ".." || s.starts_with('-') {
            return Err(format!("\"{s}\" is not a usable interface name."));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!(
                "\"{s}\" has characters an interface name cannot have; use letters, digits, '_', '-' and '.'."
            ));
        }
        Ok(IfName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        IfName::parse(&s)
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An address with its prefix length, e.g. `192.0.2.10/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// In JSON, a string.
impl utoipa::PartialSchema for Cidr {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "An address with its prefix length, e.g. `192.0.2.10/24`.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Cidr {}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let Some((a, p)) = s.split_once('/') else {
            return Err(format!(
                "\"{s}\" needs a prefix length, e.g. 192.0.2.10/24 or 2001:db8::10/64."
            ));
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("\"{a}\" is not an IPv4 or IPv6 address."))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("\"{p}\" is not a prefix length (0–{max})."))?;
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(format!("{addr} cannot be an interface address."));
        }
        Ok(Cidr { addr, prefix })
    }

    /// The network part, for netmask-style files.
    pub fn netmask_v4(&self) -> Option<Ipv4Addr> {
        match self.addr {
            IpAddr::V4(_) => {
                let bits = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                Some(Ipv4Addr::from(bits))
            }
            IpAddr::V6(_) => None,
        }
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Cidr::parse(&s)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Where the host keeps its network configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// systemd-networkd: `.netdev` and `.network` files in /etc/systemd/network.
    Networkd,
    /// NetworkManager keyfiles in /etc/NetworkManager/system-connections.
    NetworkManager,
    /// Debian ifupdown: /etc/network/interfaces.d.
    Ifupdown,
    /// RHEL-style ifcfg files in /etc/sysconfig/network-scripts (+ modprobe options).
    Ifcfg,
}

impl Backend {
    pub const ALL: [Backend; 4] = [
        Backend::Networkd,
        Backend::NetworkManager,
        Backend::Ifupdown,
        Backend::Ifcfg,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Networkd => "networkd",
            Backend::NetworkManager => "network-manager",
            Backend::Ifupdown => "ifupdown",
            Backend::Ifcfg => "ifcfg",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Backend::Networkd => "systemd-networkd",
            Backend::NetworkManager => "NetworkManager keyfiles",
            Backend::Ifupdown => "ifupdown (/etc/network/interfaces)",
            Backend::Ifcfg => "RHEL ifcfg files",
        }
    }

    pub fn parse(s: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.as_str() == s.trim())
    }

    /// Which directories under the host root decide the backend, most specific first.
    pub const MARKERS: [(&'static str, Backend); 4] = [
        ("etc/network/interfaces", Backend::Ifupdown),
        ("etc/sysconfig/network-scripts", Backend::Ifcfg),
        (
            "etc/NetworkManager/system-connections",
            Backend::NetworkManager,
        ),
        ("etc/systemd/network", Backend::Networkd),
    ];

    /// The backend for a host where the given marker paths exist (see [`Backend::MARKERS`]).
    pub fn detect(existing: &[&str]) -> Backend {
        Backend::MARKERS
            .iter()
            .find(|(path, _)| existing.contains(path))
            .map(|(_, b)| *b)
            .unwrap_or(Backend::Networkd)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BondMode {
    BalanceRr,
    ActiveBackup,
    BalanceXor,
    Broadcast,
    #[serde(rename = "802.3ad")]
    Lacp,
    BalanceTlb,
    BalanceAlb,
}

impl BondMode {
    pub const ALL: [BondMode; 7] = [
        BondMode::BalanceRr,
        BondMode::ActiveBackup,
        BondMode::BalanceXor,
        BondMode::Broadcast,
        BondMode::Lacp,
        BondMode::BalanceTlb,
        BondMode::BalanceAlb,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Lacp => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }

    /// The kernel's number for the mode (IFLA_BOND_MODE).
    pub fn number(self) -> u8 {
        BondMode::ALL.iter().position(|m| *m == self).unwrap_or(0) as u8
    }

    pub fn parse(s: &str) -> Option<BondMode> {
        let s = s.trim();
        BondMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s || m.number().to_string() == s)
    }

    /// Modes where one member is preferred (`primary`).
    pub fn has_primary(self) -> bool {
        matches!(
            self,
            BondMode::ActiveBackup | BondMode::BalanceTlb | BondMode::BalanceAlb
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LacpRate {
    Slow,
    Fast,
}

impl LacpRate {
    pub fn as_str(self) -> &'static str {
        match self {
            LacpRate::Slow => "slow",
            LacpRate::Fast => "fast",
        }
    }
}

/// IPv4 on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum V4 {
    #[default]
    Off,
    Dhcp,
    Static {
        address: Cidr,
        #[schema(value_type = Option<String>)]
        gateway: Option<Ipv4Addr>,
    },
}

/// IPv6 on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum V6 {
    #[default]
    Off,
    /// Router advertisements (SLAAC) and DHCPv6 as the network offers.
    Auto,
    Static {
        address: Cidr,
        #[schema(value_type = Option<String>)]
        gateway: Option<Ipv6Addr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct IpSpec {
    pub v4: V4,
    pub v6: V6,
    #[schema(value_type = Vec<String>)]
    pub dns: Vec<IpAddr>,
}

impl IpSpec {
    pub fn is_off(&self) -> bool {
        self.v4 == V4::Off && self.v6 == V6::Off && self.dns.is_empty()
    }

    /// Static addresses, IPv4 first.
    pub fn static_addresses(&self) -> Vec<Cidr> {
        let mut v = Vec::new();
        if let V4::Static { address, .. } = &self.v4 {
            v.push(*address);
        }
        if let V6::Static { address, .. } = &self.v6 {
            v.push(*address);
        }
        v
    }

    pub fn gateway_v4(&self) -> Option<Ipv4Addr> {
        match &self.v4 {
            V4::Static { gateway, .. } => *gateway,
            _ => None,
        }
    }

    pub fn gateway_v6(&self) -> Option<Ipv6Addr> {
        match &self.v6 {
            V6::Static { gateway, .. } => *gateway,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BondSpec {
    pub name: IfName,
    pub members: Vec<IfName>,
    pub mode: BondMode,
    pub miimon_ms: u32,
    pub primary: Option<IfName>,
    pub lacp_rate: Option<LacpRate>,
    pub mtu: Option<u32>,
    pub ip: IpSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BridgeSpec {
    pub name: IfName,
    pub ports: Vec<IfName>,
    pub stp: bool,
    pub forward_delay_s: u32,
    pub ageing_s: u32,
    pub mtu: Option<u32>,
    pub ip: IpSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VlanSpec {
    pub name: IfName,
    pub parent: IfName,
    pub id: u16,
    pub mtu: Option<u32>,
    pub ip: IpSpec,
}

/// Every interface virtdeck manages on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(default)]
pub struct NetConfig {
    pub bonds: Vec<BondSpec>,
    pub bridges: Vec<BridgeSpec>,
    pub vlans: Vec<VlanSpec>,
}

/// What kind of interface a managed name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bond,
    Bridge,
    Vlan,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bond => "bond",
            Kind::Bridge => "bridge",
            Kind::Vlan => "VLAN",
        }
    }
}

/// One change an admin asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NetChange {
    Bond(BondSpec),
    Bridge(BridgeSpec),
    Vlan(VlanSpec),
    /// The classic recipe: members → bond (when more than one) → bridge with the host's IP.
    Recipe {
        bond: Option<BondSpec>,
        bridge: BridgeSpec,
    },
    Delete {
        name: IfName,
    },
}

pub const MTU_MIN: u32 = 68;
pub const MTU_MAX: u32 = 65535;

impl NetConfig {
    pub fn kind_of(&self, name: &str) -> Option<Kind> {
        if self.bonds.iter().any(|b| b.name.as_str() == name) {
            Some(Kind::Bond)
        } else if self.bridges.iter().any(|b| b.name.as_str() == name) {
            Some(Kind::Bridge)
        } else if self.vlans.iter().any(|v| v.name.as_str() == name) {
            Some(Kind::Vlan)
        } else {
            None
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bonds.is_empty() && self.bridges.is_empty() && self.vlans.is_empty()
    }

    /// Every managed interface name.
    pub fn names(&self) -> Vec<IfName> {
        let mut v: Vec<IfName> = self.bonds.iter().map(|b| b.name.clone()).collect();
        v.extend(self.bridges.iter().map(|b| b.name.clone()));
        v.extend(self.vlans.iter().map(|b| b.name.clone()));
        v
    }

    /// The interface that `name` is enslaved to in this config (bond or bridge), if any.
    pub fn master_of(&self, name: &str) -> Option<&IfName> {
        self.bonds
            .iter()
            .find(|b| b.members.iter().any(|m| m.as_str() == name))
            .map(|b| &b.name)
            .or_else(|| {
                self.bridges
                    .iter()
                    .find(|b| b.ports.iter().any(|p| p.as_str() == name))
                    .map(|b| &b.name)
            })
    }

    /// Managed interfaces that use `name` (as member, port or VLAN parent).
    pub fn users_of(&self, name: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .bonds
            .iter()
            .filter(|b| b.members.iter().any(|m| m.as_str() == name))
            .map(|b| b.name.to_string())
            .collect();
        users.extend(
            self.bridges
                .iter()
                .filter(|b| b.ports.iter().any(|p| p.as_str() == name))
                .map(|b| b.name.to_string()),
        );
        users.extend(
            self.vlans
                .iter()
                .filter(|v| v.parent.as_str() == name)
                .map(|v| v.name.to_string()),
        );
        users
    }

    /// The config with `change` made, checked as a whole against the host's links.
    pub fn with_change(
        &self,
        change: &NetChange,
        live_links: &[String],
    ) -> Result<NetConfig, Vec<FieldError>> {
        let mut next = self.clone();
        match change {
            NetChange::Bond(b) => next.put_bond(b.clone()),
            NetChange::Bridge(b) => next.put_bridge(b.clone()),
            NetChange::Vlan(v) => next.put_vlan(v.clone()),
            NetChange::Recipe { bond, bridge } => {
                if let Some(b) = bond {
                    next.put_bond(b.clone());
                }
                next.put_bridge(bridge.clone());
            }
            NetChange::Delete { name } => {
                if self.kind_of(name.as_str()).is_none() {
                    return Err(vec![field_error(
                        "name",
                        format!("{name} is not an interface virtdeck manages."),
                    )]);
                }
                let users = self.users_of(name.as_str());
                if !users.is_empty() {
                    return Err(vec![field_error(
                        "name",
                        format!(
                            "{name} is used by {}; change or delete that first.",
                            users.join(", ")
                        ),
                    )]);
                }
                next.bonds.retain(|b| b.name != *name);
                next.bridges.retain(|b| b.name != *name);
                next.vlans.retain(|v| v.name != *name);
            }
        }
        next.validate(live_links)?;
        Ok(next)
    }

    fn put_bond(&mut self, b: BondSpec) {
        self.remove_other_kinds(&b.name, Kind::Bond);
        match self.bonds.iter_mut().find(|x| x.name == b.name) {
            Some(x) => *x = b,
            None => self.bonds.push(b),
        }
        self.bonds.sort_by(|a, b| a.name.cmp(&b.name));
    }

    fn put_bridge(&mut self, b: BridgeSpec) {
        self.remove_other_kinds(&b.name, Kind::Bridge);
        match self.bridges.iter_mut().find(|x| x.name == b.name) {
            Some(x) => *x = b,
            None => self.bridges.push(b),
        }
        self.bridges.sort_by(|a, b| a.name.cmp(&b.name));
    }

    fn put_vlan(&mut self, v: VlanSpec) {
        self.remove_other_kinds(&v.name, Kind::Vlan);
        match self.vlans.iter_mut().find(|x| x.name == v.name) {
            Some(x) => *x = v,
            None => self.vlans.push(v),
        }
        self.vlans.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// A name can only be one kind; replacing a bond by a bridge of the same name is a
    /// delete plus a create.
    fn remove_other_kinds(&mut self, name: &IfName, keep: Kind) {
        if keep != Kind::Bond {
            self.bonds.retain(|b| b.name != *name);
        }
        if keep != Kind::Bridge {
            self.bridges.retain(|b| b.name != *name);
        }
        if keep != Kind::Vlan {
            self.vlans.retain(|v| v.name != *name);
        }
    }

    /// Whole-config rules: every referenced interface exists, nothing is enslaved
    /// twice, enslaved interfaces carry no addresses, one default gateway per family.
    pub fn validate(&self, live_links: &[String]) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let managed: BTreeSet<&str> = self
            .bonds
            .iter()
            .map(|b| b.name.as_str())
            .chain(self.bridges.iter().map(|b| b.name.as_str()))
            .chain(self.vlans.iter().map(|v| v.name.as_str()))
            .collect();
        let exists = |n: &str| managed.contains(n) || live_links.iter().any(|l| l == n);
        let mut enslaved: BTreeMap<String, String> = BTreeMap::new();
        fn enslave(
            enslaved: &mut BTreeMap<String, String>,
            errs: &mut Vec<FieldError>,
            field: &'static str,
            port: &IfName,
            master: &IfName,
        ) {
            if let Some(other) = enslaved.insert(port.to_string(), master.to_string()) {
                errs.push(field_error(
                    field,
                    format!("{port} is already part of {other}; an interface can belong to one bond or bridge."),
                ));
            }
        }
        for b in &self.bonds {
            if b.members.is_empty() {
                errs.push(field_error("members", "A bond needs at least one member."));
            }
            for m in &b.members {
                if managed.contains(m.as_str()) {
                    errs.push(field_error(
                        "members",
                        format!("{m} is a bond, bridge or VLAN; bond members are network cards."),
                    ));
                } else if !exists(m.as_str()) {
                    errs.push(field_error(
                        "members",
                        format!("There is no interface {m} on this host."),
                    ));
                }
                if *m == b.name {
                    errs.push(field_error("members", "A bond cannot be its own member."));
                }
                enslave(&mut enslaved, &mut errs, "members", m, &b.name);
            }
            if let Some(p) = &b.primary {
                if !b.mode.has_primary() {
                    errs.push(field_error(
                        "primary",
                        format!("Mode {} has no primary member.", b.mode.as_str()),
                    ));
                } else if !b.members.contains(p) {
                    errs.push(field_error(
                        "primary",
                        format!("The primary member {p} must be one of the members."),
                    ));
                }
            }
            if b.lacp_rate.is_some() && b.mode != BondMode::Lacp {
                errs.push(field_error(
                    "lacp_rate",
                    "The LACP rate applies only to mode 802.3ad.",
                ));
            }
            if b.miimon_ms > 60_000 {
                errs.push(field_error(
                    "miimon_ms",
                    "Link monitoring runs at most every 60000 ms.",
                ));
            }
        }
        for b in &self.bridges {
            for p in &b.ports {
                if *p == b.name {
                    errs.push(field_error("ports", "A bridge cannot be its own port."));
                } else if self.bridges.iter().any(|x| x.name == *p) {
                    errs.push(field_error(
                        "ports",
                        format!("{p} is a bridge; a bridge cannot be a port of another bridge."),
                    ));
                } else if !exists(p.as_str()) {
                    errs.push(field_error(
                        "ports",
                        format!("There is no interface {p} on this host."),
                    ));
                }
                enslave(&mut enslaved, &mut errs, "ports", p, &b.name);
            }
            if b.forward_delay_s > 30 {
                errs.push(field_error(
                    "forward_delay_s",
                    "The forward delay is 0–30 seconds.",
                ));
            } else if b.stp && b.forward_delay_s < 2 {
                errs.push(field_error(
                    "forward_delay_s",
                    "With STP on, the forward delay is at least 2 seconds.",
                ));
            }
            if b.ageing_s > 1_000_000 {
                errs.push(field_error(
                    "ageing_s",
                    "The ageing time is at most 1000000 seconds.",
                ));
            }
        }
        for v in &self.vlans {
            if !(1..=4094).contains(&v.id) {
                errs.push(field_error("vlan_id", "A VLAN id is 1–4094."));
            }
            if v.parent == v.name {
                errs.push(field_error(
                    "parent",
                    "A VLAN interface cannot be its own parent.",
                ));
            } else if !exists(v.parent.as_str()) {
                errs.push(field_error(
                    "parent",
                    format!("There is no interface {} on this host.", v.parent),
                ));
            }
            if self
                .vlans
                .iter()
                .any(|o| o.name != v.name && o.parent == v.parent && o.id == v.id)
            {
                errs.push(field_error(
                    "vlan_id",
                    format!("VLAN {} on {} exists already.", v.id, v.parent),
                ));
            }
        }
        let mut gw4 = Vec::new();
        let mut gw6 = Vec::new();
        for (name, mtu, ip) in self.all_ip() {
            if let Some(m) = mtu {
                if !(MTU_MIN..=MTU_MAX).contains(&m) {
                    errs.push(field_error(
                        "mtu",
                        format!("The MTU is {MTU_MIN}–{MTU_MAX} bytes."),
                    ));
                }
            }
            if let Some(master) = enslaved.get(name.as_str()) {
                if !ip.is_off() {
                    errs.push(field_error(
                        "ipv4",
                        format!(
                            "{name} is part of {master}; put the addresses on {master} instead."
                        ),
                    ));
                }
            }
            check_ip(ip, &mut errs);
            if ip.gateway_v4().is_some() {
                gw4.push(name.to_string());
            }
            if ip.gateway_v6().is_some() {
                gw6.push(name.to_string());
            }
        }
        if gw4.len() > 1 {
            errs.push(field_error(
                "ipv4_gateway",
                format!(
                    "Only one interface may have the IPv4 gateway (now: {}).",
                    gw4.join(", ")
                ),
            ));
        }
        if gw6.len() > 1 {
            errs.push(field_error(
                "ipv6_gateway",
                format!(
                    "Only one interface may have the IPv6 gateway (now: {}).",
                    gw6.join(", ")
                ),
            ));
        }
        if self.has_cycle() {
            errs.push(field_error(
                "parent",
                "These interfaces would depend on each other in a loop.",
            ));
        }
        errs.dedup();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// (name, mtu, addresses) of every managed interface.
    pub fn all_ip(&self) -> Vec<(&IfName, Option<u32>, &IpSpec)> {
        let mut v: Vec<(&IfName, Option<u32>, &IpSpec)> =
            self.bonds.iter().map(|b| (&b.name, b.mtu, &b.ip)).collect();
        v.extend(self.bridges.iter().map(|b| (&b.name, b.mtu, &b.ip)));
        v.extend(self.vlans.iter().map(|x| (&x.name, x.mtu, &x.ip)));
        v
    }

    /// The interfaces `name` needs before it can exist (members, ports, parent).
    pub fn lower_of(&self, name: &str) -> Vec<&IfName> {
        if let Some(b) = self.bonds.iter().find(|b| b.name.as_str() == name) {
            return b.members.iter().collect();
        }
        if let Some(b) = self.bridges.iter().find(|b| b.name.as_str() == name) {
            return b.ports.iter().collect();
        }
        if let Some(v) = self.vlans.iter().find(|v| v.name.as_str() == name) {
            return vec![&v.parent];
        }
        Vec::new()
    }

    fn has_cycle(&self) -> bool {
        fn visit<'a>(c: &'a NetConfig, n: &'a str, path: &mut Vec<&'a str>) -> bool {
            if path.contains(&n) {
                return true;
            }
            path.push(n);
            let cyc = c
                .lower_of(n)
                .into_iter()
                .any(|l| visit(c, l.as_str(), path));
            path.pop();
            cyc
        }
        self.names()
            .iter()
            .any(|n| visit(self, n.as_str(), &mut Vec::new()))
    }

    /// Managed interfaces in creation order: everything an interface needs comes first.
    pub fn creation_order(&self) -> Vec<IfName> {
        let mut out: Vec<IfName> = Vec::new();
        fn add(c: &NetConfig, n: &IfName, out: &mut Vec<IfName>, depth: usize) {
            if out.contains(n) || depth > 16 || c.kind_of(n.as_str()).is_none() {
                return;
            }
            for l in c.lower_of(n.as_str()) {
                add(c, l, out, depth + 1);
            }
            out.push(n.clone());
        }
        for n in self.names() {
            add(self, &n, &mut out, 0);
        }
        out
    }
}

fn check_ip(ip: &IpSpec, errs: &mut Vec<FieldError>) {
    if let V4::Static { address, gateway } = &ip.v4 {
        if !address.addr.is_ipv4() {
            errs.push(field_error(
                "ipv4_address",
                format!("{address} is not an IPv4 address."),
            ));
        } else if address.prefix == 0 || address.prefix > 31 && address.prefix != 32 {
            errs.push(field_error(
                "ipv4_address",
                "The IPv4 prefix length is 1–32.",
            ));
        }
        if let (Some(gw), IpAddr::V4(a)) = (gateway, address.addr) {
            if *gw == a {
                errs.push(field_error(
                    "ipv4_gateway",
                    "The gateway cannot be the interface's own address.",
                ));
            } else if !same_subnet_v4(a, *gw, address.prefix) {
                errs.push(field_error(
                    "ipv4_gateway",
                    format!("The gateway {gw} is not in {address}'s network."),
                ));
            }
        }
    }
    if let V6::Static { address, .. } = &ip.v6 {
        if !address.addr.is_ipv6() {
            errs.push(field_error(
                "ipv6_address",
                format!("{address} is not an IPv6 address."),
            ));
        } else if address.prefix == 0 {
            errs.push(field_error(
                "ipv6_address",
                "The IPv6 prefix length is 1–128.",
            ));
        }
    }
}

fn same_subnet_v4(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u32::MAX << (32 - u32::from(prefix.min(32)));
    u32::from(a) & mask == u32::from(b) & mask
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn n(s: &str) -> IfName {
        IfName::parse(s).unwrap()
    }

    /// eth0+eth1 → bond0 (active-backup, miimon 100, primary eth0) → br0 with the host IP.
    pub fn classic() -> NetConfig {
        NetConfig {
            bonds: vec![BondSpec {
                name: n("bond0"),
                members: vec![n("eth0"), n("eth1")],
                mode: BondMode::ActiveBackup,
                miimon_ms: 100,
                primary: Some(n("eth0")),
                lacp_rate: None,
                mtu: None,
                ip: IpSpec::default(),
            }],
            bridges: vec![BridgeSpec {
                name: n("br0"),
                ports: vec![n("bond0")],
                stp: false,
                forward_delay_s: 0,
                ageing_s: 300,
                mtu: None,
                ip: IpSpec {
                    v4: V4::Static {
                        address: Cidr::parse("192.0.2.10/24").unwrap(),
                        gateway: Some("192.0.2.1".parse().unwrap()),
                    },
                    v6: V6::Off,
                    dns: vec!["192.0.2.53".parse().unwrap()],
                },
            }],
            vlans: vec![],
        }
    }

    pub fn live() -> Vec<String> {
        vec!["lo".into(), "eth0".into(), "eth1".into(), "eth2".into()]
    }

    #[test]
    fn interface_names() {
        assert!(IfName::parse("bond0").is_ok());
        assert!(IfName::parse("bond0.100").is_ok());
        assert!(IfName::parse("abcdefghijklmno").is_ok());
        assert!(IfName::parse("abcdefghijklmnop")
            .unwrap_err()
            .contains("15"));
        assert!(IfName::parse("br 0").is_err());
        assert!(IfName::parse("br0/x").is_err());
        assert!(IfName::parse("..").is_err());
        assert!(IfName::parse("").is_err());
        assert!(IfName::parse("-x").is_err());
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("192.0.2.10/24").unwrap();
        assert_eq!(c.netmask_v4(), Some("255.255.255.0".parse().unwrap()));
        assert_eq!(c.to_string(), "192.0.2.10/24");
        assert!(Cidr::parse("192.0.2.10").unwrap_err().contains("prefix"));
        assert!(Cidr::parse("192.0.2.10/33").is_err());
        assert!(Cidr::parse("2001:db8::1/64").is_ok());
        assert!(Cidr::parse("nonsense/8").is_err());
        assert!(Cidr::parse("0.0.0.0/0").is_err());
    }

    #[test]
    fn bond_modes() {
        assert_eq!(BondMode::parse("802.3ad"), Some(BondMode::Lacp));
        assert_eq!(BondMode::parse("1"), Some(BondMode::ActiveBackup));
        assert_eq!(BondMode::ActiveBackup.number(), 1);
        assert_eq!(BondMode::Lacp.number(), 4);
        assert_eq!(BondMode::parse("bogus"), None);
    }

    #[test]
    fn detection() {
        assert_eq!(Backend::detect(&[]), Backend::Networkd);
        assert_eq!(
            Backend::detect(&["etc/systemd/network", "etc/network/interfaces"]),
            Backend::Ifupdown
        );
        assert_eq!(
            Backend::detect(&[
                "etc/NetworkManager/system-connections",
                "etc/sysconfig/network-scripts"
            ]),
            Backend::Ifcfg
        );
        assert_eq!(
            Backend::detect(&["etc/NetworkManager/system-connections"]),
            Backend::NetworkManager
        );
    }

    #[test]
    fn classic_is_valid_and_ordered() {
        let c = classic();
        c.validate(&live()).unwrap();
        assert_eq!(c.creation_order(), vec![n("bond0"), n("br0")]);
        assert_eq!(c.master_of("eth1"), Some(&n("bond0")));
        assert_eq!(c.master_of("bond0"), Some(&n("br0")));
    }

    #[test]
    fn whole_config_rules() {
        let mut c = classic();
        c.bonds[0].members.push(n("eth9"));
        c.bonds[0].primary = Some(n("eth2"));
        c.bonds[0].lacp_rate = Some(LacpRate::Fast);
        let errs = c.validate(&live()).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field).collect();
        assert!(fields.contains(&"members"), "{errs:?}");
        assert!(fields.contains(&"primary"), "{errs:?}");
        assert!(fields.contains(&"lacp_rate"), "{errs:?}");

        let mut c = classic();
        c.bridges[0].ports.push(n("eth0"));
        let errs = c.validate(&live()).unwrap_err();
        assert!(
            errs[0].message.contains("already part of bond0"),
            "{errs:?}"
        );

        let mut c = classic();
        c.bonds[0].ip = c.bridges[0].ip.clone();
        let errs = c.validate(&live()).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.message.contains("put the addresses on br0")),
            "{errs:?}"
        );

        let mut c = classic();
        c.bridges[0].ip.v4 = V4::Static {
            address: Cidr::parse("192.0.2.10/24").unwrap(),
            gateway: Some("198.51.100.1".parse().unwrap()),
        };
        let errs = c.validate(&live()).unwrap_err();
        assert_eq!(errs[0].field, "ipv4_gateway");

        let mut c = classic();
        c.bridges[0].stp = true;
        assert_eq!(c.validate(&live()).unwrap_err()[0].field, "forward_delay_s");
    }

    #[test]
    fn vlans_and_loops() {
        let mut c = classic();
        c.vlans.push(VlanSpec {
            name: n("br0.10"),
            parent: n("br0"),
            id: 10,
            mtu: None,
            ip: IpSpec::default(),
        });
        c.validate(&live()).unwrap();
        assert_eq!(c.creation_order().last(), Some(&n("br0.10")));
        c.vlans[0].id = 0;
        assert_eq!(c.validate(&live()).unwrap_err()[0].field, "vlan_id");
        // br0 ← vlan on br0 as br0's port: a loop.
        let mut c = classic();
        c.vlans.push(VlanSpec {
            name: n("v10"),
            parent: n("br0"),
            id: 10,
            mtu: None,
            ip: IpSpec::default(),
        });
        c.bridges[0].ports.push(n("v10"));
        assert!(c
            .validate(&live())
            .unwrap_err()
            .iter()
            .any(|e| e.message.contains("loop")));
    }

    #[test]
    fn deleting_what_is_used_is_refused() {
        let c = classic();
        let errs = c
            .with_change(&NetChange::Delete { name: n("bond0") }, &live())
            .unwrap_err();
        assert!(errs[0].message.contains("used by br0"), "{errs:?}");
        let next = c
            .with_change(&NetChange::Delete { name: n("br0") }, &live())
            .unwrap();
        assert!(next.bridges.is_empty());
        assert_eq!(next.bonds.len(), 1);
        let errs = c
            .with_change(&NetChange::Delete { name: n("eth0") }, &live())
            .unwrap_err();
        assert!(errs[0]
            .message
            .contains("not an interface virtdeck manages"));
    }

    #[test]
    fn serde_round_trip() {
        let c = classic();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"802.3ad\"") || json.contains("active-backup"));
        let back: NetConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let bad = json.replace("bond0", "bond0-with-a-long-name");
        assert!(serde_json::from_str::<NetConfig>(&bad).is_err());
    }
}
