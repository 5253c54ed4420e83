//! Who is on the other end: the client's address and whether it reached us over HTTPS.
//!
//! `X-Forwarded-For`, `Forwarded` and `X-Forwarded-Proto` are believed only when the TCP
//! peer is one of `[http] trusted_proxies`; from anyone else they are ignored, so a client
//! cannot pick the address it is throttled and audited under.

use crate::domain::cidr::{any_contains, canonical, Cidr};
use std::net::IpAddr;

/// The addresses a `Forwarded` header (RFC 7239) names with `for=`, in order.
fn forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    value
        .split(',')
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| parse_node(v))
        })
        .collect()
}

/// One node of `Forwarded: for=`: `1.2.3.4`, `"[2001:db8::1]:4711"`, `1.2.3.4:80`.
fn parse_node(value: &str) -> Option<IpAddr> {
    let v = value.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    // IPv4 with a port.
    v.rsplit_once(':').and_then(|(a, _)| a.parse().ok())
}

/// The addresses an `X-Forwarded-For` header names, in order.
fn x_forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    value.split(',').map(parse_node).collect()
}

/// The client's address. `forwarded`/`xff` are the header values, if any; `Forwarded`
/// wins when both are present. The chain is read from the right (the hop nearest to us),
/// skipping trusted proxies: the first address that is not one is the client. A chain
/// with an unreadable entry before that point is not believed (the peer's address is used).
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded: Option<&str>,
    xff: Option<&str>,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer = peer.map(canonical)?;
    if !any_contains(trusted, peer) {
        return Some(peer);
    }
    let chain = match (forwarded, xff) {
        (Some(f), _) => forwarded_for(f),
        (None, Some(x)) => x_forwarded_for(x),
        (None, None) => return Some(peer),
    };
    let mut client = peer;
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) => {
                client = canonical(*ip);
                if !any_contains(trusted, client) {
                    return Some(client);
                }
            }
            None => return Some(peer),
        }
    }
    Some(client)
}

/// Whether a trusted proxy says the client used HTTPS (`X-Forwarded-Proto: https`, or
/// `proto=https` in `Forwarded`).
pub fn forwarded_https(
    peer: Option<IpAddr>,
    forwarded: Option<&str>,
    x_forwarded_proto: Option<&str>,
    trusted: &[Cidr],
) -> bool {
    let Some(peer) = peer.map(canonical) else {
        return false;
    };
    if !any_contains(trusted, peer) {
        return false;
    }
    if let Some(f) = forwarded {
        // The hop nearest to us: the last element.
        if let Some(last) = f.split(',').next_back() {
            let proto = last
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("proto"))
                .map(|(_, v)| v.trim().trim_matches('"').to_ascii_lowercase());
            if let Some(p) = proto {
                return p == "https";
            }
        }
    }
    x_forwarded_proto
        .and_then(|v| v.split(',').next_back())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies() -> Vec<Cidr> {
        vec!["10.0.0.5".parse().unwrap(), "fd00::/8".parse().unwrap()]
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let got = client_ip(Some(ip("203.0.113.9")), None, Some("1.2.3.4"), &proxies());
        assert_eq!(got, Some(ip("203.0.113.9")));
        let got = client_ip(Some(ip("203.0.113.9")), Some("for=1.2.3.4"), None, &[]);
        assert_eq!(got, Some(ip("203.0.113.9")));
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let t = proxies();
        let peer = Some(ip("10.0.0.5"));
        assert_eq!(
            client_ip(peer, None, Some("198.51.100.7"), &t),
            Some(ip("198.51.100.7"))
        );
        // A client cannot hide behind a forged left-most entry: the right-most untrusted wins.
        assert_eq!(
            client_ip(peer, None, Some("6.6.6.6, 198.51.100.7"), &t),
            Some(ip("198.51.100.7"))
        );
        // Chained trusted proxies are skipped.
        assert_eq!(
            client_ip(peer, None, Some("198.51.100.7, fd00::1"), &t),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client_ip(
                peer,
                Some("for=\"[2001:db8::1]:4711\";proto=https"),
                Some("9.9.9.9"),
                &t
            ),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            client_ip(peer, Some("for=192.0.2.60:80"), None, &t),
            Some(ip("192.0.2.60"))
        );
        assert_eq!(client_ip(peer, None, None, &t), Some(ip("10.0.0.5")));
        assert_eq!(
            client_ip(peer, None, Some("garbage"), &t),
            Some(ip("10.0.0.5")),
            "an unreadable chain is not believed"
        );
        assert_eq!(
            client_ip(Some(ip("::ffff:10.0.0.5")), None, Some("198.51.100.7"), &t),
            Some(ip("198.51.100.7")),
            "IPv4-mapped peer"
        );
    }

    #[test]
    fn https_only_from_a_trusted_proxy() {
        let t = proxies();
        assert!(forwarded_https(
            Some(ip("10.0.0.5")),
            None,
            Some("https"),
            &t
        ));
        assert!(!forwarded_https(
            Some(ip("10.0.0.5")),
            None,
            Some("http"),
            &t
        ));
        assert!(!forwarded_https(
            Some(ip("10.0.0.6")),
            None,
            Some("https"),
            &t
        ));
        assert!(forwarded_https(
            Some(ip("10.0.0.5")),
            Some("for=1.2.3.4;proto=https"),
            None,
            &t
        ));
        assert!(!forwarded_https(None, None, Some("https"), &t));
    }
}
