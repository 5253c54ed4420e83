//! Jobs: the Jobs page and `/api/v1/jobs`, cancel, start-up reconciliation, and the two
//! helpers every job-starting handler uses: run the job on a thread of its own, and
//! wait a moment for it so that a quick job answers the form like a plain change.
//! Operators see every job (clones are theirs); cancelling a volume job takes an admin.

use super::api::{answer, csrf_header};
use super::errors::{html, AppError};
use super::pages::storage::see_other;
use super::pages::{format_time, Chrome};
use super::session::Authed;
use super::{db, AppState};
use crate::auth::Role;
use crate::domain::storage::human_bytes;
use crate::domain::volumes::{percent, JobKind, JobState};
use crate::lifecycle::jobs::{self, Actor};
use crate::lifecycle::{LcResult, LifecycleError};
use crate::store::jobs::JobRow;
use crate::web::routes::RouteExt;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Jobs shown on the page and in the list.
const JOBS_SHOWN: u64 = 100;

/// How long a form waits for its job before it sends the admin to the Jobs page: a
/// job done by then (an empty volume, a small clone) answers like a plain change.
pub const FORM_WAIT: Duration = Duration::from_millis(1500);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.get("/jobs", jobs_page)
        .post("/jobs/{id}/cancel", cancel_form)
        .get("/api/v1/jobs", api_jobs)
        .get("/api/v1/jobs/{id}", api_job)
        .post("/api/v1/jobs/{id}/cancel", api_cancel);
}

/// At start-up (after interrupted creates and clones were rolled back): running jobs
/// were interrupted; their partial volumes are removed.
pub fn reconcile_jobs(hv: &dyn crate::hypervisor::Hypervisor, store: &crate::store::Store) {
    match jobs::reconcile(hv, store) {
        Ok(notes) => {
            let actor = Actor {
                username: "virtdeck".into(),
                remote_addr: "local".into(),
            };
            for note in notes {
                tracing::warn!(%note, "start-up reconciliation");
                actor.audit(store, "job.interrupted", "", "ok", &note);
            }
        }
        Err(e) => tracing::error!(error = %e, "reconciling interrupted jobs failed"),
    }
}

pub fn actor(who: &Authed) -> Actor {
    Actor {
        username: who.username.clone(),
        remote_addr: who.remote_addr.clone(),
    }
}

/// Runs `work` for `job` on a thread of its own. If no thread can be started, the job
/// ends failed and its cancel handle is dropped.
pub fn spawn(
    state: &web::Data<AppState>,
    job: &JobRow,
    work: impl FnOnce(&AppState) + Send + 'static,
) -> LcResult<()> {
    spawn_or_undo(state, job, work, |_| {})
}

/// [`spawn`], with `undo` removing what the job's checks reserved when no thread can
/// be started.
fn spawn_or_undo(
    state: &web::Data<AppState>,
    job: &JobRow,
    work: impl FnOnce(&AppState) + Send + 'static,
    undo: impl FnOnce(&AppState),
) -> LcResult<()> {
    let st = state.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("{}-job-{}", job.kind, job.id))
        .spawn(move || {
            work(&st);
            // What the job made or removed shows in the VM list at once.
            st.vm_list.invalidate();
        });
    if let Err(e) = spawned {
        undo(state);
        state.jobs.forget(job.id);
        let message = format!("The job could not be started: {e}.");
        let _ = state.store.finish_job(
            job.id,
            JobState::Failed.as_str(),
            0,
            &message,
            job.created_at,
        );
        return Err(LifecycleError::Failed { message });
    }
    Ok(())
}

/// The job once it has ended, if it ends within `wait`.
pub async fn ended_within(state: &AppState, id: i64, wait: Duration) -> Option<JobRow> {
    let until = Instant::now() + wait;
    loop {
        let job = db(state, move |s| s.job(id)).await.ok().flatten()?;
        if job.state != JobState::Running.as_str() {
            return Some(job);
        }
        if Instant::now() >= until {
            return None;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A job with its progress in percent, as the API shows it.
#[derive(Serialize)]
pub struct JobView {
    #[serde(flatten)]
    job: JobRow,
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
fn job_percent(job: &JobRow) -> u64 {
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

/// The role a job's cancel takes: clones are operators' work, volume jobs admins'.
fn role_to_cancel(job: &JobRow) -> Role {
    if JobKind::parse(&job.kind) == Some(JobKind::Clone) {
        Role::Operator
    } else {
        Role::Admin
    }
}

async fn cancel(
    state: &web::Data<AppState>,
    who: &Authed,
    id: i64,
) -> Result<LcResult<JobRow>, AppError> {
    let target = format!("job {id}");
    who.require(state, Role::Operator, "job.cancel", &target)
        .await?;
    let job = db(state, move |s| s.job(id))
        .await?
        .ok_or_else(|| AppError::not_found(format!("There is no job {id}.")))?;
    who.require(state, role_to_cancel(&job), "job.cancel", &target)
        .await?;
    // The same audited path as every change (the role was checked for this job's kind).
    super::pages::vm_changes::audited(
        state,
        who,
        "job.cancel",
        &target,
        move |s| jobs::cancel(&s.store, &s.jobs, id),
        describe,
    )
    .await
}

/// What a job works on, in a few words.
fn describe(j: &JobRow) -> String {
    if j.kind == JobKind::Clone.as_str() {
        format!("clone {} → {}", j.source, j.vm)
    } else {
        format!("{} {}/{}", j.kind, j.pool, j.volume)
    }
}

#[derive(Serialize)]
struct JobList {
    jobs: Vec<JobView>,
}

async fn api_jobs(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Operator, "jobs.view", "").await?;
    let jobs = db(&state, |s| s.jobs(JOBS_SHOWN))
        .await
        .map_err(|e| who.err(e))?
        .into_iter()
        .map(|j| state.jobs.live(j))
        .collect::<Vec<_>>();
    Ok(HttpResponse::Ok().json(JobList {
        jobs: jobs.into_iter().map(JobView::of).collect(),
    }))
}

async fn api_job(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let id = path.into_inner();
    who.require(&state, Role::Operator, "jobs.view", "").await?;
    match db(&state, move |s| s.job(id))
        .await
        .map_err(|e| who.err(e))?
    {
        Some(job) => Ok(HttpResponse::Ok().json(JobView::of(state.jobs.live(job)))),
        None => Err(who.err(AppError::not_found(format!("There is no job {id}.")))),
    }
}

async fn api_cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r = cancel(&state, &who, path.into_inner())
        .await
        .map_err(|e| who.err(e))?;
    answer(&who, r, |job| {
        HttpResponse::Accepted().json(JobView::of(job))
    })
}

// ---- the page ----

struct JobLine {
    job: JobRow,
    percent: u64,
    created: String,
    can_cancel: bool,
}

impl JobLine {
    fn is_clone(&self) -> bool {
        self.job.kind == JobKind::Clone.as_str()
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
                        && who.role.allows(role_to_cancel(&job)),
                    job,
                })
                .collect(),
            message,
            any_running,
        },
    ))
}

#[derive(Deserialize)]
struct MessageQuery {
    message: Option<String>,
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn jobs_page(
    state: web::Data<AppState>,
    who: Authed,
    q: web::Query<MessageQuery>,
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Operator, "jobs.view", "").await?;
    render_jobs(&state, &who, StatusCode::OK, q.into_inner().message).await
}

async fn cancel_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let id = path.into_inner();
    match cancel(&state, &who, id).await? {
        Ok(job) if job.kind == JobKind::Clone.as_str() => Ok(see_other(
            "/jobs",
            &format!(
                "Cancelling job {id}: the clone {} stops once the disk being copied is done, and everything it made is removed.",
                job.vm
            ),
        )),
        Ok(job) => Ok(see_other(
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

/// A job a form started, after waiting [`FORM_WAIT`] for it: its outcome (the ended
/// job, or its message as the form's error; a refusal passes through), or, while it
/// runs on, the redirect to the Jobs page saying `what` runs there.
pub async fn form_outcome(
    state: &AppState,
    started: LcResult<JobRow>,
    what: impl FnOnce(&JobRow) -> String,
) -> Result<LcResult<JobRow>, HttpResponse> {
    let job = match started {
        Ok(job) => job,
        Err(e) => return Ok(Err(e)),
    };
    let Some(ended) = ended_within(state, job.id, FORM_WAIT).await else {
        return Err(see_other(
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
        Err(LifecycleError::Failed {
            message: ended.message,
        })
    })
}

/// Runs a planned clone's job on a thread of its own (see [`jobs::run_clone`]); if no
/// thread can be started, the clone's reservation is rolled back.
pub fn spawn_clone<T: 'static>(
    state: &web::Data<AppState>,
    actor: Actor,
    job: &JobRow,
    cancel: tokio_util::sync::CancellationToken,
    action: &'static str,
    build: impl FnOnce(&AppState, &dyn crate::lifecycle::changes::CloneWatch) -> LcResult<T>
        + Send
        + 'static,
    describe: impl FnOnce(&T) -> String + Send + 'static,
) -> LcResult<()> {
    let (j, a) = (job.clone(), actor);
    let vm = job.vm.clone();
    spawn_or_undo(
        state,
        job,
        move |s| {
            jobs::run_clone(
                &s.store,
                &s.jobs,
                &j,
                cancel,
                &a,
                action,
                |w| build(s, w),
                describe,
            )
        },
        move |s| {
            crate::lifecycle::roll_back(s.hv.as_ref(), &s.store, &vm);
        },
    )
}
