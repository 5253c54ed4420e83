//! Jobs: the Jobs page and `/api/v1/jobs`, and cancel. Operators see every job (clones
//! are theirs); cancelling a volume job takes an admin. The runner is
//! `service::runner`; a form's wait for its job is `kit::form_outcome`.

use super::errors::{html, ApiError, AppError};
use super::kit::{answer, csrf_header, job_percent, notice_for, see_other, JobView};
use super::openapi::{ChangeErrors, RoleReadErrors};
use super::pages::{format_time, Chrome};
use super::session::Authed;
use super::{db, AppState};
use crate::auth::Role;
use crate::domain::storage::human_bytes;
use crate::domain::volumes::{JobKind, JobState};
use crate::lifecycle::LifecycleError;
use crate::store::jobs::JobRow;
use crate::web::routes::RouteExt;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::{Deserialize, Serialize};

/// Jobs shown on the page and in the list.
const JOBS_SHOWN: u64 = 100;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.get("/jobs", jobs_page)
        .post("/jobs/{id}/cancel", cancel_form)
        .get("/api/v1/jobs", api_jobs)
        .get("/api/v1/jobs/{id}", api_job)
        .post("/api/v1/jobs/{id}/cancel", api_cancel);
}

/// Jobs, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct JobList {
    jobs: Vec<JobView>,
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    summary = "List jobs",
    description = "Role: operator. The newest 100 jobs first: uploads, fetches, new volumes, \
        clones, migrations, bulk actions, backups (kind `backup`, source `backup <id>`, pool \
        the target) and restores (`restore`, `restore-over`).",
    responses((status = 200, description = "The jobs.", body = JobList), RoleReadErrors)
)]
async fn api_jobs(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Operator, "jobs.view", "").await?;
    let jobs = db(&state, |s| s.jobs(JOBS_SHOWN))
        .await?
        .into_iter()
        .map(|j| state.jobs.live(j))
        .collect::<Vec<_>>();
    Ok(HttpResponse::Ok().json(JobList {
        jobs: jobs.into_iter().map(JobView::of).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    operation_id = "get_job",
    tag = "jobs",
    summary = "One job",
    description = "Role: operator. `state` is `running`, `succeeded`, `failed`, `cancelled` or \
        `interrupted` (virtdeck stopped while it ran); `percent` is 100 once it succeeded.",
    params(("id" = i64, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job.", body = JobView),
        (status = 404, description = "There is no such job.", body = ApiError),
        RoleReadErrors
    )
)]
async fn api_job(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let id = path.into_inner();
    who.require(&state, Role::Operator, "jobs.view", "").await?;
    match db(&state, move |s| s.job(id)).await? {
        Some(job) => Ok(HttpResponse::Ok().json(JobView::of(state.jobs.live(job)))),
        None => Err(AppError::not_found(format!("There is no job {id}."))),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/cancel",
    operation_id = "cancel_job",
    tag = "jobs",
    summary = "Cancel a job",
    description = "Role: admin (operator for a clone, a backup or a restore). The job stops \
        and deletes what it made; a clone or restore stops once the disk being copied is done, \
        a migration is aborted (the VM keeps running here), a backup's libvirt job is aborted \
        (its files removed; the backup is recorded as failed, saying it was cancelled).",
    params(("id" = i64, Path, description = "The job's id.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 202, description = "The job, stopping.", body = JobView),
        (status = 404, description = "There is no such job.", body = ApiError),
        (status = 409, description = "The job has ended.", body = ApiError),
        ChangeErrors
    )
)]
async fn api_cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r =
        crate::service::storage::cancel_job(&state.svc, &who.caller(), path.into_inner()).await?;
    answer(r, |job| HttpResponse::Accepted().json(JobView::of(job)))
}

// ---- the page ----

struct JobLine {
    job: JobRow,
    percent: u64,
    created: String,
    can_cancel: bool,
}

impl JobLine {
    /// A clone or a restore: the job makes a VM, or restores over one.
    fn is_clone(&self) -> bool {
        JobKind::parse(&self.job.kind).is_some_and(JobKind::on_vm)
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    chrome: Chrome,
    jobs: Vec<JobLine>,
    message: Option<String>,
    any_running: bool,
}

impl JobsPage {
    fn bytes(&self, b: &u64) -> String {
        human_bytes(*b)
    }
}

async fn render_jobs(
    state: &web::Data<AppState>,
    who: &Authed,
    status: StatusCode,
    message: Option<String>,
) -> Result<HttpResponse, AppError> {
    let jobs: Vec<JobRow> = db(state, |s| s.jobs(JOBS_SHOWN))
        .await?
        .into_iter()
        .map(|j| state.jobs.live(j))
        .collect();
    let any_running = jobs.iter().any(|j| j.state == JobState::Running.as_str());
    Ok(html(
        status,
        &JobsPage {
            chrome: Chrome::new(who, "jobs"),
            jobs: jobs
                .into_iter()
                .map(|job| JobLine {
                    percent: job_percent(&job),
                    created: format_time(job.created_at),
                    can_cancel: job.state == JobState::Running.as_str()
                        && who
                            .role
                            .allows(crate::service::storage::role_to_cancel(&job)),
                    job,
                })
                .collect(),
            message,
            any_running,
        },
    ))
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn jobs_page(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Operator, "jobs.view", "").await?;
    let message = notice_for(&who);
    render_jobs(&state, &who, StatusCode::OK, message).await
}

async fn cancel_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let id = path.into_inner();
    match crate::service::storage::cancel_job(&state.svc, &who.caller(), id).await? {
        Ok(job) if job.kind == JobKind::Backup.as_str() => Ok(see_other(
            &who,
            "/jobs",
            &format!(
                "Cancelling job {id}: the {} of {} stops, and its files are removed.",
                job.source, job.vm
            ),
        )),
        Ok(job) if job.kind == JobKind::RestoreOver.as_str() => Ok(see_other(
            &who,
            "/jobs",
            &format!(
                "Cancelling job {id}: the restore over {} stops, and {} stays as it was.",
                job.vm, job.vm
            ),
        )),
        Ok(job) if JobKind::parse(&job.kind).is_some_and(JobKind::makes_vm) => Ok(see_other(
            &who,
            "/jobs",
            &format!(
                "Cancelling job {id}: the {} {} stops once the disk being copied is done, and everything it made is removed.",
                job.kind, job.vm
            ),
        )),
        Ok(job) => Ok(see_other(
            &who,
            "/jobs",
            &format!(
                "Cancelling job {id}; the partial volume {} is removed.",
                job.volume
            ),
        )),
        Err(LifecycleError::NotFound(m)) => Err(AppError::not_found(m)),
        Err(e) => render_jobs(&state, &who, StatusCode::CONFLICT, Some(e.to_string())).await,
    }
}
