//! Accounts, passwords, sessions, CSRF, roles, API tokens and login throttling.
//!
//! Pure rules live here next to the blocking calls into the store; the web layer
//! decides when to run them (off the async runtime, via `web::block`).

pub mod password;
pub mod role;
pub mod secret;
pub mod security_keys;
pub mod throttle;
pub mod two_factor;

pub use role::Role;

/// Why an account name is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("Enter a user name of 1 to 64 characters.")]
    Length,
    #[error("A user name may only contain letters, digits, '.', '_' and '-', and must start with a letter or digit.")]
    Characters,
}

/// Account names: short, plain, safe in logs and URLs.
pub fn validate_username(name: &str) -> Result<(), UsernameError> {
    if name.is_empty() || name.len() > 64 {
        return Err(UsernameError::Length);
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(UsernameError::Characters);
    }
    Ok(())
}

/// Why a new password is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    #[error("Use a password of at least 10 characters.")]
    TooShort,
    #[error("Use a password of at most 1024 characters.")]
    TooLong,
    #[error("The two passwords do not match.")]
    Mismatch,
}

pub const MIN_PASSWORD_CHARS: usize = 10;

pub fn validate_new_password(
    password: &str,
    confirm: Option<&str>,
) -> Result<(), PasswordPolicyError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(PasswordPolicyError::TooShort);
    }
    if n > 1024 {
        return Err(PasswordPolicyError::TooLong);
    }
    if let Some(c) = confirm {
        if c != password {
            return Err(PasswordPolicyError::Mismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("ops-1.b_c").is_ok());
        assert_eq!(validate_username(""), Err(UsernameError::Length));
        assert_eq!(validate_username("-x"), Err(UsernameError::Characters));
        assert_eq!(validate_username("a b"), Err(UsernameError::Characters));
        assert_eq!(
            validate_username("<script>"),
            Err(UsernameError::Characters)
        );
        assert_eq!(
            validate_username(&"a".repeat(65)),
            Err(UsernameError::Length)
        );
    }

    #[test]
    fn passwords() {
        assert_eq!(
            validate_new_password("short", None),
            Err(PasswordPolicyError::TooShort)
        );
        assert_eq!(
            validate_new_password("long enough pw", Some("other")),
            Err(PasswordPolicyError::Mismatch)
        );
        assert!(validate_new_password("long enough pw", Some("long enough pw")).is_ok());
    }
}
