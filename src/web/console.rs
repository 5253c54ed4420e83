//! Console pages, ticket minting and the websocket upgrade.
//!
//! Opening a console: `POST …/console/{kind}/ticket` (session + CSRF, or a Bearer token)
//! mints a single-use ticket bound to the credential, the VM and the console kind. The
//! upgrade `GET /vms/{name}/console/{kind}/ws?ticket=…` must carry that ticket, the same
//! credential, and an `Origin` matching `Host` (or `console.allowed_origins`). Every check
//! happens before virtdeck connects to the VM; the proxies are in `crate::console`.

use super::errors::{html, ApiError, AppError, ErrorKind};
use super::openapi::{ChangeErrors, ConsoleKindName};
use super::pages::Chrome;
use super::session::{Authed, Credential};
use super::{audit, now, AppState};
use crate::auth::secret::secrets_equal;
use crate::auth::Role;
use crate::console::proxy::{self, Browser, Limits, Pump};
use crate::console::sessions::{Caps, Holder, SessionInfo};
use crate::console::thumbs::Shot;
use crate::console::tickets::Grant;
use crate::console::ConsoleKind;
use crate::domain::vm::VmState;
use crate::hypervisor::{ConsoleError, HypervisorError, VncEndpoint};
use crate::web::routes::RouteExt;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Routes; registered before `/api/v1` so that the API console path is found first.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.get("/vms/{name}/console/{kind}", console_page)
        .post("/vms/{name}/console/{kind}/ticket", mint_ticket)
        .get("/vms/{name}/console/{kind}/ws", upgrade)
        .get("/vms/{name}/screenshot", screenshot)
        .post("/api/v1/vms/{name}/console/{kind}", mint_ticket);
}

fn kind_from(s: &str) -> Result<ConsoleKind, AppError> {
    s.parse()
        .map_err(|_| AppError::not_found("There is no such console; use vnc or serial."))
}

pub fn console_error(e: ConsoleError) -> AppError {
    match e {
        ConsoleError::NotRunning { .. } => AppError::new(ErrorKind::Conflict, sentence(&e)),
        ConsoleError::Busy { .. } => AppError::new(ErrorKind::Conflict, sentence(&e)),
        ConsoleError::NoDevice { .. } => AppError::new(ErrorKind::Conflict, sentence(&e)),
        ConsoleError::NotAvailable { .. } => AppError::new(ErrorKind::Unavailable, sentence(&e)),
        ConsoleError::Hypervisor(crate::hypervisor::HypervisorError::NotFound { what }) => {
            AppError::not_found(format!("{what} does not exist (any more)."))
        }
        ConsoleError::Hypervisor(h) => AppError::hypervisor(h),
    }
}

/// An error's text as a sentence: capital first letter, full stop.
fn sentence(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    let mut c = s.chars();
    let mut out = match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => s,
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// Whether this user may open this console, and whether only to watch.
fn access(state: &AppState, who: &Authed, kind: ConsoleKind) -> Option<bool> {
    if who.role.allows(Role::Operator) {
        Some(false)
    } else if kind == ConsoleKind::Vnc && state.cfg.console.viewers_may_watch {
        Some(true)
    } else {
        None
    }
}

async fn deny_role(state: &AppState, who: &Authed, vm: &str, kind: ConsoleKind) -> AppError {
    audit::record(
        state,
        &who.username,
        &who.remote_addr,
        &format!("console.{kind}"),
        vm,
        "denied",
        &format!("role {} needs operator", who.role),
    )
    .await;
    AppError::forbidden(format!(
        "Your role ({}) may not open the {} of a VM; it needs operator. Ask an admin.",
        who.role,
        kind.label()
    ))
}

fn path_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The VM's state, via the hypervisor.
async fn vm_state(state: &AppState, vm: &str) -> Result<VmState, AppError> {
    let name = vm.to_string();
    let vms = super::hv(state, |h| h.list_vms()).await?;
    vms.into_iter()
        .find(|v| v.name == name)
        .map(|v| v.state)
        .ok_or_else(|| AppError::not_found(format!("VM {vm} does not exist (any more).")))
}

fn not_available_here(state: &AppState) -> Option<AppError> {
    crate::adapters::libvirt::is_test_uri(state.hv.uri()).then(|| {
        // Not a server fault: this host cannot have consoles (409, like other refusals
        // that depend on what the host is).
        AppError::new(
            ErrorKind::Conflict,
            "Consoles are not available on the demo host: libvirt's test driver has no real \
             VNC or serial consoles. Run virtdeck on a real host (qemu:///system).",
        )
    })
}

// ---- page ----

#[derive(Template)]
#[template(path = "console.html")]
struct ConsolePage {
    chrome: Chrome,
    vm: String,
    kind: &'static str,
    title: &'static str,
    view_only: bool,
    ticket_url: String,
    other_url: String,
    style_nonce: String,
}

pub async fn console_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (vm, kind) = path.into_inner();
    let kind = kind_from(&kind)?;
    let Some(view_only) = access(&state, &who, kind) else {
        return Err(deny_role(&state, &who, &vm, kind).await);
    };
    // 404 for a VM that does not exist; other states are shown by the page itself.
    vm_state(&state, &vm).await?;
    let esc = path_escape(&vm);
    let other = match kind {
        ConsoleKind::Vnc => ConsoleKind::Serial,
        ConsoleKind::Serial => ConsoleKind::Vnc,
    };
    let nonce = crate::auth::secret::random_token();
    let page = ConsolePage {
        chrome: Chrome::new(&who, "vms"),
        title: match kind {
            ConsoleKind::Vnc => "Console",
            ConsoleKind::Serial => "Serial console",
        },
        kind: kind.as_str(),
        view_only,
        ticket_url: format!("/vms/{esc}/console/{kind}/ticket"),
        other_url: format!("/vms/{esc}/console/{other}"),
        vm,
        style_nonce: nonce.clone(),
    };
    let mut resp = html(StatusCode::OK, &page);
    // xterm.js sizes its rows with <style> elements it creates: allow exactly those
    // (console.js gives them this per-response nonce). Scripts stay 'self' only.
    let csp = format!(
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'nonce-{nonce}'; \
         script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
         form-action 'self'"
    );
    if let Ok(v) = header::HeaderValue::from_str(&csp) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

// ---- ticket ----

/// Optional: `{"force": true}` takes a serial console over from whoever holds it.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(default)]
struct TicketRequest {
    /// Serial: take over a console held by someone else.
    force: bool,
}

/// A single-use console ticket and the websocket to open with it.
#[derive(Serialize, utoipa::ToSchema)]
struct TicketAnswer {
    ticket: String,
    /// Path of the websocket, ticket included, on this same origin.
    websocket: String,
    expires_in_seconds: u64,
    vm: String,
    /// `vnc` or `serial`.
    #[schema(value_type = ConsoleKindName)]
    kind: &'static str,
    view_only: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/vms/{name}/console/{kind}",
    operation_id = "mint_console_ticket",
    tag = "consoles",
    summary = "Mint a console ticket",
    description = "Role: operator (viewers get VNC view-only tickets when \
        `console.viewers_may_watch = true`). A random, single-use ticket, valid for \
        `expires_in_seconds`, bound to the caller's credential, the VM and the console kind; \
        open `websocket` (same origin) with it. The body is optional.",
    params(
        ("name" = String, Path, description = "The VM's name."),
        ("kind" = ConsoleKindName, Path, description = "Which console.")
    ),
    request_body(content = TicketRequest, description = "Optional."),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The ticket.", body = TicketAnswer),
        (status = 400, description = "The body is not JSON like `{\"force\": false}`.",
            body = ApiError),
        (status = 404, description = "There is no such VM or console kind.", body = ApiError),
        (status = 409, description = "The VM is not running, the per-VM session limit is \
            reached, the serial console is held by someone else (`field: force`), or the host \
            has no consoles (the demo host).", body = ApiError),
        (status = 429, description = "Too many tickets waiting (`too_many_requests`).",
            body = ApiError),
        ChangeErrors
    )
)]
pub async fn mint_ticket(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Authed,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    // The pages call this with fetch(): answer in JSON either way.
    let (vm, kind) = path.into_inner();
    let minted = match kind_from(&kind) {
        Ok(kind) => mint(&state, &req, &who, vm, kind, &body).await,
        Err(e) => Err(e),
    };
    Ok(minted.unwrap_or_else(|e| e.json_response()))
}

async fn mint(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    who: &Authed,
    vm: String,
    kind: ConsoleKind,
    body: &[u8],
) -> Result<HttpResponse, AppError> {
    let csrf = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok());
    who.check_csrf(csrf)?;
    let request: TicketRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TicketRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            AppError::bad_request(format!(
                "The request body must be JSON like {{\"force\": false}}: {e}"
            ))
        })?
    };
    let Some(view_only) = access(state, who, kind) else {
        return Err(deny_role(state, who, &vm, kind).await);
    };
    if let Some(e) = not_available_here(state) {
        return Err(e);
    }
    match vm_state(state, &vm).await? {
        VmState::Running => {}
        VmState::Paused => {}
        other => {
            return Err(AppError::new(
                ErrorKind::Conflict,
                format!(
                    "VM {vm} is {}; start it to use its {}.",
                    other.label(),
                    kind.label()
                ),
            ))
        }
    }
    let open = state.consoles.sessions.on_vm(&vm);
    caps(state)
        .check(&vm, view_only, &open)
        .map_err(|e| AppError::new(ErrorKind::Conflict, sentence(&e)))?;
    if kind == ConsoleKind::Serial && !request.force {
        if let Some(holder) = open.iter().find(|s| s.kind == "serial" && !s.view_only) {
            return Err(AppError::new(
                ErrorKind::Conflict,
                format!(
                    "The serial console of {vm} is in use by {} since {}. Take it over to \
                     disconnect them.",
                    holder.username,
                    super::pages::format_time(holder.started_at)
                ),
            )
            .field("force"));
        }
    }
    let credential_sha256 = who.credential_sha256.clone();
    let lifetime = state.cfg.console.ticket_lifetime_seconds;
    let ticket = state
        .consoles
        .tickets
        .mint(
            Grant {
                user_id: who.user_id,
                username: who.username.clone(),
                credential_sha256,
                vm: vm.clone(),
                kind,
                view_only,
                force: request.force,
            },
            Duration::from_secs(lifetime),
        )
        .map_err(|e| AppError::new(ErrorKind::TooManyRequests, sentence(&e)))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(TicketAnswer {
            websocket: format!(
                "/vms/{}/console/{}/ws?ticket={ticket}",
                path_escape(&vm),
                kind
            ),
            ticket,
            expires_in_seconds: lifetime,
            vm,
            kind: kind.as_str(),
            view_only,
        }))
}

// ---- websocket ----

/// Whether `origin` (`scheme://host[:port]`) is this server as the browser reached it
/// (same scheme, host and port), or one of the configured extra origins.
pub fn origin_allowed(origin: &str, scheme: &str, host: Option<&str>, allowed: &[String]) -> bool {
    let origin = origin.trim().trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some((origin_scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    if !origin_scheme.eq_ignore_ascii_case(scheme) {
        return false;
    }
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        "443"
    } else {
        "80"
    };
    // `https://vh1` and `https://vh1:443` are the same origin.
    let normal = |a: &str| {
        let a = a.trim().to_ascii_lowercase();
        match a.rsplit_once(':') {
            Some((h, p)) if p == default_port && !h.ends_with(':') => h.to_string(),
            _ => a,
        }
    };
    match host {
        Some(h) => !authority.is_empty() && normal(authority) == normal(h),
        None => false,
    }
}

/// The scheme the browser used: https when virtdeck serves TLS itself or a trusted
/// reverse proxy (`[http] trusted_proxies`) says so; the request's own `Forwarded`
/// headers from anyone else are ignored.
fn browser_scheme(state: &AppState, req: &HttpRequest) -> &'static str {
    if state.secure_cookies(req) {
        "https"
    } else {
        "http"
    }
}

#[derive(Deserialize)]
pub struct WsQuery {
    ticket: Option<String>,
}

pub async fn upgrade(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
    who: Authed,
    path: web::Path<(String, String)>,
    q: web::Query<WsQuery>,
) -> Result<HttpResponse, AppError> {
    let (vm, kind) = path.into_inner();
    let kind = kind_from(&kind)?;
    match start(&state, &req, body, &who, &vm, kind, q.into_inner()).await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            audit::record(
                &state,
                &who.username,
                &who.remote_addr,
                &format!("console.{kind}"),
                &vm,
                "denied",
                &e.message,
            )
            .await;
            Err(e)
        }
    }
}

/// Checks everything, then connects to the VM and starts the proxy.
async fn start(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    body: web::Payload,
    who: &Authed,
    vm: &str,
    kind: ConsoleKind,
    q: WsQuery,
) -> Result<HttpResponse, AppError> {
    // 1. Origin: the page that opens the websocket must be ours (cross-site websocket
    //    hijacking). Browsers always send it; scripts with a Bearer token may omit it.
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match req.headers().get(header::ORIGIN).map(|o| o.to_str()) {
        Some(Ok(origin)) => {
            let scheme = browser_scheme(state, req);
            if !origin_allowed(
                origin,
                scheme,
                host.as_deref(),
                &state.cfg.console.allowed_origins,
            ) {
                return Err(AppError::forbidden(format!(
                    "This console was opened from {origin}, which is not this server \
                     ({scheme}://{}). Behind a reverse proxy, add the proxy's address to \
                     http.trusted_proxies (it then says which scheme the browser used) or \
                     the public origin to console.allowed_origins.",
                    host.as_deref().unwrap_or("?")
                )));
            }
        }
        Some(Err(_)) => return Err(AppError::forbidden("The Origin header is not readable.")),
        None => {
            if matches!(who.credential, Credential::Session { .. }) {
                return Err(AppError::forbidden(
                    "A console websocket opened with a browser session must carry an Origin header.",
                ));
            }
        }
    }
    // 2. The ticket: single use, in time, for this credential, VM and kind.
    let Some(ticket) = q.ticket.filter(|t| !t.is_empty()) else {
        return Err(AppError::forbidden(
            "A console ticket is required: POST to the console's ticket address first.",
        ));
    };
    let grant = state
        .consoles
        .tickets
        .redeem(&ticket)
        .map_err(|e| AppError::forbidden(sentence(&e)))?;
    let same_credential = secrets_equal(&who.credential_sha256, &grant.credential_sha256)
        && grant.user_id == who.user_id;
    if !same_credential {
        return Err(AppError::forbidden(
            "This console ticket was issued to another session.",
        ));
    }
    if grant.vm != vm || grant.kind != kind {
        return Err(AppError::forbidden(format!(
            "This console ticket is for the {} of {}, not the {} of {vm}.",
            grant.kind.label(),
            grant.vm,
            kind.label()
        )));
    }
    // 3. The role, again (it may have changed since the ticket was minted).
    match access(state, who, kind) {
        Some(view_only) if view_only == grant.view_only || !view_only => {}
        _ => return Err(deny_role(state, who, vm, kind).await),
    }
    // 4. A place among the VM's console sessions.
    let holder = Holder {
        user_id: who.user_id,
        username: who.username.clone(),
        credential_sha256: grant.credential_sha256.clone(),
        api_token: matches!(who.credential, Credential::ApiToken),
    };
    let slot = state
        .consoles
        .sessions
        .reserve(vm, kind, &holder, grant.view_only, caps(state))
        .map_err(|e| AppError::new(ErrorKind::Conflict, sentence(&e)))?;
    // 5. The websocket handshake itself (nothing is sent until we answer).
    let (response, session, msgs) = actix_ws::handle_with_protocols(req, body, &["binary"])
        .map_err(|e| AppError::bad_request(format!("This is not a websocket request: {e}.")))?;
    let msgs = msgs
        .max_frame_size(proxy::MAX_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(proxy::MAX_MESSAGE_BYTES);
    let limits = Limits {
        idle: Duration::from_secs(state.cfg.console.idle_timeout_seconds),
        stall: Duration::from_secs(state.cfg.console.stalled_seconds),
    };
    let started_at = now();
    let started = std::time::Instant::now();
    let stats = state.consoles.stats.clone();
    let kill = slot.kill.clone();
    // 6. Only now: reach the VM.
    let target = vm.to_string();
    let (response, pump): (
        HttpResponse,
        std::pin::Pin<Box<dyn std::future::Future<Output = proxy::Ended>>>,
    ) = match kind {
        ConsoleKind::Vnc => {
            let endpoint = super::hv_console(state, move |h| h.vnc_endpoint(&target)).await?;
            let connect_failed = |e: std::io::Error| {
                AppError::new(
                    ErrorKind::HypervisorFailed,
                    format!("virtdeck cannot reach the VNC server of {vm}: {e}."),
                )
            };
            let view_only = grant.view_only;
            match endpoint {
                VncEndpoint::Tcp(addr) => {
                    let tcp = tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(connect_failed)?;
                    let _ = tcp.set_nodelay(true);
                    let (response, pump) = proxy::vnc(
                        response,
                        Browser { ws: session, msgs },
                        tcp.into_split(),
                        view_only,
                        Pump {
                            limits,
                            kill,
                            stats: stats.clone(),
                        },
                    );
                    (response, Box::pin(pump))
                }
                VncEndpoint::Unix(path) => {
                    let unix = tokio::net::UnixStream::connect(&path)
                        .await
                        .map_err(connect_failed)?;
                    let (response, pump) = proxy::vnc(
                        response,
                        Browser { ws: session, msgs },
                        unix.into_split(),
                        view_only,
                        Pump {
                            limits,
                            kill,
                            stats: stats.clone(),
                        },
                    );
                    (response, Box::pin(pump))
                }
            }
        }
        ConsoleKind::Serial => {
            if grant.force {
                state.consoles.sessions.kick(
                    vm,
                    ConsoleKind::Serial,
                    slot.id,
                    &format!("{} took over the serial console.", who.username),
                );
            }
            let force = grant.force;
            let console = super::hv_console(state, move |h| h.open_serial(&target, force)).await?;
            (
                response,
                Box::pin(proxy::serial(
                    Browser { ws: session, msgs },
                    console,
                    Pump {
                        limits,
                        kill,
                        stats: stats.clone(),
                    },
                )),
            )
        }
    };
    stats
        .sessions_opened
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mode = if grant.view_only { ", view only" } else { "" };
    audit::record(
        state,
        &who.username,
        &who.remote_addr,
        &format!("console.{kind}"),
        vm,
        "ok",
        &format!("{} opened{mode}", kind.label()),
    )
    .await;
    let st = state.clone();
    let (user, addr, vm) = (
        who.username.clone(),
        who.remote_addr.clone(),
        vm.to_string(),
    );
    let watched = slot.id;
    actix_web::rt::spawn(async move {
        // Every console.credential_check_seconds: is the credential still good and does
        // the role still allow this console? (Covers changes made outside this process.)
        let mut pump = pump;
        let ended = tokio::select! {
            ended = &mut pump => ended,
            () = watch_access(&st, watched) => pump.await,
        };
        drop(slot);
        audit::record(
            &st,
            &user,
            &addr,
            &format!("console.{kind}"),
            &vm,
            "closed",
            &format!(
                "{} session started {}, lasted {} s; {} bytes to the VM, {} bytes from it. {}",
                kind.label(),
                super::pages::format_time(started_at),
                started.elapsed().as_secs(),
                ended.bytes_to_vm,
                ended.bytes_from_vm,
                ended.reason
            ),
        )
        .await;
    });
    Ok(response)
}

// ---- access that ends while a console is open ----

fn caps(state: &AppState) -> Caps {
    Caps {
        full: state.cfg.console.max_sessions_per_vm,
        view_only: state.cfg.console.max_viewers_per_vm,
    }
}

/// Why an open console may no longer stay open, if so: its sign-in session or API token
/// is gone or expired, or the user's role no longer allows it. A console in use keeps
/// its sign-in session in use. Blocking (store).
fn verdict(
    store: &crate::store::Store,
    cfg: &crate::config::Config,
    s: &SessionInfo,
    now: i64,
) -> crate::store::StoreResult<Option<String>> {
    const SESSION_ENDED: &str = "Your sign-in session ended (signed out, password changed or \
        account removed); the console was closed. Sign in again to reopen it.";
    let user = if s.api_token {
        match store.use_api_token(&s.credential_sha256, now)? {
            Some(u) => u,
            None => {
                return Ok(Some(
                    "The API token that opened this console was revoked (or its account \
                     removed); the console was closed."
                        .into(),
                ))
            }
        }
    } else {
        match store.find_session(&s.credential_sha256)? {
            None => return Ok(Some(SESSION_ENDED.into())),
            Some(row) if now - row.created_at >= cfg.session.absolute_timeout_seconds as i64 => {
                return Ok(Some(
                    "Your sign-in session reached its time limit; the console was closed. \
                     Sign in again to reopen it."
                        .into(),
                ))
            }
            Some(row) => {
                store.touch_session(&s.credential_sha256, now)?;
                row.user
            }
        }
    };
    if user.id != s.user_id {
        return Ok(Some(SESSION_ENDED.into()));
    }
    let role: Role = user.role.parse().unwrap_or(Role::Viewer);
    let allowed = role.allows(Role::Operator)
        || (s.view_only && s.kind == ConsoleKind::Vnc.as_str() && cfg.console.viewers_may_watch);
    Ok((!allowed).then(|| {
        format!(
            "Your role is now {role}, which may not use this console; it was closed. Ask an \
             admin if you need it."
        )
    }))
}

/// Audits sessions virtdeck closed because access ended: one `console.close` row each.
async fn audit_closed(
    state: &AppState,
    actor: &str,
    remote_addr: &str,
    closed: &[SessionInfo],
    why: &str,
) {
    for s in closed {
        audit::record(
            state,
            actor,
            remote_addr,
            "console.close",
            &s.vm,
            "ok",
            &format!("{} console of {} closed: {why}", s.kind, s.username),
        )
        .await;
    }
}

/// Re-checks one open console every `console.credential_check_seconds`; returns once it
/// was told to close (audited).
async fn watch_access(state: &AppState, id: u64) {
    let every = Duration::from_secs(state.cfg.console.credential_check_seconds);
    loop {
        tokio::time::sleep(every).await;
        let Some(s) = state
            .consoles
            .sessions
            .all()
            .into_iter()
            .find(|s| s.id == id)
        else {
            return;
        };
        let cfg = state.cfg.clone();
        let found = super::db(state, move |store| verdict(store, &cfg, &s, now())).await;
        match found {
            Ok(None) => {}
            Ok(Some(reason)) => {
                if let Some(s) = state.consoles.sessions.close(id, &reason) {
                    audit_closed(state, "virtdeck", "-", &[s], &reason).await;
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e.message, "cannot re-check a console's credential"),
        }
    }
}

/// Closes every console `user_id` has open (account deleted, password changed, role
/// lowered), telling them `reason`; audited as done by `by`. Returns how many.
pub async fn close_user_consoles(
    state: &AppState,
    by: &Authed,
    user_id: i64,
    reason: &str,
) -> usize {
    let closed = state.consoles.sessions.close_user(user_id, reason);
    audit_closed(state, &by.username, &by.remote_addr, &closed, reason).await;
    closed.len()
}

/// Closes the consoles opened with one credential (its SHA-256): signing out.
pub async fn close_credential_consoles(
    state: &AppState,
    by: &Authed,
    credential_sha256: &str,
    reason: &str,
) -> usize {
    let closed = state
        .consoles
        .sessions
        .close_credential(credential_sha256, reason);
    audit_closed(state, &by.username, &by.remote_addr, &closed, reason).await;
    closed.len()
}

/// Re-checks every open console now (after revoking an API token, or any change to who
/// may do what) and closes those whose access ended; audited as done by `by`.
pub async fn recheck_consoles(state: &AppState, by: &Authed) -> usize {
    let open = state.consoles.sessions.all();
    if open.is_empty() {
        return 0;
    }
    let cfg = state.cfg.clone();
    let found = super::db(state, move |store| {
        let now = now();
        let mut out = Vec::new();
        for s in open {
            if let Some(reason) = verdict(store, &cfg, &s, now)? {
                out.push((s.id, reason));
            }
        }
        Ok(out)
    })
    .await;
    let ending = match found {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e.message, "cannot re-check the open consoles");
            return 0;
        }
    };
    let mut n = 0;
    for (id, reason) in ending {
        if let Some(s) = state.consoles.sessions.close(id, &reason) {
            audit_closed(state, &by.username, &by.remote_addr, &[s], &reason).await;
            n += 1;
        }
    }
    n
}

// ---- thumbnails ----

/// A small picture of the VM's screen, from a cache refreshed in the background: the
/// answer never waits for libvirt. 404 until there is a picture (or when the VM has no
/// screen). Same roles as the VNC console.
pub async fn screenshot(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let vm = path.into_inner();
    if access(&state, &who, ConsoleKind::Vnc).is_none() {
        return Err(deny_role(&state, &who, &vm, ConsoleKind::Vnc).await);
    }
    let thumbs = state.consoles.thumbs.clone();
    let (png, refresh) = thumbs.get(&vm);
    if refresh {
        let hv = state.hv.clone();
        let name = vm.clone();
        actix_web::rt::spawn(async move {
            let n = name.clone();
            let taken = web::block(move || match hv.screenshot(&n) {
                Ok(shot) => crate::console::thumbs::thumbnail(&shot.bytes).map(Shot::Picture),
                // Only VMs that exist keep an entry (any name can be asked for).
                Err(e) => match hv.domain_xml(&n) {
                    Err(HypervisorError::NotFound { .. }) => Ok(Shot::NoSuchVm),
                    _ => Err(e.to_string()),
                },
            })
            .await;
            let shot = match taken {
                Ok(Ok(shot)) => shot,
                Ok(Err(e)) => {
                    tracing::debug!(vm = %name, error = %e, "no screenshot");
                    Shot::NoScreen
                }
                Err(e) => {
                    tracing::warn!(vm = %name, error = %e, "screenshot task failed");
                    Shot::NoSuchVm
                }
            };
            thumbs.store(&name, shot);
        });
    }
    Ok(match png {
        Some(png) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "image/png"))
            .insert_header((header::CACHE_CONTROL, "private, no-store"))
            .body(png),
        // No picture (yet, or none on this host): 204, which the list shows as "No screen
        // yet" and browsers do not report as a failed load.
        None => HttpResponse::NoContent()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        let ok = |o: &str, scheme: &str, host: Option<&str>| origin_allowed(o, scheme, host, &none);
        assert!(ok("https://vh1:9443", "https", Some("vh1:9443")));
        assert!(ok("https://VH1:9443", "https", Some("vh1:9443")));
        assert!(!ok("https://evil:9443", "https", Some("vh1:9443")));
        assert!(!ok("https://vh1:9444", "https", Some("vh1:9443")));
        assert!(!ok("null", "https", Some("vh1:9443")));
        assert!(!ok("https://vh1:9443", "https", None));
        // The scheme counts: a page on http:// is another origin than https://.
        assert!(!ok("http://vh1:9443", "https", Some("vh1:9443")));
        assert!(!ok("https://vh1:9443", "http", Some("vh1:9443")));
        assert!(ok("http://vh1:9443", "http", Some("vh1:9443")));
        // Default ports may be written or not.
        assert!(ok("https://vh1", "https", Some("vh1:443")));
        assert!(ok("https://vh1:443", "https", Some("vh1")));
        assert!(!ok("http://vh1", "https", Some("vh1:443")));
        let proxy = vec!["https://console.example.com".to_string()];
        assert!(origin_allowed(
            "https://console.example.com",
            "http",
            Some("127.0.0.1:9443"),
            &proxy
        ));
    }
}
