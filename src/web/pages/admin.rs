//! Admin pages: users, API tokens, audit log.

use super::super::errors::{html, AppError};
use super::super::flash::{self, Flash};
use super::super::session::Authed;
use super::super::{db, AppState};
use super::{format_time, Chrome};
use crate::auth::password::hash_password;
use crate::auth::secret::{new_api_token, sha256_hex};
use crate::auth::{validate_new_password, validate_username, Role};
use crate::lifecycle::LifecycleError;
use crate::service;
use crate::store::audit::{AuditFilter, AuditRow};
use crate::store::{TokenRow, UserRow};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

/// Audit rows per page.
pub const AUDIT_PAGE_SIZE: u64 = 100;

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    rows: Vec<AuditRow>,
    page: u64,
    pages: u64,
    total: u64,
    /// The filter as typed (kept in the form and in the page links).
    q: AuditQuery,
    /// Whether any filter is set.
    filtered: bool,
    /// A filter that could not be read, and what to enter instead.
    error: Option<String>,
}

impl AuditPage {
    fn when(&self, r: &AuditRow) -> String {
        format_time(r.entry.at)
    }

    fn last(&self, r: &AuditRow) -> String {
        format_time(r.last_at)
    }

    /// The link to page `page` of the same filter.
    fn page_link(&self, page: u64) -> String {
        let mut q = self.q.clone();
        q.page = Some(page);
        format!("/audit?{}", q.to_query())
    }
}

/// The audit page's address: the page, and the filter (every field optional).
#[derive(Deserialize, Clone, Default)]
pub struct AuditQuery {
    page: Option<u64>,
    /// Who, exactly.
    #[serde(default)]
    user: String,
    /// The action, or a group of actions (`kickstart`).
    #[serde(default)]
    action: String,
    /// The result, exactly.
    #[serde(default)]
    outcome: String,
    /// Text in the target.
    #[serde(default)]
    target: String,
    /// First day (YYYY-MM-DD, UTC), included.
    #[serde(default)]
    from: String,
    /// Last day (YYYY-MM-DD, UTC), included.
    #[serde(default)]
    to: String,
}

impl AuditQuery {
    fn is_filtered(&self) -> bool {
        [
            &self.user,
            &self.action,
            &self.outcome,
            &self.target,
            &self.from,
            &self.to,
        ]
        .iter()
        .any(|v| !v.trim().is_empty())
    }

    /// The set fields as a query string (page last), for links.
    fn to_query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = [
            ("user", &self.user),
            ("action", &self.action),
            ("outcome", &self.outcome),
            ("target", &self.target),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k, v.trim().to_string()))
        .collect();
        if let Some(p) = self.page {
            pairs.push(("page", p.to_string()));
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    /// The store's filter, or a sentence saying which field to correct.
    fn filter(&self) -> Result<AuditFilter, String> {
        let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let from_at = day_start("from", &self.from)?;
        let before_at = day_start("to", &self.to)?.map(|d| d.saturating_add(86_400));
        Ok(AuditFilter {
            actor: text(&self.user),
            action: text(&self.action),
            result: text(&self.outcome),
            target_contains: text(&self.target),
            from_at,
            before_at,
        })
    }
}

/// The start (UTC, seconds since the epoch) of a day typed as YYYY-MM-DD; `None` if empty.
fn day_start(field: &str, typed: &str) -> Result<Option<i64>, String> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Ok(None);
    }
    let bad = || format!("Enter the {field} date as YYYY-MM-DD, for example 2025-03-01.");
    let mut parts = typed.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let year: i32 = y.parse().map_err(|_| bad())?;
    let month: u8 = m.parse().map_err(|_| bad())?;
    let day: u8 = d.parse().map_err(|_| bad())?;
    let month = time::Month::try_from(month).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(year, month, day).map_err(|_| bad())?;
    Ok(Some(date.midnight().assume_utc().unix_timestamp()))
}

pub async fn audit_page(
    state: web::Data<AppState>,
    who: Authed,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "audit.view", "").await?;
    let q = q.into_inner();
    let page = q.page.unwrap_or(1).max(1);
    let filtered = q.is_filtered();
    let (status, rows, total, error) = match q.filter() {
        Ok(filter) => {
            let offset = (page - 1).saturating_mul(AUDIT_PAGE_SIZE);
            let (rows, total) = db(&state, move |s| {
                s.audit_rows(&filter, offset, AUDIT_PAGE_SIZE)
            })
            .await?;
            (StatusCode::OK, rows, total, None)
        }
        Err(message) => (StatusCode::BAD_REQUEST, Vec::new(), 0, Some(message)),
    };
    let pages = total.div_ceil(AUDIT_PAGE_SIZE).max(1);
    Ok(html(
        status,
        &AuditPage {
            chrome: Chrome::new(&who, "audit"),
            rows,
            page,
            pages,
            total,
            q,
            filtered,
            error,
        },
    ))
}

// ---- users and tokens ----

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    /// Each user's second factors, by position in `users`.
    factors: Vec<crate::store::two_factor::FactorSummary>,
    /// Roles that must have a second factor.
    required: Vec<String>,
    /// The users that are host accounts (signing in through PAM).
    host_accounts: Vec<String>,
    /// Whether the signed-in admin has a second factor (the token form asks for a code).
    own_factor: bool,
    tokens: Vec<TokenRow>,
    roles: [Role; 3],
    form: NewUserForm,
    error: Option<String>,
    error_field: &'static str,
    notice: Option<String>,
    new_token: Option<String>,
}

impl UsersPage {
    fn factor_text(&self, i: &usize) -> String {
        match self.factors.get(*i) {
            Some(f) if f.authenticator => format!("app, {} recovery codes", f.recovery_codes_left),
            Some(f) if f.recovery_codes_left > 0 => {
                format!("{} recovery codes", f.recovery_codes_left)
            }
            _ => "none".into(),
        }
    }
    fn has_factor(&self, i: &usize) -> bool {
        self.factors.get(*i).is_some_and(|f| f.any())
    }
    fn signs_in_with(&self, name: &str) -> &'static str {
        if self.host_accounts.iter().any(|h| h == name) {
            "host account (PAM)"
        } else {
            "virtdeck password"
        }
    }
    fn is_required(&self, role: &Role) -> bool {
        self.required.iter().any(|r| r == role.as_str())
    }
    fn when(&self, at: &i64) -> String {
        format_time(*at)
    }
    fn when_opt(&self, at: &Option<i64>) -> String {
        at.map(format_time).unwrap_or_else(|| "never".into())
    }
}

#[derive(Deserialize, Default, Clone)]
pub struct NewUserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

struct Outcome {
    status: StatusCode,
    form: NewUserForm,
    error: Option<String>,
    error_field: &'static str,
    notice: Option<String>,
    new_token: Option<String>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            status: StatusCode::OK,
            form: NewUserForm {
                role: "operator".into(),
                ..Default::default()
            },
            error: None,
            error_field: "",
            notice: None,
            new_token: None,
        }
    }
}

async fn render_users(
    state: &AppState,
    who: &Authed,
    o: Outcome,
) -> Result<HttpResponse, AppError> {
    let (users, tokens, factors, required, host_accounts) = db(state, move |s| {
        let users = s.list_users()?;
        let factors = users
            .iter()
            .map(|u| s.factors(u.id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            users,
            s.list_api_tokens()?,
            factors,
            s.two_factor_required()?,
            s.host_account_names()?,
        ))
    })
    .await?;
    let own_factor = users
        .iter()
        .zip(&factors)
        .any(|(u, f)| u.id == who.user_id && f.any());
    let mut form = o.form;
    form.password.clear();
    form.password_confirm.clear();
    Ok(html(
        o.status,
        &UsersPage {
            chrome: Chrome::new(who, "users"),
            users,
            factors,
            required,
            host_accounts,
            own_factor,
            tokens,
            roles: Role::all(),
            form,
            error: o.error,
            error_field: o.error_field,
            notice: o.notice,
            new_token: o.new_token,
        },
    ))
}

pub async fn users_page(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "users.view", "").await?;
    let shown = flash::take(&who).unwrap_or_default();
    render_users(
        &state,
        &who,
        Outcome {
            notice: Some(shown.notice).filter(|n| !n.is_empty()),
            new_token: shown.secret,
            ..Default::default()
        },
    )
    .await
}

pub async fn create_user(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<NewUserForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(Some(&form.csrf))?;
    let username = form.username.trim().to_string();
    who.require(&state, Role::Admin, "user.create", &username)
        .await?;
    let invalid = |field: &'static str, message: String, form: NewUserForm| Outcome {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        form,
        error: Some(message),
        error_field: field,
        ..Default::default()
    };
    if let Err(e) = validate_username(&username) {
        return render_users(&state, &who, invalid("username", e.to_string(), form)).await;
    }
    let role: Role = match form.role.parse() {
        Ok(r) => r,
        Err(e) => return render_users(&state, &who, invalid("role", e, form)).await,
    };
    if let Err(e) = validate_new_password(&form.password, Some(&form.password_confirm)) {
        return render_users(&state, &who, invalid("password", e.to_string(), form)).await;
    }
    let password = form.password.clone();
    let phc = state
        .password_gate
        .run(move || hash_password(&password))
        .await
        .map_err(|_busy| {
            AppError::new(
                super::super::errors::ErrorKind::Unavailable,
                "Many passwords are being checked right now. Send the form again in a few seconds.",
            )
        })?
        .map_err(|e| AppError::internal(anyhow::anyhow!("hashing failed: {e}")))?
        .map_err(|e| AppError::internal(e.into()))?;
    match service::admin::create_user(&state.svc, &who.caller(), &username, role, phc).await? {
        Ok(()) => Ok(flash::redirect(
            &who,
            "/users",
            Flash::notice(format!("Created {username} ({role}).")),
        )),
        Err(LifecycleError::Invalid(errors)) => {
            let msg = errors
                .into_iter()
                .next()
                .map(|e| e.message)
                .unwrap_or_default();
            render_users(&state, &who, invalid("username", msg, form)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

pub async fn delete_user(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let username = path.into_inner();
    who.require(&state, Role::Admin, "user.delete", &username)
        .await?;
    if username == who.username {
        return render_users(
            &state,
            &who,
            Outcome {
                status: StatusCode::CONFLICT,
                error: Some("You cannot delete your own account while signed in with it.".into()),
                ..Default::default()
            },
        )
        .await;
    }
    let user_id = service::admin::delete_user(&state.svc, &who.caller(), &username).await??;
    crate::web::console::close_user_consoles(
        &state,
        &who,
        user_id,
        &format!(
            "Your account was deleted by {}; the console was closed.",
            who.username
        ),
    )
    .await;
    Ok(flash::redirect(
        &who,
        "/users",
        Flash::notice(format!(
            "Deleted {username}; their sessions and API tokens no longer work."
        )),
    ))
}

#[derive(Deserialize)]
pub struct NewTokenForm {
    csrf: Option<String>,
    username: String,
    #[serde(default)]
    label: String,
    /// A fresh second factor of the admin making the token (when they have one).
    code: Option<String>,
}

pub async fn create_token(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<NewTokenForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(form.csrf.as_deref())?;
    who.require(&state, Role::Admin, "token.create", &form.username)
        .await?;
    // A token is a lasting credential: its maker proves a fresh second factor if they have one.
    if let Some(message) =
        super::two_factor::fresh_factor_for_token(&state, &who, form.code.clone()).await?
    {
        return render_users(
            &state,
            &who,
            Outcome {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                error: Some(message),
                error_field: "token_code",
                ..Default::default()
            },
        )
        .await;
    }
    let label = form.label.trim().chars().take(100).collect::<String>();
    let token = new_api_token();
    let user = match service::admin::create_token(
        &state.svc,
        &who.caller(),
        &form.username,
        label,
        sha256_hex(&token),
    )
    .await?
    {
        Ok(user) => user,
        Err(LifecycleError::Invalid(errors)) => {
            return render_users(
                &state,
                &who,
                Outcome {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    error: errors.into_iter().next().map(|e| e.message),
                    error_field: "token_user",
                    ..Default::default()
                },
            )
            .await;
        }
        Err(e) => return Err(e.into()),
    };
    // Shown once, on the page after the redirect (never in a URL).
    Ok(flash::redirect(
        &who,
        "/users",
        Flash {
            notice: format!(
                "API token for {} created. Copy it now: it is not shown again.",
                user.username
            ),
            secret: Some(token),
            ..Default::default()
        },
    ))
}

pub async fn delete_token(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let id = path.into_inner();
    who.require(&state, Role::Admin, "token.delete", &id.to_string())
        .await?;
    service::admin::delete_token(&state.svc, &who.caller(), id).await??;
    // Consoles opened with the revoked token close now (found by re-checking them all).
    crate::web::console::recheck_consoles(&state, &who).await;
    Ok(flash::redirect(
        &who,
        "/users",
        Flash::notice("API token revoked: it no longer works."),
    ))
}

// ---- named sizes ----

#[derive(Template)]
#[template(path = "flavors.html")]
struct FlavorsPage {
    chrome: Chrome,
    flavors: Vec<crate::store::FlavorRow>,
    error: Option<String>,
    notice: Option<String>,
}

async fn render_flavors(
    state: &AppState,
    who: &Authed,
    status: StatusCode,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let flavors = db(state, |s| s.flavors()).await?;
    Ok(html(
        status,
        &FlavorsPage {
            chrome: Chrome::new(who, "flavors"),
            flavors,
            notice: if error.is_none() {
                flash::take(who).map(|f| f.notice)
            } else {
                None
            },
            error,
        },
    ))
}

pub async fn flavors_page(
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    render_flavors(&state, &who, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct FlavorForm {
    csrf: Option<String>,
    name: String,
    units: String,
}

pub async fn set_flavor(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<FlavorForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = form.name.trim().to_string();
    who.require(&state, Role::Admin, "flavor.set", &name)
        .await?;
    if validate_username(&name).is_err() || name.len() > 32 {
        let msg = "A size name is 1 to 32 letters, digits, '.', '_' or '-'.".to_string();
        return render_flavors(&state, &who, StatusCode::UNPROCESSABLE_ENTITY, Some(msg)).await;
    }
    let units = match form.units.trim().parse::<u32>() {
        Ok(u) if (1..=1000).contains(&u) => u,
        _ => {
            let msg = "Give the size as a whole number of units, from 1 to 1000.".to_string();
            return render_flavors(&state, &who, StatusCode::UNPROCESSABLE_ENTITY, Some(msg)).await;
        }
    };
    service::admin::set_flavor(&state.svc, &who.caller(), &name, units).await??;
    Ok(flash::redirect(
        &who,
        "/flavors",
        Flash::notice(format!("Saved size {name}: {units} units.")),
    ))
}

pub async fn delete_flavor(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    who.require(&state, Role::Admin, "flavor.delete", &name)
        .await?;
    service::admin::delete_flavor(&state.svc, &who.caller(), &name).await??;
    Ok(flash::redirect(
        &who,
        "/flavors",
        Flash::notice(format!("Deleted size {name}.")),
    ))
}
