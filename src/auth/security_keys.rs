//! Security keys (WebAuthn, through webauthn-rs) as a second factor: which relying party
//! a request speaks for, and the two ceremonies (adding a key, signing in with one),
//! whose state waits here in memory between the browser's two requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, SecurityKey, SecurityKeyAuthentication,
    SecurityKeyRegistration, Url, Uuid, Webauthn, WebauthnBuilder,
};

/// How long a browser has between the two halves of a ceremony.
const CEREMONY_SECONDS: u64 = 300;
/// At most this many ceremonies wait at once (the oldest is dropped).
const MAX_WAITING: usize = 10_000;

/// Why security keys cannot be used here, as the person should read it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("Security keys need virtdeck opened by a host name (for example https://kvm1.example.com:9443), not by an IP address. Open it by its name and try again.")]
    NotAName,
    #[error(
        "The request did not say which address it was sent to. Reload the page and try again."
    )]
    NoHost,
    #[error("The security key step expired or was started elsewhere. Start it again.")]
    Expired,
    #[error("The security key's answer was not accepted: {0}. Try again, or use another factor.")]
    Rejected(String),
    #[error("This security key is not one of yours, or it was registered at another address of this host.")]
    Unknown,
}

/// The relying party of a request: its ID (the host name) and origin (scheme, host and
/// port as the browser sent them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    pub id: String,
    pub origin: String,
}

/// The relying party for a request whose `Host` header is `host` over `https` or not.
/// Browsers refuse WebAuthn for IP addresses, so those are refused here with what to do.
pub fn relying_party(host: Option<&str>, https: bool) -> Result<RelyingParty, KeyError> {
    let host = host
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(KeyError::NoHost)?;
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map(|(n, _)| n).unwrap_or(host)
    };
    if name.is_empty() || name.parse::<IpAddr>().is_ok() {
        return Err(KeyError::NotAName);
    }
    let valid = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid {
        return Err(KeyError::NoHost);
    }
    Ok(RelyingParty {
        id: name.to_ascii_lowercase(),
        origin: format!(
            "{}://{}",
            if https { "https" } else { "http" },
            host.to_ascii_lowercase()
        ),
    })
}

fn webauthn(rp: &RelyingParty) -> Result<Webauthn, KeyError> {
    let origin = Url::parse(&rp.origin).map_err(|_| KeyError::NoHost)?;
    WebauthnBuilder::new(&rp.id, &origin)
        .and_then(|b| {
            b.rp_name("virtdeck")
                // A second factor after the password, as U2F keys always were: touching the
                // key is enough (no PIN). webauthn-rs otherwise asks for a credProtect level
                // that Chromium refuses for keys that are not resident.
                .danger_set_user_presence_only_security_keys(true)
                .build()
        })
        .map_err(|e| KeyError::Rejected(e.to_string()))
}

/// The stable WebAuthn user handle of account `user_id`.
fn user_handle(user_id: i64) -> Uuid {
    Uuid::from_u64_pair(0x7669_7274_6465_636b, user_id as u64)
}

/// Ceremonies waiting for the browser's second request, keyed by the digest of the
/// session or waiting sign-in that started them (one each).
struct Waiting<T> {
    map: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> Waiting<T> {
    fn new() -> Self {
        Waiting {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn put(&self, key: &str, value: T) {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(CEREMONY_SECONDS));
        if map.len() >= MAX_WAITING {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(key.to_string(), (now, value));
    }

    fn take(&self, key: &str) -> Option<T> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (at, value) = map.remove(key)?;
        (at.elapsed() < Duration::from_secs(CEREMONY_SECONDS)).then_some(value)
    }
}

struct Adding {
    state: SecurityKeyRegistration,
    rp: RelyingParty,
}

struct SigningIn {
    state: SecurityKeyAuthentication,
    rp: RelyingParty,
}

fn adding() -> &'static Waiting<Adding> {
    static W: OnceLock<Waiting<Adding>> = OnceLock::new();
    W.get_or_init(Waiting::new)
}

fn signing_in() -> &'static Waiting<SigningIn> {
    static W: OnceLock<Waiting<SigningIn>> = OnceLock::new();
    W.get_or_init(Waiting::new)
}

/// Starts adding a key for `user_id`/`username` (its keys already registered are
/// excluded); `ceremony` names the session doing it. The answer goes to the browser.
pub fn begin_adding(
    rp: &RelyingParty,
    ceremony: &str,
    user_id: i64,
    username: &str,
    existing: &[SecurityKey],
) -> Result<CreationChallengeResponse, KeyError> {
    let w = webauthn(rp)?;
    let exclude = existing.iter().map(|k| k.cred_id().clone()).collect();
    let (challenge, state) = w
        .start_securitykey_registration(
            user_handle(user_id),
            username,
            username,
            Some(exclude),
            None,
            None,
        )
        .map_err(|e| KeyError::Rejected(e.to_string()))?;
    adding().put(
        ceremony,
        Adding {
            state,
            rp: rp.clone(),
        },
    );
    Ok(challenge)
}

/// Checks the browser's new credential against the ceremony `ceremony` started: the new
/// key, and the relying party it belongs to.
pub fn finish_adding(
    ceremony: &str,
    credential: &RegisterPublicKeyCredential,
) -> Result<(SecurityKey, RelyingParty), KeyError> {
    let waiting = adding().take(ceremony).ok_or(KeyError::Expired)?;
    let key = webauthn(&waiting.rp)?
        .finish_securitykey_registration(credential, &waiting.state)
        .map_err(|e| KeyError::Rejected(e.to_string()))?;
    Ok((key, waiting.rp))
}

/// Starts a sign-in with one of `keys` (those registered at `rp`).
pub fn begin_signing_in(
    rp: &RelyingParty,
    ceremony: &str,
    keys: &[SecurityKey],
) -> Result<RequestChallengeResponse, KeyError> {
    if keys.is_empty() {
        return Err(KeyError::Unknown);
    }
    let (challenge, state) = webauthn(rp)?
        .start_securitykey_authentication(keys)
        .map_err(|e| KeyError::Rejected(e.to_string()))?;
    signing_in().put(
        ceremony,
        SigningIn {
            state,
            rp: rp.clone(),
        },
    );
    Ok(challenge)
}

/// Checks the browser's signature against the ceremony `ceremony` started.
pub fn finish_signing_in(
    ceremony: &str,
    credential: &PublicKeyCredential,
) -> Result<AuthenticationResult, KeyError> {
    let waiting = signing_in().take(ceremony).ok_or(KeyError::Expired)?;
    webauthn(&waiting.rp)?
        .finish_securitykey_authentication(credential, &waiting.state)
        .map_err(|e| KeyError::Rejected(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relying_party_is_the_host_name_and_never_an_address() {
        assert_eq!(
            relying_party(Some("KVM1.example.com:9443"), true),
            Ok(RelyingParty {
                id: "kvm1.example.com".into(),
                origin: "https://kvm1.example.com:9443".into()
            })
        );
        assert_eq!(
            relying_party(Some("localhost:8080"), false).unwrap().origin,
            "http://localhost:8080"
        );
        assert_eq!(
            relying_party(Some("10.0.0.5:9443"), true),
            Err(KeyError::NotAName)
        );
        assert_eq!(
            relying_party(Some("[::1]:9443"), true),
            Err(KeyError::NotAName)
        );
        assert_eq!(relying_party(None, true), Err(KeyError::NoHost));
        assert_eq!(relying_party(Some("a/b"), true), Err(KeyError::NoHost));
    }

    #[test]
    fn a_ceremony_is_taken_once() {
        let w: Waiting<u32> = Waiting::new();
        w.put("a", 1);
        assert_eq!(w.take("b"), None);
        assert_eq!(w.take("a"), Some(1));
        assert_eq!(w.take("a"), None);
    }

    #[test]
    fn adding_a_key_starts_a_ceremony_for_the_host_name() {
        let rp = relying_party(Some("localhost:1234"), false).unwrap();
        let challenge = begin_adding(&rp, "session-1", 7, "alice", &[]).unwrap();
        let json = serde_json::to_value(&challenge).unwrap();
        assert_eq!(json["publicKey"]["rp"]["id"], "localhost");
        assert_eq!(json["publicKey"]["user"]["name"], "alice");
        assert!(adding().take("session-1").is_some());
    }
}
