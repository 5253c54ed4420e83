//! Second factors as plain rules: time-based one-time codes (RFC 6238, HMAC-SHA1, six
//! digits, 30-second steps, what every authenticator app speaks), the otpauth URI an app
//! scans, and recovery codes as people type them.

use ring::hmac;

/// Seconds per code.
pub const STEP_SECONDS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Codes one step either side of now are accepted (clocks drift, people type slowly).
pub const WINDOW_STEPS: i64 = 1;
/// Length of a new secret (RFC 4226 recommends 160 bits).
pub const SECRET_BYTES: usize = 20;

/// Why a typed code was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeRefusal {
    #[error("Enter the 6-digit code your authenticator app shows now.")]
    Malformed,
    #[error("That code is not right. Check the clock of the device with the authenticator app, and enter the code it shows now.")]
    Wrong,
    #[error("That code was used already. Wait for the next code and enter that one.")]
    Reused,
}

/// The time step of `unix_seconds`.
pub fn step_at(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(STEP_SECONDS)
}

/// The code for `step` (RFC 4226 dynamic truncation), `digits` long.
pub fn code_for_step(secret: &[u8], step: i64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &(step as u64).to_be_bytes());
    let mac = tag.as_ref();
    let offset = (mac[mac.len() - 1] & 0x0f) as usize;
    let binary = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    binary % 10u32.pow(digits)
}

/// A code as an app shows it: zero-padded.
pub fn format_code(code: u32) -> String {
    format!("{code:0width$}", width = DIGITS as usize)
}

/// Checks a typed code at `now`: the digits may carry spaces; a code from a step at or
/// before `last_used_step` is refused (each code counts once). On success, the step the
/// code belongs to, which becomes the new `last_used_step`.
pub fn check_code(
    secret: &[u8],
    typed: &str,
    now: i64,
    last_used_step: Option<i64>,
) -> Result<i64, CodeRefusal> {
    let digits: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() != DIGITS as usize || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(CodeRefusal::Malformed);
    }
    let current = step_at(now);
    let mut matched = None;
    for step in current - WINDOW_STEPS..=current + WINDOW_STEPS {
        // Every step is computed and compared, so the time taken says nothing of which.
        let candidate = format_code(code_for_step(secret, step, DIGITS));
        if same(&candidate, &digits) && matched.is_none() {
            matched = Some(step);
        }
    }
    match matched {
        None => Err(CodeRefusal::Wrong),
        Some(step) if last_used_step.is_some_and(|last| step <= last) => Err(CodeRefusal::Reused),
        Some(step) => Ok(step),
    }
}

fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A secret as apps take it: base32 without padding.
pub fn secret_base32(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// A base32 secret back to bytes (as stored).
pub fn secret_from_base32(text: &str) -> Option<Vec<u8>> {
    data_encoding::BASE32_NOPAD.decode(text.as_bytes()).ok()
}

/// The `otpauth://` URI an authenticator app scans: the issuer names this host so one
/// phone can tell several virtdeck hosts apart.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let label = format!("{}:{}", enc(issuer), enc(account)).replace('+', "%20");
    format!(
        "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        secret_base32(secret),
        enc(issuer).replace('+', "%20")
    )
}

/// How many recovery codes a user gets.
pub const RECOVERY_CODES: usize = 10;
/// Letters of recovery codes: no 0/o, 1/l/i, so they survive being read aloud or printed.
pub const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// A recovery code as shown: `xxxx-xxxx-xxxx` from 12 letters of the alphabet (≈ 59 bits).
pub fn recovery_code_from(letters: &[u8; 12]) -> String {
    let s: String = letters
        .iter()
        .map(|b| RECOVERY_ALPHABET[*b as usize % RECOVERY_ALPHABET.len()] as char)
        .collect();
    format!("{}-{}-{}", &s[0..4], &s[4..8], &s[8..12])
}

/// A typed recovery code as it is compared: lower case, without spaces and dashes.
/// `None` when it cannot be one (wrong length or letters).
pub fn normalize_recovery_code(typed: &str) -> Option<String> {
    let s: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (s.len() == 12 && s.bytes().all(|b| RECOVERY_ALPHABET.contains(&b))).then_some(s)
}

/// Whether what was typed looks like a recovery code rather than an app's code.
pub fn looks_like_recovery_code(typed: &str) -> bool {
    typed.chars().any(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_sha1_test_vectors() {
        for (t, code) in [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(code_for_step(RFC_SECRET, step_at(t), 8), code, "t={t}");
        }
    }

    #[test]
    fn rfc_4226_hotp_test_vectors() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(code_for_step(RFC_SECRET, counter as i64, 6), *code);
        }
    }

    #[test]
    fn a_code_counts_within_one_step_either_side_and_only_once() {
        let now = 1_700_000_000;
        let here = format_code(code_for_step(RFC_SECRET, step_at(now), DIGITS));
        assert_eq!(check_code(RFC_SECRET, &here, now, None), Ok(step_at(now)));
        let spaced = format!("{} {}", &here[..3], &here[3..]);
        assert_eq!(check_code(RFC_SECRET, &spaced, now, None), Ok(step_at(now)));
        // Reused: the same step, or an older one, after it was used.
        assert_eq!(
            check_code(RFC_SECRET, &here, now, Some(step_at(now))),
            Err(CodeRefusal::Reused)
        );
        let previous = format_code(code_for_step(RFC_SECRET, step_at(now) - 1, DIGITS));
        assert_eq!(
            check_code(RFC_SECRET, &previous, now, None),
            Ok(step_at(now) - 1)
        );
        assert_eq!(
            check_code(RFC_SECRET, &previous, now, Some(step_at(now))),
            Err(CodeRefusal::Reused)
        );
        // Late: two steps old is refused.
        let late = format_code(code_for_step(RFC_SECRET, step_at(now) - 2, DIGITS));
        assert_eq!(
            check_code(RFC_SECRET, &late, now, None),
            Err(CodeRefusal::Wrong)
        );
        assert_eq!(
            check_code(RFC_SECRET, "12345", now, None),
            Err(CodeRefusal::Malformed)
        );
        assert_eq!(
            check_code(RFC_SECRET, "12a456", now, None),
            Err(CodeRefusal::Malformed)
        );
    }

    #[test]
    fn secrets_and_uris_are_what_apps_read() {
        assert_eq!(
            secret_base32(RFC_SECRET),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        assert_eq!(
            secret_from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").as_deref(),
            Some(RFC_SECRET)
        );
        assert_eq!(secret_from_base32("not base32!"), None);
        assert_eq!(
            otpauth_uri("virtdeck kvm-1", "alice", RFC_SECRET),
            "otpauth://totp/virtdeck%20kvm-1:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=virtdeck%20kvm-1&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn recovery_codes_read_back_however_they_are_typed() {
        let code = recovery_code_from(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(code, "abcd-efgh-jkmn");
        assert_eq!(
            normalize_recovery_code(" ABCD efgh-JKMN ").as_deref(),
            Some("abcdefghjkmn")
        );
        assert_eq!(normalize_recovery_code("abcd-efgh-jkm"), None);
        assert_eq!(normalize_recovery_code("abcd-efgh-jkm0"), None);
        assert!(looks_like_recovery_code("abcd-efgh-jkmn"));
        assert!(!looks_like_recovery_code("123 456"));
    }
}
