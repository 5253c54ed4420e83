//! The HTTP adapter: the only place virtdeck makes an outbound request (install trees,
//! image fetches). Blocking; run it off the async runtime.
//!
//! Every request goes through [`Client`]: the host name is resolved once, each address is
//! checked against [`policy::Policy`] (loopback, link-local, metadata, unspecified,
//! multicast and this host's own addresses refused unless `[fetch] allow` lists them),
//! and ureq connects only to the addresses that passed. Redirects are followed here, at
//! most [`MAX_REDIRECTS`], each hop resolved and checked again. Every request has a
//! connect and a read timeout. Whatever stops a request before the server answered
//! (refused address, DNS failure, closed port, timeout) reads as the one sentence
//! [`NOT_REACHABLE`] to the user, so errors cannot map ports; the log gets the cause.

pub mod peer;
pub mod policy;

use crate::domain::install_tree::{treeinfo_images, TreeUrl, KNOWN_LAYOUTS};
use policy::Policy;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// Largest file fetched (installer initrds are well below this).
pub const MAX_BOOT_FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// Redirects followed per request.
pub const MAX_REDIRECTS: usize = 5;

/// What a user sees for any request that got no answer: refused by the policy, name not
/// found, connection refused or timed out.
pub const NOT_REACHABLE: &str = "The address could not be fetched: it is not reachable from this host or is not allowed by the [fetch] settings.";

/// `[fetch]` settings: where outbound requests may go, and how long they may wait.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// Address ranges (CIDR) requests may reach even though the built-in policy refuses
    /// them (loopback, link-local, this host's own addresses…).
    pub allow: Vec<String>,
    /// Address ranges requests never reach; wins over `allow`.
    pub deny: Vec<String>,
    /// Longest wait for a name lookup and for the TCP connection.
    pub connect_timeout_seconds: u64,
    /// Longest wait for the answer and for each read of the body (no progress).
    pub read_timeout_seconds: u64,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            connect_timeout_seconds: 10,
            read_timeout_seconds: 60,
        }
    }
}

impl FetchConfig {
    /// The first setting out of range, and why.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if let Err(e) = crate::domain::cidr::parse_list(&self.allow) {
            return Some(("fetch.allow", e.to_string()));
        }
        if let Err(e) = crate::domain::cidr::parse_list(&self.deny) {
            return Some(("fetch.deny", e.to_string()));
        }
        if self.connect_timeout_seconds == 0 || self.read_timeout_seconds == 0 {
            return Some((
                "fetch",
                "connect_timeout_seconds and read_timeout_seconds must be greater than zero".into(),
            ));
        }
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer: refused by the policy, unknown name, closed port, timeout. `cause` is
    /// for the log only.
    #[error("{NOT_REACHABLE}")]
    NotReachable { cause: String },
    /// The server answered with a status other than the one wanted.
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} redirects more than {MAX_REDIRECTS} times")]
    TooManyRedirects { url: String },
    #[error("{url} redirects to an address that is not http(s) or carries credentials")]
    BadRedirect { url: String },
    /// The answer started but its body could not be read to the end.
    #[error("the download from {url} stopped: {cause}")]
    Body { url: String, cause: String },
    /// Nothing usable was found below the URL.
    #[error(
        "no installer kernel and initrd were found below {url} (looked for .treeinfo and {tried})"
    )]
    NoTree { url: String, tried: String },
    #[error("{url} is larger than {max_mib} MiB")]
    TooLarge { url: String, max_mib: u64 },
    #[error("{path} could not be written: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Why the resolver gave no address (for the log).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{host}: every address is refused: {addresses}")]
    Policy { host: String, addresses: String },
    #[error("this host's interface addresses could not be read: {0}")]
    OwnAddresses(nix::Error),
    #[error("the [fetch] settings are not valid: {0}")]
    Settings(String),
}

/// This host's interface addresses (all interfaces, both families).
fn own_addresses() -> Result<Vec<IpAddr>, nix::Error> {
    Ok(nix::ifaddrs::getifaddrs()?
        .filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        })
        .collect())
}

/// ureq's resolver, keeping only the addresses the policy allows: ureq connects to what
/// this returns, so the address checked is the address connected (no second lookup).
#[derive(Debug)]
struct CheckedResolver {
    policy: Result<Policy, String>,
}

impl Resolver for CheckedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let refused = |r: Refused| ureq::Error::Other(Box::new(r));
        let policy = self
            .policy
            .as_ref()
            .map_err(|e| refused(Refused::Settings(e.clone())))?;
        let found = DefaultResolver::default().resolve(uri, config, timeout)?;
        let own = own_addresses().map_err(|e| refused(Refused::OwnAddresses(e)))?;
        let mut kept = self.empty();
        let mut refusals = Vec::new();
        for addr in found.iter() {
            match policy.check(addr.ip(), &own) {
                Ok(()) => kept.push(*addr),
                Err(why) => refusals.push(format!("{} ({why})", addr.ip())),
            }
        }
        if kept.is_empty() {
            return Err(refused(Refused::Policy {
                host: uri.host().unwrap_or_default().to_string(),
                addresses: refusals.join(", "),
            }));
        }
        if !refusals.is_empty() {
            tracing::info!(host = uri.host().unwrap_or_default(), refused = %refusals.join(", "), "outbound request: some addresses skipped by the [fetch] policy");
        }
        Ok(kept)
    }
}

/// Makes outbound GET requests under the `[fetch]` policy and timeouts.
pub struct Client {
    agent: ureq::Agent,
}

/// The answer to a GET: the URL that answered (after redirects) and the response.
pub struct Answer {
    pub url: String,
    pub response: ureq::http::Response<ureq::Body>,
}

impl Answer {
    pub fn status(&self) -> u16 {
        self.response.status().as_u16()
    }
}

impl Client {
    /// A client for one task. `total` limits each request as a whole (a whole image
    /// fetch); without it only the connect and read timeouts apply.
    pub fn new(cfg: &FetchConfig, total: Option<Duration>) -> Client {
        let connect = Duration::from_secs(cfg.connect_timeout_seconds.max(1));
        let read = Duration::from_secs(cfg.read_timeout_seconds.max(1));
        let config = ureq::Agent::config_builder()
            // A proxy would be resolved and checked instead of the destination.
            .proxy(None)
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(total)
            .timeout_resolve(Some(connect))
            .timeout_connect(Some(connect))
            .timeout_recv_response(Some(read))
            .timeout_per_read(Some(read))
            .timeout_per_write(Some(read))
            .user_agent(concat!("virtdeck/", env!("CARGO_PKG_VERSION")))
            .build();
        let resolver = CheckedResolver {
            policy: Policy::new(&cfg.allow, &cfg.deny).map_err(|e| e.to_string()),
        };
        Client {
            agent: ureq::Agent::with_parts(config, DefaultConnector::new(), resolver),
        }
    }

    /// GETs `url`, following up to [`MAX_REDIRECTS`] redirects (each checked like the
    /// first request). Any final status is returned; only a missing answer is an error.
    pub fn get(&self, url: &str) -> Result<Answer, FetchError> {
        let mut current = checked_url(url).ok_or_else(|| FetchError::NotReachable {
            cause: format!("{url} is not an http(s) URL without credentials"),
        })?;
        for _ in 0..=MAX_REDIRECTS {
            let response = self.agent.get(current.as_str()).call().map_err(|e| {
                tracing::warn!(url = %current, error = %e, "outbound request got no answer");
                FetchError::NotReachable {
                    cause: format!("{current}: {e}"),
                }
            })?;
            let status = response.status();
            if !status.is_redirection() || status.as_u16() == 304 {
                return Ok(Answer {
                    url: current.to_string(),
                    response,
                });
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let next = current
                .join(location)
                .ok()
                .and_then(|u| checked_url(u.as_str()));
            let Some(next) = next else {
                tracing::warn!(url = %current, location, "outbound request: redirect refused");
                return Err(FetchError::BadRedirect {
                    url: current.to_string(),
                });
            };
            tracing::debug!(from = %current, to = %next, "outbound request redirected");
            current = next;
        }
        Err(FetchError::TooManyRedirects {
            url: url.to_string(),
        })
    }
}

/// `url` if it is http or https, names a host and carries no credentials; without its
/// fragment.
fn checked_url(url: &str) -> Option<url::Url> {
    let mut u = url::Url::parse(url).ok()?;
    let ok = matches!(u.scheme(), "http" | "https")
        && u.host().is_some()
        && u.username().is_empty()
        && u.password().is_none();
    u.set_fragment(None);
    ok.then_some(u)
}

/// Finds the kernel and initrd URLs of an install tree: `.treeinfo` first, then the
/// layouts distributions are known to use.
pub fn locate(cfg: &FetchConfig, tree: &TreeUrl) -> Result<(String, String), FetchError> {
    let client = Client::new(cfg, None);
    let treeinfo_url = tree.join(".treeinfo").unwrap_or_default();
    // No answer at all: say so rather than trying every layout.
    let mut answer = client.get(&treeinfo_url)?;
    if answer.status() == 200 {
        let text = answer
            .response
            .body_mut()
            .with_config()
            .limit(1024 * 1024)
            .read_to_string()
            .map_err(|e| FetchError::Body {
                url: treeinfo_url.clone(),
                cause: e.to_string(),
            })?;
        if let Some((k, i)) = treeinfo_images(&text) {
            if let (Some(k), Some(i)) = (tree.join(&k), tree.join(&i)) {
                return Ok((k, i));
            }
        }
    }
    for (k, i) in KNOWN_LAYOUTS {
        let (Some(k), Some(i)) = (tree.join(k), tree.join(i)) else {
            continue;
        };
        if client.get(&k)?.status() == 200 {
            return Ok((k, i));
        }
    }
    Err(FetchError::NoTree {
        url: tree.as_str().to_string(),
        tried: KNOWN_LAYOUTS
            .iter()
            .map(|(k, _)| *k)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Downloads `url` to `dest` (mode 0644, replaced if present); returns the size.
pub fn download(cfg: &FetchConfig, url: &str, dest: &Path) -> Result<u64, FetchError> {
    let mut answer = Client::new(cfg, None).get(url)?;
    if answer.status() != 200 {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: answer.status(),
        });
    }
    let write_err = |source| FetchError::Write {
        path: dest.display().to_string(),
        source,
    };
    let body_err = |e: std::io::Error| FetchError::Body {
        url: url.to_string(),
        cause: e.to_string(),
    };
    let mut file = std::fs::File::create(dest).map_err(write_err)?;
    let mut reader = answer
        .response
        .body_mut()
        .with_config()
        .limit(MAX_BOOT_FILE_BYTES + 1)
        .reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(body_err)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_BOOT_FILE_BYTES {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                max_mib: MAX_BOOT_FILE_BYTES / (1024 * 1024),
            });
        }
        file.write_all(&buf[..n]).map_err(write_err)?;
    }
    file.sync_all().map_err(write_err)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_followed() {
        assert!(checked_url("http://mirror.lan/tree/").is_some());
        assert!(checked_url("https://[2001:db8::1]:8443/x").is_some());
        assert_eq!(
            checked_url("http://m/x#frag").unwrap().as_str(),
            "http://m/x"
        );
        for bad in [
            "ftp://mirror/x",
            "file:///etc/passwd",
            "gopher://127.0.0.1:6379/_x",
            "http://user:pw@mirror/x",
            "http://user@mirror/x",
            "http://",
            "not a url",
        ] {
            assert!(checked_url(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn settings_are_checked() {
        let mut c = FetchConfig::default();
        assert_eq!(c.problem(), None);
        c.allow = vec!["127.0.0.0/8".into(), "::1".into()];
        assert_eq!(c.problem(), None);
        c.deny = vec!["10.0.0.0/99".into()];
        let (key, message) = c.problem().unwrap();
        assert_eq!(key, "fetch.deny");
        assert!(message.contains("10.0.0.0/99"), "{message}");
        c.deny.clear();
        c.read_timeout_seconds = 0;
        assert_eq!(c.problem().unwrap().0, "fetch");
    }

    #[test]
    fn a_refused_address_is_never_connected_and_the_log_says_why() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Client::new(&FetchConfig::default(), None);
        for url in [
            format!("http://127.0.0.1:{port}/x"),
            format!("http://[::ffff:127.0.0.1]:{port}/x"),
            format!("http://localhost:{port}/x"),
        ] {
            match client.get(&url) {
                Err(e @ FetchError::NotReachable { .. }) => {
                    assert_eq!(e.to_string(), NOT_REACHABLE);
                    let FetchError::NotReachable { cause } = e else {
                        unreachable!()
                    };
                    assert!(cause.contains("loopback"), "{url}: {cause}");
                }
                Err(e) => panic!("{url}: {e}"),
                Ok(_) => panic!("{url} was fetched"),
            }
        }
        assert!(listener.accept().is_err(), "no connection was made");
        // Allowed explicitly, the same server is reached.
        let allowed = FetchConfig {
            allow: vec!["127.0.0.0/8".into()],
            connect_timeout_seconds: 2,
            read_timeout_seconds: 1,
            ..FetchConfig::default()
        };
        let r = Client::new(&allowed, None).get(&format!("http://127.0.0.1:{port}/x"));
        assert!(
            matches!(r, Err(FetchError::NotReachable { .. })),
            "nobody answers"
        );
        assert!(listener.accept().is_ok(), "this time it connected");
    }

    #[test]
    fn refusals_read_the_same_whatever_the_cause() {
        let a = FetchError::NotReachable {
            cause: "127.0.0.1 (a loopback address)".into(),
        };
        let b = FetchError::NotReachable {
            cause: "connection refused".into(),
        };
        assert_eq!(a.to_string(), b.to_string());
        assert_eq!(a.to_string(), NOT_REACHABLE);
    }
}
