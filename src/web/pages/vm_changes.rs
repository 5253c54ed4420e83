//! Forms on the VM page that change the VM: resize, clone, snapshots. The audited
//! operations here are shared with the API.

use super::super::errors::AppError;
use super::super::jobs as web_jobs;
use super::super::session::Authed;
use super::super::{audit, lc, now, AppState};
use super::vms::{back_to, number, render_detail, FormState};
use crate::auth::Role;
use crate::domain::snapshot::SnapshotInfo;
use crate::domain::templates::CloneMode;
use crate::lifecycle::{
    self, changes, jobs, CloneRequest, FieldError, LcResult, LifecycleError, Resized, SizeRequest,
    SnapshotRequest,
};
use crate::store::jobs::JobRow;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

/// Runs a lifecycle change for `who` after the role check, and audits the outcome. The
/// outer error is a refusal (already audited); the inner one is the change's own.
pub async fn audited<T, F, D>(
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
    who.require(state, Role::Operator, action, target).await?;
    let started = std::time::Instant::now();
    let r = lc(state, change).await;
    let took = started.elapsed().as_secs_f64();
    let outcome = super::super::metrics::outcome(&r);
    state.metrics.job(action, outcome, took);
    let (result, detail) = match &r {
        Ok(v) => ("ok", describe(v)),
        Err(LifecycleError::Invalid(errs)) => (
            "invalid",
            errs.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Err(e @ LifecycleError::Capacity(_)) => ("refused", e.to_string()),
        Err(e) => ("failed", e.to_string()),
    };
    audit::record(
        state,
        &who.username,
        &who.remote_addr,
        action,
        target,
        result,
        &detail,
    )
    .await;
    Ok(r)
}

pub async fn resize(
    state: &web::Data<AppState>,
    who: &Authed,
    name: &str,
    req: SizeRequest,
) -> Result<LcResult<Resized>, AppError> {
    let n = name.to_string();
    audited(
        state,
        who,
        "vm.resize",
        name,
        move |s| lifecycle::resize(s.hv.as_ref(), &s.store, &s.cfg, &s.admission, &n, &req),
        |r| {
            format!(
                "{} → {}, {} vCPUs, {} MiB",
                r.previous_units,
                super::units_text(r.units),
                r.vcpus,
                r.memory_mib
            )
        },
    )
    .await
}

/// Checks a clone and holds its units, then copies on a thread of its own as a job.
/// The thread is started inside the checked step, so a client that goes away early
/// never leaves a checked clone without its job.
pub async fn clone(
    state: &web::Data<AppState>,
    who: &Authed,
    source: &str,
    req: CloneRequest,
) -> Result<LcResult<JobRow>, AppError> {
    let src = source.to_string();
    let (actor, job_actor, st) = (who.username.clone(), web_jobs::actor(who), state.clone());
    // Audited under the source's name; the clone's own history starts with its create.
    audited(
        state,
        who,
        "vm.clone",
        source,
        move |s| {
            let plan = changes::plan_clone(
                s.hv.as_ref(),
                &s.store,
                &s.cfg,
                &s.admission,
                &src,
                &req,
                &actor,
                now(),
                CloneMode::Full,
            )?;
            let (job, cancel) =
                jobs::begin_clone(s.hv.as_ref(), &s.store, &s.jobs, &plan, &job_actor)?;
            web_jobs::spawn_clone(
                &st,
                job_actor,
                &job,
                cancel,
                "vm.clone",
                move |s, watch| changes::build_clone(s.hv.as_ref(), &s.store, plan, None, watch),
                |c| {
                    format!(
                        "Cloned from {} to {}: {} unit{}, {} disk{} copied{}.",
                        c.source,
                        c.name,
                        c.units,
                        if c.units == 1 { "" } else { "s" },
                        c.volumes.len(),
                        if c.volumes.len() == 1 { "" } else { "s" },
                        if c.started { ", started" } else { "" }
                    )
                },
            )?;
            Ok(job)
        },
        |job| format!("job {} started: cloning to {}", job.id, job.vm),
    )
    .await
}

pub async fn create_snapshot(
    state: &web::Data<AppState>,
    who: &Authed,
    name: &str,
    req: SnapshotRequest,
) -> Result<LcResult<SnapshotInfo>, AppError> {
    let n = name.to_string();
    audited(
        state,
        who,
        "vm.snapshot.create",
        name,
        move |s| lifecycle::create_snapshot(s.hv.as_ref(), &n, &req),
        |s| format!("snapshot {}", s.name),
    )
    .await
}

pub async fn revert_snapshot(
    state: &web::Data<AppState>,
    who: &Authed,
    name: &str,
    snapshot: &str,
) -> Result<LcResult<()>, AppError> {
    let (n, sn) = (name.to_string(), snapshot.to_string());
    let detail = format!("snapshot {snapshot}");
    audited(
        state,
        who,
        "vm.snapshot.revert",
        name,
        move |s| lifecycle::revert_snapshot(s.hv.as_ref(), &n, &sn),
        move |_| detail,
    )
    .await
}

pub async fn delete_snapshot(
    state: &web::Data<AppState>,
    who: &Authed,
    name: &str,
    snapshot: &str,
) -> Result<LcResult<()>, AppError> {
    let (n, sn) = (name.to_string(), snapshot.to_string());
    let detail = format!("snapshot {snapshot}");
    audited(
        state,
        who,
        "vm.snapshot.delete",
        name,
        move |s| lifecycle::delete_snapshot(s.hv.as_ref(), &n, &sn),
        move |_| detail,
    )
    .await
}

/// Shows a failed form again on the VM page, at the form, with what was typed.
async fn form_failed(
    state: &web::Data<AppState>,
    who: &Authed,
    name: String,
    section: &'static str,
    values: Vec<(&'static str, String)>,
    e: LifecycleError,
) -> Result<HttpResponse, AppError> {
    let (status, message, errors) = match e {
        LifecycleError::Invalid(errors) => (StatusCode::UNPROCESSABLE_ENTITY, None, errors),
        LifecycleError::NotFound(m) => return Err(who.err(AppError::not_found(m))),
        LifecycleError::Capacity(c) => (StatusCode::CONFLICT, Some(c.to_string()), vec![]),
        LifecycleError::Conflict(m) => (StatusCode::CONFLICT, Some(m), vec![]),
        other => (StatusCode::BAD_GATEWAY, Some(other.to_string()), vec![]),
    };
    render_detail(
        state,
        who,
        name,
        None,
        None,
        FormState {
            section,
            message,
            errors,
            values,
        },
        status,
    )
    .await
}

// ---- page handlers ----

#[derive(Deserialize)]
pub struct ResizeForm {
    csrf: Option<String>,
    #[serde(default)]
    flavor: String,
    #[serde(default)]
    units: String,
    #[serde(default)]
    vcpus: String,
    #[serde(default)]
    memory_mib: String,
}

pub async fn resize_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<ResizeForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let values = vec![
        ("flavor", f.flavor.clone()),
        ("units", f.units.clone()),
        ("vcpus", f.vcpus.clone()),
        ("memory_mib", f.memory_mib.clone()),
    ];
    let mut errors: Vec<FieldError> = Vec::new();
    let req = SizeRequest {
        flavor: Some(f.flavor.trim().to_string()).filter(|s| !s.is_empty()),
        units: number(&f.units, "units", "the units", &mut errors),
        vcpus: number(&f.vcpus, "vcpus", "the vCPUs", &mut errors),
        memory_mib: number(
            &f.memory_mib,
            "memory_mib",
            "the memory in MiB",
            &mut errors,
        ),
    };
    if !errors.is_empty() {
        who.require(&state, Role::Operator, "vm.resize", &name)
            .await?;
        return form_failed(
            &state,
            &who,
            name,
            "resize",
            values,
            LifecycleError::Invalid(errors),
        )
        .await;
    }
    match resize(&state, &who, &name, req).await? {
        Ok(r) => Ok(back_to(
            &name,
            &format!(
                "Size changed to {} ({} vCPUs, {} MiB); it applies from the next start.",
                super::units_text(r.units),
                r.vcpus,
                r.memory_mib
            ),
        )),
        Err(e) => form_failed(&state, &who, name, "resize", values, e).await,
    }
}

#[derive(Deserialize)]
pub struct CloneForm {
    csrf: Option<String>,
    #[serde(default)]
    clone_name: String,
    start: Option<String>,
}

pub async fn clone_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CloneForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let values = vec![("clone_name", f.clone_name.clone())];
    let req = CloneRequest {
        name: f.clone_name.trim().to_string(),
        start: f.start.is_some(),
    };
    let started = clone(&state, &who, &name, req).await?;
    let outcome =
        match web_jobs::form_outcome(&state, started, |j| format!("Cloning {name} to {}", j.vm))
            .await
        {
            Ok(outcome) => outcome,
            Err(to_jobs_page) => return Ok(to_jobs_page),
        };
    match outcome {
        Ok(job) => Ok(back_to(&job.vm, &job.message)),
        Err(LifecycleError::Invalid(errs)) => {
            // The form calls the name field clone_name.
            let errs = errs
                .into_iter()
                .map(|e| FieldError {
                    field: if e.field == "name" {
                        "clone_name"
                    } else {
                        e.field
                    },
                    message: e.message,
                })
                .collect();
            form_failed(
                &state,
                &who,
                name,
                "clone",
                values,
                LifecycleError::Invalid(errs),
            )
            .await
        }
        Err(e) => form_failed(&state, &who, name, "clone", values, e).await,
    }
}

#[derive(Deserialize)]
pub struct SnapshotForm {
    csrf: Option<String>,
    #[serde(default)]
    snapshot_name: String,
    #[serde(default)]
    description: String,
}

pub async fn snapshot_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<SnapshotForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let values = vec![
        ("snapshot_name", f.snapshot_name.clone()),
        ("description", f.description.clone()),
    ];
    let req = SnapshotRequest {
        name: f.snapshot_name,
        description: f.description,
    };
    match create_snapshot(&state, &who, &name, req).await? {
        Ok(s) => Ok(snapshot_done(
            &who,
            &name,
            format!("Snapshot {} taken.", s.name),
        )),
        Err(e) => form_failed(&state, &who, name, "snapshot", values, e).await,
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn snapshot_action(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String, String)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let (name, snapshot, action) = path.into_inner();
    let r = match action.as_str() {
        "revert" => revert_snapshot(&state, &who, &name, &snapshot)
            .await?
            .map(|()| format!("{name} is back at snapshot {snapshot}.")),
        "delete" => delete_snapshot(&state, &who, &name, &snapshot)
            .await?
            .map(|()| format!("Snapshot {snapshot} deleted.")),
        _ => return Err(AppError::not_found("There is no such snapshot action.")),
    };
    match r {
        Ok(m) => Ok(snapshot_done(&who, &name, m)),
        Err(e) => form_failed(&state, &who, name, "snapshot", vec![], e).await,
    }
}

/// Back to the VM page, with a notice shown once (a reload does not repeat it).
fn snapshot_done(who: &Authed, name: &str, notice: String) -> HttpResponse {
    crate::web::flash::redirect(
        who,
        &format!("/vms/{name}"),
        crate::web::flash::Flash::notice(notice),
    )
}
