//! One-time notices after a form is sent (post/redirect/get): the POST leaves a notice
//! (and, for a new API token, the secret to show once) in a short-lived slot keyed by
//! the sign-in that sent it; the next page that sign-in reads takes and shows it. The
//! slot is in memory only: never in a URL, a cookie or the log.

use super::session::Authed;
use actix_web::http::header;
use actix_web::HttpResponse;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a notice waits for the page after the redirect.
const KEEP_FOR: Duration = Duration::from_secs(120);
/// At most this many sign-ins hold a waiting notice at once (oldest dropped).
const MAX_SLOTS: usize = 10_000;

/// What the page after a form shows once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flash {
    /// A sentence saying what happened.
    pub notice: String,
    /// A warning that goes with it (e.g. a thin volume larger than the pool's free space).
    pub warning: Option<String>,
    /// A secret shown once (a new API token).
    pub secret: Option<String>,
}

impl Flash {
    pub fn notice(notice: impl Into<String>) -> Self {
        Flash {
            notice: notice.into(),
            ..Default::default()
        }
    }

    pub fn with_warning(mut self, warning: Option<String>) -> Self {
        self.warning = warning;
        self
    }
}

struct Slot {
    flash: Flash,
    until: Instant,
}

fn slots() -> &'static Mutex<HashMap<String, Slot>> {
    static SLOTS: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    SLOTS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Leaves `flash` for the next page `who` reads (replacing one not yet shown).
pub fn put(who: &Authed, flash: Flash) {
    put_for(&who.credential_sha256, flash)
}

/// Leaves `flash` for the next page read with the session whose digest is
/// `credential_sha256` (a sign-in that has just made it).
pub fn put_for(credential_sha256: &str, flash: Flash) {
    let now = Instant::now();
    let Ok(mut slots) = slots().lock() else {
        return;
    };
    slots.retain(|_, s| s.until > now);
    if slots.len() >= MAX_SLOTS {
        if let Some(oldest) = slots
            .iter()
            .min_by_key(|(_, s)| s.until)
            .map(|(k, _)| k.clone())
        {
            slots.remove(&oldest);
        }
    }
    slots.insert(
        credential_sha256.to_string(),
        Slot {
            flash,
            until: now + KEEP_FOR,
        },
    );
}

/// Takes the notice waiting for `who`, if any: it is shown once.
pub fn take(who: &Authed) -> Option<Flash> {
    let mut slots = slots().lock().ok()?;
    let slot = slots.remove(&who.credential_sha256)?;
    (slot.until > Instant::now()).then_some(slot.flash)
}

/// A 303 to the page `location` with `flash` waiting for it.
pub fn redirect(who: &Authed, location: &str, flash: Flash) -> HttpResponse {
    put(who, flash);
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::web::session::Credential;

    fn who(hash: &str) -> Authed {
        Authed {
            user_id: 1,
            username: "a".into(),
            role: Role::Admin,
            credential: Credential::ApiToken,
            remote_addr: "-".into(),
            credential_sha256: hash.into(),
        }
    }

    #[test]
    fn shown_once_and_only_to_its_sign_in() {
        put(&who("flash-test-1"), Flash::notice("Done."));
        assert_eq!(take(&who("flash-test-2")), None);
        assert_eq!(take(&who("flash-test-1")).unwrap().notice, "Done.");
        assert_eq!(take(&who("flash-test-1")), None);
    }
}
