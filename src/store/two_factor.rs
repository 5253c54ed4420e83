//! Second factors: authenticator secrets, recovery code digests, the roles that must have
//! a second factor, and sign-ins waiting for their second step.

use super::{Store, StoreResult};
use rusqlite::{params, OptionalExtension};

/// A user's authenticator app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpRow {
    pub secret_base32: String,
    /// When a code confirmed it; until then it does not count.
    pub confirmed_at: Option<i64>,
    /// The time step of the last code accepted (a code counts once).
    pub last_used_step: Option<i64>,
}

/// What second factors a user has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactorSummary {
    pub authenticator: bool,
    pub recovery_codes_left: u32,
    pub security_keys: u32,
}

impl FactorSummary {
    /// Whether sign-in asks this user for a second step.
    pub fn any(&self) -> bool {
        self.authenticator || self.recovery_codes_left > 0 || self.security_keys > 0
    }
}

/// A registered security key, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityKeyRow {
    pub id: i64,
    pub name: String,
    /// The host name it was registered at (it works only there).
    pub rp_id: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// Why a sign-in waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingPurpose {
    /// The password was right; a code from the app or a recovery code is next.
    Code,
    /// The role must have a second factor and the user has none: enrol one first.
    Enrol,
}

impl PendingPurpose {
    fn as_str(self) -> &'static str {
        match self {
            PendingPurpose::Code => "code",
            PendingPurpose::Enrol => "enrol",
        }
    }
}

/// A security key to register.
pub struct NewSecurityKey<'a> {
    pub name: &'a str,
    /// Its credential ID, base64url.
    pub credential_id: &'a str,
    pub rp_id: &'a str,
    pub key_json: &'a str,
}

/// A sign-in to hold until its second step.
pub struct NewPendingSignIn<'a> {
    pub token_sha256: &'a str,
    pub user_id: i64,
    pub purpose: PendingPurpose,
    pub next: &'a str,
    pub secret_base32: Option<&'a str>,
    pub now: i64,
    pub remote_addr: &'a str,
}

/// A sign-in waiting for its second step.
#[derive(Debug, Clone)]
pub struct PendingRow {
    pub user: super::UserRow,
    pub purpose: PendingPurpose,
    pub next: String,
    /// For `Enrol`: the secret being enrolled.
    pub secret_base32: Option<String>,
    pub created_at: i64,
    /// The user has security keys to offer.
    pub has_security_keys: bool,
}

impl PendingRow {
    /// The secret being enrolled, when this sign-in waits for an enrolment.
    pub fn enrolling(&self) -> Option<&str> {
        match self.purpose {
            PendingPurpose::Enrol => self.secret_base32.as_deref(),
            PendingPurpose::Code => None,
        }
    }
}

impl Store {
    pub fn totp(&self, user_id: i64) -> StoreResult<Option<TotpRow>> {
        self.with(|c| {
            c.query_row(
                "SELECT secret_base32, confirmed_at, last_used_step FROM totp_secrets WHERE user_id = ?1",
                [user_id],
                |r| {
                    Ok(TotpRow {
                        secret_base32: r.get(0)?,
                        confirmed_at: r.get(1)?,
                        last_used_step: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Makes `secret` the user's confirmed authenticator, the step of the confirming code
    /// already used.
    pub fn confirm_totp(
        &self,
        user_id: i64,
        secret_base32: &str,
        step: i64,
        now: i64,
    ) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO totp_secrets (user_id, secret_base32, confirmed_at, last_used_step, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?3)
                 ON CONFLICT (user_id) DO UPDATE SET secret_base32 = ?2, confirmed_at = ?3,
                     last_used_step = ?4",
                params![user_id, secret_base32, now, step],
            )
            .map(|_| ())
        })
    }

    /// Records that the code of `step` was used. `false` when that step (or a later one)
    /// was used already: two requests racing with one code cannot both pass.
    pub fn use_totp_step(&self, user_id: i64, step: i64) -> StoreResult<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE totp_secrets SET last_used_step = ?2
                 WHERE user_id = ?1 AND confirmed_at IS NOT NULL
                   AND (last_used_step IS NULL OR last_used_step < ?2)",
                params![user_id, step],
            )
            .map(|n| n == 1)
        })
    }

    pub fn remove_totp(&self, user_id: i64) -> StoreResult<bool> {
        self.with(|c| {
            c.execute("DELETE FROM totp_secrets WHERE user_id = ?1", [user_id])
                .map(|n| n > 0)
        })
    }

    /// Replaces the user's recovery codes with these digests.
    pub fn replace_recovery_codes(&self, user_id: i64, digests: &[String]) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [user_id])?;
            for d in digests {
                tx.execute(
                    "INSERT INTO recovery_codes (user_id, code_sha256) VALUES (?1, ?2)",
                    params![user_id, d],
                )?;
            }
            tx.commit()
        })
    }

    /// Uses up the recovery code with this digest; `false` when there is no such unused code.
    pub fn use_recovery_code(&self, user_id: i64, digest: &str, now: i64) -> StoreResult<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE recovery_codes SET used_at = ?3
                 WHERE user_id = ?1 AND code_sha256 = ?2 AND used_at IS NULL",
                params![user_id, digest, now],
            )
            .map(|n| n == 1)
        })
    }

    /// Removes every second factor of the user; returns whether there was any.
    pub fn reset_factors(&self, user_id: i64) -> StoreResult<bool> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let a = tx.execute("DELETE FROM totp_secrets WHERE user_id = ?1", [user_id])?;
            let b = tx.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [user_id])?;
            let c = tx.execute("DELETE FROM security_keys WHERE user_id = ?1", [user_id])?;
            tx.execute("DELETE FROM pending_sign_ins WHERE user_id = ?1", [user_id])?;
            tx.commit()?;
            Ok(a + b + c > 0)
        })
    }

    pub fn factors(&self, user_id: i64) -> StoreResult<FactorSummary> {
        self.with(|c| {
            c.query_row(
                "SELECT
                   EXISTS (SELECT 1 FROM totp_secrets WHERE user_id = ?1 AND confirmed_at IS NOT NULL),
                   (SELECT COUNT(*) FROM recovery_codes WHERE user_id = ?1 AND used_at IS NULL),
                   (SELECT COUNT(*) FROM security_keys WHERE user_id = ?1)",
                [user_id],
                |r| {
                    Ok(FactorSummary {
                        authenticator: r.get(0)?,
                        recovery_codes_left: r.get(1)?,
                        security_keys: r.get(2)?,
                    })
                },
            )
        })
    }

    /// Registers a security key (`key_json` as webauthn-rs serializes it).
    pub fn add_security_key(
        &self,
        user_id: i64,
        key: &NewSecurityKey<'_>,
        now: i64,
    ) -> StoreResult<i64> {
        self.with(|c| {
            c.execute(
                "INSERT INTO security_keys (user_id, name, credential_id, rp_id, key_json, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![user_id, key.name, key.credential_id, key.rp_id, key.key_json, now],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn security_keys(&self, user_id: i64) -> StoreResult<Vec<SecurityKeyRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, name, rp_id, created_at, last_used_at FROM security_keys
                 WHERE user_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([user_id], |r| {
                Ok(SecurityKeyRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    rp_id: r.get(2)?,
                    created_at: r.get(3)?,
                    last_used_at: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The user's keys registered at `rp_id`, as webauthn-rs serialized them.
    pub fn security_keys_json(&self, user_id: i64, rp_id: &str) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT key_json FROM security_keys WHERE user_id = ?1 AND rp_id = ?2 ORDER BY id",
            )?;
            let rows = st.query_map(params![user_id, rp_id], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Records a sign-in with the key `credential_id` of `user_id` (its new state, e.g.
    /// the signature counter); `false` when the user has no such key.
    pub fn security_key_used(
        &self,
        user_id: i64,
        credential_id: &str,
        key_json: &str,
        now: i64,
    ) -> StoreResult<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE security_keys SET key_json = ?3, last_used_at = ?4
                 WHERE user_id = ?1 AND credential_id = ?2",
                params![user_id, credential_id, key_json, now],
            )
            .map(|n| n == 1)
        })
    }

    /// Removes the user's key `id`; `false` when they have no such key.
    pub fn remove_security_key(&self, user_id: i64, id: i64) -> StoreResult<bool> {
        self.with(|c| {
            c.execute(
                "DELETE FROM security_keys WHERE user_id = ?1 AND id = ?2",
                params![user_id, id],
            )
            .map(|n| n == 1)
        })
    }

    /// The roles that must have a second factor.
    pub fn two_factor_required(&self) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT role FROM two_factor_required ORDER BY role")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Whether users of `role` must have a second factor.
    pub fn requires_two_factor(&self, role: &str) -> StoreResult<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM two_factor_required WHERE role = ?1)",
                [role],
                |r| r.get(0),
            )
        })
    }

    pub fn set_two_factor_required(&self, roles: &[&str]) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute("DELETE FROM two_factor_required", [])?;
            for r in roles {
                tx.execute("INSERT INTO two_factor_required (role) VALUES (?1)", [r])?;
            }
            tx.commit()
        })
    }

    pub fn create_pending_sign_in(&self, p: &NewPendingSignIn<'_>) -> StoreResult<()> {
        self.with(|c| {
            // One waiting sign-in per user: a new password sign-in replaces the last.
            c.execute("DELETE FROM pending_sign_ins WHERE user_id = ?1", [p.user_id])?;
            c.execute(
                "INSERT INTO pending_sign_ins (token_sha256, user_id, purpose, next, secret_base32, created_at, remote_addr)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    p.token_sha256,
                    p.user_id,
                    p.purpose.as_str(),
                    p.next,
                    p.secret_base32,
                    p.now,
                    p.remote_addr
                ],
            )
            .map(|_| ())
        })
    }

    /// The waiting sign-in, if it is younger than `since`.
    pub fn pending_sign_in(
        &self,
        token_sha256: &str,
        since: i64,
    ) -> StoreResult<Option<PendingRow>> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {}, p.purpose, p.next, p.secret_base32, p.created_at,
                       EXISTS (SELECT 1 FROM security_keys k WHERE k.user_id = p.user_id)
                     FROM pending_sign_ins p JOIN users u ON u.id = p.user_id
                     WHERE p.token_sha256 = ?1 AND p.created_at >= ?2",
                    super::USER_COLUMNS
                ),
                params![token_sha256, since],
                |r| {
                    let purpose: String = r.get(5)?;
                    Ok(PendingRow {
                        user: super::user_from_row(r, 0)?,
                        purpose: if purpose == "enrol" {
                            PendingPurpose::Enrol
                        } else {
                            PendingPurpose::Code
                        },
                        next: r.get(6)?,
                        secret_base32: r.get(7)?,
                        created_at: r.get(8)?,
                        has_security_keys: r.get(9)?,
                    })
                },
            )
            .optional()
        })
    }

    pub fn delete_pending_sign_in(&self, token_sha256: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM pending_sign_ins WHERE token_sha256 = ?1",
                [token_sha256],
            )
            .map(|_| ())
        })
    }

    /// Removes waiting sign-ins older than `before`.
    pub fn purge_pending_sign_ins(&self, before: i64) -> StoreResult<usize> {
        self.with(|c| {
            c.execute(
                "DELETE FROM pending_sign_ins WHERE created_at < ?1",
                [before],
            )
        })
    }

    /// Records on a session that it proved a second factor now.
    pub fn mark_second_factor(&self, session_sha256: &str, now: i64) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE sessions SET second_factor_at = ?2 WHERE token_sha256 = ?1",
                params![session_sha256, now],
            )
            .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_user() -> (Store, i64) {
        let s = Store::open_in_memory().unwrap();
        let id = s.create_user("alice", "admin", "phc", 1).unwrap();
        (s, id)
    }

    #[test]
    fn a_code_step_is_used_once_even_when_two_race() {
        let (s, id) = store_with_user();
        s.confirm_totp(id, "SECRET", 100, 5).unwrap();
        assert!(!s.use_totp_step(id, 100).unwrap(), "the confirming code");
        assert!(s.use_totp_step(id, 101).unwrap());
        assert!(!s.use_totp_step(id, 101).unwrap());
        assert!(!s.use_totp_step(id, 99).unwrap());
        assert!(s.factors(id).unwrap().authenticator);
    }

    #[test]
    fn recovery_codes_work_once_and_reset_removes_everything() {
        let (s, id) = store_with_user();
        s.replace_recovery_codes(id, &["a".into(), "b".into()])
            .unwrap();
        assert_eq!(s.factors(id).unwrap().recovery_codes_left, 2);
        assert!(s.use_recovery_code(id, "a", 5).unwrap());
        assert!(!s.use_recovery_code(id, "a", 6).unwrap());
        assert!(!s.use_recovery_code(id, "zzz", 6).unwrap());
        assert_eq!(s.factors(id).unwrap().recovery_codes_left, 1);
        s.confirm_totp(id, "S", 1, 1).unwrap();
        assert!(s.reset_factors(id).unwrap());
        assert_eq!(s.factors(id).unwrap(), FactorSummary::default());
        assert!(!s.reset_factors(id).unwrap());
    }

    #[test]
    fn a_pending_sign_in_expires_and_one_per_user() {
        let (s, id) = store_with_user();
        let pending = |token, purpose, secret| NewPendingSignIn {
            token_sha256: token,
            user_id: id,
            purpose,
            next: "/vms",
            secret_base32: secret,
            now: 100,
            remote_addr: "1.2.3.4",
        };
        s.create_pending_sign_in(&pending("t1", PendingPurpose::Code, None))
            .unwrap();
        assert!(s.pending_sign_in("t1", 50).unwrap().is_some());
        assert!(s.pending_sign_in("t1", 101).unwrap().is_none(), "too old");
        s.create_pending_sign_in(&pending("t2", PendingPurpose::Enrol, Some("S")))
            .unwrap();
        assert!(s.pending_sign_in("t1", 0).unwrap().is_none(), "replaced");
        let p = s.pending_sign_in("t2", 0).unwrap().unwrap();
        assert_eq!(p.purpose, PendingPurpose::Enrol);
        assert_eq!(p.enrolling(), Some("S"));
        assert_eq!(p.user.username, "alice");
        s.delete_pending_sign_in("t2").unwrap();
        assert!(s.pending_sign_in("t2", 0).unwrap().is_none());
    }

    #[test]
    fn security_keys_belong_to_their_user_and_count_as_a_factor() {
        let (s, id) = store_with_user();
        let other = s.create_user("bob", "viewer", "phc", 1).unwrap();
        let key = NewSecurityKey {
            name: "blue key",
            credential_id: "cred-1",
            rp_id: "kvm1.example.com",
            key_json: "{}",
        };
        let key_id = s.add_security_key(id, &key, 5).unwrap();
        assert!(s.factors(id).unwrap().any());
        assert_eq!(s.factors(id).unwrap().security_keys, 1);
        assert_eq!(
            s.security_keys_json(id, "kvm1.example.com").unwrap(),
            vec!["{}"]
        );
        assert!(s
            .security_keys_json(id, "other.example.com")
            .unwrap()
            .is_empty());
        assert!(!s
            .security_key_used(other, "cred-1", "{\"n\":1}", 6)
            .unwrap());
        assert!(s.security_key_used(id, "cred-1", "{\"n\":1}", 6).unwrap());
        assert_eq!(s.security_keys(id).unwrap()[0].last_used_at, Some(6));
        assert!(!s.remove_security_key(other, key_id).unwrap());
        assert!(s.remove_security_key(id, key_id).unwrap());
        assert!(!s.factors(id).unwrap().any());
    }

    #[test]
    fn required_roles_are_replaced_as_a_whole() {
        let (s, _) = store_with_user();
        assert!(s.two_factor_required().unwrap().is_empty());
        s.set_two_factor_required(&["admin", "operator"]).unwrap();
        assert_eq!(s.two_factor_required().unwrap(), vec!["admin", "operator"]);
        assert!(s.requires_two_factor("operator").unwrap());
        assert!(!s.requires_two_factor("viewer").unwrap());
        s.set_two_factor_required(&[]).unwrap();
        assert!(s.two_factor_required().unwrap().is_empty());
    }
}
