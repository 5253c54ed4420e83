//! Host > Storage: storage pools with capacity, state and autostart; a pool's volumes;
//! defining, starting, stopping, refreshing and deleting pools. Admin only; the audited
//! operations here are shared with the API.

use super::super::errors::{html, AppError};
use super::super::session::Authed;
use super::super::{lc, AppState};
use super::Chrome;
use crate::auth::Role;
use crate::domain::storage::{human_bytes, PoolRequest, PoolStatus};
use crate::lifecycle::storage::{self as pools, PoolAction, PoolDeletePlan};
use crate::lifecycle::{FieldError, LifecycleError};
use crate::service;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

pub use super::super::kit::{notice_for, see_other};

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

/// A field left out of a post is empty: an unticked "start with the host" box is absent,
/// so autostart is off. The fresh form ticks it ([`PoolForm::fresh`]).
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
            autostart: None,
        }
    }
}

impl PoolForm {
    /// The form as a fresh page shows it: a directory pool that starts with the host.
    fn fresh() -> Self {
        PoolForm {
            autostart: Some("1".into()),
            ..Default::default()
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
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "storage.view", "").await?;
    let message = notice_for(&who);
    render_storage(
        &state,
        &who,
        StatusCode::OK,
        PoolForm::fresh(),
        Vec::new(),
        None,
        message,
    )
    .await
}

pub async fn define_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<PoolForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(Some(&form.csrf))?;
    match service::storage::define_pool(&state.svc, &who.caller(), form.to_request()).await? {
        Ok(d) => {
            let mut m = format!("Pool {} defined and started", d.name);
            if d.autostart {
                m.push_str("; it starts with the host");
            }
            m.push('.');
            Ok(see_other(&who, &format!("/host/storage/{}", d.name), &m))
        }
        Err(e) => {
            let (status, errors, form_error) = super::super::kit::form_failure(e)?;
            render_storage(&state, &who, status, form, errors, form_error, None).await
        }
    }
}

// ---- one pool ----

pub async fn pool_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    who.require(&state, Role::Admin, "storage.view", &name)
        .await?;
    let message = notice_for(&who);
    // The page with its volumes, who uses them and the volume forms.
    super::super::volumes::render_pool(
        &state,
        &who,
        name,
        StatusCode::OK,
        message,
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
    match service::storage::pool_action(&state.svc, &who.caller(), &name, action).await? {
        Ok(()) => Ok(see_other(&who, &back, &action.done(&name))),
        Err(LifecycleError::NotFound(m)) => Err(AppError::not_found(m)),
        Err(e) => Ok(see_other(&who, &back, &e.to_string())),
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
    match service::storage::delete_pool(
        &state.svc,
        &who.caller(),
        &name,
        form.delete_contents.is_some(),
    )
    .await?
    {
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
            Ok(see_other(&who, "/host/storage", &m))
        }
        Err(e) => {
            let (status, _, message) = super::super::kit::form_failure(e)?;
            render_delete(&state, &who, name, status, message).await
        }
    }
}
