//! Which addresses an outbound request may connect to. Plain functions on plain values:
//! the I/O part of [`crate::adapters::http_fetch`] resolves names and reads the host's interface
//! addresses, then asks [`Policy::check`] about each address.
//!
//! Order: `[fetch] deny` refuses; then `[fetch] allow` permits; then the host's own
//! addresses and the built-in classes (loopback, link-local, cloud metadata,
//! unspecified, multicast, broadcast, reserved) are refused; everything else (the
//! internet and the private LAN ranges, where small shops keep their mirrors) is allowed.

use crate::domain::cidr::{any_contains, parse_list, Cidr, CidrError};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused (for the log; users see one neutral sentence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// In `[fetch] deny`.
    Denied,
    /// One of this host's own interface addresses.
    HostOwn,
    Loopback,
    LinkLocal,
    /// A cloud provider's instance metadata service.
    Metadata,
    Unspecified,
    Multicast,
    Broadcast,
    /// Ranges that are not unicast destinations (240.0.0.0/4, 0.0.0.0/8).
    Reserved,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Denied => "listed in [fetch] deny",
            Refusal::HostOwn => "one of this host's own addresses",
            Refusal::Loopback => "a loopback address",
            Refusal::LinkLocal => "a link-local address",
            Refusal::Metadata => "a cloud metadata address",
            Refusal::Unspecified => "the unspecified address",
            Refusal::Multicast => "a multicast address",
            Refusal::Broadcast => "the broadcast address",
            Refusal::Reserved => "a reserved address",
        })
    }
}

/// Cloud metadata services (AWS, GCP, Azure, OpenStack: 169.254.169.254; AWS IPv6:
/// fd00:ec2::254; Alibaba: 100.100.100.200; Oracle: 192.0.0.192).
const METADATA: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),
];

/// The IPv4 address an IPv6 address stands for, when it carries one that reaches an
/// IPv4 destination: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`,
/// deprecated) and the NAT64 well-known prefix (`64:ff9b::a.b.c.d`).
pub fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compat = s[..6].iter().all(|&x| x == 0) && u32::from(low) > 1;
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0);
    (compat || nat64).then_some(low)
}

/// The address to judge: an IPv6 address carrying an IPv4 one is judged as that.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The built-in refusal for an address, if any (before `[fetch] allow` is considered).
pub fn builtin_refusal(ip: IpAddr) -> Option<Refusal> {
    let ip = canonical(ip);
    if METADATA.contains(&ip) {
        return Some(Refusal::Metadata);
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_unspecified() {
                Some(Refusal::Unspecified)
            } else if o[0] == 0 {
                // "This network": Linux connects 0.x.y.z like 0.0.0.0, i.e. to itself.
                Some(Refusal::Reserved)
            } else if v4.is_loopback() {
                Some(Refusal::Loopback)
            } else if v4.is_link_local() {
                Some(Refusal::LinkLocal)
            } else if v4.is_broadcast() {
                Some(Refusal::Broadcast)
            } else if v4.is_multicast() {
                Some(Refusal::Multicast)
            } else if o[0] >= 240 {
                Some(Refusal::Reserved)
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_unspecified() {
                Some(Refusal::Unspecified)
            } else if v6.is_loopback() {
                Some(Refusal::Loopback)
            } else if first & 0xffc0 == 0xfe80 {
                Some(Refusal::LinkLocal)
            } else if v6.is_multicast() {
                Some(Refusal::Multicast)
            } else {
                None
            }
        }
    }
}

/// The `[fetch] allow` and `deny` lists, parsed.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl Policy {
    /// Parses the settings; the first entry that is not an address range is the error.
    pub fn new(allow: &[String], deny: &[String]) -> Result<Policy, CidrError> {
        Ok(Policy {
            allow: parse_list(allow)?,
            deny: parse_list(deny)?,
        })
    }

    /// Whether a request may connect to `ip`; `own` are the host's interface addresses.
    pub fn check(&self, ip: IpAddr, own: &[IpAddr]) -> Result<(), Refusal> {
        let raw = ip;
        let ip = canonical(ip);
        // A range matches the address as written or the IPv4 address it carries.
        let listed = |list: &[Cidr]| any_contains(list, raw) || any_contains(list, ip);
        if listed(&self.deny) {
            return Err(Refusal::Denied);
        }
        if listed(&self.allow) {
            return Ok(());
        }
        if let Some(why) = builtin_refusal(ip) {
            return Err(why);
        }
        if own.iter().any(|o| canonical(*o) == ip) {
            return Err(Refusal::HostOwn);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn default_check(s: &str) -> Result<(), Refusal> {
        Policy::default().check(ip(s), &[])
    }

    #[test]
    fn built_in_classes_are_refused() {
        for (addr, why) in [
            ("127.0.0.1", Refusal::Loopback),
            ("127.8.9.10", Refusal::Loopback),
            ("::1", Refusal::Loopback),
            ("::ffff:127.0.0.1", Refusal::Loopback),
            ("::127.0.0.1", Refusal::Loopback),
            ("64:ff9b::7f00:1", Refusal::Loopback),
            ("0.0.0.0", Refusal::Unspecified),
            ("::", Refusal::Unspecified),
            ("::ffff:0.0.0.0", Refusal::Unspecified),
            ("0.1.2.3", Refusal::Reserved),
            ("169.254.0.1", Refusal::LinkLocal),
            ("fe80::1", Refusal::LinkLocal),
            ("febf::1", Refusal::LinkLocal),
            ("169.254.169.254", Refusal::Metadata),
            ("::ffff:169.254.169.254", Refusal::Metadata),
            ("fd00:ec2::254", Refusal::Metadata),
            ("100.100.100.200", Refusal::Metadata),
            ("192.0.0.192", Refusal::Metadata),
            ("224.0.0.1", Refusal::Multicast),
            ("239.255.255.250", Refusal::Multicast),
            ("ff02::1", Refusal::Multicast),
            ("255.255.255.255", Refusal::Broadcast),
            ("240.0.0.1", Refusal::Reserved),
        ] {
            assert_eq!(default_check(addr), Err(why), "{addr}");
        }
    }

    #[test]
    fn the_internet_and_private_lans_are_allowed() {
        for addr in [
            "10.0.0.5",
            "172.16.3.4",
            "172.31.255.254",
            "192.168.1.10",
            "fd12:3456::1",
            "fc00::1",
            "100.64.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:10.1.2.3",
            "fec0::1",
        ] {
            assert_eq!(default_check(addr), Ok(()), "{addr}");
        }
    }

    #[test]
    fn the_hosts_own_addresses_are_refused_unless_allowed() {
        let own = [ip("192.168.1.10"), ip("2001:db8::10")];
        let p = Policy::default();
        assert_eq!(p.check(ip("192.168.1.10"), &own), Err(Refusal::HostOwn));
        assert_eq!(
            p.check(ip("::ffff:192.168.1.10"), &own),
            Err(Refusal::HostOwn)
        );
        assert_eq!(p.check(ip("2001:db8::10"), &own), Err(Refusal::HostOwn));
        assert_eq!(p.check(ip("192.168.1.11"), &own), Ok(()));
        let p = Policy::new(&["192.168.1.10/32".into()], &[]).unwrap();
        assert_eq!(p.check(ip("192.168.1.10"), &own), Ok(()));
    }

    #[test]
    fn allow_overrides_built_ins_and_deny_overrides_allow() {
        let p = Policy::new(
            &["127.0.0.0/8".into(), "10.0.0.0/8".into()],
            &["127.0.0.2/32".into(), "10.9.0.0/16".into()],
        )
        .unwrap();
        assert_eq!(p.check(ip("127.0.0.1"), &[]), Ok(()));
        assert_eq!(p.check(ip("::ffff:127.0.0.1"), &[]), Ok(()));
        assert_eq!(p.check(ip("127.0.0.2"), &[]), Err(Refusal::Denied));
        assert_eq!(p.check(ip("10.9.1.1"), &[]), Err(Refusal::Denied));
        assert_eq!(p.check(ip("10.8.1.1"), &[]), Ok(()));
        // Allowing IPv4 loopback does not allow IPv6 loopback.
        assert_eq!(p.check(ip("::1"), &[]), Err(Refusal::Loopback));
        // Deny also closes private ranges that are open by default.
        let p = Policy::new(&[], &["192.168.0.0/16".into()]).unwrap();
        assert_eq!(p.check(ip("192.168.5.5"), &[]), Err(Refusal::Denied));
    }

    #[test]
    fn bad_ranges_are_errors() {
        let e = Policy::new(&["10.0.0.0/8".into()], &["10.0.0.0/40".into()]).unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/40"), "{e}");
        assert!(Policy::new(&["localhost".into()], &[]).is_err());
    }
}
