//! Admin operations on accounts and settings: users, API tokens, named sizes. The
//! caller checks the typed values (and hashes a new password); these record the change.

use super::{execute, Action, Caller, Denied, Op, Services};
use crate::auth::Role;
use crate::domain::capacity::units_text;
use crate::lifecycle::{FieldError, LcResult, LifecycleError};
use crate::store::{StoreError, UserRow};
use std::sync::Arc;

type Done<T> = Result<LcResult<T>, Denied>;

/// Adds a user with an Argon2id `password_phc`; a taken name is an error at `username`.
pub async fn create_user(
    svc: &Arc<Services>,
    caller: &Caller,
    username: &str,
    role: Role,
    password_phc: String,
) -> Done<()> {
    let u = username.to_string();
    execute(
        svc,
        caller,
        Op::admin(
            Action::UserCreate,
            username,
            move |s| match s
                .store
                .create_user(&u, role.as_str(), &password_phc, super::now())
            {
                Ok(_) => Ok(()),
                Err(StoreError::Duplicate(_)) => Err(LifecycleError::Invalid(vec![FieldError {
                    field: "username",
                    message: format!("A user named {u} exists already. Pick another name."),
                }])),
                Err(e) => Err(e.into()),
            },
            move |()| format!("role {role}"),
        ),
    )
    .await
}

/// Deletes a user with their sessions and API tokens; answers their id (so the caller
/// can close what they had open).
pub async fn delete_user(svc: &Arc<Services>, caller: &Caller, username: &str) -> Done<i64> {
    let u = username.to_string();
    execute(
        svc,
        caller,
        Op::admin(
            Action::UserDelete,
            username,
            move |s| {
                let id = s.store.find_user(&u)?.map(|row| row.id);
                match id {
                    Some(id) if s.store.delete_user(&u)? => Ok(id),
                    _ => Err(LifecycleError::NotFound(format!(
                        "There is no user named {u}."
                    ))),
                }
            },
            |_| "sessions and API tokens revoked".into(),
        ),
    )
    .await
}

/// Records a new API token (its SHA-256 only) for `username`; answers the user.
pub async fn create_token(
    svc: &Arc<Services>,
    caller: &Caller,
    username: &str,
    label: String,
    token_sha256: String,
) -> Done<UserRow> {
    let u = username.to_string();
    let detail = label.clone();
    execute(
        svc,
        caller,
        Op::admin(
            Action::TokenCreate,
            username,
            move |s| {
                let Some(user) = s.store.find_user(&u)? else {
                    return Err(LifecycleError::Invalid(vec![FieldError {
                        field: "token_user",
                        message: format!("There is no user named {u}."),
                    }]));
                };
                s.store
                    .create_api_token(user.id, &token_sha256, &label, super::now())?;
                Ok(user)
            },
            move |_| detail,
        ),
    )
    .await
}

pub async fn delete_token(svc: &Arc<Services>, caller: &Caller, id: i64) -> Done<()> {
    execute(
        svc,
        caller,
        Op::admin(
            Action::TokenDelete,
            id.to_string(),
            move |s| {
                if s.store.delete_api_token(id)? {
                    Ok(())
                } else {
                    Err(LifecycleError::NotFound(
                        "There is no such API token.".into(),
                    ))
                }
            },
            |()| String::new(),
        ),
    )
    .await
}

pub async fn set_flavor(svc: &Arc<Services>, caller: &Caller, name: &str, units: u32) -> Done<()> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::admin(
            Action::FlavorSet,
            name,
            move |s| Ok(s.store.set_flavor(&n, units)?),
            move |()| units_text(units),
        ),
    )
    .await
}

pub async fn delete_flavor(svc: &Arc<Services>, caller: &Caller, name: &str) -> Done<()> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::admin(
            Action::FlavorDelete,
            name,
            move |s| {
                if s.store.delete_flavor(&n)? {
                    Ok(())
                } else {
                    Err(LifecycleError::NotFound(format!(
                        "There is no size named {n}."
                    )))
                }
            },
            |()| String::new(),
        ),
    )
    .await
}
