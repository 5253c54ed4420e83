//! Two-factor sign-in: the second step after a right password (a code from the app or a
//! recovery code, under the same throttle as the password), enrolment at sign-in for a
//! role that must have a second factor, the account page where each user manages their
//! own factors, and the admin's reset and policy forms.

use super::super::errors::{html, AppError};
use super::super::flash::{self, Flash};
use super::super::session::{remote_addr, Authed, LOGIN_CSRF_COOKIE};
use super::super::{audit, db, now, AppState};
use super::account::{count_attempt, finish_sign_in, login_csrf_cookie};
use super::Chrome;
use crate::auth::secret::{random_token, secrets_equal, sha256_hex};
use crate::auth::two_factor::{self, Used};
use crate::auth::Role;
use crate::domain::totp;
use crate::lifecycle::LifecycleError;
use crate::service::{self, two_factor::Enrolment, Caller};
use crate::store::two_factor::{FactorSummary, NewPendingSignIn, PendingPurpose, PendingRow};
use crate::store::UserRow;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

/// The cookie of a sign-in waiting for its second step (never a session).
pub const PENDING_COOKIE: &str = "vd_pending";
/// The issuer shown in authenticator apps, before the host's name.
const ISSUER: &str = "virtdeck";

fn pending_cookie(value: String, secure: bool) -> Cookie<'static> {
    Cookie::build(PENDING_COOKIE, value)
        .path("/login")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .finish()
}

pub fn expired_pending_cookie(secure: bool) -> Cookie<'static> {
    let mut c = pending_cookie(String::new(), secure);
    c.make_removal();
    c
}

fn issuer(state: &AppState) -> String {
    let host = state
        .svc
        .cfg
        .fleet
        .name
        .clone()
        .or_else(|| {
            hostname::get()
                .ok()
                .map(|h| h.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    if host.is_empty() {
        ISSUER.to_string()
    } else {
        format!("{ISSUER} {host}")
    }
}

/// What an app scans to enrol `secret`.
struct Setup {
    secret_base32: String,
    uri: String,
    qr_svg: String,
}

impl Setup {
    fn new(state: &AppState, account: &str, secret_base32: &str) -> Result<Setup, AppError> {
        let secret = totp::secret_from_base32(secret_base32)
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("stored secret is not base32")))?;
        let uri = totp::otpauth_uri(&issuer(state), account, &secret);
        let qr_svg =
            two_factor::qr_svg(&uri).map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
        Ok(Setup {
            secret_base32: secret_base32.to_string(),
            uri,
            qr_svg,
        })
    }
}

fn caller_for(user: &UserRow, addr: &str) -> Caller {
    Caller {
        username: user.username.clone(),
        remote_addr: addr.to_string(),
        role: user.role.parse().unwrap_or(Role::Viewer),
    }
}

/// After a right password: holds the sign-in until its second step (or, for a role that
/// must have a second factor and a user who has none, until they enrol one).
pub(super) async fn begin_second_step(
    state: &AppState,
    req: &HttpRequest,
    user: UserRow,
    has_factor: bool,
    next: &str,
) -> Result<HttpResponse, AppError> {
    let token = random_token();
    let hash = sha256_hex(&token);
    let (purpose, secret) = if has_factor {
        (PendingPurpose::Code, None)
    } else {
        (
            PendingPurpose::Enrol,
            Some(totp::secret_base32(&two_factor::new_secret())),
        )
    };
    let (next, addr, now) = (next.to_string(), remote_addr(req), now());
    db(state, move |s| {
        s.create_pending_sign_in(&NewPendingSignIn {
            token_sha256: &hash,
            user_id: user.id,
            purpose,
            next: &next,
            secret_base32: secret.as_deref(),
            now,
            remote_addr: &addr,
        })
    })
    .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login/second-factor"))
        .cookie(pending_cookie(token, state.secure_cookies(req)))
        .finish())
}

#[derive(Template)]
#[template(path = "login_second_factor.html")]
struct SecondStepPage<'a> {
    csrf: &'a str,
    username: &'a str,
    setup: Option<Setup>,
    error: Option<String>,
}

async fn pending(
    state: &AppState,
    req: &HttpRequest,
) -> Result<Option<(String, PendingRow)>, AppError> {
    let Some(cookie) = req.cookie(PENDING_COOKIE) else {
        return Ok(None);
    };
    let hash = sha256_hex(cookie.value());
    let (h, since) = (hash.clone(), now() - two_factor::PENDING_SECONDS);
    let row = db(state, move |s| s.pending_sign_in(&h, since)).await?;
    Ok(row.map(|r| (hash, r)))
}

fn back_to_sign_in(state: &AppState, req: &HttpRequest) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login?expired=1"))
        .cookie(expired_pending_cookie(state.secure_cookies(req)))
        .finish()
}

fn second_step_form(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    p: &PendingRow,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let csrf = random_token();
    let setup = match p.enrolling() {
        Some(secret) => Some(Setup::new(state, &p.user.username, secret)?),
        None => None,
    };
    let mut resp = html(
        status,
        &SecondStepPage {
            csrf: &csrf,
            username: &p.user.username,
            setup,
            error,
        },
    );
    let _ = resp.add_cookie(&login_csrf_cookie(&csrf, state.secure_cookies(req)));
    Ok(resp)
}

pub async fn second_step_page(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    match pending(&state, &req).await? {
        Some((_, p)) => second_step_form(&state, &req, StatusCode::OK, &p, None),
        None => Ok(back_to_sign_in(&state, &req)),
    }
}

#[derive(Deserialize)]
pub struct SecondStepForm {
    csrf: String,
    #[serde(default)]
    code: String,
}

pub async fn second_step(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<SecondStepForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let Some((hash, p)) = pending(&state, &req).await? else {
        return Ok(back_to_sign_in(&state, &req));
    };
    let cookie_ok = req
        .cookie(LOGIN_CSRF_COOKIE)
        .is_some_and(|c| secrets_equal(c.value(), &form.csrf));
    if !cookie_ok {
        return second_step_form(
            &state,
            &req,
            StatusCode::FORBIDDEN,
            &p,
            Some("The form expired. Enter the code again.".into()),
        );
    }
    let addr = remote_addr(&req);
    let username = p.user.username.clone();
    let now = now();
    // The same throttle as the password: this attempt counts before it is checked.
    if let Err(locked) = count_attempt(
        &state,
        &username,
        &addr,
        "too many failed sign-ins (second step)",
        |text| second_step_form(&state, &req, StatusCode::TOO_MANY_REQUESTS, &p, Some(text)),
    )
    .await?
    {
        return Ok(locked);
    }

    let outcome: Result<(Used, Option<Flash>), String> = match p.enrolling() {
        Some(secret) => {
            let enrolment = Enrolment {
                secret_base32: secret.to_string(),
                code: form.code.clone(),
                current_code: None,
            };
            match service::two_factor::enrol(&state.svc, &caller_for(&p.user, &addr), &p.user, enrolment)
                .await?
            {
                Ok(codes) => Ok((
                    Used::Authenticator,
                    Some(Flash {
                        notice: "Two-factor sign-in is set up. Save these recovery codes now: each signs in once when the app is not at hand, and they are not shown again.".into(),
                        secret: codes.map(|c| c.join("\n")),
                        ..Default::default()
                    }),
                )),
                Err(LifecycleError::Invalid(errs)) => Err(errs
                    .into_iter()
                    .next()
                    .map(|e| e.message)
                    .unwrap_or_default()),
                Err(e) => return Err(e.into()),
            }
        }
        None => {
            let (id, code) = (p.user.id, form.code.clone());
            let checked = db(&state, move |s| {
                two_factor::check_or_refusal(s, id, &code, now)
            })
            .await?;
            match checked {
                Ok(Used::RecoveryCode) => {
                    let id = p.user.id;
                    let left = db(&state, move |s| s.factors(id))
                        .await?
                        .recovery_codes_left;
                    Ok((
                        Used::RecoveryCode,
                        Some(Flash::notice(format!(
                            "You signed in with a recovery code; {left} left. If your authenticator app is lost, set up a new one here and make new recovery codes."
                        ))),
                    ))
                }
                Ok(used) => Ok((used, None)),
                Err(message) => Err(message),
            }
        }
    };
    match outcome {
        Ok((used, shown)) => {
            let h = hash.clone();
            db(&state, move |s| s.delete_pending_sign_in(&h)).await?;
            finish_sign_in(&state, &req, &p.user, &p.next, Some((used, shown))).await
        }
        Err(message) => {
            audit::record(
                &state,
                &username,
                &addr,
                "login",
                &username,
                "failed",
                "wrong second factor",
            )
            .await;
            second_step_form(&state, &req, StatusCode::UNAUTHORIZED, &p, Some(message))
        }
    }
}

// ---- the account page ----

#[derive(Template)]
#[template(path = "account_two_factor.html")]
struct AccountPage {
    chrome: Chrome,
    factors: FactorSummary,
    required: bool,
    notice: Option<String>,
    recovery_codes: Vec<String>,
    setup: Option<Setup>,
    error: Option<String>,
    error_field: &'static str,
}

#[derive(Default)]
struct Shown {
    status: Option<StatusCode>,
    notice: Option<String>,
    recovery_codes: Vec<String>,
    setup: Option<Setup>,
    error: Option<String>,
    error_field: &'static str,
}

async fn render_account(
    state: &AppState,
    who: &Authed,
    shown: Shown,
) -> Result<HttpResponse, AppError> {
    let (id, role) = (who.user_id, who.role);
    let (factors, required) = db(state, move |s| {
        Ok((s.factors(id)?, s.requires_two_factor(role.as_str())?))
    })
    .await?;
    Ok(html(
        shown.status.unwrap_or(StatusCode::OK),
        &AccountPage {
            chrome: Chrome::new(who, "two-factor"),
            factors,
            required,
            notice: shown.notice,
            recovery_codes: shown.recovery_codes,
            setup: shown.setup,
            error: shown.error,
            error_field: shown.error_field,
        },
    ))
}

pub async fn account_page(
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    let f = flash::take(&who).unwrap_or_default();
    render_account(
        &state,
        &who,
        Shown {
            notice: Some(f.notice).filter(|n| !n.is_empty()),
            recovery_codes: f
                .secret
                .map(|s| s.lines().map(str::to_string).collect())
                .unwrap_or_default(),
            ..Default::default()
        },
    )
    .await
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

/// Shows a new secret to scan, with the form that confirms it.
pub async fn begin_app(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let secret = totp::secret_base32(&two_factor::new_secret());
    let setup = Setup::new(&state, &who.username, &secret)?;
    render_account(
        &state,
        &who,
        Shown {
            setup: Some(setup),
            ..Default::default()
        },
    )
    .await
}

#[derive(Deserialize)]
pub struct ConfirmAppForm {
    csrf: Option<String>,
    secret: String,
    #[serde(default)]
    code: String,
    current_code: Option<String>,
}

async fn field_error(
    state: &AppState,
    who: &Authed,
    errs: Vec<crate::lifecycle::FieldError>,
    setup: Option<Setup>,
) -> Result<HttpResponse, AppError> {
    let first = errs.into_iter().next();
    render_account(
        state,
        who,
        Shown {
            status: Some(StatusCode::UNPROCESSABLE_ENTITY),
            error_field: first.as_ref().map(|e| e.field).unwrap_or(""),
            error: first.map(|e| e.message),
            setup,
            ..Default::default()
        },
    )
    .await
}

pub async fn confirm_app(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<ConfirmAppForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(form.csrf.as_deref())?;
    if totp::secret_from_base32(&form.secret).is_none() {
        return Err(AppError::bad_request(
            "The secret of the new app is not valid. Start the setup again.",
        ));
    }
    let u = who.username.clone();
    let user = db(&state, move |s| s.find_user(&u))
        .await?
        .ok_or_else(AppError::login_required)?;
    let enrolment = Enrolment {
        secret_base32: form.secret.clone(),
        code: form.code,
        current_code: form.current_code,
    };
    match service::two_factor::enrol(&state.svc, &who.caller(), &user, enrolment).await? {
        Ok(codes) => {
            let shown = Flash {
                notice: match codes {
                    Some(_) => "The authenticator app is set up. Save these recovery codes now: each signs in once when the app is not at hand, and they are not shown again.".into(),
                    None => "The authenticator app is set up; the one before it no longer works.".into(),
                },
                secret: codes.map(|c| c.join("\n")),
                ..Default::default()
            };
            Ok(flash::redirect(&who, "/account/two-factor", shown))
        }
        Err(LifecycleError::Invalid(errs)) => {
            let setup = Setup::new(&state, &who.username, &form.secret)?;
            field_error(&state, &who, errs, Some(setup)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct FreshCodeForm {
    csrf: Option<String>,
    #[serde(default)]
    code: String,
}

pub async fn new_recovery_codes(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<FreshCodeForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(form.csrf.as_deref())?;
    match service::two_factor::new_recovery_codes(&state.svc, &who.caller(), who.user_id, form.code)
        .await?
    {
        Ok(codes) => Ok(flash::redirect(
            &who,
            "/account/two-factor",
            Flash {
                notice: "New recovery codes: save them now; the old ones no longer work.".into(),
                secret: Some(codes.join("\n")),
                ..Default::default()
            },
        )),
        Err(LifecycleError::Invalid(errs)) => field_error(&state, &who, errs, None).await,
        Err(e) => Err(e.into()),
    }
}

pub async fn remove(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<FreshCodeForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(form.csrf.as_deref())?;
    match service::two_factor::remove_own(&state.svc, &who.caller(), who.user_id, form.code).await? {
        Ok(()) => Ok(flash::redirect(
            &who,
            "/account/two-factor",
            Flash::notice("Two-factor sign-in is off: the authenticator app and the recovery codes no longer work."),
        )),
        Err(LifecycleError::Invalid(errs)) => {
            let mut errs = errs;
            for e in errs.iter_mut() {
                e.field = "remove_code";
            }
            field_error(&state, &who, errs, None).await
        }
        Err(e) => Err(e.into()),
    }
}

// ---- admins ----

pub async fn reset_user(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    match service::two_factor::reset(&state.svc, &who.caller(), &name).await? {
        Ok(had) => Ok(flash::redirect(
            &who,
            "/users",
            Flash::notice(if had {
                format!("{name}'s second factors were removed and their sessions ended. They sign in with their password (and set up a new app if their role must have one).")
            } else {
                format!("{name} had no second factor; their sessions were ended.")
            }),
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct RequiredForm {
    csrf: Option<String>,
    viewer: Option<String>,
    operator: Option<String>,
    admin: Option<String>,
}

pub async fn set_required(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<RequiredForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(form.csrf.as_deref())?;
    let roles: Vec<Role> = [
        (Role::Viewer, form.viewer.is_some()),
        (Role::Operator, form.operator.is_some()),
        (Role::Admin, form.admin.is_some()),
    ]
    .into_iter()
    .filter_map(|(r, on)| on.then_some(r))
    .collect();
    let text = if roles.is_empty() {
        "No role must have a second factor now.".to_string()
    } else {
        format!(
            "Now {} must have a second factor; who has none sets one up at their next sign-in.",
            roles
                .iter()
                .map(|r| format!("{r}s"))
                .collect::<Vec<_>>()
                .join(" and ")
        )
    };
    match service::two_factor::set_required(&state.svc, &who.caller(), roles).await? {
        Ok(()) => Ok(flash::redirect(&who, "/users", Flash::notice(text))),
        Err(e) => Err(e.into()),
    }
}

/// Whether the creator of a new API token proved a fresh second factor: `Ok(None)` when
/// they have none or `typed` is right, `Ok(Some(message))` when it is needed and missing
/// or wrong.
pub async fn fresh_factor_for_token(
    state: &AppState,
    who: &Authed,
    typed: Option<String>,
) -> Result<Option<String>, AppError> {
    let id = who.user_id;
    let now = now();
    db(state, move |s| {
        if !s.factors(id)?.any() {
            return Ok(None);
        }
        let typed = typed.unwrap_or_default();
        if typed.trim().is_empty() {
            return Ok(Some(
                "You have two-factor sign-in: enter a code from your authenticator app (or a recovery code) to create a token.".to_string(),
            ));
        }
        Ok(two_factor::check_or_refusal(s, id, &typed, now)?.err())
    })
    .await
}
