//! Second-factor changes: enrolling an authenticator app, new recovery codes, removing
//! one's own factors (with a fresh code), an admin resetting someone's, and which roles
//! must have a second factor. Each is audited once through [`execute`].

use super::{execute, Action, Caller, Denied, Op, Services};
use crate::auth::two_factor::{self, SecondFactorError};
use crate::auth::Role;
use crate::domain::totp;
use crate::lifecycle::{FieldError, LcResult, LifecycleError};
use crate::store::UserRow;
use std::sync::Arc;

type Done<T> = Result<LcResult<T>, Denied>;

/// A refused code, as the field error of the form's box `field`.
fn code_error(e: SecondFactorError, field: &'static str) -> LifecycleError {
    match e {
        SecondFactorError::Store(e) => e.into(),
        other => LifecycleError::Invalid(vec![FieldError {
            field,
            message: other.to_string(),
        }]),
    }
}

/// Ten recovery codes for a user who has none left (their first second factor): shown
/// once, so returned; `None` when they still have some.
fn first_recovery_codes(s: &Services, user_id: i64) -> Result<Option<Vec<String>>, LifecycleError> {
    if s.store.factors(user_id)?.recovery_codes_left > 0 {
        return Ok(None);
    }
    let (codes, digests) = two_factor::new_recovery_codes();
    s.store.replace_recovery_codes(user_id, &digests)?;
    Ok(Some(codes))
}

/// What enrolling an authenticator app needs.
pub struct Enrolment {
    /// The new app's secret, as shown in its QR code.
    pub secret_base32: String,
    /// The code the new app shows now.
    pub code: String,
    /// A code from the app being replaced (or a recovery code), when there is one.
    pub current_code: Option<String>,
}

/// Makes the new secret the user's authenticator once `code` is its current code (and,
/// when an app is being replaced, `current_code` is a fresh code of the old one). A user
/// without recovery codes gets ten, returned to be shown once.
pub async fn enrol(
    svc: &Arc<Services>,
    caller: &Caller,
    user: &UserRow,
    e: Enrolment,
) -> Done<Option<Vec<String>>> {
    let Enrolment {
        secret_base32,
        code: typed,
        current_code,
    } = e;
    let user_id = user.id;
    execute(
        svc,
        caller,
        Op::signed_in(
            Action::TwoFactorEnrol,
            user.username.clone(),
            move |s| {
                let secret = totp::secret_from_base32(&secret_base32).ok_or_else(|| {
                    code_error(SecondFactorError::Refused(totp::CodeRefusal::Wrong), "code")
                })?;
                let now = super::now();
                if s.store.factors(user_id)?.authenticator {
                    let current = current_code.unwrap_or_default();
                    two_factor::check(&s.store, user_id, &current, now)
                        .map_err(|e| code_error(e, "current_code"))?;
                }
                let step = totp::check_code(&secret, &typed, now, None)
                    .map_err(|e| code_error(SecondFactorError::Refused(e), "code"))?;
                s.store.confirm_totp(user_id, &secret_base32, step, now)?;
                first_recovery_codes(s, user_id)
            },
            |codes: &Option<Vec<String>>| match codes {
                Some(_) => "authenticator app; 10 recovery codes".to_string(),
                None => "authenticator app".to_string(),
            },
        ),
    )
    .await
}

/// Ten new recovery codes (the old ones stop working), after a fresh second factor.
pub async fn new_recovery_codes(
    svc: &Arc<Services>,
    caller: &Caller,
    user_id: i64,
    typed: String,
) -> Done<Vec<String>> {
    execute(
        svc,
        caller,
        Op::signed_in(
            Action::TwoFactorRecoveryCodes,
            caller.username.clone(),
            move |s| {
                two_factor::check(&s.store, user_id, &typed, super::now())
                    .map_err(|e| code_error(e, "code"))?;
                let (codes, digests) = two_factor::new_recovery_codes();
                s.store.replace_recovery_codes(user_id, &digests)?;
                Ok(codes)
            },
            |_| "10 new recovery codes; the old ones no longer work".to_string(),
        ),
    )
    .await
}

/// Removes the caller's own second factors after a fresh code; refused while their role
/// must have one.
pub async fn remove_own(
    svc: &Arc<Services>,
    caller: &Caller,
    user_id: i64,
    typed: String,
) -> Done<()> {
    let role = caller.role;
    execute(
        svc,
        caller,
        Op::signed_in(
            Action::TwoFactorRemove,
            caller.username.clone(),
            move |s| {
                if s.store.requires_two_factor(role.as_str())? {
                    return Err(LifecycleError::Invalid(vec![FieldError {
                        field: "code",
                        message: format!(
                            "Your role ({role}) must have a second factor, so it cannot be removed. Set up a new authenticator app instead, or ask an admin."
                        ),
                    }]));
                }
                two_factor::check(&s.store, user_id, &typed, super::now())
                    .map_err(|e| code_error(e, "code"))?;
                s.store.reset_factors(user_id)?;
                Ok(())
            },
            |_| "authenticator app and recovery codes removed".to_string(),
        ),
    )
    .await
}

/// An admin removes every second factor of `username` (who lost their phone and codes)
/// and ends their sessions; they enrol again at their next sign-in when their role must
/// have one.
pub async fn reset(svc: &Arc<Services>, caller: &Caller, username: &str) -> Done<bool> {
    let u = username.to_string();
    execute(
        svc,
        caller,
        Op::admin(
            Action::TwoFactorReset,
            username,
            move |s| {
                let Some(user) = s.store.find_user(&u)? else {
                    return Err(LifecycleError::NotFound(format!(
                        "There is no user named {u}."
                    )));
                };
                let had = s.store.reset_factors(user.id)?;
                s.store.delete_user_sessions(user.id)?;
                Ok(had)
            },
            |had: &bool| {
                if *had {
                    "second factors removed; sessions ended".to_string()
                } else {
                    "had no second factor; sessions ended".to_string()
                }
            },
        ),
    )
    .await
}

/// Which roles must have a second factor (the rest may).
pub async fn set_required(svc: &Arc<Services>, caller: &Caller, roles: Vec<Role>) -> Done<()> {
    let detail = if roles.is_empty() {
        "no role".to_string()
    } else {
        roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    execute(
        svc,
        caller,
        Op::admin(
            Action::TwoFactorRequired,
            "",
            move |s| {
                let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                s.store.set_two_factor_required(&names)?;
                Ok(())
            },
            move |_| format!("required for: {detail}"),
        ),
    )
    .await
}

/// The longest name a security key may have.
pub const KEY_NAME_CHARS: usize = 60;

/// A security key's name as typed: trimmed, or a plain default; too long is refused.
pub fn key_name(typed: &str) -> Result<String, LifecycleError> {
    let name = typed.trim();
    if name.chars().count() > KEY_NAME_CHARS {
        return Err(LifecycleError::Invalid(vec![FieldError {
            field: "key_name",
            message: format!("Give the key a name of at most {KEY_NAME_CHARS} characters."),
        }]));
    }
    Ok(if name.is_empty() {
        "Security key".to_string()
    } else {
        name.to_string()
    })
}

/// Registers the key the browser made in the ceremony `ceremony` started, as `name`. A
/// user without recovery codes gets ten, returned to be shown once.
pub async fn add_security_key(
    svc: &Arc<Services>,
    caller: &Caller,
    user_id: i64,
    name: String,
    ceremony: String,
    credential: webauthn_rs::prelude::RegisterPublicKeyCredential,
) -> Done<Option<Vec<String>>> {
    let detail = name.clone();
    execute(
        svc,
        caller,
        Op::signed_in(
            Action::TwoFactorKeyAdd,
            caller.username.clone(),
            move |s| {
                let (key, rp) = crate::auth::security_keys::finish_adding(&ceremony, &credential)
                    .map_err(|e| {
                    LifecycleError::Invalid(vec![FieldError {
                        field: "key",
                        message: e.to_string(),
                    }])
                })?;
                let key_json = serde_json::to_string(&key)
                    .map_err(|e| LifecycleError::failed(format!("security key not stored: {e}")))?;
                let credential_id = data_encoding::BASE64URL_NOPAD.encode(key.cred_id().as_ref());
                s.store.add_security_key(
                    user_id,
                    &crate::store::two_factor::NewSecurityKey {
                        name: &name,
                        credential_id: &credential_id,
                        rp_id: &rp.id,
                        key_json: &key_json,
                    },
                    super::now(),
                )?;
                first_recovery_codes(s, user_id)
            },
            move |codes: &Option<Vec<String>>| match codes {
                Some(_) => format!("security key {detail}; 10 recovery codes"),
                None => format!("security key {detail}"),
            },
        ),
    )
    .await
}

/// Removes the caller's key `key_id` after a fresh code; refused when it is their last
/// factor and their role must have one.
pub async fn remove_security_key(
    svc: &Arc<Services>,
    caller: &Caller,
    user_id: i64,
    key_id: i64,
    typed: String,
) -> Done<()> {
    let role = caller.role;
    execute(
        svc,
        caller,
        Op::signed_in(
            Action::TwoFactorKeyRemove,
            caller.username.clone(),
            move |s| {
                two_factor::check(&s.store, user_id, &typed, super::now())
                    .map_err(|e| code_error(e, "key_code"))?;
                let f = s.store.factors(user_id)?;
                let last = !f.authenticator && f.recovery_codes_left == 0 && f.security_keys <= 1;
                if last && s.store.requires_two_factor(role.as_str())? {
                    return Err(LifecycleError::Invalid(vec![FieldError {
                        field: "key_code",
                        message: format!("This is your last second factor and your role ({role}) must have one. Add another first."),
                    }]));
                }
                if !s.store.remove_security_key(user_id, key_id)? {
                    return Err(LifecycleError::NotFound(
                        "You have no such security key.".into(),
                    ));
                }
                Ok(())
            },
            move |_| format!("security key {key_id} removed"),
        ),
    )
    .await
}
