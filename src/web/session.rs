//! Who is asking: the session cookie or a Bearer token, checked on every request.

use super::errors::AppError;
use super::{db, now, AppState};
use crate::auth::secret::{secrets_equal, sha256_hex};
use crate::auth::Role;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use std::future::Future;
use std::pin::Pin;

pub const SESSION_COOKIE: &str = "vd_session";
pub const LOGIN_CSRF_COOKIE: &str = "vd_login_csrf";

/// How the request proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    Session {
        token_sha256: String,
        csrf_token: String,
    },
    ApiToken,
}

/// An authenticated user for this request.
#[derive(Debug, Clone)]
pub struct Authed {
    pub user_id: i64,
    pub username: String,
    pub role: Role,
    pub credential: Credential,
    pub remote_addr: String,
    /// SHA-256 of the session cookie or API token this request came with.
    pub credential_sha256: String,
}

impl Authed {
    /// Who asks, as the service layer and the audit log see them.
    pub fn caller(&self) -> crate::service::Caller {
        crate::service::Caller {
            username: self.username.clone(),
            remote_addr: self.remote_addr.clone(),
            role: self.role,
        }
    }

    /// The CSRF token to embed in forms (empty for API tokens).
    pub fn csrf(&self) -> &str {
        match &self.credential {
            Credential::Session { csrf_token, .. } => csrf_token,
            Credential::ApiToken => "",
        }
    }

    /// A state-changing request made with a session must carry the session's CSRF token
    /// (form field, or `X-CSRF-Token` for API calls). Bearer tokens are not sent by
    /// browsers on their own, so they need none.
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), AppError> {
        match &self.credential {
            Credential::ApiToken => Ok(()),
            Credential::Session { csrf_token, .. } => match presented {
                Some(p) if secrets_equal(p, csrf_token) => Ok(()),
                _ => Err(AppError::forbidden(
                    "This form has expired or did not come from virtdeck. Reload the page and try again.",
                )),
            },
        }
    }

    /// Refuses, and audits the refusal, unless the user's role includes `needed`.
    pub async fn require(
        &self,
        state: &AppState,
        needed: Role,
        action: &str,
        target: &str,
    ) -> Result<(), AppError> {
        if self.role.allows(needed) {
            return Ok(());
        }
        super::audit::record(
            state,
            &self.username,
            &self.remote_addr,
            action,
            target,
            "denied",
            &format!("role {} needs {}", self.role, needed),
        )
        .await;
        Err(AppError::forbidden(format!(
            "Your role ({}) may not do this; it needs {}. Ask an admin.",
            self.role, needed
        )))
    }
}

/// The client's address for throttling and the audit log: the TCP peer, or the address
/// a trusted reverse proxy (`[http] trusted_proxies`) forwarded for.
pub fn remote_addr(req: &HttpRequest) -> String {
    let trusted = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.trusted_proxies.as_slice())
        .unwrap_or(&[]);
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    super::client_addr::client_ip(
        req.peer_addr().map(|a| a.ip()),
        h("forwarded"),
        h("x-forwarded-for"),
        trusted,
    )
    .map(|ip| ip.to_string())
    .unwrap_or_else(|| "-".into())
}

pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The user an API token belongs to (the token is marked used), `None` for an unknown or
/// revoked token. Every route that takes a Bearer token checks it here.
pub async fn api_token_user(
    state: &AppState,
    token: &str,
    now: i64,
) -> Result<Option<crate::store::UserRow>, AppError> {
    let hash = sha256_hex(token);
    db(state, move |s| s.use_api_token(&hash, now)).await
}

/// Whether a session is still within its idle and absolute limits.
pub fn session_alive(
    cfg: &crate::config::SessionConfig,
    created_at: i64,
    last_seen_at: i64,
    now: i64,
) -> bool {
    now - last_seen_at < cfg.idle_timeout_seconds as i64
        && now - created_at < cfg.absolute_timeout_seconds as i64
}

/// The page a signed-out browser asked for, to come back to after sign-in: only for
/// page reads (GET), never for a form's action.
fn page_to_return_to(req: &HttpRequest) -> Option<String> {
    (req.method() == actix_web::http::Method::GET).then(|| {
        let uri = req.uri();
        uri.path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| uri.path().to_string())
    })
}

async fn authenticate(req: HttpRequest) -> Result<Authed, AppError> {
    let login_required = || AppError::login_required_for(page_to_return_to(&req));
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("application state missing")))?
        .clone();
    let remote_addr = remote_addr(&req);
    let now = now();

    if let Some(token) = bearer(&req) {
        let Some(user) = api_token_user(&state, &token, now).await? else {
            return Err(AppError::new(
                super::errors::ErrorKind::Unauthorized,
                "The API token is not valid. Create one with `virtdeck token create --user NAME`.",
            ));
        };
        let role = user.role.parse().unwrap_or(Role::Viewer);
        return Ok(Authed {
            user_id: user.id,
            username: user.username,
            role,
            credential: Credential::ApiToken,
            remote_addr,
            credential_sha256: sha256_hex(&token),
        });
    }

    let Some(cookie) = req.cookie(SESSION_COOKIE) else {
        return Err(login_required());
    };
    let token_sha256 = sha256_hex(cookie.value());
    let lookup = token_sha256.clone();
    let Some(session) = db(&state, move |s| s.find_session(&lookup)).await? else {
        return Err(login_required());
    };
    if !session_alive(
        &state.cfg.session,
        session.created_at,
        session.last_seen_at,
        now,
    ) {
        let gone = token_sha256.clone();
        db(&state, move |s| s.delete_session(&gone)).await?;
        return Err(login_required());
    }
    // Record activity, but not on every request: at most every quarter idle period.
    let touch_every = (state.cfg.session.idle_timeout_seconds as i64 / 4).clamp(0, 60);
    if now - session.last_seen_at >= touch_every {
        let t = token_sha256.clone();
        db(&state, move |s| s.touch_session(&t, now)).await?;
    }
    Ok(Authed {
        user_id: session.user.id,
        username: session.user.username,
        role: session.user.role.parse().unwrap_or(Role::Viewer),
        credential: Credential::Session {
            token_sha256: token_sha256.clone(),
            csrf_token: session.csrf_token,
        },
        remote_addr,
        credential_sha256: token_sha256,
    })
}

/// A paired peer host calling this one: `Authorization: VirtdeckPeer <credential>`. Never
/// a user: it opens only the `/api/v1/peer/` routes, and user routes never accept it.
pub struct PeerAuthed {
    pub peer: crate::store::fleet::PeerRow,
    pub remote_addr: String,
}

fn peer_credential(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("virtdeckpeer")
        .then(|| token.trim().to_string())
}

async fn authenticate_peer(req: HttpRequest) -> Result<PeerAuthed, AppError> {
    let refused = || {
        AppError::new(
            super::errors::ErrorKind::Unauthorized,
            "This host does not know that peer credential: the hosts are not paired (or were unpaired). Pair them again.",
        )
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("application state missing")))?
        .clone();
    let credential = peer_credential(&req).ok_or_else(refused)?;
    let digest = sha256_hex(&credential);
    let peer = db(&state, move |s| s.peer_by_inbound(&digest))
        .await?
        .ok_or_else(refused)?;
    Ok(PeerAuthed {
        peer,
        remote_addr: remote_addr(&req),
    })
}

impl FromRequest for PeerAuthed {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(authenticate_peer(req.clone()))
    }
}

impl FromRequest for Authed {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(authenticate(req.clone()))
    }
}

/// The session cookie: HttpOnly, SameSite=Strict, Secure under TLS.
pub fn session_cookie(value: String, secure: bool) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .finish()
}

pub fn expired_cookie(name: &'static str, secure: bool) -> Cookie<'static> {
    let mut c = Cookie::build(name, "")
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .finish();
    c.make_removal();
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SessionConfig;

    #[test]
    fn idle_and_absolute_limits() {
        let cfg = SessionConfig {
            idle_timeout_seconds: 10,
            absolute_timeout_seconds: 100,
        };
        assert!(session_alive(&cfg, 0, 0, 9));
        assert!(!session_alive(&cfg, 0, 0, 10), "idle");
        assert!(session_alive(&cfg, 0, 95, 99));
        assert!(!session_alive(&cfg, 0, 95, 100), "absolute");
    }
}
