//! Templates: the Templates page, the "New VM from template" form, the mark/unmark
//! button of the VM page, and their API (`/api/v1/templates`, `/api/v1/vms/{name}/template`).
//! Operators and admins mark, unmark and create from templates; everyone signed in sees them.

use super::super::errors::{html, ApiError, AppError};
use super::super::kit::{self, answer, csrf_header, JobView};
use super::super::openapi::{BodyErrors, ChangeErrors, ReadErrors};
use super::super::session::Authed;
use super::super::{lc, AppState};
use super::vms::{back_to, render_detail, FormState};
use super::{format_time, Chrome};
use crate::auth::Role;
use crate::domain::storage::human_bytes;
use crate::domain::templates::{CloneMode, SYSPREP_MISSING};
use crate::lifecycle::templates::{self as tpl, FromTemplateRequest, Marked, TemplateView};
use crate::lifecycle::{FieldError, LifecycleError};
use crate::service;
use crate::web::routes::RouteExt;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::{Deserialize, Serialize};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.get("/templates", templates_page)
        .get("/templates/{name}/new", new_page)
        .post("/templates/{name}/new", create_form)
        .post("/vms/{name}/template", mark_form)
        .get("/api/v1/templates", api_list)
        .post("/api/v1/templates/{name}/vms", api_create)
        .post("/api/v1/vms/{name}/template", api_mark)
        .delete("/api/v1/vms/{name}/template", api_unmark);
}

// ---- pages ----

#[derive(Template)]
#[template(path = "templates.html")]
struct TemplatesPage {
    chrome: Chrome,
    templates: Vec<TemplateView>,
    can_operate: bool,
}

impl TemplatesPage {
    fn size(&self, t: &TemplateView) -> String {
        human_bytes(t.capacity_bytes())
    }
    fn on_disk(&self, t: &TemplateView) -> String {
        human_bytes(t.allocation_bytes())
    }
    fn when(&self, at: &i64) -> String {
        format_time(*at)
    }
}

async fn templates_page(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    let templates = lc(&state, |s| tpl::list(s.hv.as_ref(), &s.store)).await?;
    Ok(html(
        StatusCode::OK,
        &TemplatesPage {
            chrome: Chrome::new(&who, "templates"),
            can_operate: who.role.allows(Role::Operator),
            templates,
        },
    ))
}

#[derive(Template)]
#[template(path = "template_new.html")]
struct NewPage {
    chrome: Chrome,
    template: TemplateView,
    modes: [CloneMode; 2],
    sysprep_available: bool,
    sysprep_missing: &'static str,
    message: Option<String>,
    errors: Vec<FieldError>,
    name: String,
    mode: CloneMode,
    start: bool,
    reset_identity: bool,
}

impl NewPage {
    fn field_error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
    fn bytes(&self, b: &u64) -> String {
        human_bytes(*b)
    }
}

async fn render_new(
    state: &web::Data<AppState>,
    who: &Authed,
    name: String,
    form: FromTemplateRequest,
    message: Option<String>,
    errors: Vec<FieldError>,
    status: StatusCode,
) -> Result<HttpResponse, AppError> {
    let n = name.clone();
    let template = lc(state, move |s| tpl::list(s.hv.as_ref(), &s.store))
        .await?
        .into_iter()
        .find(|t| t.name == n)
        .ok_or_else(|| AppError::not_found(format!("There is no template named {name}.")))?;
    Ok(html(
        status,
        &NewPage {
            chrome: Chrome::new(who, "templates"),
            template,
            modes: [CloneMode::Full, CloneMode::Linked],
            sysprep_available: crate::adapters::sysprep::find(
                state.svc.cfg.images.sysprep_program.as_deref(),
            )
            .is_some(),
            sysprep_missing: SYSPREP_MISSING,
            message,
            errors,
            name: form.name,
            mode: form.mode,
            start: form.start,
            reset_identity: form.reset_identity,
        },
    ))
}

async fn new_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    who.require(&state, Role::Operator, "vm.template.create", &name)
        .await?;
    render_new(
        &state,
        &who,
        name,
        FromTemplateRequest::default(),
        None,
        vec![],
        StatusCode::OK,
    )
    .await
}

#[derive(Deserialize)]
struct CreateForm {
    csrf: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    mode: String,
    start: Option<String>,
    reset_identity: Option<String>,
}

async fn create_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let template = path.into_inner();
    let f = form.into_inner();
    let mode = CloneMode::parse(&f.mode);
    let req = FromTemplateRequest {
        name: f.name.trim().to_string(),
        mode: mode.unwrap_or_default(),
        start: f.start.is_some(),
        reset_identity: f.reset_identity.is_some(),
    };
    if mode.is_none() {
        who.require(&state, Role::Operator, "vm.template.create", &template)
            .await?;
        let errors = vec![FieldError {
            field: "mode",
            message: "Choose a full or a linked clone.".into(),
        }];
        return render_new(
            &state,
            &who,
            template,
            req,
            None,
            errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let started =
        service::templates::create_vm(&state.svc, &who.caller(), &template, req.clone()).await?;
    let outcome = match kit::form_outcome(&state, &who, started, |j| {
        format!("Making {} from template {template}", j.vm)
    })
    .await
    {
        Ok(outcome) => outcome,
        Err(to_jobs_page) => return Ok(to_jobs_page),
    };
    match outcome {
        Ok(job) => Ok(back_to(&who, &job.vm, &job.message)),
        Err(LifecycleError::Invalid(errors)) => {
            render_new(
                &state,
                &who,
                template,
                req,
                None,
                errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => {
            let (status, _, message) = kit::form_failure(e)?;
            render_new(&state, &who, template, req, message, vec![], status).await
        }
    }
}

#[derive(Deserialize)]
struct MarkForm {
    csrf: Option<String>,
    #[serde(default)]
    action: String,
}

async fn mark_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<MarkForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let r = match form.action.as_str() {
        "mark" => service::templates::mark(&state.svc, &who.caller(), &name)
            .await?
            .map(|m| {
                if m.autostart_turned_off {
                    format!("{name} is a template now; its autostart was turned off.")
                } else {
                    format!("{name} is a template now.")
                }
            }),
        "unmark" => service::templates::unmark(&state.svc, &who.caller(), &name)
            .await?
            .map(|()| format!("{name} is an ordinary VM again.")),
        _ => return Err(AppError::not_found("There is no such template action.")),
    };
    match r {
        Ok(m) => Ok(back_to(&who, &name, &m)),
        Err(LifecycleError::NotFound(m)) => Err(AppError::not_found(m)),
        Err(e) => {
            let form = FormState {
                section: "template",
                message: Some(e.to_string()),
                ..Default::default()
            };
            render_detail(&state, &who, name, None, None, form, StatusCode::CONFLICT).await
        }
    }
}

// ---- API ----

/// Every template.
#[derive(Serialize, utoipa::ToSchema)]
struct TemplateList {
    templates: Vec<TemplateView>,
    /// Whether "reset_identity" can be asked for (virt-sysprep is installed).
    sysprep_available: bool,
}

#[utoipa::path(
    get,
    path = "/api/v1/templates",
    operation_id = "list_templates",
    tag = "templates",
    summary = "List templates",
    description = "Role: viewer. Each template with its disks and linked clones, and whether \
        virt-sysprep is available (for `reset_identity`).",
    responses((status = 200, description = "The templates.", body = TemplateList), ReadErrors)
)]
async fn api_list(state: web::Data<AppState>, _who: Authed) -> Result<HttpResponse, AppError> {
    let templates = lc(&state, |s| tpl::list(s.hv.as_ref(), &s.store)).await?;
    Ok(HttpResponse::Ok().json(TemplateList {
        templates,
        sysprep_available: crate::adapters::sysprep::find(
            state.svc.cfg.images.sysprep_program.as_deref(),
        )
        .is_some(),
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/vms/{name}/template",
    operation_id = "mark_template",
    tag = "templates",
    summary = "Mark a VM as a template",
    description = "Role: operator. The VM must be shut off; its autostart is turned off.",
    params(("name" = String, Path, description = "The VM's name.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "Marked.", body = Marked),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 409, description = "It runs, or is a template already.", body = ApiError),
        ChangeErrors
    )
)]
async fn api_mark(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r = service::templates::mark(&state.svc, &who.caller(), &path.into_inner()).await?;
    answer(r, |m| HttpResponse::Ok().json(m))
}

/// A template turned back into a plain VM.
#[derive(Serialize, utoipa::ToSchema)]
struct Unmarked {
    name: String,
    template: bool,
}

#[utoipa::path(
    delete,
    path = "/api/v1/vms/{name}/template",
    operation_id = "unmark_template",
    tag = "templates",
    summary = "Unmark a template",
    description = "Role: operator. Refused, naming them, while linked clones exist.",
    params(("name" = String, Path, description = "The template's name.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "Unmarked.", body = Unmarked),
        (status = 404, description = "There is no such template.", body = ApiError),
        (status = 409, description = "Linked clones exist.", body = ApiError),
        ChangeErrors
    )
)]
async fn api_unmark(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let name = path.into_inner();
    let r = service::templates::unmark(&state.svc, &who.caller(), &name).await?;
    answer(r, |()| {
        HttpResponse::Ok().json(Unmarked {
            name,
            template: false,
        })
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/templates/{name}/vms",
    operation_id = "create_vm_from_template",
    tag = "templates",
    summary = "Make a VM from a template",
    description = "Role: operator. `full` (the default) copies every disk; `linked` makes \
        qcow2 overlays on the template's volumes (directory, filesystem or NFS pools only); \
        `reset_identity` runs virt-sysprep on the new disks. Units and disk space are \
        admitted before the answer; the copy runs as a job (`kind: clone`).",
    params(("name" = String, Path, description = "The template's name.")),
    request_body = FromTemplateRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 202, description = "The clone's job.", body = JobView,
            headers(("Location" = String, description = "`/api/v1/jobs/{id}`"))),
        (status = 404, description = "There is no such template.", body = ApiError),
        (status = 409, description = "The units or disk space do not fit.", body = ApiError),
        (status = 422, description = "A bad or taken name, a pool that cannot hold linked \
            clones (`field: mode`), or no virt-sysprep (`field: reset_identity`).",
            body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
async fn api_create(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<FromTemplateRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r = service::templates::create_vm(
        &state.svc,
        &who.caller(),
        &path.into_inner(),
        body.into_inner(),
    )
    .await?;
    answer(r, kit::accepted)
}
