//! Two-factor sign-in: the second step after a right password (a code from the app or a
//! recovery code, under the same throttle as the password), enrolment at sign-in for a
//! role that must have a second factor, the account page where each user manages their
//! own factors, and the admin's reset and policy forms.

use super::super::errors::{html, AppError};
use super::super::flash::{self, Flash};
use super::super::session::{remote_addr, Authed};
use super::super::{audit, db, now, AppState};
use super::account::{count_attempt, finish_sign_in, login_csrf_cookie, login_csrf_ok};
use super::Chrome;
use crate::auth::secret::{random_token, sha256_hex};
use crate::auth::security_keys;
use crate::auth::two_factor::{self, Used};
use crate::auth::Role;
use crate::domain::totp;
use crate::lifecycle::LifecycleError;
use crate::service::{self, two_factor::Enrolment, Caller};
use crate::store::two_factor::{
    FactorSummary, NewPendingSignIn, PendingPurpose, PendingRow, SecurityKeyRow,
};
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
    /// The user has security keys (the page offers them).
    has_keys: bool,
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
            has_keys: p.has_security_keys,
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
    if !login_csrf_ok(&req, &form.csrf) {
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
    keys: Vec<SecurityKeyRow>,
    required: bool,
    notice: Option<String>,
    recovery_codes: Vec<String>,
    setup: Option<Setup>,
    error: Option<String>,
    error_field: &'static str,
}

impl AccountPage {
    fn when(&self, at: &i64) -> String {
        crate::domain::clock::format_time(*at)
    }
    fn when_opt(&self, at: &Option<i64>) -> String {
        at.map(crate::domain::clock::format_time)
            .unwrap_or_else(|| "never".into())
    }
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
    let (factors, required, keys) = db(state, move |s| {
        Ok((
            s.factors(id)?,
            s.requires_two_factor(role.as_str())?,
            s.security_keys(id)?,
        ))
    })
    .await?;
    Ok(html(
        shown.status.unwrap_or(StatusCode::OK),
        &AccountPage {
            chrome: Chrome::new(who, "two-factor"),
            factors,
            keys,
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

// ---- security keys ----

/// An answer to the page's script: `{"error": sentence}` with `status`.
fn key_refused(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message.into() }))
}

fn relying_party_of(
    state: &AppState,
    req: &HttpRequest,
) -> Result<security_keys::RelyingParty, security_keys::KeyError> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    security_keys::relying_party(host, state.secure_cookies(req))
}

/// The user's keys registered at `rp_id`, as webauthn-rs reads them.
async fn keys_at(
    state: &AppState,
    user_id: i64,
    rp_id: &str,
) -> Result<Vec<webauthn_rs::prelude::SecurityKey>, AppError> {
    let rp_id = rp_id.to_string();
    let stored = db(state, move |s| s.security_keys_json(user_id, &rp_id)).await?;
    Ok(stored
        .iter()
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect())
}

#[derive(Deserialize)]
pub struct BeginKeyForm {
    #[serde(default)]
    name: String,
    code: Option<String>,
}

/// Starts adding a security key: a fresh code first when the user has an app or
/// recovery codes; then the browser's `navigator.credentials.create` options.
pub async fn begin_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<BeginKeyForm>,
) -> Result<HttpResponse, AppError> {
    super::super::kit::csrf_header(&req, &who)?;
    if let Err(e) = service::two_factor::key_name(&body.name) {
        return Ok(key_refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()));
    }
    let rp = match relying_party_of(&state, &req) {
        Ok(rp) => rp,
        Err(e) => return Ok(key_refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
    };
    let (id, now, typed) = (who.user_id, now(), body.code.clone().unwrap_or_default());
    let refusal = db(&state, move |s| {
        let f = s.factors(id)?;
        if !f.authenticator && f.recovery_codes_left == 0 {
            return Ok(None);
        }
        if typed.trim().is_empty() {
            return Ok(Some(
                "Enter a code from your authenticator app (or a recovery code) to add a key."
                    .to_string(),
            ));
        }
        Ok(two_factor::check_or_refusal(s, id, &typed, now)?.err())
    })
    .await?;
    if let Some(message) = refusal {
        return Ok(key_refused(StatusCode::UNPROCESSABLE_ENTITY, message));
    }
    // Keys are scoped to their host name: the ones added here are excluded.
    let existing = keys_at(&state, who.user_id, &rp.id).await?;
    match security_keys::begin_adding(
        &rp,
        &who.credential_sha256,
        who.user_id,
        &who.username,
        &existing,
    ) {
        Ok(challenge) => Ok(HttpResponse::Ok().json(challenge)),
        Err(e) => Ok(key_refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
    }
}

#[derive(Deserialize)]
pub struct FinishKeyForm {
    #[serde(default)]
    name: String,
    credential: webauthn_rs::prelude::RegisterPublicKeyCredential,
}

/// Registers the key the browser made; the page goes on to the account page, where the
/// recovery codes (for a first factor) are shown once.
pub async fn finish_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<FinishKeyForm>,
) -> Result<HttpResponse, AppError> {
    super::super::kit::csrf_header(&req, &who)?;
    let body = body.into_inner();
    let name = match service::two_factor::key_name(&body.name) {
        Ok(n) => n,
        Err(e) => return Ok(key_refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
    };
    match service::two_factor::add_security_key(
        &state.svc,
        &who.caller(),
        who.user_id,
        name.clone(),
        who.credential_sha256.clone(),
        body.credential,
    )
    .await?
    {
        Ok(codes) => {
            flash::put(
                &who,
                Flash {
                    notice: match codes {
                        Some(_) => format!("The security key {name} is added. Save these recovery codes now: each signs in once when no key is at hand, and they are not shown again."),
                        None => format!("The security key {name} is added."),
                    },
                    secret: codes.map(|c| c.join("\n")),
                    ..Default::default()
                },
            );
            Ok(HttpResponse::Ok().json(serde_json::json!({ "redirect": "/account/two-factor" })))
        }
        Err(LifecycleError::Invalid(errs)) => Ok(key_refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            errs.into_iter()
                .next()
                .map(|e| e.message)
                .unwrap_or_default(),
        )),
        Err(e) => Err(e.into()),
    }
}

pub async fn remove_key(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
    form: web::Form<FreshCodeForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(form.csrf.as_deref())?;
    let key_id = path.into_inner();
    match service::two_factor::remove_security_key(
        &state.svc,
        &who.caller(),
        who.user_id,
        key_id,
        form.code,
    )
    .await?
    {
        Ok(()) => Ok(flash::redirect(
            &who,
            "/account/two-factor",
            Flash::notice("The security key is removed; it no longer signs you in."),
        )),
        Err(LifecycleError::Invalid(errs)) => field_error(&state, &who, errs, None).await,
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct KeySignInForm {
    csrf: String,
    credential: Option<webauthn_rs::prelude::PublicKeyCredential>,
}

/// The sign-in a key step belongs to (its digest and row), or the answer that refuses
/// it: no password first (or too long ago), or a form that is not this browser's.
async fn waiting_key_step(
    state: &AppState,
    req: &HttpRequest,
    csrf: &str,
) -> Result<Result<(String, PendingRow), HttpResponse>, AppError> {
    let Some(waiting) = pending(state, req).await? else {
        return Ok(Err(key_refused(
            StatusCode::UNAUTHORIZED,
            security_keys::KeyError::Expired.to_string(),
        )));
    };
    if !login_csrf_ok(req, csrf) {
        return Ok(Err(key_refused(
            StatusCode::FORBIDDEN,
            "The form expired. Reload the page and try again.",
        )));
    }
    Ok(Ok(waiting))
}

/// The second step with a security key, first half: the browser's
/// `navigator.credentials.get` options for the keys registered at this address.
pub async fn begin_key_sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<KeySignInForm>,
) -> Result<HttpResponse, AppError> {
    let (hash, p) = match waiting_key_step(&state, &req, &body.csrf).await? {
        Ok(waiting) => waiting,
        Err(refused) => return Ok(refused),
    };
    let rp = match relying_party_of(&state, &req) {
        Ok(rp) => rp,
        Err(e) => return Ok(key_refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
    };
    let keys = keys_at(&state, p.user.id, &rp.id).await?;
    match security_keys::begin_signing_in(&rp, &hash, &keys) {
        Ok(challenge) => Ok(HttpResponse::Ok().json(challenge)),
        Err(e) => Ok(key_refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
    }
}

/// Checks a key's signature for the ceremony `ceremony` started, against the user's keys
/// at this address, and keeps the key's new state (its signature counter).
async fn key_signed(
    state: &AppState,
    req: &HttpRequest,
    ceremony: &str,
    user_id: i64,
    credential: &webauthn_rs::prelude::PublicKeyCredential,
) -> Result<Result<(), security_keys::KeyError>, AppError> {
    use security_keys::KeyError;
    let result = match security_keys::finish_signing_in(ceremony, credential) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let Ok(rp) = relying_party_of(state, req) else {
        return Ok(Err(KeyError::Unknown));
    };
    let mut keys = keys_at(state, user_id, &rp.id).await?;
    let Some(key) = keys.iter_mut().find(|k| k.cred_id() == result.cred_id()) else {
        return Ok(Err(KeyError::Unknown));
    };
    key.update_credential(&result);
    let json = serde_json::to_string(key).map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
    let cred = data_encoding::BASE64URL_NOPAD.encode(key.cred_id().as_ref());
    let now = now();
    if db(state, move |s| {
        s.security_key_used(user_id, &cred, &json, now)
    })
    .await?
    {
        Ok(Ok(()))
    } else {
        Ok(Err(KeyError::Unknown))
    }
}

/// The second step with a security key, second half: the signature is checked under the
/// same throttle as codes; on success the browser is signed in.
pub async fn finish_key_sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<KeySignInForm>,
) -> Result<HttpResponse, AppError> {
    let body = body.into_inner();
    let (hash, p) = match waiting_key_step(&state, &req, &body.csrf).await? {
        Ok(waiting) => waiting,
        Err(refused) => return Ok(refused),
    };
    let addr = remote_addr(&req);
    let username = p.user.username.clone();
    if let Err(locked) = count_attempt(
        &state,
        &username,
        &addr,
        "too many failed sign-ins (second step)",
        |text| Ok(key_refused(StatusCode::TOO_MANY_REQUESTS, text)),
    )
    .await?
    {
        return Ok(locked);
    }
    let outcome = match body.credential {
        None => Err(security_keys::KeyError::Expired),
        Some(credential) => key_signed(&state, &req, &hash, p.user.id, &credential).await?,
    };
    match outcome {
        Ok(()) => {
            let h = hash.clone();
            db(&state, move |s| s.delete_pending_sign_in(&h)).await?;
            let done = finish_sign_in(
                &state,
                &req,
                &p.user,
                &p.next,
                Some((Used::SecurityKey, None)),
            )
            .await?;
            // The script follows the answer: where to go, with the session cookie set.
            let mut answer = HttpResponse::Ok().json(serde_json::json!({ "redirect": p.next }));
            for c in done.cookies() {
                let _ = answer.add_cookie(&c);
            }
            Ok(answer)
        }
        Err(e) => {
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
            Ok(key_refused(StatusCode::UNAUTHORIZED, e.to_string()))
        }
    }
}
