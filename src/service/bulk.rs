//! Bulk actions from the VM list: one action on many VMs, one job per VM (kind
//! `action`, grouped by batch), each VM's change run and audited as if it were asked
//! alone, in the order given; a refusal for one VM is its job's outcome and the others
//! go on.

use super::{check_role, Action, Caller, Denied, Services};
use crate::auth::Role;
use crate::domain::create_plan::field;
use crate::domain::listing::{self, ListQuery};
use crate::domain::vm::VmAction;
use crate::domain::vm_labels;
use crate::domain::vmspec::VmName;
use crate::lifecycle::{LcResult, LifecycleError, SnapshotRequest, VmView};
use crate::store::jobs::JobRow;
use std::collections::HashSet;
use std::sync::Arc;

/// The most VMs one bulk action takes.
pub const MAX_VMS: usize = 500;

/// What a bulk action does to each VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkAction {
    Start,
    Shutdown,
    ForceOff,
    /// A snapshot named after the batch (`bulk-<batch>`).
    Snapshot,
    /// Adds this tag.
    Tag(String),
}

impl BulkAction {
    /// `action` as sent (start, shutdown, force-off, snapshot, tag); `tag` for "tag".
    pub fn parse(action: &str, tag: Option<&str>) -> LcResult<BulkAction> {
        Ok(match action {
            "start" => BulkAction::Start,
            "shutdown" => BulkAction::Shutdown,
            "force-off" => BulkAction::ForceOff,
            "snapshot" => BulkAction::Snapshot,
            "tag" => {
                let tag = tag.unwrap_or("").trim().to_ascii_lowercase();
                if !vm_labels::tag_is_valid(&tag) {
                    return Err(LifecycleError::Invalid(vec![field(
                        "tag",
                        "Give the tag to add: up to 32 lower-case letters, digits, '-', '_' or '.'.",
                    )]));
                }
                BulkAction::Tag(tag)
            }
            _ => {
                return Err(LifecycleError::Invalid(vec![field(
                    "action",
                    "Choose start, shutdown, force-off, snapshot or tag.",
                )]))
            }
        })
    }

    /// How the batch's jobs name it.
    pub fn label(&self) -> String {
        match self {
            BulkAction::Start => "start".into(),
            BulkAction::Shutdown => "shutdown".into(),
            BulkAction::ForceOff => "force-off".into(),
            BulkAction::Snapshot => "snapshot".into(),
            BulkAction::Tag(t) => format!("tag {t}"),
        }
    }
}

/// The VMs a bulk action "on every VM matching the filter" takes: the list's filter on
/// every page, templates left out (they are never started or changed in bulk).
pub fn names_matching(vms: &[VmView], query: &ListQuery) -> Vec<String> {
    listing::matching(vms, query, |v| {
        (v.summary.name.as_str(), v.summary.state, v.tags.as_slice())
    })
    .into_iter()
    .filter(|v| !v.template)
    .map(|v| v.summary.name.clone())
    .collect()
}

/// How a batch's jobs stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchCounts {
    pub running: usize,
    pub succeeded: usize,
    /// Refused, failed, or cut off by a restart.
    pub failed: usize,
}

impl BatchCounts {
    pub fn of(jobs: &[JobRow]) -> BatchCounts {
        let count = |s: &str| jobs.iter().filter(|j| j.state == s).count();
        let (running, succeeded) = (count("running"), count("succeeded"));
        BatchCounts {
            running,
            succeeded,
            failed: jobs.len() - running - succeeded,
        }
    }
}

/// A started bulk action: its batch and one job per VM.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Batch {
    pub batch: i64,
    pub jobs: Vec<i64>,
}

/// Checks the request (the caller's role, the names, that each VM exists) and starts
/// one job per VM; they run one after the other on the runtime.
pub async fn start(
    svc: &Arc<Services>,
    caller: &Caller,
    action: BulkAction,
    vms: Vec<String>,
) -> Result<LcResult<Batch>, Denied> {
    let audit_action = match &action {
        BulkAction::Start => Action::Vm(VmAction::Start),
        BulkAction::Shutdown => Action::Vm(VmAction::Shutdown),
        BulkAction::ForceOff => Action::Vm(VmAction::ForceOff),
        BulkAction::Snapshot => Action::SnapshotCreate,
        BulkAction::Tag(_) => Action::VmLabels,
    };
    check_role(svc, caller, Role::Operator, audit_action, "bulk").await?;
    let names = match checked_names(svc, vms).await {
        Ok(n) => n,
        Err(e) => return Ok(Err(e)),
    };
    let s = svc.clone();
    let label = action.label();
    let by = caller.username.clone();
    let inserted = tokio::task::spawn_blocking(move || {
        s.store.insert_batch(&label, &names, &by, super::now())
    })
    .await
    .map_err(|e| LifecycleError::failed(format!("the bulk action could not start: {e}")));
    let (batch, jobs) = match inserted {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Ok(Err(e.into())),
        Err(e) => return Ok(Err(e)),
    };
    let (s, who) = (svc.clone(), caller.clone());
    let ids = jobs.clone();
    tokio::spawn(async move { run(s, who, action, batch, ids).await });
    Ok(Ok(Batch { batch, jobs }))
}

async fn checked_names(svc: &Arc<Services>, vms: Vec<String>) -> LcResult<Vec<String>> {
    if vms.is_empty() {
        return Err(LifecycleError::Invalid(vec![field(
            "vms",
            "Select at least one VM.",
        )]));
    }
    if vms.len() > MAX_VMS {
        return Err(LifecycleError::Invalid(vec![field(
            "vms",
            format!(
                "At most {MAX_VMS} VMs at once ({} selected): narrow the filter.",
                vms.len()
            ),
        )]));
    }
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for v in vms {
        let name = VmName::parse(&v)
            .map_err(|e| LifecycleError::Invalid(vec![field("vms", format!("{v:?}: {e}"))]))?;
        if seen.insert(name.as_str().to_string()) {
            names.push(name.as_str().to_string());
        }
    }
    let s = svc.clone();
    let known: HashSet<String> = tokio::task::spawn_blocking(move || s.hv.list_vms())
        .await
        .map_err(|e| LifecycleError::failed(format!("the VM list could not be read: {e}")))??
        .into_iter()
        .map(|v| v.name)
        .collect();
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| !known.contains(*n))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(LifecycleError::Invalid(vec![field(
            "vms",
            format!("There is no VM named {}.", unknown.join(", ")),
        )]));
    }
    Ok(names)
}

/// What a user reads about a failed step.
fn said(e: &LifecycleError) -> String {
    match e {
        LifecycleError::Hypervisor(h) => h.user_message(),
        other => other.to_string(),
    }
}

async fn run(svc: Arc<Services>, caller: Caller, action: BulkAction, batch: i64, jobs: Vec<i64>) {
    let store = svc.store.clone();
    let rows = match tokio::task::spawn_blocking(move || store.batch_jobs(batch)).await {
        Ok(Ok(rows)) => rows,
        _ => {
            tracing::error!(batch, "the bulk action's jobs could not be read");
            return;
        }
    };
    for (id, row) in jobs.into_iter().zip(rows) {
        let vm = row.vm;
        let store = svc.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.job_step(id, "running", None, 0)).await;
        let outcome: Result<String, String> = match &action {
            BulkAction::Start | BulkAction::Shutdown | BulkAction::ForceOff => {
                let a = match action {
                    BulkAction::Start => VmAction::Start,
                    BulkAction::Shutdown => VmAction::Shutdown,
                    _ => VmAction::ForceOff,
                };
                match super::vms::act(&svc, &caller, &vm, a).await {
                    Ok(Ok(())) => Ok(match a {
                        VmAction::Start => "Started.".into(),
                        VmAction::Shutdown => "Asked to shut down.".into(),
                        _ => "Turned off.".into(),
                    }),
                    Ok(Err(e)) => Err(said(&e)),
                    Err(d) => Err(d.to_string()),
                }
            }
            BulkAction::Snapshot => {
                let req = SnapshotRequest {
                    name: format!("bulk-{batch}"),
                    description: format!("Bulk snapshot {batch}"),
                };
                match super::vms::create_snapshot(&svc, &caller, &vm, req).await {
                    Ok(Ok(s)) => Ok(format!("Snapshot {} taken.", s.name)),
                    Ok(Err(e)) => Err(said(&e)),
                    Err(d) => Err(d.to_string()),
                }
            }
            BulkAction::Tag(tag) => match super::vms::add_tag(&svc, &caller, &vm, tag).await {
                Ok(Ok(l)) => Ok(format!("Tags: {}.", l.tags.join(", "))),
                Ok(Err(e)) => Err(said(&e)),
                Err(d) => Err(d.to_string()),
            },
        };
        let (state, message) = match outcome {
            Ok(m) => ("succeeded", m),
            Err(m) => ("failed", m),
        };
        let store = svc.store.clone();
        let ended = tokio::task::spawn_blocking(move || {
            store.job_step(id, "done", None, 0)?;
            store.finish_job(id, state, 0, &message, super::now())
        })
        .await;
        if !matches!(ended, Ok(Ok(()))) {
            tracing::error!(job = id, "a bulk action's outcome could not be stored");
        }
    }
}
