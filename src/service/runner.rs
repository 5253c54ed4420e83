//! The job runner: a job's making runs on a thread of its own (its checks already ran in
//! the operation that started it), the VM list is refreshed when it ends, a caller may
//! wait a moment for it, and jobs interrupted by a restart are reconciled at start-up.

use super::Services;
use crate::domain::volumes::JobState;
use crate::lifecycle::jobs::{self, JobCtx, RunningJob};
use crate::lifecycle::{LcResult, LifecycleError};
use crate::store::jobs::JobRow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `work` for `job` on a thread of its own. If no thread can be started, the job
/// ends failed and its cancel handle is dropped.
pub fn spawn(
    svc: &Arc<Services>,
    job: &JobRow,
    work: impl FnOnce(&Services) + Send + 'static,
) -> LcResult<()> {
    spawn_or_undo(svc, job, work, |_| {})
}

/// [`spawn`], with `undo` removing what the job's checks reserved when no thread can
/// be started.
fn spawn_or_undo(
    svc: &Arc<Services>,
    job: &JobRow,
    work: impl FnOnce(&Services) + Send + 'static,
    undo: impl FnOnce(&Services),
) -> LcResult<()> {
    let s = svc.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("{}-job-{}", job.kind, job.id))
        .spawn(move || {
            work(&s);
            // What the job made or removed shows in the VM list at once.
            s.vm_list.invalidate();
        });
    if let Err(e) = spawned {
        undo(svc);
        svc.jobs.forget(job.id);
        let message = format!("The job could not be started: {e}.");
        let _ = svc.store.finish_job(
            job.id,
            JobState::Failed.as_str(),
            0,
            &message,
            job.created_at,
        );
        return Err(LifecycleError::failed(message));
    }
    Ok(())
}

/// What a job of `svc` works with.
pub fn job_ctx(svc: &Services) -> JobCtx<'_> {
    JobCtx {
        hv: svc.hv.as_ref(),
        store: &svc.store,
        jobs: &svc.jobs,
    }
}

/// Runs a planned clone's job on a thread of its own (see [`jobs::run_clone`]); if no
/// thread can be started, the clone's reservation is rolled back.
pub fn spawn_clone<T: 'static>(
    svc: &Arc<Services>,
    run: RunningJob,
    action: &'static str,
    build: impl FnOnce(&Services, &dyn crate::lifecycle::changes::CloneWatch) -> LcResult<T>
        + Send
        + 'static,
    describe: impl FnOnce(&T) -> String + Send + 'static,
) -> LcResult<()> {
    let job = run.job.clone();
    let vm = job.vm.clone();
    spawn_or_undo(
        svc,
        &job,
        move |s| jobs::run_clone(job_ctx(s), run, action, |w| build(s, w), describe),
        move |s| {
            crate::lifecycle::roll_back(s.hv.as_ref(), &s.store, &vm);
        },
    )
}

/// The job once it has ended, if it ends within `wait`.
pub async fn ended_within(svc: &Arc<Services>, id: i64, wait: Duration) -> Option<JobRow> {
    let until = Instant::now() + wait;
    loop {
        let s = svc.clone();
        let job = tokio::task::spawn_blocking(move || s.store.job(id))
            .await
            .ok()?
            .ok()
            .flatten()?;
        if job.state != JobState::Running.as_str() {
            return Some(job);
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// At start-up (after interrupted creates and clones were rolled back): running jobs
/// were interrupted; their partial volumes are removed.
pub fn reconcile_jobs(hv: &dyn crate::hypervisor::Hypervisor, store: &crate::store::Store) {
    match jobs::reconcile(hv, store) {
        Ok(notes) => {
            let actor = super::Caller::virtdeck().actor();
            for note in notes {
                tracing::warn!(%note, "start-up reconciliation");
                actor.audit(store, "job.interrupted", "", "ok", &note);
            }
        }
        Err(e) => tracing::error!(error = %e, "reconciling interrupted jobs failed"),
    }
}
