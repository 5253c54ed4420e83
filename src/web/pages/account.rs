//! Signing in and out, and creating the first admin with the setup link.

use super::super::errors::{html, AppError, ErrorKind};
use super::super::session::{
    expired_cookie, remote_addr, session_cookie, Authed, Credential, LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
};
use super::super::{audit, db, now, AppState};
use super::safe_next;
use crate::auth::password::{hash_password, verify_password};
use crate::auth::secret::{random_token, secrets_equal, sha256_hex};
use crate::auth::throttle::{decide, Throttle};
use crate::auth::{validate_new_password, validate_username, Role};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    username: &'a str,
    next: &'a str,
    error: Option<String>,
    notice: Option<&'a str>,
    setup_pending: bool,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    signed_out: Option<u8>,
    expired: Option<u8>,
}

pub(super) fn login_csrf_cookie(value: &str, secure: bool) -> Cookie<'static> {
    Cookie::build(LOGIN_CSRF_COOKIE, value.to_string())
        .path("/login")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .finish()
}

/// Whether a sign-in form's `presented` token matches its double-submit cookie.
pub(super) fn login_csrf_ok(req: &HttpRequest, presented: &str) -> bool {
    req.cookie(LOGIN_CSRF_COOKIE)
        .is_some_and(|c| secrets_equal(c.value(), presented))
}

fn setup_pending(state: &AppState) -> bool {
    state
        .setup_token
        .lock()
        .map(|t| t.is_some())
        .unwrap_or(false)
}

/// Renders the login form with a fresh double-submit CSRF cookie.
fn login_form(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    username: &str,
    next: &str,
    error: Option<String>,
    notice: Option<&str>,
) -> HttpResponse {
    let csrf = random_token();
    let page = LoginPage {
        csrf: &csrf,
        username,
        next,
        error,
        notice,
        setup_pending: setup_pending(state),
    };
    let mut resp = html(status, &page);
    let _ = resp.add_cookie(&login_csrf_cookie(&csrf, state.secure_cookies(req)));
    resp
}

pub async fn login_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<LoginQuery>,
) -> HttpResponse {
    let notice = q.signed_out.map(|_| "You have signed out.").or(q
        .expired
        .map(|_| "The sign-in took too long or was started again elsewhere. Enter your name and password again."));
    login_form(
        &state,
        &req,
        StatusCode::OK,
        "",
        safe_next(q.next.as_deref()),
        None,
        notice,
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let addr = remote_addr(&req);
    let next = safe_next(form.next.as_deref()).to_string();
    let username = form.username.trim().to_string();
    if !login_csrf_ok(&req, &form.csrf) {
        return Ok(login_form(
            &state,
            &req,
            StatusCode::FORBIDDEN,
            &username,
            &next,
            Some("The sign-in form expired. Enter your name and password again.".into()),
            None,
        ));
    }
    let reservation = match count_attempt(
        &state,
        &username,
        &addr,
        "too many failed sign-ins",
        |text| {
            Ok(login_form(
                &state,
                &req,
                StatusCode::TOO_MANY_REQUESTS,
                &username,
                &next,
                Some(text),
                None,
            ))
        },
    )
    .await?
    {
        Ok(reservation) => reservation,
        Err(locked) => return Ok(locked),
    };

    let refused = |status: StatusCode, message: String| {
        login_form(&state, &req, status, &username, &next, Some(message), None)
    };
    let user = match check_password(&state, &username, form.password).await? {
        PasswordVerdict::Right(user) => user,
        PasswordVerdict::Busy => {
            // Never checked: the attempt does not count against the account.
            if let Some(id) = reservation {
                db(&state, move |s| s.release_login_attempt(id)).await?;
            }
            audit::record(
                &state,
                &username,
                &addr,
                "login",
                &username,
                "busy",
                "too many sign-ins being checked at once",
            )
            .await;
            let mut resp = refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Many sign-ins are being checked right now. Try again in a few seconds.".into(),
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(super::super::password_gate::RETRY_AFTER_SECONDS),
            );
            return Ok(resp);
        }
        PasswordVerdict::Refused {
            status,
            message,
            detail,
        } => {
            // The reservation made above stays as this failure.
            audit::record(
                &state, &username, &addr, "login", &username, "failed", &detail,
            )
            .await;
            return Ok(refused(status, message));
        }
    };

    let (user_id, role) = (user.id, user.role.clone());
    let (factors, required) = db(&state, move |s| {
        Ok((s.factors(user_id)?, s.requires_two_factor(&role)?))
    })
    .await?;
    if factors.any() || required {
        // The password was right: the attempt is not a failure. Each wrong second step
        // counts instead (the same throttle), and a full sign-in forgets them all.
        if let Some(id) = reservation {
            db(&state, move |s| s.release_login_attempt(id)).await?;
        }
        return super::two_factor::begin_second_step(&state, &req, user, factors.any(), &next)
            .await;
    }
    finish_sign_in(&state, &req, &user, &next, None).await
}

/// What the password step found.
enum PasswordVerdict {
    /// The account, its password right.
    Right(crate::store::UserRow),
    /// Refused: the answer's status, the sentence on the form, the audit detail.
    Refused {
        status: StatusCode,
        message: String,
        detail: String,
    },
    /// Every place to check a password is taken.
    Busy,
}

/// What the password matched, checked on the password gate's threads.
enum Matched {
    Local(Option<crate::store::UserRow>),
    Host(Result<Option<Role>, crate::adapters::pam::PamError>),
    /// The name is a local account and a host account, and the password is right for one.
    Both,
}

const WRONG_PASSWORD: &str = "Wrong user name or password.";

/// Checks `password` for `username`: a local account against its hash; with `[auth] pam`,
/// a host account through PAM (its role from its groups, its row made or refreshed). A
/// name that is both is refused until an admin picks one, and says so only to who knows
/// one of its passwords.
async fn check_password(
    state: &AppState,
    username: &str,
    password: String,
) -> Result<PasswordVerdict, AppError> {
    use crate::adapters::pam::{self, PamError};
    use crate::store::host_accounts::AccountSource;
    let auth = state.cfg.auth.clone();
    let u = username.to_string();
    let account = db(state, move |s| s.account(&u)).await?;
    let name = username.to_string();
    let checked = state
        .password_gate
        .run(move || match account {
            Some((user, AccountSource::Local)) => {
                let local_ok = verify_password(&password, Some(&user.password_phc));
                if auth.pam && pam::host_account_exists(&name) {
                    let host_ok = pam::check_password(&auth.pam_service, &name, &password).is_ok();
                    if local_ok || host_ok {
                        return Matched::Both;
                    }
                }
                Matched::Local(local_ok.then_some(user))
            }
            Some((_, AccountSource::Host)) | None if auth.pam => Matched::Host(
                pam::check_password(&auth.pam_service, &name, &password)
                    .map(|()| auth.pam_groups.role_of(&pam::groups_of(&name))),
            ),
            _ => {
                // No account that may sign in: as long as a real check, always refused.
                verify_password(&password, None);
                Matched::Local(None)
            }
        })
        .await;
    let matched = match checked {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            return Err(AppError::internal(anyhow::anyhow!(
                "password check failed: {e}"
            )))
        }
        Err(_busy) => return Ok(PasswordVerdict::Busy),
    };
    let refused = |status, message: String, detail: &str| PasswordVerdict::Refused {
        status,
        message,
        detail: detail.to_string(),
    };
    let wrong = || {
        refused(
            StatusCode::UNAUTHORIZED,
            WRONG_PASSWORD.into(),
            "wrong user name or password",
        )
    };
    let both = || {
        refused(
            StatusCode::CONFLICT,
            format!(
                "{username} is both a virtdeck account and an account of this host, so it cannot sign in until an admin picks one: delete the virtdeck account on Users, or rename the host account."
            ),
            "the name is a virtdeck account and a host account",
        )
    };
    Ok(match matched {
        Matched::Local(Some(user)) => PasswordVerdict::Right(user),
        Matched::Local(None) | Matched::Host(Err(PamError::Refused)) => wrong(),
        Matched::Both => both(),
        Matched::Host(Err(PamError::AccountExpired)) => refused(
            StatusCode::FORBIDDEN,
            "Your host account has expired. Ask the host's administrator to renew it.".into(),
            "host account expired",
        ),
        Matched::Host(Err(PamError::PasswordExpired)) => refused(
            StatusCode::FORBIDDEN,
            "Your host password has expired and must be changed first: change it on the host (for example with passwd over SSH), then sign in again.".into(),
            "host password expired",
        ),
        Matched::Host(Err(e)) => {
            tracing::error!(error = %e, "PAM check failed");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Host accounts cannot be checked right now; the host's log says why. virtdeck's own accounts still sign in.".into(),
                "PAM failed",
            )
        }
        Matched::Host(Ok(None)) => {
            let g = &state.cfg.auth.pam_groups;
            refused(
                StatusCode::FORBIDDEN,
                format!(
                    "Your host account is in none of virtdeck's groups ({}, {}, {}). Ask an admin to add it to one.",
                    g.admin, g.operator, g.viewer
                ),
                "host account in no virtdeck group",
            )
        }
        Matched::Host(Ok(Some(role))) => {
            let (u, now) = (username.to_string(), now());
            match db(state, move |s| s.host_account_signed_in(&u, role.as_str(), now)).await? {
                Some(user) => PasswordVerdict::Right(user),
                None => both(),
            }
        }
    })
}

/// Counts a sign-in step's attempt before it is checked, in one step with reading the
/// counts, so parallel attempts cannot all slip under the lock. When the account or the
/// address is locked: audited with `why`, and `Err` of the page `locked_page` makes of the
/// sentence, with Retry-After. Otherwise waits out the slow-down, and returns the
/// attempt's row (it stays as a failure unless released).
pub(super) async fn count_attempt(
    state: &AppState,
    username: &str,
    addr: &str,
    why: &str,
    locked_page: impl FnOnce(String) -> Result<HttpResponse, AppError>,
) -> Result<Result<Option<i64>, HttpResponse>, AppError> {
    let now = now();
    let since = now - state.cfg.login.window_seconds as i64;
    let (u, a, login_cfg) = (
        username.to_string(),
        addr.to_string(),
        state.cfg.login.clone(),
    );
    let (throttle, reservation) = db(state, move |s| {
        s.reserve_login_attempt(&u, &a, since, now, |failures| {
            let t = decide(&login_cfg, failures, now);
            (t, !matches!(t, Throttle::Locked { .. }))
        })
    })
    .await?;
    match throttle {
        Throttle::Locked { until } => {
            audit::record(state, username, addr, "login", username, "locked", why).await;
            let minutes = ((until - now) + 59) / 60;
            let mut resp = locked_page(format!(
                "Too many failed sign-ins for this account or from this address. \
                 Sign-in is locked; try again in {minutes} minute{}.",
                if minutes == 1 { "" } else { "s" }
            ))?;
            if let Ok(v) = header::HeaderValue::from_str(&(until - now).max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Ok(Err(resp))
        }
        Throttle::Slow { delay_ms } => {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            Ok(Ok(reservation))
        }
        Throttle::Allow => Ok(Ok(reservation)),
    }
}

/// The end of a sign-in whose every step passed: the account's failed attempts are
/// forgotten, a session is made (marked with the second factor when one was used), the
/// sign-in is audited, and the browser goes to `next` with its session cookie.
pub(super) async fn finish_sign_in(
    state: &AppState,
    req: &HttpRequest,
    user: &crate::store::UserRow,
    next: &str,
    second_factor: Option<(
        crate::auth::two_factor::Used,
        Option<crate::web::flash::Flash>,
    )>,
) -> Result<HttpResponse, AppError> {
    let now = now();
    let addr = remote_addr(req);
    let token = random_token();
    let csrf = random_token();
    let (hash, a, uname) = (sha256_hex(&token), addr.clone(), user.username.clone());
    let user_id = user.id;
    let proved = second_factor.is_some();
    let h = hash.clone();
    db(state, move |s| {
        s.clear_login_failures(&uname)?;
        s.create_session(&h, user_id, &csrf, now, &a)?;
        if proved {
            s.mark_second_factor(&h, now)?;
        }
        Ok(())
    })
    .await?;
    let (detail, flash) = match second_factor {
        Some((used, flash)) => (format!("with {}", used.as_str()), flash),
        None => (String::new(), None),
    };
    audit::record(
        state,
        &user.username,
        &addr,
        "login",
        &user.username,
        "ok",
        &detail,
    )
    .await;
    let location = match flash {
        Some(f) => {
            crate::web::flash::put_for(&hash, f);
            "/account/two-factor".to_string()
        }
        None => next.to_string(),
    };
    let secure = state.secure_cookies(req);
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .cookie(session_cookie(token, secure))
        .cookie(expired_cookie(LOGIN_CSRF_COOKIE, secure))
        .cookie(super::two_factor::expired_pending_cookie(secure))
        .finish())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn logout(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    if let Credential::Session { token_sha256, .. } = &who.credential {
        let t = token_sha256.clone();
        db(&state, move |s| s.delete_session(&t)).await?;
    }
    audit::record(
        &state,
        &who.username,
        &who.remote_addr,
        "logout",
        &who.username,
        "ok",
        "",
    )
    .await;
    if let Credential::Session { token_sha256, .. } = &who.credential {
        crate::web::console::close_credential_consoles(
            &state,
            &who,
            token_sha256,
            "You signed out; the console was closed. Sign in again to reopen it.",
        )
        .await;
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login?signed_out=1"))
        .cookie(expired_cookie(SESSION_COOKIE, state.tls))
        .finish())
}

// ---- first admin ----

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage<'a> {
    token: &'a str,
    username: &'a str,
    error: Option<String>,
    error_field: &'a str,
}

#[derive(Deserialize)]
pub struct SetupQuery {
    token: Option<String>,
}

/// Whether `presented` is the live setup token printed at start-up, or a link made by
/// `virtdeck setup-link` (kept as a digest in the store) that has not expired.
async fn setup_token_matches(state: &web::Data<AppState>, presented: Option<&str>) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    let in_memory = state
        .setup_token
        .lock()
        .map(|t| t.as_deref().is_some_and(|t| secrets_equal(t, presented)))
        .unwrap_or(false);
    if in_memory {
        return true;
    }
    if presented.is_empty() || presented.len() > 128 {
        return false;
    }
    let digest = crate::auth::secret::sha256_hex(presented);
    let now = now();
    db(state, move |s| {
        Ok(s.user_count()? == 0 && s.setup_link_valid(&digest, now)?)
    })
    .await
    .unwrap_or(false)
}

fn setup_refused() -> AppError {
    AppError::not_found(
        "This setup link is not valid: it was used already, it expired, virtdeck was restarted \
         since, or accounts exist. Run `virtdeck setup-link` on the host for a fresh link, or \
         sign in.",
    )
}

pub async fn setup_page(
    state: web::Data<AppState>,
    q: web::Query<SetupQuery>,
) -> Result<HttpResponse, AppError> {
    if !setup_token_matches(&state, q.token.as_deref()).await {
        return Err(setup_refused());
    }
    let token = q.token.clone().unwrap_or_default();
    Ok(html(
        StatusCode::OK,
        &SetupPage {
            token: &token,
            username: "admin",
            error: None,
            error_field: "",
        },
    ))
}

#[derive(Deserialize)]
pub struct SetupForm {
    token: String,
    username: String,
    password: String,
    password_confirm: String,
}

pub async fn setup(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<SetupForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let addr = remote_addr(&req);
    if !setup_token_matches(&state, Some(&form.token)).await {
        audit::record(
            &state,
            "-",
            &addr,
            "setup.first_admin",
            &form.username,
            "denied",
            "invalid setup token",
        )
        .await;
        return Err(setup_refused());
    }
    let username = form.username.trim().to_string();
    let invalid = |field: &'static str, message: String| {
        html(
            StatusCode::UNPROCESSABLE_ENTITY,
            &SetupPage {
                token: &form.token,
                username: &username,
                error: Some(message),
                error_field: field,
            },
        )
    };
    if let Err(e) = validate_username(&username) {
        return Ok(invalid("username", e.to_string()));
    }
    if let Err(e) = validate_new_password(&form.password, Some(&form.password_confirm)) {
        return Ok(invalid("password", e.to_string()));
    }
    let password = form.password.clone();
    let phc = state
        .password_gate
        .run(move || hash_password(&password))
        .await
        .map_err(|_busy| {
            AppError::new(
                ErrorKind::Unavailable,
                "Many passwords are being checked right now. Send the form again in a few seconds.",
            )
        })?
        .map_err(|e| AppError::internal(anyhow::anyhow!("hashing failed: {e}")))?
        .map_err(|e| AppError::internal(e.into()))?;
    let now = now();
    let u = username.clone();
    let created = db(&state, move |s| {
        let created = s.create_first_user(&u, &phc, now)?;
        s.clear_setup_links()?;
        Ok(created)
    })
    .await?;
    if let Ok(mut t) = state.setup_token.lock() {
        *t = None;
    }
    if !created {
        audit::record(
            &state,
            "-",
            &addr,
            "setup.first_admin",
            &username,
            "denied",
            "an account exists already",
        )
        .await;
        return Err(setup_refused());
    }
    audit::record(
        &state,
        &username,
        &addr,
        "setup.first_admin",
        &username,
        "ok",
        "",
    )
    .await;
    // Sign the new admin in right away.
    let u = username.clone();
    let user = db(&state, move |s| s.find_user(&u))
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("new admin not found")))?;
    let token = random_token();
    let csrf = random_token();
    let (hash, a) = (sha256_hex(&token), addr.clone());
    db(&state, move |s| {
        s.create_session(&hash, user.id, &csrf, now, &a)
    })
    .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/host"))
        .cookie(session_cookie(token, state.secure_cookies(&req)))
        .finish())
}
