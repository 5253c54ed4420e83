//! Console tickets: 256 random bits, single use, short-lived, bound to the credential
//! that minted them (session or API token), the VM and the console kind. Only their
//! SHA-256 is kept, in memory.

use super::ConsoleKind;
use crate::auth::secret::{random_token, sha256_hex};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tickets waiting at once, across all users; more are refused until some expire.
pub const MAX_PENDING_TICKETS: usize = 10_000;
/// Tickets one user may have waiting at once, so that no one user can fill the table.
pub const MAX_PENDING_TICKETS_PER_USER: usize = 20;

/// What a ticket allows, and to whom.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user_id: i64,
    pub username: String,
    /// SHA-256 of the session cookie or API token that minted the ticket.
    pub credential_sha256: String,
    pub vm: String,
    pub kind: ConsoleKind,
    /// VNC without keyboard and mouse (viewers, when allowed).
    pub view_only: bool,
    /// Serial: take the console over from whoever holds it.
    pub force: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Unknown, already used, or never issued.
    #[error("the console ticket is not valid or was already used; open the console again")]
    Unknown,
    /// Issued, but not used in time.
    #[error("the console ticket expired; open the console again")]
    Expired,
    /// Too many tickets are waiting.
    #[error("too many console tickets are waiting; try again in a few seconds")]
    TooMany,
    /// This user has too many tickets waiting.
    #[error("you already have {MAX_PENDING_TICKETS_PER_USER} console tickets waiting, the most one user may have; open the consoles you asked for, or wait until their tickets expire (at most 30 seconds), then try again")]
    TooManyForUser,
}

#[derive(Default)]
pub struct Tickets {
    pending: Mutex<HashMap<String, (Grant, Instant)>>,
}

impl Tickets {
    /// Issues a ticket for `grant`, valid for `lifetime`. Returns the ticket itself, which
    /// is shown once and not kept.
    pub fn mint(&self, grant: Grant, lifetime: Duration) -> Result<String, TicketError> {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, (_, expires)| *expires > now);
        let mine = pending
            .values()
            .filter(|(g, _)| g.user_id == grant.user_id)
            .count();
        if mine >= MAX_PENDING_TICKETS_PER_USER {
            return Err(TicketError::TooManyForUser);
        }
        if pending.len() >= MAX_PENDING_TICKETS {
            return Err(TicketError::TooMany);
        }
        let ticket = random_token();
        pending.insert(sha256_hex(&ticket), (grant, now + lifetime));
        Ok(ticket)
    }

    /// Uses up a ticket: it is gone afterwards, whatever the outcome.
    pub fn redeem(&self, ticket: &str) -> Result<Grant, TicketError> {
        let key = sha256_hex(ticket);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (grant, expires) = pending.remove(&key).ok_or(TicketError::Unknown)?;
        if Instant::now() >= expires {
            return Err(TicketError::Expired);
        }
        Ok(grant)
    }

    /// Tickets waiting (expired ones included until the next mint).
    pub fn pending(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            user_id: 1,
            username: "alice".into(),
            credential_sha256: "c".into(),
            vm: "web01".into(),
            kind: ConsoleKind::Vnc,
            view_only: false,
            force: false,
        }
    }

    #[test]
    fn a_ticket_is_single_use() {
        let t = Tickets::default();
        let ticket = t.mint(grant(), Duration::from_secs(30)).unwrap();
        assert!(ticket.len() >= 43, "256 bits in base64");
        assert_eq!(t.redeem(&ticket).unwrap().vm, "web01");
        assert_eq!(t.redeem(&ticket).unwrap_err(), TicketError::Unknown);
        assert_eq!(t.redeem("made-up").unwrap_err(), TicketError::Unknown);
    }

    #[test]
    fn one_user_cannot_fill_the_table() {
        let t = Tickets::default();
        for _ in 0..MAX_PENDING_TICKETS_PER_USER {
            t.mint(grant(), Duration::from_secs(30)).unwrap();
        }
        assert_eq!(
            t.mint(grant(), Duration::from_secs(30)).unwrap_err(),
            TicketError::TooManyForUser
        );
        let bob = Grant {
            user_id: 2,
            ..grant()
        };
        let ticket = t
            .mint(bob, Duration::from_secs(30))
            .expect("others still may");
        t.redeem(&ticket).unwrap();
    }

    #[test]
    fn an_expired_ticket_is_refused_and_gone() {
        let t = Tickets::default();
        let ticket = t.mint(grant(), Duration::from_millis(0)).unwrap();
        assert_eq!(t.redeem(&ticket).unwrap_err(), TicketError::Expired);
        assert_eq!(t.redeem(&ticket).unwrap_err(), TicketError::Unknown);
        assert_eq!(t.pending(), 0);
    }
}
