//! The Backups page (targets, every backup, restore, verify, delete) and the VM page's
//! "Back up now" form. The work is `service::backups`, shared with the API.

use super::super::errors::{html, AppError};
use super::super::kit::{form_failure, notice_for, see_other};
use super::super::session::Authed;
use super::super::{lc, AppState};
use super::Chrome;
use crate::auth::Role;
use crate::lifecycle::backups::{RestoreRequest, TargetView};
use crate::lifecycle::LifecycleError;
use crate::service;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "backups.html")]
struct BackupsPage {
    chrome: Chrome,
    targets: Vec<TargetView>,
    backups: Vec<crate::lifecycle::backups::BackupView>,
    /// Directory and NFS pools an admin may name a target.
    candidate_pools: Vec<String>,
    schedules: Vec<crate::store::backups::ScheduleRow>,
    notice: Option<String>,
    error: Option<String>,
}

impl BackupsPage {
    fn when(&self, at: &i64) -> String {
        super::format_time(*at)
    }
    fn size(&self, bytes: &u64) -> String {
        crate::domain::storage::human_bytes(*bytes)
    }
    fn hhmm(&self, minutes: &u32) -> String {
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    }
    fn day(&self, d: &u32) -> &'static str {
        [
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ]
        .get(*d as usize)
        .copied()
        .unwrap_or("?")
    }
    fn any_running(&self) -> bool {
        self.backups.iter().any(|b| b.backup.state == "running")
    }
    fn percent(&self, p: &(u64, u64)) -> u64 {
        (p.0 * 100).checked_div(p.1).unwrap_or(0).min(100)
    }
}

async fn render(
    state: &web::Data<AppState>,
    who: &Authed,
    status: StatusCode,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let (targets, backups, candidate_pools, schedules) = lc(state, |s| {
        let targets = crate::lifecycle::backups::targets(s.hv.as_ref(), &s.store)?;
        let rows = s.store.backups(None)?;
        let candidates =
            s.hv.pool_statuses()?
                .into_iter()
                .filter(|p| matches!(p.kind.as_str(), "dir" | "netfs"))
                .filter(|p| !targets.iter().any(|t| t.pool == p.name))
                .map(|p| p.name)
                .collect();
        Ok((
            targets,
            crate::lifecycle::backups::with_progress(&s.jobs, &s.store, rows),
            candidates,
            s.store.backup_schedules()?,
        ))
    })
    .await?;
    Ok(html(
        status,
        &BackupsPage {
            chrome: Chrome::new(who, "backups"),
            targets,
            backups,
            candidate_pools,
            schedules,
            notice: notice_for(who),
            error,
        },
    ))
}

pub async fn backups_page(
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    render(&state, &who, StatusCode::OK, None).await
}

/// Shows the page again with what went wrong.
async fn failed(
    state: &web::Data<AppState>,
    who: &Authed,
    e: LifecycleError,
) -> Result<HttpResponse, AppError> {
    let (status, errors, message) = form_failure(e)?;
    let text = message.unwrap_or_else(|| {
        errors
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join(" ")
    });
    render(state, who, status, Some(text)).await
}

#[derive(Deserialize)]
pub struct TargetForm {
    csrf: Option<String>,
    #[serde(default)]
    pool: String,
    #[serde(default)]
    on: String,
}

pub async fn target_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<TargetForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let on = form.on != "0";
    match service::backups::set_target(&state.svc, &who.caller(), form.pool.trim(), on).await? {
        Ok(_) => Ok(see_other(
            &who,
            "/backups",
            &if on {
                format!("{} is a backup target.", form.pool.trim())
            } else {
                format!(
                    "{} is no longer a backup target; its backups stay.",
                    form.pool.trim()
                )
            },
        )),
        Err(e) => failed(&state, &who, e).await,
    }
}

/// "Look for backups" on a target's row (admins).
pub async fn scan_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let pool = path.into_inner();
    match service::backups::scan_target(&state.svc, &who.caller(), &pool).await? {
        Ok(r) => {
            let mut said = format!(
                "{pool}: {} backup{} added, {} listed already.",
                r.added.len(),
                if r.added.len() == 1 { "" } else { "s" },
                r.known
            );
            if !r.skipped.is_empty() {
                said.push_str(&format!(
                    " Skipped {}: {}.",
                    r.skipped.len(),
                    r.skipped
                        .iter()
                        .map(|s| format!("{} ({})", s.place, s.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            Ok(see_other(&who, "/backups", &said))
        }
        Err(e) => failed(&state, &who, e).await,
    }
}

#[derive(Deserialize)]
pub struct BackupForm {
    csrf: Option<String>,
    #[serde(default)]
    pool: String,
}

/// The VM page's "Back up now".
pub async fn backup_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<BackupForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    match service::backups::backup_now(&state.svc, &who.caller(), &name, form.pool.trim()).await? {
        Ok(b) => Ok(see_other(
            &who,
            "/backups",
            &format!(
                "Backup {} of {name} began ({}{}); it is crash-consistent.",
                b.id,
                b.kind,
                if b.why_full.is_empty() {
                    String::new()
                } else {
                    format!(": {}", b.why_full)
                }
            ),
        )),
        Err(e) => {
            let (status, errors, message) = form_failure(e)?;
            super::vms::render_detail(
                &state,
                &who,
                name,
                None,
                None,
                super::vms::FormState {
                    section: "backup",
                    message,
                    errors,
                    values: vec![("pool", form.pool.clone())],
                },
                status,
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct RestoreForm {
    csrf: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    pool: String,
}

pub async fn restore_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
    form: web::Form<RestoreForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let req = RestoreRequest {
        name: form.name.trim().to_string(),
        pool: Some(form.pool.trim().to_string()).filter(|p| !p.is_empty()),
    };
    let started =
        service::backups::restore(&state.svc, &who.caller(), path.into_inner(), req).await?;
    let outcome = match super::super::kit::form_outcome(&state, &who, started, |j| {
        format!("Restoring {} as {}", j.source, j.vm)
    })
    .await
    {
        Ok(outcome) => outcome,
        Err(to_jobs_page) => return Ok(to_jobs_page),
    };
    match outcome {
        Ok(job) => Ok(see_other(
            &who,
            &format!("/vms/{}", job.vm),
            &format!("{} Start it when ready.", job.message),
        )),
        Err(e) => failed(&state, &who, e).await,
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

pub async fn backup_action(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(i64, String)>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let (id, action) = path.into_inner();
    let caller = who.caller();
    let message = match action.as_str() {
        "verify" => service::backups::verify(&state.svc, &caller, id)
            .await?
            .map(|v| {
                if v.ok {
                    format!("Backup {id}: every file's checksum matches.")
                } else {
                    format!(
                        "Backup {id} is damaged: {}",
                        v.files
                            .iter()
                            .map(|(f, what)| format!("{f}: {what}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                }
            }),
        "restore-over" => {
            let vm = lc(&state, move |s| Ok(s.store.backup(id)?.map(|b| b.vm)))
                .await?
                .ok_or_else(|| AppError::not_found(format!("There is no backup {id}.")))?;
            let started = service::backups::restore_over(&state.svc, &caller, id, &vm).await?;
            match super::super::kit::form_outcome(&state, &who, started, |j| {
                format!("Restoring {} over {}", j.source, j.vm)
            })
            .await
            {
                Ok(Ok(job)) => {
                    return Ok(see_other(&who, &format!("/vms/{}", job.vm), &job.message))
                }
                Ok(Err(e)) => Err(e),
                Err(to_jobs_page) => return Ok(to_jobs_page),
            }
        }
        "cancel" => {
            // Its job is what runs: Cancel there aborts libvirt's job and removes the files.
            let (backup, job) = lc(&state, move |s| {
                Ok((s.store.backup(id)?, s.store.backup_job(id)?))
            })
            .await?;
            if backup.is_none() {
                return Err(AppError::not_found(format!("There is no backup {id}.")));
            }
            match job.filter(|j| j.state == crate::domain::volumes::JobState::Running.as_str()) {
                None => Err(LifecycleError::Conflict(format!(
                    "Backup {id} is not running, so there is nothing to cancel."
                ))),
                Some(job) => service::storage::cancel_job(&state.svc, &caller, job.id)
                    .await?
                    .map(|j| {
                        format!(
                            "Cancelling backup {id} of {}: it stops, and its files are removed.",
                            j.vm
                        )
                    }),
            }
        }
        "delete" => {
            who.require(&state, Role::Admin, "backup.delete", &id.to_string())
                .await?;
            service::backups::delete(&state.svc, &caller, id)
                .await?
                .map(|b| format!("Backup {} of {} is deleted.", b.id, b.vm))
        }
        _ => return Err(AppError::not_found("There is no such action for a backup.")),
    };
    match message {
        Ok(m) => Ok(see_other(&who, "/backups", &m)),
        Err(e) => failed(&state, &who, e).await,
    }
}

#[derive(Deserialize)]
pub struct ScheduleForm {
    csrf: Option<String>,
    /// `backup` (the default) or `snapshot`.
    #[serde(default)]
    kind: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    scope_value: String,
    #[serde(default)]
    pool: String,
    #[serde(default)]
    every: String,
    #[serde(default)]
    weekday: String,
    #[serde(default)]
    at: String,
    #[serde(default)]
    keep_last: String,
    #[serde(default)]
    keep_daily: String,
    #[serde(default)]
    keep_weekly: String,
    #[serde(default)]
    keep_monthly: String,
}

pub async fn schedule_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<ScheduleForm>,
) -> Result<HttpResponse, AppError> {
    use crate::domain::backup_schedule::{Every, Keep, ScheduleKind};
    who.check_csrf(form.csrf.as_deref())?;
    let f = form.into_inner();
    let n = |t: &str| t.trim().parse::<u32>().ok();
    let keep = (
        n(&f.keep_last).or(Some(0).filter(|_| f.keep_last.trim().is_empty())),
        n(&f.keep_daily).or(Some(0).filter(|_| f.keep_daily.trim().is_empty())),
        n(&f.keep_weekly).or(Some(0).filter(|_| f.keep_weekly.trim().is_empty())),
        n(&f.keep_monthly).or(Some(0).filter(|_| f.keep_monthly.trim().is_empty())),
    );
    let (Some(last), Some(daily), Some(weekly), Some(monthly)) = keep else {
        who.require(&state, Role::Admin, "backup.schedule", "")
            .await?;
        return render(
            &state,
            &who,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("The keep numbers are whole numbers (empty: 0).".into()),
        )
        .await;
    };
    let kind = if f.kind == "snapshot" {
        ScheduleKind::Snapshot
    } else {
        ScheduleKind::Backup
    };
    let req = crate::service::backups::ScheduleRequest {
        kind,
        scope: f.scope.trim().to_string(),
        scope_value: f.scope_value.trim().to_string(),
        // The form's target choice is for backups; snapshots stay in the VMs' disks.
        pool: if kind == ScheduleKind::Snapshot {
            String::new()
        } else {
            f.pool.trim().to_string()
        },
        every: if f.every == "weekly" {
            Every::Weekly
        } else {
            Every::Daily
        },
        weekday: n(&f.weekday).unwrap_or(0),
        at: f.at.clone(),
        keep: Keep {
            last,
            daily,
            weekly,
            monthly,
        },
    };
    match service::backups::create_schedule(&state.svc, &who.caller(), req).await? {
        Ok(s) => Ok(see_other(
            &who,
            "/backups",
            &format!("Schedule #{} is added.", s.id),
        )),
        Err(e) => failed(&state, &who, e).await,
    }
}

pub async fn schedule_delete_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    match service::backups::delete_schedule(&state.svc, &who.caller(), path.into_inner()).await? {
        Ok(id) => Ok(see_other(
            &who,
            "/backups",
            &format!("Schedule #{id} is removed; its backups stay."),
        )),
        Err(e) => failed(&state, &who, e).await,
    }
}

pub async fn schedule_run_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    match service::backups::run_schedule_now(&state.svc, &who.caller(), path.into_inner()).await? {
        Ok(id) => Ok(see_other(
            &who,
            "/backups",
            &format!(
                "Schedule #{id} runs now (after any schedule that is running): its backups appear below as they start, one at a time."
            ),
        )),
        Err(e) => failed(&state, &who, e).await,
    }
}
