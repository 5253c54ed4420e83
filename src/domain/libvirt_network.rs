//! Libvirt networks virtdeck creates (Host > Libvirt networks): NAT or isolated, one
//! IPv4 subnet with the host as gateway and an optional DHCP range. The request as typed
//! (form strings or JSON), its rules with one sentence per field, the `<network>` XML
//! written with quick-xml's writer, and the IPv4 subnets read back from existing
//! networks' XML (to refuse overlaps). No I/O.

use quick_xml::events::BytesStart;
use quick_xml::{Writer, XmlVersion};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// The longest network name virtdeck accepts (libvirt derives bridge and file names
/// from it).
pub const NAME_MAX_CHARS: usize = 50;
/// The shortest and longest subnet prefixes offered: /8 is a whole private block, /30
/// leaves two host addresses (gateway and one guest).
pub const PREFIX_MIN: u8 = 8;
pub const PREFIX_MAX: u8 = 30;

/// How the network reaches the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Guests reach the host's networks through NAT (`<forward mode='nat'/>`).
    Nat,
    /// Guests reach only each other and the host (no `<forward>`).
    Isolated,
}

impl NetworkMode {
    pub fn parse(s: &str) -> Option<NetworkMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nat" => Some(NetworkMode::Nat),
            "isolated" => Some(NetworkMode::Isolated),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Nat => "nat",
            NetworkMode::Isolated => "isolated",
        }
    }
}

/// An IPv4 subnet: its network address (host bits zero) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ipv4Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl Ipv4Subnet {
    /// The subnet `addr` lies in (host bits cleared); `None` for a prefix above 32.
    pub fn around(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Subnet> {
        (prefix <= 32).then(|| Ipv4Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The dotted netmask, e.g. 255.255.255.0 for /24.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix))
    }

    /// The last address (the broadcast address for prefixes up to /30).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// A host address of the subnet: inside, and neither its network nor its broadcast
    /// address.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.network && ip != self.broadcast()
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Ipv4Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        u32::from(self.network) & mask(p) == u32::from(other.network) & mask(p)
    }

    /// Whether every address of `self` lies in `outer`.
    pub fn within(&self, outer: &Ipv4Subnet) -> bool {
        self.prefix >= outer.prefix && outer.contains(self.network)
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The private IPv4 blocks of RFC 1918, where a host-internal network belongs.
pub fn private_blocks() -> [Ipv4Subnet; 3] {
    [
        Ipv4Subnet {
            network: Ipv4Addr::new(10, 0, 0, 0),
            prefix: 8,
        },
        Ipv4Subnet {
            network: Ipv4Addr::new(172, 16, 0, 0),
            prefix: 12,
        },
        Ipv4Subnet {
            network: Ipv4Addr::new(192, 168, 0, 0),
            prefix: 16,
        },
    ]
}

/// A DHCP range: the first and last address libvirt's dnsmasq hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DhcpRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

/// A validated network, ready to be rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkSpec {
    pub name: String,
    pub mode: NetworkMode,
    /// The host's address on the network: the guests' gateway (and DNS/DHCP server).
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    pub dhcp: Option<DhcpRange>,
    /// Start the network when the host (libvirt) starts.
    pub autostart: bool,
}

impl NetworkSpec {
    pub fn subnet(&self) -> Ipv4Subnet {
        Ipv4Subnet::around(self.gateway, self.prefix).expect("prefix checked when validated")
    }
}

/// A subnet an existing network already has, for the overlap check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenSubnet {
    /// The network that has it.
    pub network: String,
    pub subnet: Ipv4Subnet,
}

/// A problem with one field of a new network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkFieldError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> NetworkFieldError {
    NetworkFieldError {
        field,
        message: message.into(),
    }
}

/// A new network as typed (form or JSON): every field text, so that bad input can be
/// shown back at its field. The prefix may also come as a JSON number.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkRequest {
    pub name: String,
    /// `nat` or `isolated`.
    pub mode: String,
    /// The gateway (host) address, e.g. 192.168.100.1; `192.168.100.1/24` also gives
    /// the prefix.
    pub address: String,
    /// The prefix length (`24`, `/24`) or a dotted netmask (`255.255.255.0`).
    #[serde(deserialize_with = "text_or_number")]
    #[schema(value_type = TextOrNumber)]
    pub prefix: String,
    /// The DHCP range; both empty for no DHCP.
    pub dhcp_start: String,
    pub dhcp_end: String,
    /// Start with the host; on unless given.
    pub autostart: Option<bool>,
}

/// A prefix as JSON may give it: text or a number.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TextOrNumber {
    Text(String),
    Number(u64),
}

fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match TextOrNumber::deserialize(d)? {
        TextOrNumber::Text(s) => s,
        TextOrNumber::Number(n) => n.to_string(),
    })
}

/// A network name: 1–50 characters, letters, digits, '-', '_' and '.', starting with a
/// letter or digit (so never `.`/`..`, never an option, safe in paths and URLs).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Enter a name for the network, e.g. lab-nat.".into());
    }
    if name.chars().count() > NAME_MAX_CHARS {
        return Err(format!(
            "The name is {} characters long; use at most {NAME_MAX_CHARS}.",
            name.chars().count()
        ));
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(
            "Use only letters, digits, '-', '_' and '.', starting with a letter or digit.".into(),
        );
    }
    Ok(())
}

/// A prefix length (`24` or `/24`) or a dotted netmask, in 8..=30.
fn parse_prefix(text: &str) -> Result<u8, String> {
    let t = text.trim();
    let t = t.strip_prefix('/').unwrap_or(t);
    let bad = || {
        format!(
            "Enter the prefix length as a number from {PREFIX_MIN} to {PREFIX_MAX} \
             (24 means 255.255.255.0)."
        )
    };
    if t.is_empty() {
        return Err(format!(
            "Enter the prefix length, from {PREFIX_MIN} to {PREFIX_MAX} (24 means 255.255.255.0)."
        ));
    }
    let prefix = if let Ok(m) = t.parse::<Ipv4Addr>() {
        let bits = u32::from(m);
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            return Err(format!(
                "{t} is not a netmask (its ones must come first); enter a prefix length from \
                 {PREFIX_MIN} to {PREFIX_MAX} instead."
            ));
        }
        bits.leading_ones() as u8
    } else {
        t.parse::<u8>().map_err(|_| bad())?
    };
    if !(PREFIX_MIN..=PREFIX_MAX).contains(&prefix) {
        return Err(format!(
            "/{prefix} is not offered: use a prefix from {PREFIX_MIN} (a whole private block) \
             to {PREFIX_MAX} (the gateway and one guest)."
        ));
    }
    Ok(prefix)
}

fn parse_ipv4(text: &str, what: &str, example: &str) -> Result<Ipv4Addr, String> {
    text.parse::<Ipv4Addr>().map_err(|_| {
        format!(
            "“{text}” is not an IPv4 address; enter the {what} as four numbers, e.g. {example}."
        )
    })
}

impl NetworkRequest {
    /// The typed spec, or every field that is wrong. `taken` lists the subnets other
    /// networks already have: a subnet overlapping one of them is refused (their guests
    /// and the host's routes would collide). Whether the name is taken is checked by the
    /// caller, which knows the networks.
    pub fn validate(&self, taken: &[TakenSubnet]) -> Result<NetworkSpec, Vec<NetworkFieldError>> {
        let mut errors = Vec::new();
        let name = self.name.trim().to_string();
        if let Err(e) = check_name(&name) {
            errors.push(err("name", e));
        }
        let mode = NetworkMode::parse(&self.mode);
        if mode.is_none() {
            errors.push(err(
                "mode",
                "Choose how the network reaches outside: NAT (nat) or isolated (isolated).",
            ));
        }

        // The gateway, and the prefix (also accepted after a '/' in the address).
        let (addr_text, prefix_in_addr) = match self.address.trim().split_once('/') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (self.address.trim(), None),
        };
        let prefix_text = match (self.prefix.trim(), prefix_in_addr) {
            ("", Some(p)) => p,
            (p, _) => p,
        };
        let gateway = if addr_text.is_empty() {
            errors.push(err(
                "address",
                "Enter the gateway address the host takes on the network, e.g. 192.168.100.1.",
            ));
            None
        } else {
            match parse_ipv4(addr_text, "gateway address", "192.168.100.1") {
                Ok(ip) => Some(ip),
                Err(e) => {
                    errors.push(err("address", e));
                    None
                }
            }
        };
        let prefix = match parse_prefix(prefix_text) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(err("prefix", e));
                None
            }
        };
        if let Some(ip) = gateway {
            if !private_blocks().iter().any(|b| b.contains(ip)) {
                errors.push(err(
                    "address",
                    format!(
                        "{ip} is not in a private range; use an address in 10.0.0.0/8, \
                         172.16.0.0/12 or 192.168.0.0/16, e.g. 192.168.100.1."
                    ),
                ));
            }
        }
        let subnet = match (gateway, prefix) {
            (Some(ip), Some(p)) => Ipv4Subnet::around(ip, p),
            _ => None,
        };
        let mut subnet_ok = false;
        if let (Some(ip), Some(s)) = (gateway, subnet) {
            let block = private_blocks().into_iter().find(|b| b.contains(ip));
            if let Some(block) = block {
                if !s.within(&block) {
                    errors.push(err(
                        "prefix",
                        format!(
                            "{s} reaches beyond the private range {block}; use /{} or a longer \
                             prefix.",
                            block.prefix()
                        ),
                    ));
                } else if ip == s.network() {
                    errors.push(err(
                        "address",
                        format!(
                            "{ip} is the address of the network {s} itself; give the gateway a \
                             host address, e.g. {}.",
                            Ipv4Addr::from(u32::from(s.network()) + 1)
                        ),
                    ));
                } else if ip == s.broadcast() {
                    errors.push(err(
                        "address",
                        format!(
                            "{ip} is the broadcast address of {s}; give the gateway a host \
                             address, e.g. {}.",
                            Ipv4Addr::from(u32::from(s.network()) + 1)
                        ),
                    ));
                } else if let Some(t) = taken.iter().find(|t| t.subnet.overlaps(&s)) {
                    errors.push(err(
                        "address",
                        format!(
                            "{s} overlaps {} of network {}; choose a subnet no other network \
                             uses.",
                            t.subnet, t.network
                        ),
                    ));
                } else {
                    subnet_ok = true;
                }
            }
        }

        let dhcp = self.dhcp(&mut errors, gateway, subnet.filter(|_| subnet_ok));
        match (mode, gateway, prefix) {
            (Some(mode), Some(gateway), Some(prefix)) if errors.is_empty() => Ok(NetworkSpec {
                name,
                mode,
                gateway,
                prefix,
                dhcp,
                autostart: self.autostart.unwrap_or(true),
            }),
            _ => Err(errors),
        }
    }

    /// The DHCP range: both ends or neither; inside `subnet` (checked only when the
    /// subnet itself is right), in order, not around the gateway.
    fn dhcp(
        &self,
        errors: &mut Vec<NetworkFieldError>,
        gateway: Option<Ipv4Addr>,
        subnet: Option<Ipv4Subnet>,
    ) -> Option<DhcpRange> {
        let start_text = self.dhcp_start.trim();
        let end_text = self.dhcp_end.trim();
        if start_text.is_empty() && end_text.is_empty() {
            return None;
        }
        if start_text.is_empty() {
            errors.push(err(
                "dhcp_start",
                "Enter the first address of the DHCP range too, or leave both ends empty for no DHCP.",
            ));
        }
        if end_text.is_empty() {
            errors.push(err(
                "dhcp_end",
                "Enter the last address of the DHCP range too, or leave both ends empty for no DHCP.",
            ));
        }
        let mut parse = |field: &'static str, text: &str, what: &str| {
            if text.is_empty() {
                return None;
            }
            match parse_ipv4(text, what, "192.168.100.100") {
                Ok(ip) => Some(ip),
                Err(e) => {
                    errors.push(err(field, e));
                    None
                }
            }
        };
        let start = parse("dhcp_start", start_text, "first DHCP address");
        let end = parse("dhcp_end", end_text, "last DHCP address");
        let (start, end) = (start?, end?);
        let subnet = subnet?;
        let gateway = gateway?;
        let mut ok = true;
        for (field, ip) in [("dhcp_start", start), ("dhcp_end", end)] {
            if !subnet.contains(ip) {
                errors.push(err(
                    field,
                    format!(
                        "{ip} is outside the network {subnet}; the range must lie between {} and {}.",
                        Ipv4Addr::from(u32::from(subnet.network()) + 1),
                        Ipv4Addr::from(u32::from(subnet.broadcast()) - 1)
                    ),
                ));
                ok = false;
            } else if !subnet.is_host(ip) {
                errors.push(err(
                    field,
                    format!(
                        "{ip} is the {} address of {subnet}; the range must lie between {} and {}.",
                        if ip == subnet.network() {
                            "network"
                        } else {
                            "broadcast"
                        },
                        Ipv4Addr::from(u32::from(subnet.network()) + 1),
                        Ipv4Addr::from(u32::from(subnet.broadcast()) - 1)
                    ),
                ));
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        if u32::from(start) > u32::from(end) {
            errors.push(err(
                "dhcp_end",
                format!("The range ends at {end}, before its start {start}; swap them."),
            ));
            return None;
        }
        if (u32::from(start)..=u32::from(end)).contains(&u32::from(gateway)) {
            errors.push(err(
                "dhcp_start",
                format!(
                    "The range {start}–{end} contains the gateway {gateway}; start it after \
                     the gateway or end it before."
                ),
            ));
            return None;
        }
        Some(DhcpRange { start, end })
    }
}

// ---------------------------------------------------------------------------------------
// XML
// ---------------------------------------------------------------------------------------

/// Renders the libvirt `<network>` XML for a spec: NAT adds `<forward mode='nat'/>`,
/// isolated has no `<forward>`; libvirt picks the bridge name (virbrN) and the MAC. Every
/// value is written as an attribute value or text event, so quick-xml escapes it.
pub fn network_xml(spec: &NetworkSpec) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.create_element("network")
        .write_inner_content(|w| {
            w.create_element("name")
                .write_text_content(quick_xml::events::BytesText::new(&spec.name))?;
            if spec.mode == NetworkMode::Nat {
                w.create_element("forward")
                    .with_attribute(("mode", "nat"))
                    .write_empty()?;
            }
            let ip = w
                .create_element("ip")
                .with_attribute(("address", spec.gateway.to_string().as_str()))
                .with_attribute(("prefix", spec.prefix.to_string().as_str()));
            match spec.dhcp {
                None => {
                    ip.write_empty()?;
                }
                Some(r) => {
                    ip.write_inner_content(|w| {
                        w.create_element("dhcp").write_inner_content(|w| {
                            w.create_element("range")
                                .with_attribute(("start", r.start.to_string().as_str()))
                                .with_attribute(("end", r.end.to_string().as_str()))
                                .write_empty()?;
                            Ok(())
                        })?;
                        Ok(())
                    })?;
                }
            }
            Ok(())
        })
        .expect("writing XML into a Vec cannot fail");
    String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
}

fn attr(e: &BytesStart, key: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| a.normalized_value(XmlVersion::Implicit1_0).ok())
        .map(|v| v.into_owned())
}

/// What a network's XML says about its IPv4 side, for the list and the overlap check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetworkAddressing {
    /// Each `<ip>` of family ipv4: the gateway address and its subnet.
    pub ipv4: Vec<(Ipv4Addr, Ipv4Subnet)>,
    /// The DHCP ranges of those addresses.
    pub dhcp: Vec<DhcpRange>,
}

impl NetworkAddressing {
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Subnet> + '_ {
        self.ipv4.iter().map(|(_, s)| *s)
    }

    /// One line for the list: `192.168.122.1/24`, DHCP ranges after it.
    pub fn summary(&self) -> String {
        self.ipv4
            .iter()
            .map(|(ip, s)| format!("{ip}/{}", s.prefix()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn dhcp_summary(&self) -> String {
        self.dhcp
            .iter()
            .map(|r| format!("{}–{}", r.start, r.end))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reads the IPv4 addresses (with `prefix` or `netmask`) and DHCP ranges of a network's
/// XML. Addresses it cannot read are skipped (display and overlap check only).
pub fn parse_network_addressing(network_xml: &str) -> NetworkAddressing {
    let mut out = NetworkAddressing::default();
    let mut in_v4 = false;
    super::storage::walk(
        network_xml,
        |path, e| {
            if super::storage::is(path, &["network", "ip"]) {
                in_v4 = false;
                let family_v4 = attr(e, "family").is_none_or(|f| f == "ipv4");
                let Some(ip) = attr(e, "address").and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                    return;
                };
                if !family_v4 {
                    return;
                }
                let prefix = attr(e, "prefix")
                    .and_then(|p| p.parse::<u8>().ok())
                    .or_else(|| {
                        attr(e, "netmask")
                            .and_then(|m| m.parse::<Ipv4Addr>().ok())
                            .map(|m| u32::from(m).leading_ones() as u8)
                    })
                    // libvirt's default: the classful prefix of the address.
                    .unwrap_or(match ip.octets()[0] {
                        0..=127 => 8,
                        128..=191 => 16,
                        _ => 24,
                    });
                if let Some(s) = Ipv4Subnet::around(ip, prefix) {
                    out.ipv4.push((ip, s));
                    in_v4 = true;
                }
            } else if in_v4 && super::storage::is(path, &["network", "ip", "dhcp", "range"]) {
                let start = attr(e, "start").and_then(|a| a.parse().ok());
                let end = attr(e, "end").and_then(|a| a.parse().ok());
                if let (Some(start), Some(end)) = (start, end) {
                    out.dhcp.push(DhcpRange { start, end });
                }
            }
        },
        |_, _| {},
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, mode: &str, address: &str, prefix: &str) -> NetworkRequest {
        NetworkRequest {
            name: name.into(),
            mode: mode.into(),
            address: address.into(),
            prefix: prefix.into(),
            ..Default::default()
        }
    }

    fn with_dhcp(mut r: NetworkRequest, start: &str, end: &str) -> NetworkRequest {
        r.dhcp_start = start.into();
        r.dhcp_end = end.into();
        r
    }

    /// The fields refused, and the message at `field`.
    fn refused(r: &NetworkRequest, taken: &[TakenSubnet]) -> Vec<(&'static str, String)> {
        r.validate(taken)
            .expect_err("refused")
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    fn message_at(r: &NetworkRequest, field: &str) -> String {
        refused(r, &[])
            .into_iter()
            .find(|(f, _)| *f == field)
            .unwrap_or_else(|| panic!("no error at {field}: {:?}", refused(r, &[])))
            .1
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_nat_network_with_dhcp_is_accepted() {
        let spec = with_dhcp(
            req(" lab-nat ", "nat", "192.168.100.1", "24"),
            "192.168.100.100",
            "192.168.100.200",
        )
        .validate(&[])
        .unwrap();
        assert_eq!(spec.name, "lab-nat");
        assert_eq!(spec.mode, NetworkMode::Nat);
        assert_eq!(spec.gateway, ip("192.168.100.1"));
        assert_eq!(spec.prefix, 24);
        assert_eq!(
            spec.dhcp,
            Some(DhcpRange {
                start: ip("192.168.100.100"),
                end: ip("192.168.100.200")
            })
        );
        assert!(spec.autostart, "autostart is on unless given");
        assert_eq!(spec.subnet().to_string(), "192.168.100.0/24");
    }

    #[test]
    fn prefix_forms_and_isolated_without_dhcp() {
        for (address, prefix) in [
            ("10.9.0.1", "/16"),
            ("10.9.0.1", "255.255.0.0"),
            ("10.9.0.1/16", ""),
            ("10.9.0.1", " 16 "),
        ] {
            let mut r = req("iso_1.b", "ISOLATED", address, prefix);
            r.autostart = Some(false);
            let spec = r
                .validate(&[])
                .unwrap_or_else(|e| panic!("{address} {prefix}: {e:?}"));
            assert_eq!(spec.mode, NetworkMode::Isolated);
            assert_eq!(spec.prefix, 16);
            assert_eq!(spec.gateway, ip("10.9.0.1"));
            assert_eq!(spec.dhcp, None);
            assert!(!spec.autostart);
        }
    }

    #[test]
    fn names_follow_libvirt_like_rules() {
        assert!(check_name("a").is_ok());
        assert!(check_name("Lab-1_net.v2").is_ok());
        assert!(check_name(&"n".repeat(50)).is_ok());
        assert!(check_name(&"n".repeat(51))
            .unwrap_err()
            .contains("at most 50"));
        assert!(check_name("").unwrap_err().contains("Enter a name"));
        for bad in [
            "has space",
            "a/b",
            "-opt",
            ".hidden",
            "..",
            "ü-net",
            "a<b>",
            "x'y",
        ] {
            assert!(
                check_name(bad).unwrap_err().contains("Use only letters"),
                "{bad}"
            );
        }
        assert!(
            message_at(&req("bad name", "nat", "192.168.100.1", "24"), "name")
                .contains("Use only letters, digits")
        );
    }

    #[test]
    fn the_mode_must_be_nat_or_isolated() {
        for m in ["", "bridge", "route", "open"] {
            assert!(message_at(&req("n", m, "192.168.100.1", "24"), "mode").contains("NAT"));
        }
    }

    #[test]
    fn the_gateway_must_be_a_private_host_address() {
        for public in [
            "8.8.8.1",
            "172.32.0.1",
            "192.169.0.1",
            "100.64.0.1",
            "169.254.1.1",
        ] {
            let m = message_at(&req("n", "nat", public, "24"), "address");
            assert!(m.contains("is not in a private range"), "{public}: {m}");
            assert!(m.starts_with(public), "{m}");
        }
        for (gw, p) in [
            ("10.0.0.1", "8"),
            ("172.16.5.1", "12"),
            ("172.31.255.254", "24"),
            ("192.168.0.1", "16"),
        ] {
            assert!(req("n", "nat", gw, p).validate(&[]).is_ok(), "{gw}/{p}");
        }
        assert!(
            message_at(&req("n", "nat", "192.168.100.0", "24"), "address")
                .contains("is the address of the network 192.168.100.0/24 itself")
        );
        assert!(
            message_at(&req("n", "nat", "192.168.100.255", "24"), "address")
                .contains("broadcast address of 192.168.100.0/24")
        );
        assert!(message_at(&req("n", "nat", "", "24"), "address").contains("Enter the gateway"));
        assert!(message_at(&req("n", "nat", "192.168.1", "24"), "address")
            .contains("is not an IPv4 address"));
        assert!(message_at(&req("n", "nat", "fd00::1", "24"), "address")
            .contains("is not an IPv4 address"));
    }

    #[test]
    fn the_prefix_is_8_to_30_and_stays_inside_the_private_block() {
        for bad in ["7", "31", "32", "0", "abc", "-1", "255.0.255.0"] {
            let m = message_at(&req("n", "nat", "10.1.1.1", bad), "prefix");
            assert!(m.contains("8") && m.contains("30"), "{bad}: {m}");
        }
        assert!(message_at(&req("n", "nat", "10.1.1.1", ""), "prefix").contains("Enter the prefix"));
        assert!(req("n", "nat", "10.1.1.1", "30").validate(&[]).is_ok());
        assert!(req("n", "nat", "10.1.1.1", "8").validate(&[]).is_ok());
        let m = message_at(&req("n", "nat", "172.16.0.1", "8"), "prefix");
        assert!(
            m.contains("172.0.0.0/8 reaches beyond the private range 172.16.0.0/12"),
            "{m}"
        );
        let m = message_at(&req("n", "nat", "192.168.3.1", "15"), "prefix");
        assert!(m.contains("use /16 or a longer prefix"), "{m}");
    }

    #[test]
    fn the_dhcp_range_lies_in_the_subnet_in_order_and_away_from_the_gateway() {
        let base = || req("n", "nat", "192.168.100.1", "24");
        assert!(with_dhcp(base(), "192.168.100.2", "192.168.100.254")
            .validate(&[])
            .is_ok());
        assert!(with_dhcp(base(), "192.168.100.9", "192.168.100.9")
            .validate(&[])
            .is_ok());
        // The gateway may sit above the range too.
        assert!(with_dhcp(
            req("n", "nat", "192.168.100.254", "24"),
            "192.168.100.1",
            "192.168.100.253"
        )
        .validate(&[])
        .is_ok());

        let m = message_at(
            &with_dhcp(base(), "192.168.5.10", "192.168.100.20"),
            "dhcp_start",
        );
        assert!(
            m.contains("192.168.5.10 is outside the network 192.168.100.0/24"),
            "{m}"
        );
        assert!(
            m.contains("between 192.168.100.1 and 192.168.100.254"),
            "{m}"
        );
        let m = message_at(
            &with_dhcp(base(), "192.168.100.10", "192.168.101.20"),
            "dhcp_end",
        );
        assert!(m.contains("outside the network"), "{m}");
        let m = message_at(
            &with_dhcp(base(), "192.168.100.0", "192.168.100.20"),
            "dhcp_start",
        );
        assert!(m.contains("network address"), "{m}");
        let m = message_at(
            &with_dhcp(base(), "192.168.100.10", "192.168.100.255"),
            "dhcp_end",
        );
        assert!(m.contains("broadcast address"), "{m}");
        let m = message_at(
            &with_dhcp(base(), "192.168.100.200", "192.168.100.100"),
            "dhcp_end",
        );
        assert!(m.contains("before its start"), "{m}");
        let m = message_at(
            &with_dhcp(base(), "192.168.100.1", "192.168.100.100"),
            "dhcp_start",
        );
        assert!(m.contains("contains the gateway 192.168.100.1"), "{m}");
        let m = message_at(
            &with_dhcp(
                req("n", "nat", "192.168.100.50", "24"),
                "192.168.100.2",
                "192.168.100.100",
            ),
            "dhcp_start",
        );
        assert!(m.contains("contains the gateway"), "{m}");
        let m = message_at(&with_dhcp(base(), "192.168.100.10", ""), "dhcp_end");
        assert!(m.contains("or leave both ends empty"), "{m}");
        let m = message_at(&with_dhcp(base(), "", "192.168.100.10"), "dhcp_start");
        assert!(m.contains("or leave both ends empty"), "{m}");
        let m = message_at(&with_dhcp(base(), "x", "192.168.100.10"), "dhcp_start");
        assert!(m.contains("is not an IPv4 address"), "{m}");
        // With a wrong subnet, the range is not judged against it.
        let errs = refused(
            &with_dhcp(req("n", "nat", "8.8.8.1", "24"), "8.8.8.10", "8.8.8.20"),
            &[],
        );
        assert_eq!(errs.iter().map(|e| e.0).collect::<Vec<_>>(), ["address"]);
    }

    #[test]
    fn a_subnet_overlapping_another_network_is_refused() {
        let taken = [TakenSubnet {
            network: "default".into(),
            subnet: Ipv4Subnet::around(ip("192.168.122.1"), 24).unwrap(),
        }];
        let errs = refused(&req("n", "nat", "192.168.122.50", "24"), &taken);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "address");
        assert!(
            errs[0]
                .1
                .contains("192.168.122.0/24 overlaps 192.168.122.0/24 of network default"),
            "{}",
            errs[0].1
        );
        // A larger subnet around it overlaps too, and a smaller one inside it.
        assert!(req("n", "nat", "192.168.0.1", "16")
            .validate(&taken)
            .is_err());
        assert!(req("n", "nat", "192.168.122.129", "25")
            .validate(&taken)
            .is_err());
        // Neighbours do not.
        assert!(req("n", "nat", "192.168.123.1", "24")
            .validate(&taken)
            .is_ok());
        assert!(req("n", "nat", "192.168.121.1", "24")
            .validate(&taken)
            .is_ok());
    }

    #[test]
    fn every_wrong_field_is_reported_at_once() {
        let r = with_dhcp(req("a b", "tunnel", "1.2.3.4", "40"), "q", "");
        let fields: Vec<_> = refused(&r, &[]).into_iter().map(|e| e.0).collect();
        for f in [
            "name",
            "mode",
            "address",
            "prefix",
            "dhcp_start",
            "dhcp_end",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn subnet_arithmetic() {
        let s = Ipv4Subnet::around(ip("10.1.2.3"), 30).unwrap();
        assert_eq!(s.network(), ip("10.1.2.0"));
        assert_eq!(s.broadcast(), ip("10.1.2.3"));
        assert_eq!(s.netmask(), ip("255.255.255.252"));
        assert!(s.is_host(ip("10.1.2.1")) && s.is_host(ip("10.1.2.2")));
        assert!(!s.is_host(ip("10.1.2.0")) && !s.is_host(ip("10.1.2.3")));
        let a = Ipv4Subnet::around(ip("10.0.0.0"), 8).unwrap();
        assert!(s.overlaps(&a) && a.overlaps(&s) && s.within(&a) && !a.within(&s));
        let b = Ipv4Subnet::around(ip("10.1.2.4"), 30).unwrap();
        assert!(!s.overlaps(&b));
        assert!(Ipv4Subnet::around(ip("10.0.0.0"), 33).is_none());
    }

    #[test]
    fn json_requests_take_the_prefix_as_number_or_text() {
        let r: NetworkRequest = serde_json::from_str(
            r#"{"name":"n","mode":"nat","address":"10.5.0.1","prefix":24,"autostart":false}"#,
        )
        .unwrap();
        assert_eq!(r.prefix, "24");
        assert_eq!(r.autostart, Some(false));
        let r: NetworkRequest = serde_json::from_str(r#"{"name":"n","prefix":"/24"}"#).unwrap();
        assert_eq!(r.prefix, "/24");
        assert!(serde_json::from_str::<NetworkRequest>(r#"{"name":"n","bridge":"br9"}"#).is_err());
    }

    #[test]
    fn nat_xml_has_forward_ip_and_dhcp() {
        let spec = with_dhcp(
            req("lab", "nat", "192.168.100.1", "24"),
            "192.168.100.100",
            "192.168.100.200",
        )
        .validate(&[])
        .unwrap();
        assert_eq!(
            network_xml(&spec),
            "<network>\n  <name>lab</name>\n  <forward mode=\"nat\"/>\n  \
             <ip address=\"192.168.100.1\" prefix=\"24\">\n    <dhcp>\n      \
             <range start=\"192.168.100.100\" end=\"192.168.100.200\"/>\n    </dhcp>\n  \
             </ip>\n</network>"
        );
    }

    #[test]
    fn isolated_xml_has_no_forward_and_no_bridge() {
        let spec = req("iso", "isolated", "10.7.0.1", "16")
            .validate(&[])
            .unwrap();
        let xml = network_xml(&spec);
        assert_eq!(
            xml,
            "<network>\n  <name>iso</name>\n  <ip address=\"10.7.0.1\" prefix=\"16\"/>\n</network>"
        );
        assert!(!xml.contains("forward") && !xml.contains("bridge"));
        // What virtdeck wrote reads back as the same subnet.
        let back = parse_network_addressing(&xml);
        assert_eq!(back.subnets().collect::<Vec<_>>(), [spec.subnet()]);
    }

    #[test]
    fn xml_escapes_the_name() {
        // Validation refuses such names; the writer escapes anyway.
        let spec = NetworkSpec {
            name: "a<b>&'\"".into(),
            mode: NetworkMode::Isolated,
            gateway: ip("10.0.0.1"),
            prefix: 24,
            dhcp: None,
            autostart: true,
        };
        let xml = network_xml(&spec);
        assert!(
            xml.contains("<name>a&lt;b&gt;&amp;&apos;&quot;</name>"),
            "{xml}"
        );
        assert!(!xml.contains("<b>"));
    }

    #[test]
    fn reads_addressing_from_libvirts_xml() {
        let default = "<network><name>default</name><forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>\
            <bridge name='virbr0' stp='on' delay='0'/>\
            <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.2' end='192.168.122.254'/>\
            <host mac='52:54:00:3a:10:03' name='x' ip='192.168.122.10'/></dhcp></ip>\
            <ip family='ipv6' address='fd00::1' prefix='64'><dhcp><range start='fd00::10' end='fd00::20'/></dhcp></ip></network>";
        let a = parse_network_addressing(default);
        assert_eq!(a.summary(), "192.168.122.1/24");
        assert_eq!(a.dhcp_summary(), "192.168.122.2–192.168.122.254");
        assert_eq!(
            a.subnets().map(|s| s.to_string()).collect::<Vec<_>>(),
            ["192.168.122.0/24"]
        );
        assert_eq!(
            parse_network_addressing(
                "<network><ip address='10.3.0.1' prefix='16'/><ip address='10.4.0.1'/></network>"
            )
            .summary(),
            "10.3.0.1/16, 10.4.0.1/8"
        );
        let bridge = parse_network_addressing(
            "<network><forward mode='bridge'/><bridge name='br0'/></network>",
        );
        assert!(bridge.ipv4.is_empty() && bridge.summary().is_empty());
    }
}
