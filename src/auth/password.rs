//! Argon2id password hashes (PHC strings). CPU-bound: call off the async runtime.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("could not hash the password: {0}")]
    Hash(String),
}

/// Argon2id with the crate defaults: m=19456 KiB, t=2, p=1 (OWASP's recommendation).
fn hasher() -> Argon2<'static> {
    Argon2::default()
}

pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// A hash nobody's password matches, verified against for unknown users so that the
/// answer takes as long as for a real account.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&crate::auth::secret::random_token()).unwrap_or_default())
}

/// Checks `password` against the stored hash, or against a dummy hash when the
/// account does not exist (the result is then always false).
pub fn verify_password(password: &str, stored_phc: Option<&str>) -> bool {
    let (phc, real) = match stored_phc {
        Some(p) => (p, true),
        None => (dummy_hash(), false),
    };
    let ok = match argon2::password_hash::phc::PasswordHash::new(phc) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    };
    ok && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery", Some(&phc)));
        assert!(!verify_password("wrong", Some(&phc)));
        assert!(!verify_password("anything", None));
        assert!(!verify_password("x", Some("not a phc string")));
    }
}
