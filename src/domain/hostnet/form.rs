//! The host network forms (and the API's plan request): plain strings as typed, turned
//! into a [`NetChange`] or field errors.

use super::plan::LiveNet;
use super::{
    field_error, BondMode, BondSpec, BridgeSpec, Cidr, FieldError, IfName, IpSpec, LacpRate,
    NetChange, NetConfig, VlanSpec, V4, V6,
};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Every field of the bond, bridge, VLAN, recipe and delete forms, as typed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NetForm {
    /// bond, bridge, vlan, recipe or delete.
    pub kind: String,
    pub name: String,
    /// Bond members (or the recipe's network cards), separated by spaces or commas.
    pub members: String,
    pub mode: String,
    pub miimon_ms: String,
    pub primary: String,
    pub lacp_rate: String,
    /// The recipe's bond name.
    pub bond_name: String,
    pub ports: String,
    /// "on" or empty.
    pub stp: String,
    pub forward_delay_s: String,
    pub ageing_s: String,
    pub parent: String,
    pub vlan_id: String,
    pub mtu: String,
    /// off, dhcp or static.
    pub ipv4: String,
    pub ipv4_address: String,
    pub ipv4_gateway: String,
    /// off, auto or static.
    pub ipv6: String,
    pub ipv6_address: String,
    pub ipv6_gateway: String,
    pub dns: String,
    /// Empty: detected from the host's files.
    pub backend: String,
}

struct Parser {
    errs: Vec<FieldError>,
}

impl Parser {
    fn name(&mut self, field: &'static str, s: &str) -> Option<IfName> {
        IfName::parse(s)
            .map_err(|e| self.errs.push(field_error(field, e)))
            .ok()
    }

    fn names(&mut self, field: &'static str, s: &str) -> Vec<IfName> {
        let mut out: Vec<IfName> = Vec::new();
        for part in s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
        {
            if let Some(n) = self.name(field, part) {
                if out.contains(&n) {
                    self.errs
                        .push(field_error(field, format!("{n} is listed twice.")));
                } else {
                    out.push(n);
                }
            }
        }
        out
    }

    fn number<T: std::str::FromStr>(
        &mut self,
        field: &'static str,
        s: &str,
        default: Option<T>,
        what: &str,
    ) -> Option<T> {
        let s = s.trim();
        if s.is_empty() {
            if default.is_none() {
                self.errs.push(field_error(field, format!("Enter {what}.")));
            }
            return default;
        }
        s.parse()
            .map_err(|_| {
                self.errs.push(field_error(
                    field,
                    format!("\"{s}\" is not a whole number ({what})."),
                ))
            })
            .ok()
    }

    fn mtu(&mut self, s: &str) -> Option<u32> {
        if s.trim().is_empty() {
            return None;
        }
        self.number("mtu", s, None, "an MTU in bytes")
    }

    /// A static address and optional gateway of one family (`ipv4` or `ipv6` fields).
    fn static_address<G: std::str::FromStr>(
        &mut self,
        family: &'static str,
        address: &str,
        gateway: &str,
    ) -> Option<(Cidr, Option<G>)> {
        let (addr_field, gw_field, label) = if family == "ipv4" {
            ("ipv4_address", "ipv4_gateway", "IPv4")
        } else {
            ("ipv6_address", "ipv6_gateway", "IPv6")
        };
        let address = Cidr::parse(address)
            .map_err(|e| self.errs.push(field_error(addr_field, e)))
            .ok()?;
        let gateway = match gateway.trim() {
            "" => None,
            g => match g.parse() {
                Ok(g) => Some(g),
                Err(_) => {
                    self.errs.push(field_error(
                        gw_field,
                        format!("\"{g}\" is not an {label} address."),
                    ));
                    None
                }
            },
        };
        Some((address, gateway))
    }

    fn ip(&mut self, f: &NetForm) -> IpSpec {
        let v4 = match f.ipv4.trim() {
            "" | "off" => V4::Off,
            "dhcp" => V4::Dhcp,
            "static" => self
                .static_address("ipv4", &f.ipv4_address, &f.ipv4_gateway)
                .map(|(address, gateway)| V4::Static { address, gateway })
                .unwrap_or_default(),
            other => {
                self.errs.push(field_error(
                    "ipv4",
                    format!("\"{other}\" is not off, dhcp or static."),
                ));
                V4::Off
            }
        };
        let v6 = match f.ipv6.trim() {
            "" | "off" => V6::Off,
            "auto" => V6::Auto,
            "static" => self
                .static_address("ipv6", &f.ipv6_address, &f.ipv6_gateway)
                .map(|(address, gateway)| V6::Static { address, gateway })
                .unwrap_or_default(),
            other => {
                self.errs.push(field_error(
                    "ipv6",
                    format!("\"{other}\" is not off, auto or static."),
                ));
                V6::Off
            }
        };
        let mut dns: Vec<IpAddr> = Vec::new();
        for d in f
            .dns
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|d| !d.is_empty())
        {
            match d.parse() {
                Ok(a) => dns.push(a),
                Err(_) => self
                    .errs
                    .push(field_error("dns", format!("\"{d}\" is not an IP address."))),
            }
        }
        IpSpec { v4, v6, dns }
    }

    fn bond(&mut self, f: &NetForm, name_field: &'static str, name: &str) -> Option<BondSpec> {
        let name = self.name(name_field, name);
        let members = self.names("members", &f.members);
        let mode = match BondMode::parse(&f.mode) {
            Some(m) => Some(m),
            None => {
                self.errs.push(field_error(
                    "mode",
                    "Choose a bond mode (active-backup, balance-rr, 802.3ad, …).",
                ));
                None
            }
        };
        let miimon_ms = self.number("miimon_ms", &f.miimon_ms, Some(100), "milliseconds");
        let primary = match f.primary.trim() {
            "" => None,
            p => self.name("primary", p),
        };
        let lacp_rate = match f.lacp_rate.trim() {
            "" => None,
            "slow" => Some(LacpRate::Slow),
            "fast" => Some(LacpRate::Fast),
            other => {
                self.errs.push(field_error(
                    "lacp_rate",
                    format!("\"{other}\" is not slow or fast."),
                ));
                None
            }
        };
        let mtu = self.mtu(&f.mtu);
        Some(BondSpec {
            name: name?,
            members,
            mode: mode?,
            miimon_ms: miimon_ms?,
            primary,
            lacp_rate,
            mtu,
            ip: IpSpec::default(),
        })
    }

    fn bridge(&mut self, f: &NetForm, ports: Vec<IfName>) -> Option<BridgeSpec> {
        let name = self.name("name", &f.name);
        let stp = matches!(f.stp.trim(), "on" | "true" | "yes" | "1");
        let forward_delay_s = self.number(
            "forward_delay_s",
            &f.forward_delay_s,
            Some(if stp { 15 } else { 0 }),
            "seconds",
        );
        let ageing_s = self.number("ageing_s", &f.ageing_s, Some(300), "seconds");
        let mtu = self.mtu(&f.mtu);
        let ip = self.ip(f);
        Some(BridgeSpec {
            name: name?,
            ports,
            stp,
            forward_delay_s: forward_delay_s?,
            ageing_s: ageing_s?,
            mtu,
            ip,
        })
    }
}

impl NetForm {
    /// The change the form asks for, or every problem with it.
    pub fn to_change(&self) -> Result<NetChange, Vec<FieldError>> {
        let mut p = Parser { errs: Vec::new() };
        let change = match self.kind.trim() {
            "bond" => {
                let ip = p.ip(self);
                p.bond(self, "name", &self.name)
                    .map(|b| NetChange::Bond(BondSpec { ip, ..b }))
            }
            "bridge" => {
                let ports = p.names("ports", &self.ports);
                p.bridge(self, ports).map(NetChange::Bridge)
            }
            "vlan" => {
                let name = p.name("name", &self.name);
                let parent = p.name("parent", &self.parent);
                let id = p.number::<u16>("vlan_id", &self.vlan_id, None, "a VLAN id (1–4094)");
                let mtu = p.mtu(&self.mtu);
                let ip = p.ip(self);
                match (name, parent, id) {
                    (Some(name), Some(parent), Some(id)) => Some(NetChange::Vlan(VlanSpec {
                        name,
                        parent,
                        id,
                        mtu,
                        ip,
                    })),
                    _ => None,
                }
            }
            "recipe" => {
                let members = p.names("members", &self.members);
                if members.is_empty() {
                    p.errs.push(field_error(
                        "members",
                        "Name the network card(s) the bridge uses.",
                    ));
                }
                if members.len() > 1 {
                    let bond_name = if self.bond_name.trim().is_empty() {
                        "bond0"
                    } else {
                        &self.bond_name
                    };
                    let bond = p.bond(self, "bond_name", bond_name);
                    let bridge = bond
                        .as_ref()
                        .and_then(|b| p.bridge(self, vec![b.name.clone()]));
                    match (bond, bridge) {
                        (Some(bond), Some(bridge)) => Some(NetChange::Recipe {
                            bond: Some(bond),
                            bridge,
                        }),
                        _ => None,
                    }
                } else {
                    p.bridge(self, members)
                        .map(|bridge| NetChange::Recipe { bond: None, bridge })
                }
            }
            "delete" => p
                .name("name", &self.name)
                .map(|name| NetChange::Delete { name }),
            other => {
                p.errs.push(field_error(
                    "kind",
                    format!("\"{other}\" is not bond, bridge, vlan, recipe or delete."),
                ));
                None
            }
        };
        match change {
            Some(c) if p.errs.is_empty() => Ok(c),
            _ => Err(p.errs),
        }
    }

    fn with_ip(mut self, ip: &IpSpec, mtu: Option<u32>) -> Self {
        self.mtu = mtu.map(|m| m.to_string()).unwrap_or_default();
        match &ip.v4 {
            V4::Off => self.ipv4 = "off".into(),
            V4::Dhcp => self.ipv4 = "dhcp".into(),
            V4::Static { address, gateway } => {
                self.ipv4 = "static".into();
                self.ipv4_address = address.to_string();
                self.ipv4_gateway = gateway.map(|g| g.to_string()).unwrap_or_default();
            }
        }
        match &ip.v6 {
            V6::Off => self.ipv6 = "off".into(),
            V6::Auto => self.ipv6 = "auto".into(),
            V6::Static { address, gateway } => {
                self.ipv6 = "static".into();
                self.ipv6_address = address.to_string();
                self.ipv6_gateway = gateway.map(|g| g.to_string()).unwrap_or_default();
            }
        }
        self.dns = ip
            .dns
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        self
    }

    /// The edit form for a managed interface, filled with its settings.
    pub fn for_edit(cfg: &NetConfig, name: &str) -> Option<NetForm> {
        let join = |v: &[IfName]| v.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" ");
        if let Some(b) = cfg.bonds.iter().find(|b| b.name.as_str() == name) {
            return Some(
                NetForm {
                    kind: "bond".into(),
                    name: name.into(),
                    members: join(&b.members),
                    mode: b.mode.as_str().into(),
                    miimon_ms: b.miimon_ms.to_string(),
                    primary: b
                        .primary
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    lacp_rate: b.lacp_rate.map(|r| r.as_str().into()).unwrap_or_default(),
                    ..Default::default()
                }
                .with_ip(&b.ip, b.mtu),
            );
        }
        if let Some(b) = cfg.bridges.iter().find(|b| b.name.as_str() == name) {
            return Some(
                NetForm {
                    kind: "bridge".into(),
                    name: name.into(),
                    ports: join(&b.ports),
                    stp: if b.stp { "on".into() } else { String::new() },
                    forward_delay_s: b.forward_delay_s.to_string(),
                    ageing_s: b.ageing_s.to_string(),
                    ..Default::default()
                }
                .with_ip(&b.ip, b.mtu),
            );
        }
        cfg.vlans.iter().find(|v| v.name.as_str() == name).map(|v| {
            NetForm {
                kind: "vlan".into(),
                name: name.into(),
                parent: v.parent.to_string(),
                vlan_id: v.id.to_string(),
                ..Default::default()
            }
            .with_ip(&v.ip, v.mtu)
        })
    }

    /// The classic recipe, prefilled from the host: its network cards (the one with the
    /// default route first), the IPv4 address and gateway the first of them carries now,
    /// and the IPv6 the cards carry (see [`LiveNet::carried_v6`]): the host's addresses
    /// move to the bridge, so applying the recipe as offered keeps the host reachable.
    pub fn recipe_from(nics: &[String], live: &LiveNet) -> NetForm {
        let members: Vec<&str> = nics.iter().take(2).map(|n| n.as_str()).collect();
        let mut f = NetForm {
            kind: "recipe".into(),
            name: "br0".into(),
            bond_name: "bond0".into(),
            members: members.join(" "),
            mode: "active-backup".into(),
            miimon_ms: "100".into(),
            primary: nics.first().cloned().unwrap_or_default(),
            forward_delay_s: "0".into(),
            ageing_s: "300".into(),
            ipv4: "dhcp".into(),
            ipv6: "off".into(),
            ..Default::default()
        };
        let first = members.first().copied().unwrap_or_default();
        if let Some(a) = live
            .addresses_of(first)
            .into_iter()
            .find(|a| a.addr.is_ipv4())
        {
            f.ipv4 = "static".into();
            f.ipv4_address = a.to_string();
            f.ipv4_gateway = live
                .default_routes_on(first)
                .into_iter()
                .find(|g| g.is_ipv4())
                .map(|g| g.to_string())
                .unwrap_or_default();
        }
        match live.carried_v6(&members) {
            V6::Off => {}
            V6::Auto => f.ipv6 = "auto".into(),
            V6::Static { address, gateway } => {
                f.ipv6 = "static".into();
                f.ipv6_address = address.to_string();
                f.ipv6_gateway = gateway.map(|g| g.to_string()).unwrap_or_default();
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::tests::{dual_stack, fresh_host};
    use super::super::plan::AddrState;
    use super::super::tests::{classic, live};
    use super::*;

    fn nics() -> Vec<String> {
        vec!["eth0".into(), "eth1".into()]
    }

    fn recipe() -> NetForm {
        NetForm::recipe_from(&nics(), &fresh_host())
    }

    #[test]
    fn recipe_carries_static_ipv6_and_its_gateway() {
        let f = NetForm::recipe_from(&nics(), &dual_stack("2001:db8::10/64", false));
        assert_eq!(
            (
                f.ipv6.as_str(),
                f.ipv6_address.as_str(),
                f.ipv6_gateway.as_str()
            ),
            ("static", "2001:db8::10/64", "fe80::1")
        );
        assert_eq!(f.ipv4_address, "192.0.2.10/24", "IPv4 still carried");
        match f.to_change().unwrap() {
            NetChange::Recipe { bridge, .. } => assert_eq!(
                bridge.ip.v6,
                V6::Static {
                    address: Cidr::parse("2001:db8::10/64").unwrap(),
                    gateway: Some("fe80::1".parse().unwrap()),
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn recipe_on_a_slaac_host_takes_ipv6_automatically() {
        let f = NetForm::recipe_from(&nics(), &dual_stack("2001:db8::5054:ff:fe00:1/64", true));
        assert_eq!(f.ipv6, "auto");
        assert_eq!((f.ipv6_address.as_str(), f.ipv6_gateway.as_str()), ("", ""));
        // Only the default route learned from the router, no global address yet.
        let mut h = dual_stack("2001:db8::1/64", true);
        h.addresses
            .retain(|a| !a.address.addr.is_ipv6() || a.link_local);
        assert_eq!(NetForm::recipe_from(&nics(), &h).ipv6, "auto");
    }

    #[test]
    fn recipe_on_a_link_local_only_host_has_ipv6_off() {
        let h = fresh_host();
        assert!(h
            .addresses
            .iter()
            .any(|a: &AddrState| a.link_local && a.address.addr.is_ipv6()));
        let f = NetForm::recipe_from(&nics(), &h);
        assert_eq!(f.ipv6, "off");
        assert_eq!(f.ipv6_address, "");
    }

    #[test]
    fn the_guided_recipe_is_the_classic_config() {
        let mut f = recipe();
        f.dns = "192.0.2.53".into();
        let change = f.to_change().unwrap();
        let cfg = NetConfig::default().with_change(&change, &live()).unwrap();
        assert_eq!(cfg, classic());
    }

    #[test]
    fn one_card_recipe_is_a_bridge_without_bond() {
        let mut f = recipe();
        f.members = "eth0".into();
        match f.to_change().unwrap() {
            NetChange::Recipe { bond: None, bridge } => {
                assert_eq!(bridge.ports, vec![IfName::parse("eth0").unwrap()])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_their_fields() {
        let f = NetForm {
            kind: "bond".into(),
            name: "bond-with-a-very-long-name".into(),
            members: "eth0 eth0 bad/name".into(),
            mode: "fastest".into(),
            miimon_ms: "often".into(),
            lacp_rate: "medium".into(),
            ipv4: "static".into(),
            ipv4_address: "192.0.2.10".into(),
            dns: "dns.example".into(),
            mtu: "big".into(),
            ..Default::default()
        };
        let errs = f.to_change().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field).collect();
        for want in [
            "name",
            "members",
            "mode",
            "miimon_ms",
            "lacp_rate",
            "ipv4_address",
            "dns",
            "mtu",
        ] {
            assert!(fields.contains(&want), "{want} missing in {errs:?}");
        }
        assert!(errs.iter().any(|e| e.message.contains("listed twice")));
        let f = NetForm {
            kind: "shutdown".into(),
            ..Default::default()
        };
        assert_eq!(f.to_change().unwrap_err()[0].field, "kind");
    }

    #[test]
    fn edit_forms_round_trip() {
        let cfg = classic();
        for name in ["bond0", "br0"] {
            let f = NetForm::for_edit(&cfg, name).unwrap();
            let again = cfg.with_change(&f.to_change().unwrap(), &live()).unwrap();
            assert_eq!(again, cfg, "{name}");
        }
        assert!(NetForm::for_edit(&cfg, "eth0").is_none());
    }

    #[test]
    fn json_form_rejects_unknown_fields() {
        assert!(serde_json::from_str::<NetForm>(r#"{"kind":"bridge","colour":"red"}"#).is_err());
        let f: NetForm = serde_json::from_str(r#"{"kind":"bridge","name":"br1"}"#).unwrap();
        assert_eq!(f.name, "br1");
    }
}
