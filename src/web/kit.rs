//! The web layer's kit: what page and API handlers share besides extractors — the CSRF
//! check of API calls, JSON answers of a change's outcome, post/redirect/get with a
//! one-time notice, and the answers of jobs. Handlers import this and the service
//! layer, never each other.

use super::errors::{ApiError, ApiErrorDetail, ApiFieldError, AppError, ErrorCode};
use super::session::Authed;
use super::AppState;
use crate::domain::volumes::{percent, JobState};
use crate::hostcfg::{ChangeError, Engine};
use crate::lifecycle::{FieldError, LcResult, LifecycleError};
use crate::store::jobs::JobRow;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// A state-changing API call made with a session must carry its CSRF token in
/// `X-CSRF-Token`; bearer tokens need none.
pub fn csrf_header(req: &HttpRequest, who: &Authed) -> Result<(), AppError> {
    let presented = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok());
    who.check_csrf(presented)
}

/// 422 with every field error, like a create.
pub fn invalid(errors: &[FieldError]) -> HttpResponse {
    let first = errors.first().cloned().unwrap_or(FieldError {
        field: "name",
        message: "Check the request.".into(),
    });
    HttpResponse::UnprocessableEntity().json(ApiError {
        error: ApiErrorDetail {
            code: ErrorCode::Invalid,
            message: first.message,
            field: Some(first.field.to_string()),
            libvirt_code: None,
            errors: Some(
                errors
                    .iter()
                    .map(|e| ApiFieldError::of(e.field, &e.message))
                    .collect(),
            ),
            fields: None,
        },
    })
}

/// The JSON answer for a change's outcome.
pub fn answer<T: Serialize>(
    r: Result<T, LifecycleError>,
    ok: impl FnOnce(T) -> HttpResponse,
) -> Result<HttpResponse, AppError> {
    match r {
        Ok(v) => Ok(ok(v)),
        Err(LifecycleError::Invalid(errors)) => Ok(invalid(&errors)),
        Err(e) => Err(e.into()),
    }
}

/// A change's error as a page shows it again at its form: the status (the one mapping,
/// [`super::errors::kind_of`]), the field errors, or the sentence above the form. A
/// missing object is the not-found page instead.
pub fn form_failure(
    e: LifecycleError,
) -> Result<(actix_web::http::StatusCode, Vec<FieldError>, Option<String>), AppError> {
    let status = super::errors::kind_of(&e).status();
    match e {
        LifecycleError::Invalid(errors) => Ok((status, errors, None)),
        LifecycleError::NotFound(m) => Err(AppError::not_found(m)),
        other => Ok((status, Vec::new(), Some(other.to_string()))),
    }
}

// ---- post/redirect/get ----

/// A redirect to the page at `path` that shows `message` there once (post/redirect/get:
/// the notice waits for `who`'s next page, never in the address).
pub fn see_other(who: &Authed, path: &str, message: &str) -> HttpResponse {
    super::flash::redirect(who, path, super::flash::Flash::notice(message))
}

/// The one-time notice waiting for `who`, for the page being rendered.
pub fn notice_for(who: &Authed) -> Option<String> {
    super::flash::take(who).map(|f| f.notice)
}

// ---- jobs ----

/// How long a form waits for its job before it sends the admin to the Jobs page: a
/// job done by then (an empty volume, a small clone) answers like a plain change.
pub const FORM_WAIT: Duration = Duration::from_millis(1500);

/// A job with its progress in percent, as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    job: JobRow,
    /// How far it is: its bytes, and 100 once it succeeded.
    percent: u64,
}

impl JobView {
    pub fn of(job: JobRow) -> JobView {
        JobView {
            percent: job_percent(&job),
            job,
        }
    }
}

/// How far a job is: its bytes, and 100 once it succeeded (a job that moves no bytes,
/// such as a linked clone, has nothing else to count).
pub fn job_percent(job: &JobRow) -> u64 {
    if job.state == JobState::Succeeded.as_str() {
        100
    } else {
        percent(job.bytes_done, job.bytes_total)
    }
}

/// `202 Accepted` with the job and where to follow it.
pub fn accepted(job: JobRow) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header(("location", format!("/api/v1/jobs/{}", job.id)))
        .json(JobView::of(job))
}

/// A job a form started, after waiting [`FORM_WAIT`] for it: its outcome (the ended
/// job, or its message as the form's error; a refusal passes through), or, while it
/// runs on, the redirect to the Jobs page saying `what` runs there.
pub async fn form_outcome(
    state: &AppState,
    who: &Authed,
    started: LcResult<JobRow>,
    what: impl FnOnce(&JobRow) -> String,
) -> Result<LcResult<JobRow>, HttpResponse> {
    let job = match started {
        Ok(job) => job,
        Err(e) => return Ok(Err(e)),
    };
    let Some(ended) = crate::service::runner::ended_within(&state.svc, job.id, FORM_WAIT).await
    else {
        return Err(see_other(
            who,
            "/jobs",
            &format!(
                "{} runs as job {}; its progress is below.",
                what(&job),
                job.id
            ),
        ));
    };
    Ok(if ended.state == JobState::Succeeded.as_str() {
        Ok(ended)
    } else if ended.state == JobState::Cancelled.as_str() {
        Err(LifecycleError::Conflict(ended.message))
    } else {
        Err(LifecycleError::failed(ended.message))
    })
}

// ---- the host ----

/// What the Host page and `GET /api/v1/host` show of this host: its facts, its VMs, what
/// guests can have here (none when unreadable) and its capacity (or why it is unreadable).
pub struct HostOverview {
    pub facts: crate::domain::host::HostFacts,
    pub vms: Vec<crate::domain::vm::VmSummary>,
    pub guest: Option<crate::domain::guest_caps::GuestCapabilities>,
    pub capacity: Result<crate::lifecycle::Capacity, String>,
}

/// Reads the [`HostOverview`] off the async runtime.
pub async fn host_overview(
    state: &actix_web::web::Data<AppState>,
) -> Result<HostOverview, AppError> {
    let virt_type = state.virt_type.as_ref().ok().copied();
    let (facts, vms, guest) = super::hv(state, move |h| {
        let guest = virt_type.and_then(|v| h.guest_capabilities(v).ok());
        Ok((h.host_facts()?, h.list_vms()?, guest))
    })
    .await?;
    let capacity = super::lc(state, |s| {
        crate::lifecycle::capacity(s.hv.as_ref(), &s.store, &s.lifecycle)
    })
    .await
    .map_err(|e| e.to_string());
    Ok(HostOverview {
        facts,
        vms,
        guest,
        capacity,
    })
}

// ---- host changes ----

/// Runs a blocking engine call off the async runtime.
pub async fn engine<T, F>(state: &AppState, f: F) -> Result<T, ChangeError>
where
    T: Send + 'static,
    F: FnOnce(&Arc<Engine>) -> Result<T, ChangeError> + Send + 'static,
{
    let e = state.host.clone();
    actix_web::web::block(move || f(&e))
        .await
        .map_err(|e| ChangeError::Io(format!("internal error: {e}")))?
}
