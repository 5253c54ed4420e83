//! Requests to peer hosts: JSON over HTTPS, with the peer's TLS certificate pinned by its
//! SHA-256 fingerprint instead of a CA (virtdeck hosts use self-signed certificates).
//!
//! The same resolver policy and timeouts as every other outbound request
//! ([`super::CheckedResolver`], `[fetch]`); only the TLS step differs: the handshake is
//! accepted when the server's certificate has the pinned fingerprint and its handshake
//! signature verifies with that certificate's key (a copied certificate without its key
//! does not pass). A first contact, before anything is pinned, records the fingerprint the
//! server showed, for the admin to confirm.

use super::{CheckedResolver, Policy, NOT_REACHABLE};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, TcpConnector,
    Transport, TransportAdapter,
};

/// Largest peer answer read (a fleet summary of a host with thousands of VMs fits).
const MAX_ANSWER_BYTES: u64 = 32 * 1024 * 1024;

/// Why a call to a peer did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    /// No answer: refused by the `[fetch]` policy, name not found, closed port, timeout.
    #[error("{NOT_REACHABLE}")]
    NotReachable { cause: String },
    /// The peer answered with another certificate than the one pinned at pairing.
    #[error(
        "The peer's TLS certificate changed (pinned SHA-256 {expected}, it showed {seen}): \
         nothing was sent. If the peer was reinstalled, unpair it and pair again."
    )]
    FingerprintChanged { expected: String, seen: String },
    /// The peer answered with an error.
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// The peer answered something that is not the expected JSON.
    #[error("The peer's answer could not be read: {cause}")]
    BadAnswer { cause: String },
}

/// A client for one peer (or one first contact).
pub struct PeerClient {
    agent: ureq::Agent,
    base: url::Url,
    authorization: Option<String>,
    pin: Arc<Pin>,
}

/// The fingerprint the server must show (`None`: first contact, any), and the one it showed.
#[derive(Debug)]
struct Pin {
    expected: Option<String>,
    seen: Mutex<Option<String>>,
}

/// SHA-256 of a certificate's DER, lowercase hex.
pub fn fingerprint_of(der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(der))
}

/// A fingerprint as people compare them: upper-case hex pairs joined by colons.
pub fn fingerprint_for_people(hex_lower: &str) -> String {
    hex_lower
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

/// `text` as a fingerprint (hex, with or without colons, any case), lowercase hex.
pub fn parse_fingerprint(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

impl PeerClient {
    /// A client for a paired peer: its certificate must have `fingerprint`; requests carry
    /// `credential` as `Authorization: VirtdeckPeer …`.
    pub fn pinned(
        fetch: &super::FetchConfig,
        timeout: Duration,
        base_url: &str,
        fingerprint: &str,
        credential: Option<&str>,
    ) -> Result<PeerClient, PeerCallError> {
        PeerClient::build(
            fetch,
            timeout,
            base_url,
            Some(fingerprint.to_string()),
            credential,
        )
    }

    /// A client for virtdeck's own API, for an admin's shell tool (`virtdeck vm …`): the
    /// address is the admin's own choice, so the `[fetch]` policy (made for addresses that
    /// users type into forms) does not apply; the server's certificate must have
    /// `fingerprint`; requests carry `Authorization: Bearer <token>`.
    pub fn api(
        base_url: &str,
        fingerprint: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<PeerClient, PeerCallError> {
        let anywhere = super::FetchConfig {
            allow: vec!["0.0.0.0/0".into(), "::/0".into()],
            ..Default::default()
        };
        let mut client = PeerClient::build(
            &anywhere,
            timeout,
            base_url,
            Some(fingerprint.to_string()),
            None,
        )?;
        client.authorization = Some(format!("Bearer {token}"));
        Ok(client)
    }

    /// A client for a first contact: any certificate is accepted and recorded
    /// ([`PeerClient::seen_fingerprint`]); nothing secret may be sent with it.
    pub fn first_contact(
        fetch: &super::FetchConfig,
        timeout: Duration,
        base_url: &str,
    ) -> Result<PeerClient, PeerCallError> {
        PeerClient::build(fetch, timeout, base_url, None, None)
    }

    fn build(
        fetch: &super::FetchConfig,
        timeout: Duration,
        base_url: &str,
        expected: Option<String>,
        credential: Option<&str>,
    ) -> Result<PeerClient, PeerCallError> {
        let base = peer_base_url(base_url).ok_or_else(|| PeerCallError::NotReachable {
            cause: format!("{base_url} is not an https:// URL of a host"),
        })?;
        let connect = Duration::from_secs(fetch.connect_timeout_seconds.max(1)).min(timeout);
        let config = ureq::Agent::config_builder()
            .proxy(None)
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_resolve(Some(connect))
            .timeout_connect(Some(connect))
            .user_agent(concat!("virtdeck/", env!("CARGO_PKG_VERSION")))
            .build();
        let resolver = CheckedResolver {
            policy: Policy::new(&fetch.allow, &fetch.deny).map_err(|e| e.to_string()),
        };
        let pin = Arc::new(Pin {
            expected,
            seen: Mutex::new(None),
        });
        let connector = ().chain(TcpConnector::default()).chain(PinnedTls {
            pin: pin.clone(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        });
        Ok(PeerClient {
            agent: ureq::Agent::with_parts(config, connector, resolver),
            base,
            authorization: credential.map(|c| format!("VirtdeckPeer {c}")),
            pin,
        })
    }

    /// The fingerprint the server showed on the last connection, if one was made.
    pub fn seen_fingerprint(&self) -> Option<String> {
        self.pin.seen.lock().ok().and_then(|s| s.clone())
    }

    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, PeerCallError> {
        let url = self.url(path)?;
        let mut req = self.agent.get(url.as_str());
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        self.answer(req.call(), &url)
    }

    pub fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, PeerCallError> {
        let url = self.url(path)?;
        let mut req = self.agent.post(url.as_str());
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        let json = serde_json::to_vec(body).map_err(|e| PeerCallError::BadAnswer {
            cause: format!("the request could not be written: {e}"),
        })?;
        let sent = req
            .header("Content-Type", "application/json")
            .send(&json[..]);
        self.answer(sent, &url)
    }

    fn url(&self, path: &str) -> Result<url::Url, PeerCallError> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| PeerCallError::NotReachable {
                cause: format!("{path}: {e}"),
            })
    }

    fn answer<T: DeserializeOwned>(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        url: &url::Url,
    ) -> Result<T, PeerCallError> {
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                if let (Some(expected), Some(seen)) = (&self.pin.expected, self.seen_fingerprint())
                {
                    if &seen != expected {
                        tracing::warn!(%url, expected, seen, "peer certificate changed");
                        return Err(PeerCallError::FingerprintChanged {
                            expected: fingerprint_for_people(expected),
                            seen: fingerprint_for_people(&seen),
                        });
                    }
                }
                tracing::warn!(%url, error = %e, "peer request got no answer");
                return Err(PeerCallError::NotReachable {
                    cause: format!("{url}: {e}"),
                });
            }
        };
        let status = response.status().as_u16();
        let mut text = String::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_ANSWER_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| PeerCallError::BadAnswer {
                cause: format!("{url}: {e}"),
            })?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("The peer answered HTTP {status}."));
            return Err(PeerCallError::Refused { status, message });
        }
        serde_json::from_str(&text).map_err(|e| PeerCallError::BadAnswer {
            cause: format!("{url}: {e}"),
        })
    }
}

/// `url` if it is an https URL of a host without credentials, path ending in `/`.
pub fn peer_base_url(url: &str) -> Option<url::Url> {
    let mut u = url::Url::parse(url.trim()).ok()?;
    let ok = u.scheme() == "https"
        && u.host().is_some()
        && u.username().is_empty()
        && u.password().is_none()
        && u.query().is_none();
    u.set_fragment(None);
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    ok.then_some(u)
}

/// The TLS step of the connector chain: rustls with the pinning verifier.
#[derive(Debug)]
struct PinnedTls {
    pin: Arc<Pin>,
    provider: Arc<CryptoProvider>,
}

impl<In: Transport> Connector<In> for PinnedTls {
    type Out = Either<In, PinnedTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: self.pin.clone(),
                provider: self.provider.clone(),
            }))
            .with_no_client_auth();
        let host = details
            .uri
            .host()
            .unwrap_or("peer")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = ServerName::try_from(host)
            .map_err(|_| ureq::Error::Tls("the peer's host name is not usable for TLS"))?;
        let mut conn = ClientConnection::new(Arc::new(config), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        Ok(Some(Either::B(PinnedTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned { conn, sock },
        })))
    }
}

struct PinnedTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for PinnedTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedTransport").finish()
    }
}

impl Transport for PinnedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let n = self.stream.read(input)?;
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// Accepts the certificate whose fingerprint is pinned (any on a first contact, which is
/// recorded); handshake signatures are always verified with the certificate's key.
#[derive(Debug)]
struct PinVerifier {
    pin: Arc<Pin>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint_of(end_entity.as_ref());
        if let Ok(mut slot) = self.pin.seen.lock() {
            *slot = Some(seen.clone());
        }
        match &self.pin.expected {
            Some(expected) if *expected != seen => Err(rustls::Error::General(
                "the certificate is not the pinned one".into(),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_in_the_forms_people_copy() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex), Some(hex.clone()));
        let people = fingerprint_for_people(&hex);
        assert!(people.starts_with("AB:AB:"), "{people}");
        assert_eq!(parse_fingerprint(&people), Some(hex.clone()));
        assert_eq!(parse_fingerprint(&format!("  {people}\n")), Some(hex));
        assert_eq!(parse_fingerprint("ab:cd"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }

    #[test]
    fn peers_are_https_hosts_without_credentials() {
        assert_eq!(
            peer_base_url("https://b.lan:9443").unwrap().as_str(),
            "https://b.lan:9443/"
        );
        assert_eq!(
            peer_base_url("https://b.lan:9443/vd").unwrap().as_str(),
            "https://b.lan:9443/vd/"
        );
        assert!(peer_base_url("http://b.lan:9443").is_none());
        assert!(peer_base_url("https://u:p@b.lan").is_none());
        assert!(peer_base_url("https://b.lan/?x=1").is_none());
        assert!(peer_base_url("b.lan").is_none());
    }
}
