//! Host change operations (admins only): plan a network or kernel-settings change, apply
//! a plan (it then waits for confirmation), confirm it, or roll it back. The engine
//! (`hostcfg`) does the work; these check the role and audit through [`execute`].

use super::{execute, Action, Caller, Denied, Failure, Op, Services};
use crate::domain::clock::format_time;
use crate::domain::hostnet::form::NetForm;
use crate::domain::sysctl::SysctlForm;
use crate::hostcfg::{ChangeError, Outcome, PendingView, Plan};
use std::sync::Arc;

type Done<T> = Result<Result<T, ChangeError>, Denied>;

impl Failure for ChangeError {
    fn result_word(&self) -> &'static str {
        match self {
            ChangeError::Invalid(_) => "invalid",
            ChangeError::Conflict(_) | ChangeError::Stale(_) | ChangeError::NotFound(_) => {
                "refused"
            }
            _ => "failed",
        }
    }
    fn audit_detail(&self) -> String {
        match self {
            ChangeError::Invalid(errs) => {
                super::fields_text(errs.iter().map(|e| (e.field, e.message.as_str())))
            }
            other => other.to_string(),
        }
    }
    fn internal(message: String) -> Self {
        ChangeError::Io(message)
    }
    fn busy(message: String) -> Self {
        ChangeError::Conflict(message)
    }
}

fn plan_detail(p: &Plan) -> String {
    format!(
        "plan {}: {} file(s), {} live step(s)",
        p.id,
        p.files.len(),
        p.ops.len()
    )
}

/// Plans a network change: the files and live steps it would take, nothing applied.
pub async fn plan_network(svc: &Arc<Services>, caller: &Caller, form: NetForm) -> Done<Plan> {
    let (target, actor) = (form.name.clone(), caller.username.clone());
    execute(
        svc,
        caller,
        Op::admin(
            Action::HostNetworkPlan,
            target,
            move |s| s.host.plan_network(&form, &actor),
            plan_detail,
        ),
    )
    .await
}

/// Plans a kernel settings change.
pub async fn plan_sysctl(svc: &Arc<Services>, caller: &Caller, form: SysctlForm) -> Done<Plan> {
    let (target, actor) = (form.key.clone(), caller.username.clone());
    execute(
        svc,
        caller,
        Op::admin(
            Action::HostSysctlPlan,
            target,
            move |s| s.host.plan_sysctl(&form, &actor),
            plan_detail,
        ),
    )
    .await
}

/// Applies a plan; it is rolled back unless confirmed from `credential_sha256`'s sign-in
/// before its deadline.
pub async fn apply(
    svc: &Arc<Services>,
    caller: &Caller,
    plan_id: String,
    credential_sha256: String,
) -> Done<PendingView> {
    let target = svc
        .host
        .plan(&plan_id)
        .map(|p| format!("{} {}", p.kind.as_str(), p.title))
        .unwrap_or_else(|| plan_id.clone());
    let (id, actor) = (plan_id.clone(), caller.username.clone());
    execute(
        svc,
        caller,
        Op::admin(
            Action::HostChangeApply,
            target,
            move |s| s.host.apply(&id, &actor, &credential_sha256),
            move |p: &PendingView| {
                format!(
                    "plan {plan_id} applied; waiting for confirmation until {}",
                    format_time(p.deadline)
                )
            },
        ),
    )
    .await
}

/// Confirms the pending change: only from the sign-in that applied it, unless
/// `for_other_sign_in`.
pub async fn confirm(
    svc: &Arc<Services>,
    caller: &Caller,
    credential_sha256: String,
    for_other_sign_in: bool,
) -> Done<Outcome> {
    let target = svc.host.pending().map(|p| p.title).unwrap_or_default();
    let actor = caller.username.clone();
    execute(
        svc,
        caller,
        Op::admin(
            Action::HostChangeConfirm,
            target,
            move |s| {
                s.host
                    .confirm(&actor, &credential_sha256, for_other_sign_in)
            },
            |o: &Outcome| o.detail.clone(),
        ),
    )
    .await
}

/// Rolls the pending change back now.
pub async fn rollback(svc: &Arc<Services>, caller: &Caller) -> Done<Outcome> {
    let target = svc.host.pending().map(|p| p.title).unwrap_or_default();
    let reason = format!("rolled back by {}", caller.username);
    execute(
        svc,
        caller,
        Op::admin(
            Action::HostChangeRollback,
            target,
            move |s| s.host.rollback(&reason),
            |o: &Outcome| o.detail.clone(),
        ),
    )
    .await
}
