//! Kickstarts: the Kickstarts pages and API (`/api/v1/kickstarts`). Admins change and
//! read them; everyone else signed in sees their names, sizes and who changed them, never
//! their content (kickstarts hold root passwords) nor an install's kernel command line
//! (it carries the installer's token). And `/ks/{token}`, where an installing guest
//! (which has no session) fetches its kickstart while its install boot runs.

use super::audit;
use super::errors::{html, ApiError, AppError, ErrorKind};
use super::kit::{answer, csrf_header, notice_for, see_other};
use super::openapi::{BodyErrors, ChangeErrors, ReadErrors};
use super::pages::{format_time, Chrome};
use super::session::{remote_addr, Authed};
use super::{lc, now, AppState};
use crate::auth::Role;
use crate::config::Config;
use crate::domain::kickstart::{check_base_url, derived_base_url};
use crate::lifecycle::kickstart::{self as ks, Fetch, KickstartRequest};
use crate::lifecycle::{FieldError, LifecycleError};
use crate::service;
use crate::store::kickstarts::KickstartRow;
use crate::web::routes::RouteExt;
use actix_web::http::Method;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::{Deserialize, Serialize};

/// Request bodies that carry a kickstart (up to 256 KiB, escaped in JSON or a form).
const BODY_LIMIT_BYTES: usize = 1024 * 1024;

fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    match &err {
        J::OverflowKnownLength { .. } | J::Overflow { .. } => AppError::new(
            ErrorKind::PayloadTooLarge,
            "The request body is larger than 1 MiB; a kickstart may have at most 256 KiB.",
        ),
        J::ContentType => AppError::bad_request("Send JSON with Content-Type: application/json."),
        other => AppError::bad_request(format!("The request body is not valid JSON: {other}")),
    }
    .into()
}

fn form_error(err: actix_web::error::UrlencodedError, _req: &HttpRequest) -> actix_web::Error {
    match &err {
        actix_web::error::UrlencodedError::Overflow { .. } => AppError::new(
            ErrorKind::PayloadTooLarge,
            "The form is too large: a kickstart may have at most 256 KiB.",
        ),
        _ => AppError::bad_request("The form could not be read. Reload the page and try again."),
    }
    .into()
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    let json = || {
        web::JsonConfig::default()
            .limit(BODY_LIMIT_BYTES)
            .error_handler(json_error)
    };
    let form = || {
        web::FormConfig::default()
            .limit(BODY_LIMIT_BYTES)
            .error_handler(form_error)
    };
    cfg.resource("/kickstarts", &[Method::GET, Method::POST], |r| {
        r.app_data(form())
            .route(web::get().to(list_page))
            .route(web::post().to(create_form))
    })
    .resource("/kickstarts/{name}", &[Method::GET, Method::POST], |r| {
        r.app_data(form())
            .route(web::get().to(edit_page))
            .route(web::post().to(update_form))
    })
    .post("/kickstarts/{name}/delete", delete_form)
    .resource("/api/v1/kickstarts", &[Method::GET, Method::POST], |r| {
        r.app_data(json())
            .route(web::get().to(api_list))
            .route(web::post().to(api_create))
    })
    .resource(
        "/api/v1/kickstarts/{name}",
        &[Method::GET, Method::PUT, Method::DELETE],
        |r| {
            r.app_data(json())
                .route(web::get().to(api_get))
                .route(web::put().to(api_update))
                .route(web::delete().to(api_delete))
        },
    )
    .get("/api/v1/vms/{name}/kickstart", api_status)
    .get("/ks/{token}", serve);
}

/// The base of kickstart URLs for a create arriving by `req`: the configured one, else
/// derived from the address virtdeck serves on (or the one the admin reached it by).
pub fn base_url(req: &HttpRequest, state: &AppState) -> String {
    if let Some(b) = &state.cfg.install.kickstart_base_url {
        return b.trim_end_matches('/').to_string();
    }
    let scheme = if state.tls { "https" } else { "http" };
    let host = req.connection_info().host().to_string();
    let local = req.app_config().local_addr();
    let (base, _) = derived_base_url(scheme, local, &host);
    if check_base_url(&base).is_ok() {
        base
    } else {
        derived_base_url(scheme, local, "").0
    }
}

/// Whether the derived base URL may not be reachable from guests on other networks.
pub fn base_url_may_be_unreachable(cfg: &Config) -> bool {
    cfg.install.kickstart_base_url.is_none()
        && cfg
            .listen_addr()
            .map(|a| a.ip().is_unspecified() || a.ip().is_loopback())
            .unwrap_or(true)
}

// ---- the installer's fetch ----

async fn serve(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let token = path.into_inner();
    let from = remote_addr(&req);
    let r = lc(&state, move |s| {
        ks::fetch(s.hv.as_ref(), &s.store, &token, now())
    })
    .await;
    let (target, result, detail, response) = match r {
        Ok(Fetch::Served {
            vm,
            kickstart,
            content,
        }) => (
            vm,
            "served",
            format!("kickstart {kickstart}, {} bytes", content.len()),
            HttpResponse::Ok()
                .content_type("text/plain; charset=utf-8")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(content),
        ),
        Ok(Fetch::Refused { vm, why }) => (
            vm.unwrap_or_else(|| "-".into()),
            "refused",
            why,
            HttpResponse::NotFound().finish(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "a kickstart fetch failed");
            (
                "-".into(),
                "refused",
                format!("error: {e}"),
                HttpResponse::NotFound().finish(),
            )
        }
    };
    audit::record(
        &state,
        "installer",
        &from,
        "kickstart.fetch",
        &target,
        result,
        &detail,
    )
    .await;
    Ok(response)
}

// ---- API ----

/// What everyone signed in may know about a kickstart: never its content.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = KickstartSummary)]
struct Summary {
    name: String,
    bytes: usize,
    updated_at: i64,
    updated_by: String,
}

impl From<KickstartRow> for Summary {
    fn from(k: KickstartRow) -> Self {
        Summary {
            name: k.name,
            bytes: k.content.len(),
            updated_at: k.updated_at,
            updated_by: k.updated_by,
        }
    }
}

/// A kickstart as `GET /api/v1/kickstarts/{name}` answers it: the content only for
/// admins (for others the field is absent).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = KickstartDetail)]
struct Detail {
    #[serde(flatten)]
    summary: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

/// Whether `who` may read kickstart contents and installers' kernel command lines.
fn reads_secrets(who: &Authed) -> bool {
    who.role.allows(Role::Admin)
}

impl Detail {
    fn for_reader(k: KickstartRow, who: &Authed) -> Detail {
        let content = reads_secrets(who).then(|| k.content.clone());
        Detail {
            summary: Summary::from(k),
            content,
        }
    }
}

/// A VM's kickstart install as the API answers it: the kernel command line (with the
/// installer's token in its URL) only for admins (for others the field is absent).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = KickstartStatus)]
struct StatusBody {
    vm: String,
    kickstart: String,
    expires_at: i64,
    install_running: bool,
    /// The installer's kernel command line (null when it is not running): admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    kernel_cmdline: Option<Option<String>>,
}

impl StatusBody {
    fn for_reader(st: ks::InstallStatus, who: &Authed) -> StatusBody {
        StatusBody {
            vm: st.vm,
            kickstart: st.kickstart,
            expires_at: st.expires_at,
            install_running: st.install_running,
            kernel_cmdline: reads_secrets(who).then_some(st.kernel_cmdline),
        }
    }
}

/// Every kickstart, without content.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = KickstartList)]
struct List {
    kickstarts: Vec<Summary>,
}

async fn all(state: &web::Data<AppState>) -> Result<Vec<KickstartRow>, AppError> {
    lc(state, |s| Ok(s.store.kickstarts()?))
        .await
        .map_err(AppError::from)
}

async fn one(state: &web::Data<AppState>, name: &str) -> Result<KickstartRow, AppError> {
    let n = name.to_string();
    lc(state, move |s| {
        s.store
            .kickstart(&n)?
            .ok_or_else(|| LifecycleError::NotFound(format!("There is no kickstart named {n}.")))
    })
    .await
    .map_err(AppError::from)
}

#[utoipa::path(
    get,
    path = "/api/v1/kickstarts",
    operation_id = "list_kickstarts",
    tag = "kickstarts",
    summary = "List kickstarts",
    description = "Role: viewer. Names, sizes and who changed them when; never their content.",
    responses((status = 200, description = "The kickstarts.", body = List), ReadErrors)
)]
async fn api_list(state: web::Data<AppState>, _who: Authed) -> Result<HttpResponse, AppError> {
    let kickstarts = all(&state).await?.into_iter().map(Summary::from).collect();
    Ok(HttpResponse::Ok().json(List { kickstarts }))
}

#[utoipa::path(
    get,
    path = "/api/v1/kickstarts/{name}",
    operation_id = "get_kickstart",
    tag = "kickstarts",
    summary = "One kickstart",
    description = "Role: viewer; `content` only for admins (a kickstart may hold a root \
        password): for others the field is absent.",
    params(("name" = String, Path, description = "The kickstart's name.")),
    responses(
        (status = 200, description = "The kickstart.", body = Detail),
        (status = 404, description = "There is no such kickstart.", body = ApiError),
        ReadErrors
    )
)]
async fn api_get(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let k = one(&state, &path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(Detail::for_reader(k, &who)))
}

#[utoipa::path(
    post,
    path = "/api/v1/kickstarts",
    operation_id = "create_kickstart",
    tag = "kickstarts",
    summary = "Create a kickstart",
    description = "Role: admin. Names: letters, digits, `-`, `_`, `.`, at most 64, not \
        starting with `.`. Content: UTF-8 text without NUL, not empty, at most 256 KiB. The \
        body may be up to 1 MiB.",
    request_body = KickstartRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "The kickstart.", body = KickstartRow,
            headers(("Location" = String, description = "`/api/v1/kickstarts/{name}`"))),
        (status = 422, description = "A bad or taken name, or bad content (`invalid`).",
            body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
async fn api_create(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<KickstartRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r = service::kickstarts::create(&state.svc, &who.caller(), body.into_inner()).await?;
    answer(r, |k| {
        HttpResponse::Created()
            .insert_header((header::LOCATION, format!("/api/v1/kickstarts/{}", k.name)))
            .json(k)
    })
}

/// A kickstart's new content.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ContentBody {
    #[serde(default)]
    content: String,
}

#[utoipa::path(
    put,
    path = "/api/v1/kickstarts/{name}",
    operation_id = "update_kickstart",
    tag = "kickstarts",
    summary = "Change a kickstart's content",
    description = "Role: admin.",
    params(("name" = String, Path, description = "The kickstart's name.")),
    request_body = ContentBody,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The kickstart.", body = KickstartRow),
        (status = 404, description = "There is no such kickstart.", body = ApiError),
        (status = 422, description = "Bad content (`invalid`).", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
async fn api_update(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<ContentBody>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r = service::kickstarts::update(
        &state.svc,
        &who.caller(),
        KickstartRequest {
            name: path.into_inner(),
            content: body.into_inner().content,
        },
    )
    .await?;
    answer(r, |k| HttpResponse::Ok().json(k))
}

#[utoipa::path(
    delete,
    path = "/api/v1/kickstarts/{name}",
    operation_id = "delete_kickstart",
    tag = "kickstarts",
    summary = "Delete a kickstart",
    description = "Role: admin. Refused while an install boot that uses it runs.",
    params(("name" = String, Path, description = "The kickstart's name.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "There is no such kickstart.", body = ApiError),
        (status = 409, description = "A running install uses it.", body = ApiError),
        ChangeErrors
    )
)]
async fn api_delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r = service::kickstarts::delete(&state.svc, &who.caller(), path.into_inner()).await?;
    answer(r, |()| HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get,
    path = "/api/v1/vms/{name}/kickstart",
    operation_id = "get_vm_kickstart",
    tag = "kickstarts",
    summary = "A VM's kickstart install",
    description = "Role: viewer; `kernel_cmdline` only for admins (its URL carries the \
        installer's token). Answers while the VM's kickstart URL has not ended; 404 after.",
    params(("name" = String, Path, description = "The VM's name.")),
    responses(
        (status = 200, description = "The install.", body = StatusBody),
        (status = 404, description = "No such VM, or its kickstart URL has ended.",
            body = ApiError),
        ReadErrors
    )
)]
async fn api_status(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let vm = path.into_inner();
    let r = lc(&state, move |s| {
        ks::status(s.hv.as_ref(), &s.store, &vm, now())
    })
    .await;
    answer(r, |st| {
        HttpResponse::Ok().json(StatusBody::for_reader(st, &who))
    })
}

// ---- pages ----

#[derive(Template)]
#[template(path = "kickstarts.html")]
struct ListPage {
    chrome: Chrome,
    kickstarts: Vec<Summary>,
    message: Option<String>,
    errors: Vec<FieldError>,
    /// The new-kickstart form as typed.
    name: String,
    content: String,
}

#[derive(Template)]
#[template(path = "kickstart.html")]
struct EditPage {
    chrome: Chrome,
    /// Name, size, who changed it and when: shown to everyone.
    kickstart: Summary,
    message: Option<String>,
    error: Option<String>,
    errors: Vec<FieldError>,
    /// The content (as stored, or as typed when refused): only ever filled for admins.
    content: String,
}

impl ListPage {
    fn field_error(&self, field: &str) -> Option<&str> {
        field_error(&self.errors, field)
    }
    fn when(&self, at: &i64) -> String {
        format_time(*at)
    }
}

impl EditPage {
    fn field_error(&self, field: &str) -> Option<&str> {
        field_error(&self.errors, field)
    }
    fn when(&self, at: &i64) -> String {
        format_time(*at)
    }
}

fn field_error<'a>(errors: &'a [FieldError], field: &str) -> Option<&'a str> {
    errors
        .iter()
        .find(|e| e.field == field)
        .map(|e| e.message.as_str())
}

/// A browser sends a textarea's lines ending in CR LF; kickstarts are stored with LF.
fn from_textarea(s: &str) -> String {
    s.replace("\r\n", "\n")
}

async fn render_list(
    state: &web::Data<AppState>,
    who: &Authed,
    status: StatusCode,
    message: Option<String>,
    errors: Vec<FieldError>,
    form: KickstartRequest,
) -> Result<HttpResponse, AppError> {
    let kickstarts = all(state).await?.into_iter().map(Summary::from).collect();
    Ok(html(
        status,
        &ListPage {
            chrome: Chrome::new(who, "kickstarts"),
            kickstarts,
            message,
            errors,
            name: form.name,
            content: form.content,
        },
    ))
}

async fn list_page(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    let message = notice_for(&who);
    render_list(
        &state,
        &who,
        StatusCode::OK,
        message,
        vec![],
        Default::default(),
    )
    .await
}

#[derive(Deserialize)]
struct KickstartForm {
    csrf: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    content: String,
}

async fn create_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<KickstartForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let f = form.into_inner();
    let req = KickstartRequest {
        name: f.name,
        content: from_textarea(&f.content),
    };
    match service::kickstarts::create(&state.svc, &who.caller(), req.clone()).await? {
        Ok(k) => Ok(see_other(
            &who,
            &format!("/kickstarts/{}", k.name),
            &format!("Kickstart {} saved.", k.name),
        )),
        Err(LifecycleError::Invalid(errors)) => {
            render_list(
                &state,
                &who,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                errors,
                req,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// What the edit page shows besides the stored kickstart.
#[derive(Default)]
struct EditShown {
    message: Option<String>,
    error: Option<String>,
    errors: Vec<FieldError>,
    /// The content as typed, when it was refused.
    content: Option<String>,
}

async fn render_edit(
    state: &web::Data<AppState>,
    who: &Authed,
    status: StatusCode,
    name: &str,
    shown: EditShown,
) -> Result<HttpResponse, AppError> {
    let kickstart = one(state, name).await?;
    let content = if reads_secrets(who) {
        shown.content.unwrap_or_else(|| kickstart.content.clone())
    } else {
        String::new()
    };
    Ok(html(
        status,
        &EditPage {
            chrome: Chrome::new(who, "kickstarts"),
            content,
            kickstart: Summary::from(kickstart),
            message: shown.message,
            error: shown.error,
            errors: shown.errors,
        },
    ))
}

async fn edit_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    let message = notice_for(&who);
    render_edit(
        &state,
        &who,
        StatusCode::OK,
        &name,
        EditShown {
            message,
            ..Default::default()
        },
    )
    .await
}

async fn update_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<KickstartForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let content = from_textarea(&form.content);
    let req = KickstartRequest {
        name: name.clone(),
        content: content.clone(),
    };
    match service::kickstarts::update(&state.svc, &who.caller(), req).await? {
        Ok(k) => Ok(see_other(
            &who,
            &format!("/kickstarts/{}", k.name),
            &format!("Kickstart {} saved.", k.name),
        )),
        Err(LifecycleError::Invalid(errors)) => {
            render_edit(
                &state,
                &who,
                StatusCode::UNPROCESSABLE_ENTITY,
                &name,
                EditShown {
                    errors,
                    content: Some(content),
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn delete_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    match service::kickstarts::delete(&state.svc, &who.caller(), name.clone()).await? {
        Ok(()) => Ok(see_other(
            &who,
            "/kickstarts",
            &format!("Kickstart {name} deleted."),
        )),
        Err(LifecycleError::Conflict(m)) => {
            render_edit(
                &state,
                &who,
                StatusCode::CONFLICT,
                &name,
                EditShown {
                    error: Some(m),
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}
