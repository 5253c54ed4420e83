//! Template operations: mark a VM as a template, unmark it, make a VM from it (a job on
//! the clone path). Operators (and admins) make them.

use super::{execute, runner, Action, Caller, Denied, Op, Services};
use crate::lifecycle::jobs::{self, RunningJob};
use crate::lifecycle::templates::{self as tpl, FromTemplateRequest, Marked};
use crate::lifecycle::LcResult;
use crate::store::jobs::JobRow;
use std::sync::Arc;

type Done<T> = Result<LcResult<T>, Denied>;

pub async fn mark(svc: &Arc<Services>, caller: &Caller, name: &str) -> Done<Marked> {
    let (n, actor) = (name.to_string(), caller.username.clone());
    execute(
        svc,
        caller,
        Op::operator(
            Action::TemplateMark,
            name,
            move |s| tpl::mark(s.hv.as_ref(), &s.store, &n, &actor, super::now()),
            |m: &Marked| {
                if m.autostart_turned_off {
                    "marked as a template; autostart turned off".into()
                } else {
                    "marked as a template".into()
                }
            },
        ),
    )
    .await
}

pub async fn unmark(svc: &Arc<Services>, caller: &Caller, name: &str) -> Done<()> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::operator(
            Action::TemplateUnmark,
            name,
            move |s| tpl::unmark(s.hv.as_ref(), &s.store, &n),
            |()| "no longer a template".into(),
        ),
    )
    .await
}

/// Checks a new VM from a template and holds its units, then makes it as a job. Audited
/// under the template's name; the new VM's history starts with its first action.
pub async fn create_vm(
    svc: &Arc<Services>,
    caller: &Caller,
    template: &str,
    req: FromTemplateRequest,
) -> Done<JobRow> {
    let (t, actor, job_actor, runner_svc) = (
        template.to_string(),
        caller.username.clone(),
        caller.actor(),
        svc.clone(),
    );
    execute(
        svc,
        caller,
        Op::operator(
            Action::TemplateCreate,
            template,
            move |s| {
                let by = crate::lifecycle::By {
                    actor: &actor,
                    now: super::now(),
                };
                let plan = tpl::plan_from(
                    s.lc(),
                    &t,
                    &req,
                    by,
                    crate::adapters::sysprep::find(s.cfg.images.sysprep_program.as_deref()),
                )?;
                let (job, cancel) = jobs::begin_clone(runner::job_ctx(s), &plan.plan, &job_actor)?;
                let mode = plan.plan.mode.label().to_lowercase();
                runner::spawn_clone(
                    &runner_svc,
                    RunningJob {
                        job: job.clone(),
                        cancel,
                        actor: job_actor,
                    },
                    Action::TemplateCreate.as_str(),
                    move |s, watch| plan.build(s.hv.as_ref(), &s.store, watch),
                    |c| {
                        format!(
                            "Made {} from template {} as a {}: {} unit{}, {} disk{}{}{}.",
                            c.vm.name,
                            c.template,
                            c.mode.label().to_lowercase(),
                            c.vm.units,
                            if c.vm.units == 1 { "" } else { "s" },
                            c.vm.volumes.len(),
                            if c.vm.volumes.len() == 1 { "" } else { "s" },
                            if c.identity_reset {
                                ", identity reset"
                            } else {
                                ""
                            },
                            if c.vm.started { ", started" } else { "" }
                        )
                    },
                )?;
                Ok((job, mode))
            },
            |(job, mode): &(JobRow, String)| {
                format!("job {} started: {} as a {mode}", job.id, job.vm)
            },
        ),
    )
    .await
    .map(|r| r.map(|(job, _)| job))
}
