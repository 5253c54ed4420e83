//! Host > Storage: storage pools with capacity, state and autostart; a pool's volumes;
//! defining, starting, stopping, refreshing and deleting pools. Admin only; the audited
//! operations here are shared with the API.

use super::super::errors::{html, AppError};
use super::super::session::Authed;
use super::super::{lc, AppState};
use super::vm_changes::audited;
use super::vms::url_escape;
use super::Chrome;
use crate::auth::Role;
use crate::domain::storage::{human_bytes, PoolRequest, PoolStatus};
use crate::lifecycle::storage::{
    self as pools, PoolAction, PoolDefined, PoolDeletePlan, PoolDeleted,
};
use crate::lifecycle::{FieldError, LcResult, LifecycleError};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

/// A host change only admins may make: the admin check (audited when refused), then the
/// same audited path as every VM change.
pub async fn admin_change<T, F, D>(
    state: &web::Data<AppState>,
    who: &Authed,
    action: &str,
    target: &str,
    change: F,
    describe: D,
) -> Result<LcResult<T>, AppError>
where
    T: Send + 'static,
    F: FnOnce(&AppState) -> LcResult<T> + Send + 'static,
    D: FnOnce(&T) -> String,
{
    who.require(state, Role::Admin, action, target).await?;
    audited(state, who, action, target, change, describe).await
}

/// A redirect to `path` that shows `message` there.
pub fn see_other(path: &str, message: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((
            header::LOCATION,
            format!("{path}?message={}", url_escape(message)),
        ))
        .finish()
}

// ---- audited operations, shared with the API ----

pub async fn define(
    state: &web::Data<AppState>,
    who: &Authed,
    req: PoolRequest,
) -> Result<LcResult<PoolDefined>, AppError> {
    let target = req.name.trim().to_string();
    admin_change(
        state,
        who,
        "pool.define",
        &target,
        move |s| pools::define_pool(s.hv.as_ref(), &req, &s.cfg.data_dir),
        |d| {
            let mut out = format!("{} pool at {}", d.kind, d.target_path);
            if !d.wiped_devices.is_empty() {
                out.push_str(&format!(
                    ", volume group built on {} (wiped)",
                    d.wiped_devices.join(", ")
                ));
            }
            if d.autostart {
                out.push_str(", autostart on");
            }
            out
        },
    )
    .await
}

pub async fn act(
    state: &web::Data<AppState>,
    who: &Authed,
    name: &str,
    action: PoolAction,
) -> Result<LcResult<()>, AppError> {
    let n = name.to_string();
    admin_change(
        state,
        who,
        &format!("pool.{}", action.as_str()),
        name,
        move |s| pools::pool_action(s.hv.as_ref(), &n, action),
        |()| String::new(),
    )
    .await
}

pub async fn delete(
    state: &web::Data<AppState>,
    who: &Authed,
    name: &str,
    delete_contents: bool,
) -> Result<LcResult<PoolDeleted>, AppError> {
    let n = name.to_string();
    admin_change(
        state,
        who,
        "pool.delete",
        name,
        move |s| pools::delete_pool(s.hv.as_ref(), &n, delete_contents),
        |d| {
            if d.storage_deleted {
                format!(
                    "contents deleted ({} volume{}{})",
                    d.volumes_deleted.len(),
                    if d.volumes_deleted.len() == 1 {
                        ""
                    } else {
                        "s"
                    },
                    if d.volumes_deleted.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", d.volumes_deleted.join(", "))
                    }
                )
            } else {
                "definition removed, contents kept".into()
            }
        },
    )
    .await
}

// ---- list and define ----

/// The define form as typed.
#[derive(Deserialize, Clone)]
#[serde(default)]
pub struct PoolForm {
    csrf: String,
    pub name: String,
    pub kind: String,
    pub target_path: String,
    pub vg_name: String,
    pub logical_mode: String,
    /// One device per line (or separated by spaces or commas).
    pub devices: String,
    pub confirm_wipe: String,
    pub nfs_host: String,
    pub nfs_export: String,
    pub nfs_format: String,
    pub autostart: Option<String>,
}

impl Default for PoolForm {
    fn default() -> Self {
        PoolForm {
            csrf: String::new(),
            name: String::new(),
            kind: "dir".into(),
            target_path: String::new(),
            vg_name: String::new(),
            logical_mode: "existing".into(),
            devices: String::new(),
            confirm_wipe: String::new(),
            nfs_host: String::new(),
            nfs_export: String::new(),
            nfs_format: "nfs".into(),
            autostart: Some("1".into()),
        }
    }
}

impl PoolForm {
    fn to_request(&self) -> PoolRequest {
        PoolRequest {
            name: self.name.clone(),
            kind: self.kind.clone(),
            target_path: self.target_path.clone(),
            vg_name: self.vg_name.clone(),
            logical_mode: self.logical_mode.clone(),
            devices: self
                .devices
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect(),
            confirm_wipe: self.confirm_wipe.clone(),
            nfs_host: self.nfs_host.clone(),
            nfs_export: self.nfs_export.clone(),
            nfs_format: self.nfs_format.clone(),
            autostart: Some(self.autostart.is_some()),
        }
    }
}

#[derive(Template)]
#[template(path = "host_storage.html")]
struct StoragePage {
    chrome: Chrome,
    pools: Vec<PoolStatus>,
    form: PoolForm,
    errors: Vec<FieldError>,
    form_error: Option<String>,
    message: Option<String>,
}

impl StoragePage {
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
    fn bytes(&self, b: &u64) -> String {
        human_bytes(*b)
    }
}

#[derive(Deserialize)]
pub struct MessageQuery {
    pub(super) message: Option<String>,
}

async fn render_storage(
    state: &web::Data<AppState>,
    who: &Authed,
    status: StatusCode,
    form: PoolForm,
    errors: Vec<FieldError>,
    form_error: Option<String>,
    message: Option<String>,
) -> Result<HttpResponse, AppError> {
    let pools = lc(state, |s| Ok(s.hv.pool_statuses()?)).await?;
    Ok(html(
        status,
        &StoragePage {
            chrome: Chrome::new(who, "storage"),
            pools,
            form,
            errors,
            form_error,
            message,
        },
    ))
}

pub async fn storage_page(
    state: web::Data<AppState>,
    who: Authed,
    q: web::Query<MessageQuery>,
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "storage.view", "").await?;
    let message = q.into_inner().message;
    render_storage(
        &state,
        &who,
        StatusCode::OK,
        PoolForm::default(),
        Vec::new(),
        None,
        message,
    )
    .await
}

/// The status and message for a failed change shown on a page.
fn failure(e: LifecycleError) -> Result<(StatusCode, Vec<FieldError>, Option<String>), AppError> {
    Ok(match e {
        LifecycleError::Invalid(errors) => (StatusCode::UNPROCESSABLE_ENTITY, errors, None),
        LifecycleError::NotFound(m) => return Err(AppError::not_found(m)),
        LifecycleError::Conflict(m) => (StatusCode::CONFLICT, Vec::new(), Some(m)),
        other => (StatusCode::BAD_GATEWAY, Vec::new(), Some(other.to_string())),
    })
}

pub async fn define_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<PoolForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(Some(&form.csrf))?;
    match define(&state, &who, form.to_request()).await? {
        Ok(d) => {
            let mut m = format!("Pool {} defined and started", d.name);
            if d.autostart {
                m.push_str("; it starts with the host");
            }
            m.push('.');
            Ok(see_other(&format!("/host/storage/{}", d.name), &m))
        }
        Err(e) => {
            let (status, errors, form_error) = failure(e)?;
            render_storage(&state, &who, status, form, errors, form_error, None).await
        }
    }
}

// ---- one pool ----

pub async fn pool_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    q: web::Query<MessageQuery>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    who.require(&state, Role::Admin, "storage.view", &name)
        .await?;
    // The page with its volumes, who uses them and the volume forms.
    super::super::volumes::render_pool(
        &state,
        &who,
        name,
        StatusCode::OK,
        q.into_inner().message,
        Default::default(),
    )
    .await
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub(super) csrf: Option<String>,
}

pub async fn action_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let (name, action) = path.into_inner();
    let action = PoolAction::parse(&action)
        .ok_or_else(|| AppError::not_found("There is no such pool action."))?;
    let back = format!("/host/storage/{name}");
    match act(&state, &who, &name, action).await? {
        Ok(()) => Ok(see_other(&back, &action.done(&name))),
        Err(LifecycleError::NotFound(m)) => Err(AppError::not_found(m)),
        Err(e) => Ok(see_other(&back, &e.to_string())),
    }
}

// ---- delete ----

#[derive(Template)]
#[template(path = "host_pool_delete.html")]
struct DeletePage {
    chrome: Chrome,
    plan: PoolDeletePlan,
    error: Option<String>,
}

impl DeletePage {
    fn bytes(&self, b: &u64) -> String {
        human_bytes(*b)
    }
}

async fn render_delete(
    state: &web::Data<AppState>,
    who: &Authed,
    name: String,
    status: StatusCode,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let plan = lc(state, move |s| {
        pools::pool_delete_plan(s.hv.as_ref(), &name)
    })
    .await?;
    Ok(html(
        status,
        &DeletePage {
            chrome: Chrome::new(who, "storage"),
            plan,
            error,
        },
    ))
}

pub async fn delete_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    who.require(&state, Role::Admin, "pool.delete", &name)
        .await?;
    render_delete(&state, &who, name, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct DeleteForm {
    csrf: Option<String>,
    delete_contents: Option<String>,
}

pub async fn delete_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<DeleteForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    match delete(&state, &who, &name, form.delete_contents.is_some()).await? {
        Ok(d) => {
            let m = if d.storage_deleted {
                format!(
                    "Pool {name} deleted with its contents ({} volume{}).",
                    d.volumes_deleted.len(),
                    if d.volumes_deleted.len() == 1 {
                        ""
                    } else {
                        "s"
                    }
                )
            } else {
                format!("Pool {name} removed; its contents were kept.")
            };
            Ok(see_other("/host/storage", &m))
        }
        Err(e) => {
            let (status, _, message) = failure(e)?;
            render_delete(&state, &who, name, status, message).await
        }
    }
}
