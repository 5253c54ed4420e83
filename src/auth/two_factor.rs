//! Second factors at sign-in and for sensitive changes: new secrets and recovery codes,
//! the QR code an authenticator app scans, and checking what a user typed against their
//! app or their recovery codes (each code counts once). Blocking: call off the runtime.

use crate::domain::totp::{self, CodeRefusal};
use crate::store::{Store, StoreError};
use rand::RngCore;

/// How long a right password waits for its second step, in seconds.
pub const PENDING_SECONDS: i64 = 300;

/// Which factor a typed code matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Used {
    Authenticator,
    RecoveryCode,
    SecurityKey,
}

impl Used {
    pub fn as_str(self) -> &'static str {
        match self {
            Used::Authenticator => "authenticator app",
            Used::RecoveryCode => "recovery code",
            Used::SecurityKey => "security key",
        }
    }
}

/// Why a second factor was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SecondFactorError {
    #[error("{0}")]
    Refused(CodeRefusal),
    #[error("That recovery code is not right, or it was used already.")]
    RecoveryCode,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new authenticator secret (160 random bits).
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; totp::SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    secret
}

/// Ten new recovery codes as shown to the user, and the digests kept of them.
pub fn new_recovery_codes() -> (Vec<String>, Vec<String>) {
    let mut rng = rand::rng();
    let codes: Vec<String> = (0..totp::RECOVERY_CODES)
        .map(|_| {
            let mut letters = [0u8; 12];
            // Rejection sampling keeps every letter equally likely.
            for l in letters.iter_mut() {
                let n = totp::RECOVERY_ALPHABET.len() as u8;
                *l = loop {
                    let b = (rng.next_u32() & 0xff) as u8;
                    if b < (256 / n as u16 * n as u16) as u8 {
                        break b % n;
                    }
                };
            }
            totp::recovery_code_from(&letters)
        })
        .collect();
    let digests = codes
        .iter()
        .filter_map(|c| totp::normalize_recovery_code(c))
        .map(|c| super::secret::sha256_hex(&c))
        .collect();
    (codes, digests)
}

/// The QR code of `text` as an SVG document, drawn here (no outside service sees the
/// secret).
pub fn qr_svg(text: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

/// Checks `typed` against the user's confirmed authenticator or unused recovery codes, and
/// uses it up (an app code's step, or the recovery code).
pub fn check(
    store: &Store,
    user_id: i64,
    typed: &str,
    now: i64,
) -> Result<Used, SecondFactorError> {
    if totp::looks_like_recovery_code(typed) {
        let Some(normalized) = totp::normalize_recovery_code(typed) else {
            return Err(SecondFactorError::RecoveryCode);
        };
        return if store.use_recovery_code(user_id, &super::secret::sha256_hex(&normalized), now)? {
            Ok(Used::RecoveryCode)
        } else {
            Err(SecondFactorError::RecoveryCode)
        };
    }
    let Some(row) = store.totp(user_id)?.filter(|r| r.confirmed_at.is_some()) else {
        return Err(SecondFactorError::Refused(CodeRefusal::Wrong));
    };
    let secret = totp::secret_from_base32(&row.secret_base32)
        .ok_or(SecondFactorError::Refused(CodeRefusal::Wrong))?;
    let step = totp::check_code(&secret, typed, now, row.last_used_step)
        .map_err(SecondFactorError::Refused)?;
    if store.use_totp_step(user_id, step)? {
        Ok(Used::Authenticator)
    } else {
        Err(SecondFactorError::Refused(CodeRefusal::Reused))
    }
}

/// [`check`] with the refusal as the sentence to show: `Ok(Err(sentence))` for a wrong,
/// reused or malformed code, `Err` only when the store fails.
pub fn check_or_refusal(
    store: &Store,
    user_id: i64,
    typed: &str,
    now: i64,
) -> Result<Result<Used, String>, StoreError> {
    match check(store, user_id, typed, now) {
        Ok(used) => Ok(Ok(used)),
        Err(SecondFactorError::Store(e)) => Err(e),
        Err(refused) => Ok(Err(refused.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_unique_readable_and_match_their_digests() {
        let (codes, digests) = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        assert_eq!(digests.len(), 10);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), 10);
        for (c, d) in codes.iter().zip(&digests) {
            let n = totp::normalize_recovery_code(c).unwrap();
            assert_eq!(&super::super::secret::sha256_hex(&n), d);
        }
    }

    #[test]
    fn a_code_is_checked_against_the_app_then_used_up() {
        let store = Store::open_in_memory().unwrap();
        let id = store.create_user("a", "admin", "x", 0).unwrap();
        let secret = new_secret();
        let now = 1_800_000_000;
        store
            .confirm_totp(
                id,
                &totp::secret_base32(&secret),
                totp::step_at(now) - 5,
                now,
            )
            .unwrap();
        let code = totp::format_code(totp::code_for_step(&secret, totp::step_at(now), 6));
        assert_eq!(check(&store, id, &code, now).unwrap(), Used::Authenticator);
        assert!(matches!(
            check(&store, id, &code, now),
            Err(SecondFactorError::Refused(CodeRefusal::Reused))
        ));
        let (codes, digests) = new_recovery_codes();
        store.replace_recovery_codes(id, &digests).unwrap();
        let typed = codes[3].to_uppercase().replace('-', " ");
        assert_eq!(check(&store, id, &typed, now).unwrap(), Used::RecoveryCode);
        assert!(matches!(
            check(&store, id, &codes[3], now),
            Err(SecondFactorError::RecoveryCode)
        ));
    }

    #[test]
    fn the_qr_code_is_an_svg() {
        let svg = qr_svg("otpauth://totp/x:y?secret=AAAA").unwrap();
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
    }
}
