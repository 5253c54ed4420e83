//! Address ranges written as CIDR (`10.0.0.0/8`, `fd00::/8`, or a single address), used by
//! settings that list networks: `trusted_proxies`, `[fetch] allow`/`deny`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One address range. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is matched as the
/// IPv4 address it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_bits: u8,
}

/// Why a CIDR setting was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("“{0}” is not an address range: write an address or address/prefix, e.g. 10.0.0.0/8 or fd00::/8")]
pub struct CidrError(pub String);

/// The IPv4 address an IPv4-mapped IPv6 address carries, or the address itself.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn masked(ip: IpAddr, prefix_bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = if prefix_bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix_bits))
            };
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = if prefix_bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix_bits))
            };
            IpAddr::V6((bits & mask).into())
        }
    }
}

impl Cidr {
    pub fn new(network: IpAddr, prefix_bits: u8) -> Option<Cidr> {
        let network = canonical(network);
        let max = if network.is_ipv4() { 32 } else { 128 };
        (prefix_bits <= max).then(|| Cidr {
            network: masked(network, prefix_bits),
            prefix_bits,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.network.is_ipv4() && masked(ip, self.prefix_bits) == self.network
    }

    pub fn prefix_bits(&self) -> u8 {
        self.prefix_bits
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let err = || CidrError(text.to_string());
        let (addr, bits) = match text.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text.trim(), None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| err())?;
        let ip = canonical(ip);
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix_bits = match bits {
            Some(b) if !b.is_empty() && b.chars().all(|c| c.is_ascii_digit()) => {
                b.parse::<u8>().map_err(|_| err())?
            }
            Some(_) => return Err(err()),
            None => max,
        };
        Cidr::new(ip, prefix_bits).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_bits)
    }
}

/// Parses a list of CIDR settings; the first bad entry is the error.
pub fn parse_list(items: &[String]) -> Result<Vec<Cidr>, CidrError> {
    items.iter().map(|s| s.parse()).collect()
}

/// Whether any range in `list` holds `ip`.
pub fn any_contains(list: &[Cidr], ip: IpAddr) -> bool {
    list.iter().any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_matches() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(ip("10.200.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.9")), "mapped IPv6");
        let single: Cidr = "192.168.1.5".parse().unwrap();
        assert!(single.contains(ip("192.168.1.5")));
        assert!(!single.contains(ip("192.168.1.6")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!(!all.contains(ip("::1")));
    }

    #[test]
    fn refuses_what_is_not_a_range() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "fd00::/129",
            "x/8",
            "10.0.0.0/",
            "1.2.3.4/-1",
            "1.2.3.4/+8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let e = parse_list(&["10.0.0.0/8".into(), "nope".into()]).unwrap_err();
        assert!(e.to_string().contains("“nope”"), "{e}");
    }
}
